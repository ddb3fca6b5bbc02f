"""``Payouts``: the one place where a provider client and the ledger meet."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
)
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar, overload

import attrs

from .._errors import ConfigurationError, IdempotencyConflictError, ValidationError
from .._loops import LoopBinding, Moved
from .._polling import PollPolicy
from .._shield import shielded
from .._validation import check_key
from ..enot import EnotClient, PayoffRequest, PayoffStatus, PayoffWebhook
from ..intellectmoney import IntellectMoneyClient, OperationRequest
from ..ledger import (
    ACTIVE_STATES,
    PARKED_STATES,
    Claim,
    Enqueued,
    Intent,
    LeaseLostError,
    Ledger,
    LedgerError,
    LedgerState,
    MemoryLedger,
    PayoutRecord,
)
from ..ledger._patience import one_payout
from ._enot import EnotFlow, webhook_mismatch
from ._flow import Flow, other_account
from ._heartbeat import Heartbeats
from ._intellectmoney import IntellectMoneyFlow
from ._observe import HOOK_TIMEOUT, Observer, OnTransition
from ._owner import new_owner, owner_is_dead
from ._result import PayoutResult, PayoutStatus, Settings
from ._run import BeforeSend, Run, in_flight_bound
from ._tasks import cancel_and_wait
from ._waiting import OnWait
from ._webhook_wait import WebhookWaits
from ._worker import Worker, WorkerSummary

__all__ = ["Payouts", "intent_for", "order_id_for"]

logger = logging.getLogger("payout_async")

Request = TypeVar("Request", OperationRequest, PayoffRequest)
Item = tuple[str, Any]

_MAX_ORDER_ID = 255


def order_id_for(key: str) -> str:
    """The Enot ``order_id`` for an idempotency key: the key itself when it fits in
    255 characters, else ``sha256:`` and its digest. Deterministic, so a payoff whose
    create answer was lost can always be found again."""
    if 0 < len(key) <= _MAX_ORDER_ID:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(request_type: type[Any]) -> tuple[str, ...]:
    """A request class's field names, read once (``attrs.asdict`` reads them per call)."""
    names = _FIELD_NAMES.get(request_type)
    if names is None:
        names = _FIELD_NAMES[request_type] = tuple(f.name for f in attrs.fields(request_type))
    return names


def _request_params(request: OperationRequest | PayoffRequest) -> dict[str, Any]:
    params = {}
    for name in _field_names(type(request)):
        value = getattr(request, name)
        params[name] = str(value) if isinstance(value, Decimal) else value
    return params


def intent_for(key: str, request: OperationRequest | PayoffRequest) -> Intent:
    """The intent ``pay(key, request)`` records: the request's parameters (an Enot
    payoff's with its order_id) and the order_id; the ledger fingerprints them.
    ``ValidationError`` for a key ``pay()`` would refuse."""
    check_key(key)
    return _intent(key, request)


def _intent(key: str, request: OperationRequest | PayoffRequest) -> Intent:
    """``intent_for`` of a key already checked."""
    params, order_id = _recorded(key, request)
    return Intent(key=key, params=params, order_id=order_id)


def _recorded(
    key: str, request: OperationRequest | PayoffRequest
) -> tuple[dict[str, Any], str | None]:
    """The parameters and order_id ``pay(key, request)`` records (the key checked)."""
    params = _request_params(request)
    order_id = None
    if isinstance(request, PayoffRequest):
        order_id = request.order_id or order_id_for(key)
        params["order_id"] = order_id
    return params, order_id


class _InFlight:
    """A payout being driven by this ``Payouts``: later ``pay()`` calls join it.

    ``with _InFlight(registry, key, digest, serial) as drive:`` registers this task as
    the one drive of ``key`` while the body runs, which ends with
    ``drive.finish(result)``; joiners await ``drive.result`` (made when the first one
    asks), and see the drive's result or its cancellation. ``serial`` orders the
    drives registered by one ``Payouts`` (see ``answers``). (A class, not a generator:
    it is entered once per payout.)"""

    __slots__ = ("_future", "_key", "_registry", "deferred", "params_hash", "serial")

    def __init__(
        self, registry: dict[str, _InFlight], key: str, params_hash: str, serial: int
    ) -> None:
        self._registry = registry
        self._key = key
        self.params_hash = params_hash
        self.serial = serial
        #: It found the row leased to a drive elsewhere and did not drive it.
        self.deferred = False
        self._future: asyncio.Future[PayoutResult] | None = None

    def answers(self, since: int) -> bool:
        """Whether its result answers a call made when ``since`` drives had been
        registered: always when it drove the row; when it deferred to a drive
        elsewhere, only if it read the row after that call began (a drive elsewhere
        seen before may have given the row back since, and nobody would drive it)."""
        return not self.deferred or self.serial > since

    @property
    def result(self) -> asyncio.Future[PayoutResult]:
        """What joiners await: the drive's result, or its cancellation."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def finish(self, result: PayoutResult) -> PayoutResult:
        """The drive's result, handed to its joiners (if any)."""
        if self._future is not None:
            self._future.set_result(result)
        return result

    def __enter__(self) -> _InFlight:
        self._registry[self._key] = self
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        del self._registry[self._key]
        joined = self._future
        if error is None or joined is None:  # nobody to tell
            return
        if isinstance(error, asyncio.CancelledError):
            joined.cancel()
        elif not joined.done():
            joined.set_exception(error)
            joined.exception()  # retrieved: joiners may have gone


