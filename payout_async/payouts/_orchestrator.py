"""``Payouts``: the one place where a provider client and the ledger meet."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from decimal import Decimal
from typing import Any, Generic, TypeVar

import attrs

from .._errors import ConfigurationError, IdempotencyConflictError, ValidationError
from .._polling import PollPolicy
from ..enot import EnotClient, PayoffRequest, PayoffStatus, PayoffWebhook
from ..intellectmoney import IntellectMoneyClient, OperationRequest
from ..ledger import (
    ACTIVE_STATES,
    Claim,
    LeaseLostError,
    Ledger,
    LedgerError,
    LedgerNotWrittenError,
    LedgerState,
    PayoutRecord,
    params_hash,
)
from ._enot import EnotFlow
from ._intellectmoney import IntellectMoneyFlow
from ._result import PayoutResult, PayoutStatus, Settings
from ._run import Run

__all__ = ["Payouts", "order_id_for"]

logger = logging.getLogger("payout_async")

Request = TypeVar("Request", OperationRequest, PayoffRequest)
Item = tuple[str, Any]

_MAX_ORDER_ID = 255
_CANCEL_AGAIN_AFTER = 0.5  # seconds: see ``_stop``


def order_id_for(key: str) -> str:
    """The Enot ``order_id`` for an idempotency key: the key itself when it fits in
    255 characters, else ``sha256:`` and its digest. Deterministic, so a payoff whose
    create answer was lost can always be found again."""
    if 0 < len(key) <= _MAX_ORDER_ID:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _request_params(request: OperationRequest | PayoffRequest) -> dict[str, Any]:
    params: dict[str, Any] = attrs.asdict(request, recurse=False)
    return {
        name: str(value) if isinstance(value, Decimal) else value for name, value in params.items()
    }


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Payouts(Generic[Request]):
    """Pays each requested payout at most once and drives it to a known end.

    ``client`` is an ``IntellectMoneyClient`` or an ``EnotClient``; ``ledger`` is
    where intent and every step are written before the next network call. ``poll``
    bounds how long ``pay()`` follows a payout before returning ``processing``;
    ``reconcile`` is the Enot grace period in seconds ("not found" must hold that
    long after a lost create before the payoff is created again). Several
    ``Payouts`` may share one PostgreSQL ledger: each row is leased to one worker.
    """

    def __init__(
        self,
        client: IntellectMoneyClient | EnotClient,
        ledger: Ledger,
        *,
        poll: PollPolicy | None = None,
        reconcile: float = 60.0,
        lease_seconds: float = 120.0,
        max_send_attempts: int = 3,
        owner: str | None = None,
    ) -> None:
        settings = Settings(
            lease_seconds=lease_seconds, max_send_attempts=max_send_attempts, grace=reconcile
        )
        poll = poll or PollPolicy()
        if lease_seconds <= 0:
            raise ConfigurationError("lease_seconds must be positive")
        self._flow: IntellectMoneyFlow | EnotFlow
        if isinstance(client, IntellectMoneyClient):
            self._flow = IntellectMoneyFlow(client, settings, poll)
            self._request_type: type = OperationRequest
        elif isinstance(client, EnotClient):
            self._flow = EnotFlow(client, settings, poll)
            self._request_type = PayoffRequest
        else:
            raise ConfigurationError("client must be an IntellectMoneyClient or an EnotClient")
        self.client = client
        self.ledger = ledger
        self.provider = self._flow.provider
        self.owner = owner or _default_owner()
        self._settings = settings
        self._background: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"Payouts(provider={self.provider!r}, owner={self.owner!r}, ledger={self.ledger!r})"

    async def pay(self, key: str, request: Request) -> PayoutResult:
        """Pay ``request`` under idempotency ``key``, at most once.

        The same key returns the same payout and sends nothing new; the same key with
        other parameters raises ``IdempotencyConflictError``. Returns when the payout
        is final, needs attention, or is still ``processing`` at the poll deadline
        (``resume()`` finishes it later).
        """
        if not isinstance(key, str) or not key:
            raise ValidationError("key", "must be a non-empty string")
        if not isinstance(request, self._request_type):
            raise ValidationError(
                "request", f"must be a {self._request_type.__name__} for {self.provider}"
            )
        params = _request_params(request)
        order_id = None
        if isinstance(request, PayoffRequest):
            order_id = request.order_id or order_id_for(key)
            params["order_id"] = order_id
        begin = asyncio.ensure_future(
            self.ledger.begin(
                self.provider,
                key,
                params_hash(params),
                params,
                owner=self.owner,
                lease_seconds=self._settings.lease_seconds,
                order_id=order_id,
            )
        )
        try:
            claim = await asyncio.shield(begin)
        except LedgerNotWrittenError as error:
            return PayoutResult.not_started(key, self.provider, error)
        except asyncio.CancelledError:
            # The intent is being recorded anyway; hand its lease back once it is, so
            # that resume() (here or in another worker) can finish the payout at once.
            releasing = asyncio.ensure_future(self._release_when_begun(begin))
            self._background.add(releasing)
            releasing.add_done_callback(self._background.discard)
            raise
        if not claim.claimed:
            reason = None
            if claim.record.state in ACTIVE_STATES:
                reason = "in progress in another worker"
            return PayoutResult.from_record(claim.record, reason=reason)
        return await self._drive(claim.record, release=True)

    async def _release_when_begun(self, begin: asyncio.Future[Claim]) -> None:
        try:
            claim = await begin
        except Exception:
            return
        if claim.claimed:
            await self.ledger.release(self.provider, claim.record.key, owner=self.owner)

    async def _drive(
        self, record: PayoutRecord, *, release: bool, attempts_before: int = 0
    ) -> PayoutResult:
        run = Run(
            self.ledger,
            record,
            owner=self.owner,
            lease_seconds=self._settings.lease_seconds,
            attempts_before=attempts_before,
        )
        try:
            async with run.heartbeat():
                await self._flow.drive(run)
        except LeaseLostError:
            latest = await self.ledger.get(self.provider, record.key)
            return PayoutResult.from_record(latest or run.record)
        except BaseException:
            await run.release()
            raise
        if release and not run.record.state.is_final:
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

        Only a failure of ``items`` itself ends the batch with an exception. The batch
        never outlives its caller: when it ends early (that exception, the caller
        cancelled or breaking out of the loop) the payouts in flight are cancelled --
        their rows wait for ``resume()`` -- and awaited before ``pay_many`` returns or
        raises. After a ``break``, that clean-up starts as soon as the iterator is
        dropped; to wait for it, close it: ``async with
        contextlib.aclosing(payouts.pay_many(items)) as results: ...``.
        """
        if concurrency < 1:
            raise ValidationError("concurrency", "must be at least 1")
        source = _aiter(items)
        take = asyncio.Lock()
        # Results, and None each time a worker ends.
        results: asyncio.Queue[PayoutResult | None] = asyncio.Queue()
        room = asyncio.Semaphore(concurrency * 2)  # results not yet taken by the caller

        stopping = False

        async def worker() -> None:
            while True:
                async with take:
                    item = None if stopping else await anext(source, None)
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
            task.add_done_callback(lambda _: results.put_nowait(None))
        running = len(workers)
        try:
            while running:
                result = await results.get()
                if result is not None:
                    room.release()
                    yield result
                    continue
                running -= 1
                for task in workers:
                    failure = task.exception() if task.done() and not task.cancelled() else None
                    if failure is not None:
                        raise failure
        finally:
            stopping = True
            await _stop(workers)

    async def _pay_one(self, key: str, request: Request) -> PayoutResult:
        """``pay()`` for ``pay_many``: whatever goes wrong becomes this payout's result."""
        try:
            return await self.pay(key, request)
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
        is sent, so nothing was), else ``NEEDS_ATTENTION`` with the row -- or without
        it, when the ledger cannot be read either. Never raises."""
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
        return attrs.evolve(
            PayoutResult.from_record(record), status=PayoutStatus.NEEDS_ATTENTION, reason=reason
        )

    async def resume(self, *, concurrency: int = 32, batch: int = 200) -> list[PayoutResult]:
        """Finish every non-final row whose lease is free or expired: rows stranded by
        a crash, a cancelled ``pay()``, a poll deadline or a dead worker. Each row is
        driven once per call; the ones still ``processing`` are returned as such."""
        return await self._drain(ACTIVE_STATES, concurrency=concurrency, batch=batch)

    async def reconcile(self, *, concurrency: int = 32, batch: int = 200) -> list[PayoutResult]:
        """Try again to settle ``needs_attention`` rows from the step where they
        stopped (e.g. after credentials were fixed or the provider came back)."""
        return await self._drain(
            frozenset({LedgerState.NEEDS_ATTENTION}), concurrency=concurrency, batch=batch
        )

    async def _drain(
        self, states: frozenset[LedgerState], *, concurrency: int, batch: int
    ) -> list[PayoutResult]:
        results: list[PayoutResult] = []
        held: list[PayoutRecord] = []
        gate = asyncio.Semaphore(concurrency)

        async def drive(record: PayoutRecord) -> PayoutResult:
            async with gate:
                try:
                    attempts_before = 0
                    if record.state is LedgerState.NEEDS_ATTENTION:
                        record = await self._reopen(record)
                        attempts_before = record.attempts
                    return await self._drive(record, release=False, attempts_before=attempts_before)
                except Exception as error:
                    logger.exception("resuming payout %s failed", record.key)
                    return await self._attention(record.key, error)

        try:
            while True:
                claimed = await self.ledger.claim_stranded(
                    owner=self.owner,
                    lease_seconds=self._settings.lease_seconds,
                    limit=batch,
                    provider=self.provider,
                    states=states,
                )
                if not claimed:
                    return results
                held.extend(claimed)
                results.extend(await asyncio.gather(*(drive(record) for record in claimed)))
        finally:
            # Rows left processing stayed leased so that this pass saw each once.
            for record in held:
                await asyncio.shield(
                    self.ledger.release(self.provider, record.key, owner=self.owner)
                )

    async def _reopen(self, record: PayoutRecord) -> PayoutRecord:
        """Move a ``needs_attention`` row back to the step it stopped at (as its flow
        sees it: ``reopen_at``), with a fresh budget of send attempts."""
        history = await self.ledger.history(self.provider, record.key)
        previous = next(
            (
                step.from_state
                for step in reversed(history)
                if step.to_state is LedgerState.NEEDS_ATTENTION and step.from_state is not None
            ),
            LedgerState.PENDING,
        )
        if previous is LedgerState.NEEDS_ATTENTION:
            previous = LedgerState.PENDING
        return await self.ledger.transition(
            self.provider,
            record.key,
            owner=self.owner,
            state=self._flow.reopen_at(previous, record),
            lease_seconds=self._settings.lease_seconds,
            note="reconcile: trying again",
            reason=None,
            unknown_since=None,
        )

    async def get(self, key: str) -> PayoutResult | None:
        """The payout recorded under ``key``, or None."""
        record = await self.ledger.get(self.provider, key)
        return None if record is None else PayoutResult.from_record(record)

    async def apply_webhook(self, webhook: PayoffWebhook) -> PayoutResult | None:
        """Record a verified Enot payoff webhook's final status. Repeated and
        out-of-order deliveries are harmless: a final row is never changed, and a
        non-final status is ignored. Returns the row, or None when nothing was recorded
        (an unknown order, or a status that is not final)."""
        if self.provider != "enot":
            raise ConfigurationError("webhooks are an Enot feature")
        final = {PayoffStatus.SUCCESS: LedgerState.SUCCEEDED, PayoffStatus.FAIL: LedgerState.FAILED}
        state = final.get(webhook.status)
        if webhook.order_id is None or state is None:
            return None
        record = await self.ledger.settle_by_order_id(
            self.provider,
            webhook.order_id,
            state=state,
            provider_status=webhook.raw_status or webhook.status.value,
            note="webhook",
        )
        return None if record is None else PayoutResult.from_record(record)


async def _aiter(items: Iterable[Item] | AsyncIterable[Item]) -> AsyncIterator[Item]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


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
    """Cancel ``tasks`` and wait until every one has ended, even when cancelled
    meanwhile (as ``asyncio.TaskGroup`` does); then pass that cancellation on. A task
    still running after ``_CANCEL_AGAIN_AFTER`` seconds (a library swallowed the
    cancellation, or a clean-up waits on the ledger) is cancelled again: shielded
    writes finish on their own, the worker does not wait for them."""
    for task in tasks:
        task.cancel()
    cancelled = False
    while pending := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(pending, timeout=_CANCEL_AGAIN_AFTER)
        except asyncio.CancelledError:
            cancelled = True
        for task in pending:
            if not task.done():
                task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was raised by pay_many or is moot
    if cancelled:
        raise asyncio.CancelledError