class Payouts(Generic[Request]):
    """Pays each requested payout at most once and drives it to a known end.

    ``client`` is an ``IntellectMoneyClient`` or an ``EnotClient``; it fixes the
    request type, to a type checker too (``Payouts[OperationRequest]`` or
    ``Payouts[PayoffRequest]``). ``ledger`` is where intent and every step are written
    before the next network call. ``poll`` says when to ask the provider for a
    payout's state (by default a settled state is seen within 20% of the time the
    provider took: see ``PollPolicy``) and how long ``pay()`` follows a payout before
    returning ``processing``;
    ``grace`` is the Enot grace period in seconds ("not found" must hold that
    long after a lost create before the payoff is created again);
    ``execute_settle`` is how long an IntellectMoney operation must keep reading
    ``Created`` after an execute whose answer was lost or refused before that execute
    is taken not to have happened; ``lookup_before_create`` (Enot) looks each
    order_id up before its first create and adopts a payoff already there (every
    later create looks it up anyway).
    ``max_send_attempts`` (default 3) bounds the money-moving requests (an Enot
    create, an IntellectMoney execute) one pass of a payout sends: once that many
    were found not to have happened, the row parks ``needs_attention`` for an
    operator (``reconcile()`` gives it the same budget again). A request that moves
    nothing (an IntellectMoney create, an order_id lookup before a create) failing
    for a transient reason (a lookup: with any answer but "not found") through all
    of the client's retries is made again, in up to that many rounds.
    ``webhook_wait`` (Enot, seconds, default 0: off) lets a ``pay()`` that creates a
    payoff wait that long, from the create, for its verified webhook instead of
    polling: ``apply_webhook`` of this ``Payouts`` settles the row and wakes that
    payout (only that one, by order_id), which then makes no status call at all. When
    the wait runs out the payout reads its row (a webhook handled by another process
    may have settled it) and only then polls, at once and on after that. Set it a
    little above the time Enot takes to settle and deliver, and serve
    ``enot.webhook_handler(payouts.apply_webhook, additional_key)`` at the
    ``hook_url`` of each request.
    ``on_transition(record, transition)`` (sync or async) is called after every
    durable transition this ``Payouts`` writes -- a new row's intent included, a
    webhook's settlement (``apply_webhook``) not -- and each is logged once at INFO;
    an exception it raises is logged, never passed on to the payout (nor is a
    ``CancelledError``, unless the payout itself is being cancelled), and a coroutine
    callback still running after ``on_transition_timeout`` seconds (default 5) is cut
    short and logged.
    ``on_wait(waiting)`` (a quick plain function) hears when a payout begins and ends
    a long wait -- Enot's grace after a lost answer or a takeover, IntellectMoney's
    settle window -- with the reason and until when (``Waiting``), so that a caller
    can say what is being waited for.
    A key is one payout, whatever the provider: a key the ledger holds under the
    other provider is refused (``IdempotencyConflictError``) -- unless
    ``switch_provider`` is set and that payout was refused, failed or cancelled there
    (the operator moves the key on purpose; a refused row is then cancelled).

    Each drive of a row holds its lease with a fencing token of its own, so a second
    ``pay()`` of a key in flight joins the first, and several ``Payouts`` -- in one
    process or many, sharing one ledger -- never drive a row at once. Use it as an
    async context manager, or call ``aclose()``: that waits for lease releases still
    under way. It never closes the client or the ledger it was given.
    """

    @overload
    def __init__(
        self: Payouts[OperationRequest],
        client: IntellectMoneyClient,
        ledger: Ledger,
        *,
        poll: PollPolicy | None = ...,
        grace: float = ...,
        lease_seconds: float = ...,
        max_send_attempts: int = ...,
        owner: str | None = ...,
        execute_settle: float = ...,
        lookup_before_create: bool = ...,
        on_transition: OnTransition | None = ...,
        webhook_wait: float = ...,
        on_transition_timeout: float = ...,
        switch_provider: bool = ...,
        on_wait: OnWait | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: Payouts[PayoffRequest],
        client: EnotClient,
        ledger: Ledger,
        *,
        poll: PollPolicy | None = ...,
        grace: float = ...,
        lease_seconds: float = ...,
        max_send_attempts: int = ...,
        owner: str | None = ...,
        execute_settle: float = ...,
        lookup_before_create: bool = ...,
        on_transition: OnTransition | None = ...,
        webhook_wait: float = ...,
        on_transition_timeout: float = ...,
        switch_provider: bool = ...,
        on_wait: OnWait | None = ...,
    ) -> None: ...

    def __init__(
        self,
        client: IntellectMoneyClient | EnotClient,
        ledger: Ledger,
        *,
        poll: PollPolicy | None = None,
        grace: float = 60.0,
        lease_seconds: float = 120.0,
        max_send_attempts: int = 3,
        owner: str | None = None,
        execute_settle: float = 60.0,
        lookup_before_create: bool = False,
        on_transition: OnTransition | None = None,
        webhook_wait: float = 0.0,
        on_transition_timeout: float = HOOK_TIMEOUT,
        switch_provider: bool = False,
        on_wait: OnWait | None = None,
    ) -> None:
        _check_settings(client, grace, lease_seconds, execute_settle, max_send_attempts)
        _check_webhook_wait(client, webhook_wait)
        settings = Settings(
            lease_seconds=lease_seconds,
            max_send_attempts=max_send_attempts,
            grace=grace,
            execute_settle=execute_settle,
            lookup_before_create=lookup_before_create,
            webhook_wait=webhook_wait,
        )
        poll = poll or PollPolicy()
        self._flow: Flow[Any, Any, Any]
        self._webhook_waits = WebhookWaits()
        if isinstance(client, IntellectMoneyClient):
            self._flow = IntellectMoneyFlow(client, settings, poll)
        else:
            self._flow = EnotFlow(client, settings, poll, self._webhook_waits)
        self.client = client
        self.ledger = ledger
        self.provider = self._flow.provider
        self.owner = owner or new_owner()
        #: The owner was made here (not given): a child process makes its own.
        self._made_owner = owner is None
        self._settings = settings
        self._switch_provider = switch_provider
        self._background: set[asyncio.Future[None]] = set()
        #: The claims of cancelled ``pay()`` calls, given back once made (``_begin``).
        self._handing_back: dict[str, asyncio.Future[None]] = {}
        #: Drives ``pay(..., wait=...)`` left going on (``aclose()`` ends them).
        self._driven: set[asyncio.Task[PayoutResult]] = set()
        self._in_flight: dict[str, _InFlight] = {}
        #: How many drives ``_in_flight`` has registered (``_InFlight.answers``).
        self._registered = 0
        #: Rows claimed by resume(), reconcile() or a worker of this Payouts, with the
        #: result of their drive to come (``_hold``).
        self._held: dict[str, asyncio.Future[PayoutResult]] = {}
        self._request_timeout = _request_timeout(client)
        #: Awaited after a money-moving step is recorded, before its fence (tests).
        self._before_send: BeforeSend | None = None
        self._observer = Observer(on_transition, timeout=on_transition_timeout, on_wait=on_wait)
        #: Renews the leases of this Payouts' drives (every third of a lease).
        self._heartbeats = Heartbeats(lease_seconds / 3)
        #: The event loop this Payouts' drives, waits and timers belong to.
        self._loop = LoopBinding(f"Payouts({self.provider})")

    def __repr__(self) -> str:
        return f"Payouts(provider={self.provider!r}, owner={self.owner!r}, ledger={self.ledger!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self, *, drain: float = 0.0) -> None:
        """Wait up to ``drain`` seconds for the payouts ``pay(..., wait=...)`` left
        driving in the background, then hand the rest back (their drives stop where
        they stand and give their rows back, for ``resume()`` or a worker to finish),
        and wait for the lease releases still under way. The client and the ledger stay
        open: close them yourself."""
        if moved := self._loop.moved():
            self._forget_loop(moved)
        if self._driven and drain > 0:
            await asyncio.wait(list(self._driven), timeout=drain)
        await cancel_and_wait(list(self._driven))
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def pay(self, key: str, request: Request, *, wait: float | None = None) -> PayoutResult:
        """Pay ``request`` under idempotency ``key``, at most once.

        The same key returns the same payout and sends nothing new (a call made while
        the key is in flight here waits for that payout and returns its result); the
        same key with other parameters raises ``IdempotencyConflictError``, and so do
        an Enot ``order_id`` that already belongs to another key and a key the ledger
        holds under the other provider (see ``switch_provider``). A key the provider
        refused (``REJECTED``, nothing exists there) is paid anew, also with corrected
        parameters. Returns when the payout is final, needs attention, or is still
        ``processing`` at the poll deadline (``resume()`` finishes it later).

        ``wait`` (seconds; for web handlers): return within that long, with the
        payout's status so far -- ``processing`` is a normal answer -- while this
        ``Payouts`` goes on driving it in a task of its own; a later ``pay()`` of the
        key (it joins that drive), ``get()`` or a webhook gives the outcome.
        ``aclose()`` waits for such drives, or hands them back.

        Raises:
            ValidationError: a bad key or request (before anything is recorded).
            IdempotencyConflictError: the key (or its order_id) has other parameters.
            ConfigurationError: this ``Payouts``, its client or its ledger is in use by
                another event loop, still open (another thread's): before anything is
                recorded. (One whose loop has closed -- ``asyncio.run()`` per job --
                works on in the next.)
        """
        self._in_this_loop()
        key, digest, params, order_id = self._checked(key, request)
        # The request is the row's (an Enot order_id made for the key aside: the flow
        # sends the row's), so the drive takes it as it is, checked once.
        if wait is None:
            return await self._pay_checked(key, digest, params, order_id, request)
        if not math.isfinite(wait) or wait < 0:
            raise ValidationError("wait", "must be zero or a finite number of seconds")
        return await self._pay_within(wait, key, digest, params, order_id, request)

    def _in_this_loop(self) -> None:
        """Refuse, before anything is recorded, to run in a second event loop while the
        first is still open, for this ``Payouts`` or its client (``_loops``; the ledger
        refuses at its first call)."""
        if moved := self._loop.moved():
            self._forget_loop(moved)
        self.client._check_event_loop()

    def _forget_loop(self, why: Moved) -> None:
        """The event loop this ``Payouts`` last ran in has closed, or this process is a
        child of the one it ran in: its drives, joins, background tasks and heartbeat
        timer ended with it. A child takes an owner of its own (unless one was given):
        its leases name its own process, which may end while the parent lives on."""
        self._heartbeats = Heartbeats(self._settings.lease_seconds / 3)
        for registry in (self._in_flight, self._held, self._handing_back):
            registry.clear()
        self._driven.clear()
        self._background.clear()
        if why is Moved.FORKED and self._made_owner:
            self.owner = new_owner()

    def _checked(self, key: str, request: Request) -> tuple[str, str, dict[str, Any], str | None]:
        """The key, fingerprint, parameters and order_id ``pay()`` records."""
        check_key(key)
        request_type = self._flow.request_type
        if not isinstance(request, request_type):
            raise ValidationError(
                "request", f"must be a {request_type.__name__} for {self.provider}"
            )
        params, order_id = _recorded(key, request)  # the key is checked above
        return key, self.ledger.params_hash(params), params, order_id

    async def _pay_within(
        self,
        wait: float,
        key: str,
        digest: str,
        params: dict[str, Any],
        order_id: str | None,
        request: Request | None,
    ) -> PayoutResult:
        """``pay()`` that returns by ``wait`` seconds from now, leaving the drive to go on
        in a task this ``Payouts`` owns."""
        deadline = asyncio.get_running_loop().time() + wait
        drive = asyncio.create_task(
            self._pay_checked(key, digest, params, order_id, request), name=f"payout {key}"
        )
        self._driven.add(drive)
        drive.add_done_callback(self._driven_ended)
        # Leave time to read the row once the wait is over (at most a second).
        done, _ = await asyncio.wait([drive], timeout=max(0.0, wait - min(1.0, wait / 4)))
        if done:
            return drive.result()
        try:
            async with asyncio.timeout_at(deadline):
                record = await self.ledger.get(self.provider, key)
        except (TimeoutError, LedgerError) as error:
            return PayoutResult(
                key=key,
                status=PayoutStatus.PROCESSING,
                provider=self.provider,
                order_id=order_id,
                reason=f"under way; its row could not be read in time ({type(error).__name__})",
            )
        if record is None:  # the intent is still being recorded
            return PayoutResult(
                key=key, status=PayoutStatus.PROCESSING, provider=self.provider, order_id=order_id
            )
        return PayoutResult.from_record(record, reason=record.reason or "under way")

    def _driven_ended(self, drive: asyncio.Task[PayoutResult]) -> None:
        self._driven.discard(drive)
        error = None if drive.cancelled() else drive.exception()
        if error is not None and not isinstance(error, IdempotencyConflictError):
            logger.error("payout driven in the background failed: %r", error)

    async def _pay_checked(
        self,
        key: str,
        digest: str,
        params: dict[str, Any],
        order_id: str | None,
        request: Request | None = None,
    ) -> PayoutResult:
        since = self._registered
        while (joined := self._in_flight.get(key)) is not None:
            if joined.params_hash != digest:
                raise IdempotencyConflictError(key)
            outcome = await _outcome_of(joined.result)
            if outcome is not None and joined.answers(since):
                return outcome
            # The drive it joined was cancelled (its lease is given back), or it
            # deferred on a reading older than this call: go on, and begin anew.
        with self._driving(key, digest) as drive:
            return drive.finish(
                await self._begin_and_drive(drive, key, digest, params, order_id, request)
            )

    def _driving(self, key: str, digest: str) -> _InFlight:
        """Register this task as the one drive of ``key`` here while the body runs;
        joiners see its result, or its cancellation."""
        self._registered += 1
        return _InFlight(self._in_flight, key, digest, self._registered)

    async def _begin_and_drive(
        self,
        drive: _InFlight,
        key: str,
        digest: str,
        params: dict[str, Any],
        order_id: str | None,
        request: Request | None = None,
    ) -> PayoutResult:
        take_over: tuple[str, ...] = ()
        looked_again = False
        while True:
            try:
                claim = await self._begin(key, digest, params, order_id, take_over)
            except LedgerError as error:  # nothing sent; the intent not (surely) recorded
                return PayoutResult.not_started(key, self.provider, error)
            if claim.created:
                told = self._observer.transitioned(None, claim.record, "intent recorded")
                if told is not None:
                    await told  # on_transition
            if claim.claimed:
                return await self._drive(claim, time.monotonic(), request=request)
            holder = claim.record.lease_owner
            if holder == self.owner and (held := self._held.get(key)) is not None:
                # resume(), reconcile() or a worker of this Payouts holds the row: its
                # drive is this payout's.
                outcome = await _outcome_of(held)
                if outcome is not None:
                    return outcome
                continue  # that drive was cancelled and gives the row back: begin again
            if holder == self.owner and (handing_back := self._handing_back.get(key)) is not None:
                # A pay() of this key here, cancelled while its claim was being made,
                # gives it back once made: nobody drives the row until then.
                await asyncio.wait([handing_back])
                continue
            if holder == self.owner and not looked_again:
                # Leased to this Payouts, yet none of its drives has the row (they are
                # all asked above): a hand-back may have ended while this begin's
                # answer waited to be read. Ask once more; a lease still held is a
                # drive's that has not registered yet (resume's claim), not taken over.
                looked_again = True
                continue
            if take_over or claim.record.state not in ACTIVE_STATES or holder is None:
                break
            if not owner_is_dead(holder):
                break
            take_over = (holder,)  # provably ended (this host, boot and PID namespace)
        reason = _busy_reason(claim.record)
        drive.deferred = reason is not None
        if reason is None:
            reason = _paid_elsewhere(claim.record, self._flow.account())
        return PayoutResult.from_record(claim.record, reason=reason)

    def _begin(
        self,
        key: str,
        digest: str,
        params: dict[str, Any],
        order_id: str | None,
        take_over: tuple[str, ...],
    ) -> Awaitable[Claim]:
        """The ledger's ``begin``, which finishes once started: in a task of its own
        (shielded; should this task be cancelled meanwhile, the claim's lease is handed
        back once it is made) -- unless nothing in it awaits, so that no cancellation
        can cut it short (``MemoryLedger``'s own: then no task is needed)."""
        begin = self.ledger.begin(
            self.provider,
            key,
            digest,
            params,
            owner=self.owner,
            lease_seconds=self._settings.lease_seconds,
            order_id=order_id,
            take_over=take_over,
            sending=self._flow.begins_sending(),
            switch_provider=self._switch_provider,
            provider_account=self._flow.account(),
        )
        if getattr(type(self.ledger), "begin", None) is MemoryLedger.begin:
            return begin  # (read off the class: a proxy's __getattr__ is no MemoryLedger)
        return self._begin_shielded(key, begin)

    async def _begin_shielded(self, key: str, begin: Coroutine[Any, Any, Claim]) -> Claim:
        begun = asyncio.ensure_future(begin)
        try:
            return await asyncio.shield(begun)
        except asyncio.CancelledError:
            # The intent is being recorded anyway; hand its lease back once it is, so
            # that resume() (here or in another worker) can finish the payout at once.
            releasing = asyncio.ensure_future(self._release_when_begun(begun))
            self._background.add(releasing)
            self._handing_back[key] = releasing
            releasing.add_done_callback(functools.partial(self._handed_back, key))
            raise

    def _handed_back(self, key: str, releasing: asyncio.Future[None]) -> None:
        self._background.discard(releasing)
        if self._handing_back.get(key) is releasing:
            del self._handing_back[key]

    async def _release_when_begun(self, begin: asyncio.Future[Claim]) -> None:
        try:
            claim = await begin
        except Exception:
            return
        if claim.claimed:
            await self._release(claim)

    async def _drive(
        self,
        claim: Claim,
        claimed_after: float,
        *,
        reopen: bool = False,
        request: Request | None = None,
    ) -> PayoutResult:
        """Drive a claimed row until it is final or waits on the provider, then give
        its lease back. ``claimed_after``: the monotonic time the claim had surely
        committed by. ``reopen``: it is a parked row that ``reconcile()`` retries.
        ``request``: the row's request, when ``pay()`` has it (see ``Flow.drive``)."""
        run = Run(
            self.ledger,
            claim,
            lease_seconds=self._settings.lease_seconds,
            request_timeout=self._request_timeout,
            claimed_after=claimed_after,
            heartbeats=self._heartbeats,
            before_send=self._before_send,
            observer=self._observer,
        )
        try:
            async with run.heartbeat():
                if claim.record.untrusted is not None:
                    # Altered outside payout-async, or unreadable: never sent (DESIGN 14).
                    await run.give_up(claim.record.untrusted)
                    return PayoutResult.from_record(run.record)
                if reopen:
                    await self._reopen(run)
                await self._flow.drive(run, request)
        except LeaseLostError:
            # Another drive has the row now (or a webhook settled it): report the row.
            latest = await self.ledger.get(self.provider, run.record.key)
            return PayoutResult.from_record(latest or run.record)
        except BaseException:
            await run.release_quietly()  # the error (or cancellation) is what matters
            raise
        if not run.released:  # (its last move gives the lease back, as a rule)
            await run.release()
        return PayoutResult.from_record(run.record)

    async def pay_many(
        self,
        items: Iterable[tuple[str, Request]] | AsyncIterable[tuple[str, Request]],
        *,
        concurrency: int = 32,
    ) -> AsyncIterator[PayoutResult]:
        """Pay ``(key, request)`` pairs with at most ``concurrency`` in flight,
        yielding each result as it finishes. A payout that fails never stops the
        others: bad input comes back as a ``REJECTED`` result, a payout whose intent
        the ledger could not record as ``NOT_STARTED``, any other error as
        ``NEEDS_ATTENTION`` -- even when reading the ledger about it fails too.

        Only a failure of ``items`` itself ends the batch with an exception -- and, before
        any payout, a ledger this deployment may not write to (``ConfigurationError``:
        one a newer payout-async has written to, a file it may not create): every
        payout would fail alike, nothing recorded. The batch
        never outlives its caller: when it ends early (that exception, the caller
        cancelled or breaking out of the loop) the payouts in flight are cancelled --
        their rows wait for ``resume()`` -- and awaited before ``pay_many`` returns or
        raises. After a ``break``, that clean-up starts as soon as the iterator is
        dropped; to wait for it, close it: ``async with
        contextlib.aclosing(payouts.pay_many(items)) as results: ...``.
        """
        if concurrency < 1:
            raise ValidationError("concurrency", "must be at least 1")
        with contextlib.suppress(LedgerError):  # an outage: each payout's NOT_STARTED
            await self.ledger.open()
        source = _Items(items)
        # Results, and each worker once it has ended.
        results: asyncio.Queue[PayoutResult | asyncio.Task[None]] = asyncio.Queue()
        room = asyncio.Semaphore(concurrency * 2)  # results not yet taken by the caller

        stopping = False

        async def worker() -> None:
            while True:
                item = None if stopping else await source.take()
                if item is None:  # the source is exhausted (its own error ends the batch)
                    return
                key, request = _pair(item)
                result = await self._pay_one(key, request)
                if stopping:  # cancelled, though something swallowed the cancellation
                    return
                await room.acquire()
                results.put_nowait(result)

        workers = [
            asyncio.create_task(worker(), name=f"pay_many worker {n}") for n in range(concurrency)
        ]
        for task in workers:
            task.add_done_callback(results.put_nowait)
        running = len(workers)
        try:
            while running:
                result = await results.get()
                if isinstance(result, PayoutResult):
                    room.release()
                    yield result
                    continue
                running -= 1  # that worker ended: look at it alone (not at all of them)
                failure = None if result.cancelled() else result.exception()
                if failure is not None:
                    raise failure
        finally:
            stopping = True
            await _stop(workers)

    async def _pay_one(self, key: str, request: Request) -> PayoutResult:
        """``pay()`` for ``pay_many``: whatever goes wrong becomes this payout's result
        (and once one of its ledger calls has waited in vain, its next ones wait less).
        One coroutine, not three: one lives for each payout in flight."""
        with one_payout():
            try:
                self._in_this_loop()
            except ConfigurationError as error:  # nothing recorded
                return PayoutResult.not_started(str(key), self.provider, error)
            try:
                checked = self._checked(key, request)
                return await self._pay_checked(*checked, request)
            except (ValidationError, IdempotencyConflictError) as error:
                return PayoutResult(
                    key=str(key),
                    status=PayoutStatus.REJECTED,
                    provider=self.provider,
                    reason=str(error),
                )
            except Exception as error:
                if _being_cancelled():  # a failed clean-up hid the cancellation: end here
                    raise asyncio.CancelledError from error
                if isinstance(error, LedgerError):  # the ledger is down or locked
                    logger.warning("payout %s: %s", key, error)
                else:
                    logger.exception("payout %s failed unexpectedly", key)
                return await self._attention(str(key), error)

    async def _attention(self, key: str, error: BaseException) -> PayoutResult:
        """The result of a payout that failed with ``error``, as the ledger holds it
        now: ``NOT_STARTED`` when it has no row (the intent is recorded before anything
        is sent, so nothing was), the row's own result when it is final, else
        ``NEEDS_ATTENTION`` with the row -- or without it, when the ledger cannot be
        read either. Never raises."""
        reason = f"{type(error).__name__}: {error}"
        try:
            record = await self.ledger.get(self.provider, key)
        except Exception as read_error:
            logger.warning("could not read payout %s back from the ledger: %s", key, read_error)
            return PayoutResult(
                key=key,
                status=PayoutStatus.NEEDS_ATTENTION,
                provider=self.provider,
                reason=f"{reason}; the ledger could not be read either "
                f"({type(read_error).__name__}: {read_error})",
            )
        if record is None:
            return PayoutResult.not_started(key, self.provider, error)
        if record.state.is_final:  # settled after all (a webhook, say): that is the news
            return PayoutResult.from_record(record)
        return attrs.evolve(
            PayoutResult.from_record(record), status=PayoutStatus.NEEDS_ATTENTION, reason=reason
        )

    async def enqueue(self, items: Iterable[tuple[str, Request]]) -> list[Enqueued]:
        """Record ``(key, request)`` pairs for workers (``run_worker``, in this process
        or others sharing the ledger) to pay, and send nothing.

        Each intent is recorded as ``pay()`` records it, but leased to nobody, in a
        few transactions, and idle workers are woken. One ``Enqueued`` per item, in
        order: ``NEW``; ``EXISTING`` (the key is there with these parameters: left as
        it is, so enqueueing again changes nothing); ``AGAIN`` (a refused payout,
        recorded again to be sent); ``CONFLICT`` (the key is there with other
        parameters, or its Enot order_id belongs to another key: nothing recorded). A
        bad key or request raises ``ValidationError`` before anything is recorded."""
        intents = [self._intent(*_pair(item)) for item in items]
        return await self.ledger.enqueue(
            self.provider, intents, switch_provider=self._switch_provider
        )

    def _intent(self, key: str, request: Request) -> Intent:
        request_type = self._flow.request_type
        if not isinstance(request, request_type):
            raise ValidationError(
                "request", f"must be a {request_type.__name__} for {self.provider}"
            )
        return intent_for(key, request)

    async def run_worker(
        self,
        *,
        stop: asyncio.Event,
        concurrency: int = 32,
        shutdown_grace: float = 10.0,
        idle_poll: float = 5.0,
        on_result: Callable[[PayoutResult], None] | None = None,
        balance_poll: float = 60.0,
    ) -> WorkerSummary:
        """Pay this provider's payouts from the ledger until ``stop`` is set: pending
        rows (``enqueue``) and stranded ones, at most ``concurrency`` at a time, each
        driven as ``resume()`` drives it. Run it in as many processes and hosts as the
        ledger allows (PostgreSQL: any number); they share the work.

        With nothing to do it sleeps until an ``enqueue`` wakes it (PostgreSQL:
        ``LISTEN/NOTIFY``, from any process; SQLite: within half a second) and looks
        anyway every ``idle_poll`` seconds, for rows whose lease ran out.

        Once ``stop`` is set it claims nothing more and starts no money-moving
        request; a drive whose request is in flight goes on until it records the
        outcome or ``shutdown_grace`` seconds pass, the others stop at once where they
        stand. Every lease is given back, so other workers go on with those rows at
        once (looking up first any whose last request's outcome is unknown), and the
        call returns a ``WorkerSummary``. ``on_result`` is called with each payout
        whose drive ended. Cancelling the call stops every drive at once.

        A refusal for want of money (IntellectMoney's ``NotEnoughMoney``, Enot's
        "insufficient funds") pauses this provider in the ledger, for every worker
        sharing it (``payouts._pause_gate``): none claims its rows or sends it anything
        until the pause is lifted -- by a worker whose balance read (Enot, every
        ``balance_poll`` seconds) covers a refused payout, or by the operator
        (``payout-async funds resume``); the rows so refused are then paid again, once.
        """
        self._in_this_loop()
        worker = Worker(
            self,
            lease_seconds=self._settings.lease_seconds,
            concurrency=concurrency,
            shutdown_grace=shutdown_grace,
            idle_poll=idle_poll,
            on_result=on_result,
            balance_poll=balance_poll,
        )
        return await worker.run(stop)

    def _hold(self, claim: Claim) -> None:
        """Register ``claim`` as driven by this ``Payouts`` from now on (``resume()``,
        ``reconcile()``, a worker), before its drive starts: a ``pay()`` of its key
        here that finds the row leased to this ``Payouts`` waits for that drive."""
        future: asyncio.Future[PayoutResult] = asyncio.get_running_loop().create_future()
        self._held[claim.record.key] = future

    async def _drive_claimed(self, claim: Claim, claimed_after: float) -> PayoutResult:
        """Drive one row claimed for this ``Payouts`` (registered with ``_hold``): the
        step of ``resume()``, ``reconcile()`` and the worker. A failure becomes its
        result; a cancellation gives the row back."""
        key = claim.record.key
        held = self._held.get(key)
        try:
            if key in self._in_flight:
                # A pay() of this key here: it waits for this drive (``_held``), or it
                # drives on a lease that has lapsed, and the fence stops it.
                result = await self._drive_or_report(claim, claimed_after)
            else:
                # The digest a pay() of these parameters computes, for joiners.
                digest = self.ledger.params_hash(claim.record.params)
                with self._driving(key, digest) as drive:
                    result = drive.finish(await self._drive_or_report(claim, claimed_after))
        except BaseException:
            if held is not None:
                held.cancel()
            raise
        finally:
            if held is not None and self._held.get(key) is held:
                del self._held[key]
        if held is not None:
            held.set_result(result)
        return result

    async def _drive_or_report(self, claim: Claim, claimed_after: float) -> PayoutResult:
        key = claim.record.key
        try:
            reopen = claim.record.state in PARKED_STATES
            return await self._drive(claim, claimed_after, reopen=reopen)
        except Exception as error:
            if isinstance(error, LedgerError):  # the ledger is down or locked
                logger.warning("payout %s: %s", key, error)
            else:
                logger.exception("driving payout %s failed", key)
            return await self._attention(key, error)

    async def resume(self, *, concurrency: int = 32, batch: int = 200) -> list[PayoutResult]:
        """Finish every non-final row whose lease is free or expired -- rows stranded
        by a crash, a cancelled ``pay()``, a poll deadline or a dead worker -- and rows
        leased to processes of this host that no longer exist (taken over at once).
        Each row is driven at most once per call, so the call ends; the rows still
        ``processing`` are returned as such."""
        dead = [
            holder.owner
            for holder in await self.ledger.lease_holders(provider=self.provider)
            if owner_is_dead(holder.owner)
        ]
        return await self._drain(
            ACTIVE_STATES, concurrency=concurrency, batch=batch, dead_owners=dead
        )

    async def reconcile(self, *, concurrency: int = 32, batch: int = 200) -> list[PayoutResult]:
        """Try again to settle ``needs_attention`` rows from the step where they
        stopped (e.g. after credentials were fixed or the provider came back), and to
        pay rows the provider refused. Each row is tried at most once per call."""
        return await self._drain(PARKED_STATES, concurrency=concurrency, batch=batch)

    async def _drain(
        self,
        states: frozenset[LedgerState],
        *,
        concurrency: int,
        batch: int,
        dead_owners: Collection[str] = (),
    ) -> list[PayoutResult]:
        self._in_this_loop()
        results: list[PayoutResult] = []
        seen: set[str] = set()
        gate = asyncio.Semaphore(concurrency)

        async def drive(claim: Claim, claimed_after: float) -> PayoutResult:
            async with gate:
                return await self._drive_claimed(claim, claimed_after)

        while True:
            claims = await self.ledger.claim_stranded(
                owner=self.owner,
                lease_seconds=self._settings.lease_seconds,
                limit=batch,
                provider=self.provider,
                states=states,
                exclude=seen,
                dead_owners=dead_owners,
            )
            claimed_after = time.monotonic()
            if not claims:
                return results
            for claim in claims:
                self._hold(claim)
                seen.add(claim.record.key)
            results.extend(await asyncio.gather(*(drive(claim, claimed_after) for claim in claims)))

    async def _release(self, claim: Claim) -> None:
        record = claim.record
        await shielded(
            self.ledger.release(
                self.provider, record.key, owner=self.owner, token=record.lease_token
            )
        )

    async def _reopen(self, run: Run) -> None:
        """Move a parked row back to a step it can go on from, as the row itself says
        (``Flow.reopen_at``: never the history, which may have been pruned), with a
        fresh budget of send attempts. A refused row starts over: nothing exists at
        the provider."""
        record = run.record
        if record.state is LedgerState.REFUSED:
            restart_at = LedgerState.PENDING
        else:
            restart_at = self._flow.reopen_at(record)
        run.attempts_before = record.attempts
        await run.move(restart_at, note="reconcile: trying again", reason=None)

    async def get(self, key: str) -> PayoutResult | None:
        """The payout recorded under ``key``, or None."""
        record = await self.ledger.get(self.provider, key)
        return None if record is None else PayoutResult.from_record(record)

    async def apply_webhook(self, webhook: PayoffWebhook) -> PayoutResult | None:
        """Record a verified Enot payoff webhook's final status (the callback for
        ``enot.webhook_handler(payouts.apply_webhook, additional_key)``).

        A webhook is evidence, not a command: it settles a row only if the row has sent
        a create and the webhook names what it sent -- amount, recipient, service, and
        the payoff id once the row knows it, and it was sent through the account whose
        key verified the webhook -- this ``Payouts``' client's: give ``webhook_handler``
        that account's additional key (``webhook_mismatch``). Any other one (say, another
        system's payoff under the same order_id on the same Enot account) is
        logged at WARNING and noted in the row's history, and the row keeps its state.
        Repeated and out-of-order deliveries are harmless: a final row is never
        changed, and a non-final status is ignored. The delivery that settles the row
        is logged and reported to ``on_transition`` (note ``"webhook"``) like any other
        transition; a failure's ``reason`` says the webhook reported it. Returns the
        row, or None when nothing was recorded (an unknown order, a status that is not
        final, or a webhook that does not match the row)."""
        if self.provider != "enot":
            raise ConfigurationError("webhooks are an Enot feature")
        final = {PayoffStatus.SUCCESS: LedgerState.SUCCEEDED, PayoffStatus.FAIL: LedgerState.FAILED}
        state = final.get(webhook.status)
        if webhook.order_id is None or state is None:
            return None
        row = await self.ledger.find_order(self.provider, webhook.order_id)
        if row is None:
            return None
        if row.state.is_final:
            return PayoutResult.from_record(row)
        status = webhook.raw_status or webhook.status.value
        mismatch = webhook_mismatch(row, webhook, self._flow.account())
        if mismatch is not None:
            logger.warning(
                "payout %s (%s): a verified %s webhook for order %s was not applied: %s",
                row.key,
                row.state.value,
                status,
                webhook.order_id,
                mismatch,
            )
            await self.ledger.note(self.provider, row.key, f"webhook ignored: {mismatch}")
            return None
        settled = await self.ledger.settle_order(
            self.provider,
            webhook.order_id,
            state=state,
            provider_status=status,
            note="webhook",
            # A webhook names no cause; polling would record the provider's status too.
            reason=f"{status} (reported by webhook)" if state is LedgerState.FAILED else None,
            params_hash=row.params_hash,  # the row checked above, unchanged since
        )
        if settled is None:
            return None
        record = settled.record
        if settled.moved_from is not None:  # this delivery settled it: log + on_transition
            told = self._observer.transitioned(settled.moved_from, record, "webhook")
            if told is not None:
                await told  # on_transition
        self._webhook_waits.settled(record)  # a pay() waiting for it (webhook_wait) ends
        return PayoutResult.from_record(record)


def _check_settings(
    client: object,
    grace: float,
    lease_seconds: float,
    execute_settle: float,
    max_send_attempts: int,
) -> None:
    if not isinstance(client, IntellectMoneyClient | EnotClient):
        raise ConfigurationError("client must be an IntellectMoneyClient or an EnotClient")
    if type(max_send_attempts) is not int or max_send_attempts < 1:
        raise ConfigurationError("max_send_attempts must be a whole number of at least 1")
    for name, value in (
        ("grace", grace),
        ("lease_seconds", lease_seconds),
        ("execute_settle", execute_settle),
    ):
        if not math.isfinite(value) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds")
    needed = in_flight_bound(_request_timeout(client), lease_seconds)
    if lease_seconds <= needed:
        raise ConfigurationError(
            f"lease_seconds must exceed the client's total timeout plus a margin "
            f"({needed:g}s): the lease must outlive every money-moving request"
        )


def _check_webhook_wait(client: object, webhook_wait: float) -> None:
    if not math.isfinite(webhook_wait) or webhook_wait < 0:
        raise ConfigurationError("webhook_wait must be zero or a positive number of seconds")
    if webhook_wait and not isinstance(client, EnotClient):
        raise ConfigurationError("webhook_wait is for Enot: IntellectMoney sends no webhooks")


def _request_timeout(client: IntellectMoneyClient | EnotClient) -> float:
    total = client.timeouts.total
    if total is None:
        raise ConfigurationError(
            "the client needs a total timeout: money-moving requests are fenced by it"
        )
    return total


async def _outcome_of(drive: asyncio.Future[PayoutResult]) -> PayoutResult | None:
    """The result of another drive of the same payout, waited for without cancelling
    it; None when that drive was cancelled (and gives its row back) but this caller
    was not."""
    try:
        return await asyncio.shield(drive)
    except asyncio.CancelledError:
        if not drive.cancelled() or _being_cancelled():
            raise  # this caller was cancelled (perhaps together with that drive)
        return None


def _busy_reason(record: PayoutRecord) -> str | None:
    """Why an unclaimed row was not driven now, when it is still under way."""
    if record.state not in ACTIVE_STATES or record.lease_owner is None:
        return None
    until = ""
    if record.lease_expires_at is not None:
        until = " until " + time.strftime("%H:%M:%S", time.localtime(record.lease_expires_at))
    return f"in progress in another drive (leased to {record.lease_owner}{until})"


def _paid_elsewhere(record: PayoutRecord, account: str | None) -> str | None:
    """Why a payout found ``succeeded`` deserves a word: it was paid through another
    account than this client's -- a sandbox's, say, whose "success" paid nobody."""
    paid_by = other_account(record, account)
    if paid_by is None or record.state is not LedgerState.SUCCEEDED:
        return None
    return f"paid through account {paid_by}, not this client's ({account})"


class _Items:
    """``pay_many``'s items, taken one at a time by its workers: a plain iterable
    straight from its iterator (nothing awaits in between, so no lock), an async one
    under a lock (an async generator must not be advanced twice at once)."""

    def __init__(self, items: Iterable[Item] | AsyncIterable[Item]) -> None:
        self._lock = asyncio.Lock()
        self._async: AsyncIterator[Item] | None = None
        self._sync: Iterator[Item] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        else:
            self._sync = iter(items)

    async def take(self) -> Item | None:
        """The next item; None once there is none."""
        if self._sync is not None:
            return next(self._sync, None)
        assert self._async is not None
        async with self._lock:
            return await anext(self._async, None)


def _pair(item: Any) -> tuple[str, Any]:
    try:
        key, request = item
    except (TypeError, ValueError):
        raise ValidationError("items", "each item must be a (key, request) pair") from None
    return key, request


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended (``cancel_and_wait``: a task
    that swallowed its cancellation, or whose clean-up waits on the ledger, is
    cancelled again; shielded writes finish on their own); then pass on a
    cancellation of the caller."""
    cancelled = await cancel_and_wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was raised by pay_many or is moot
    if cancelled:
        raise asyncio.CancelledError
