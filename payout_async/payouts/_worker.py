"""``Payouts.run_worker``: drain the ledger's pending and stranded rows, any number of
workers at once, and give every row back when told to stop.

A worker claims as many rows as it has free slots (``claim_stranded``: pending rows
nobody holds, rows whose lease ran out, rows of dead processes of this host; with
PostgreSQL's ``FOR UPDATE SKIP LOCKED`` concurrent workers take disjoint rows), drives
each through ``Payouts`` with a lease of its own, as ``resume()`` does, and claims again
as drives end. When the ledger has nothing for it, it sleeps on the ledger's listener
(``LISTEN/NOTIFY`` on PostgreSQL) and looks again at most every ``idle_poll`` seconds
-- for rows whose lease has run out, which nobody announces.

Stopping keeps every payout exactly once. From the moment ``stop`` is set no row is
claimed and no drive starts a money-moving step (it would have to record it first, and
that transition is refused: nothing is written, nothing sent). A drive whose
money-moving request may be in flight goes on until it records the outcome -- its
next recovery point -- or ``shutdown_grace`` runs out; every other drive is stopped at
once, at the recovery point it stands at. Each stopped drive gives its lease back, so
other workers take its row up at once, and from where it stopped: a row whose last
request's outcome is unknown (``sending``, ``executing``) is looked up before anything
is sent again, with the Enot grace period and the IntellectMoney settle window counted
from the takeover (the stopped drive can send nothing more).

Money running out pauses the provider for every worker of the ledger
(``payouts._pause_gate``): a drive whose payout the provider refused for want of money
records the pause; from then on no worker claims the provider's rows but those whose
money has moved (``processing``: they are polled to their final state), and a drive
about to start a money-moving request reads the pause first and, paused, stops there as
it does when stopping (nothing written, nothing sent; its row given back). A paused worker
resumes when the pause is lifted -- by its balance read (Enot) or the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol, cast

import attrs

from .._errors import ValidationError
from .._shield import shielded
from ..enot import EnotClient
from ..ledger import (
    ACTIVE_STATES,
    Claim,
    Ledger,
    LedgerError,
    LedgerState,
    PayoutRecord,
    WorkListener,
)
from ..ledger._rotate import check_keys
from ._funds import available_balance, refused_for_funds
from ._owner import owner_is_dead
from ._pause_gate import BalanceProbe, PauseGate
from ._result import PayoutResult, PayoutStatus
from ._tasks import cancel_and_wait

__all__ = ["Drives", "Worker", "WorkerSummary"]

logger = logging.getLogger("payout_async")

#: Seconds before a row this worker left unfinished (still processing at the poll
#: deadline, or its drive failed) is claimed by it again; other workers may sooner.
RETRY_UNFINISHED = 30.0
_FIRST_PAUSE = 0.5  # after a ledger failure; doubles up to ``idle_poll``
#: Rows whose money has moved: a paused provider's workers still follow them.
_PAID = frozenset({LedgerState.PROCESSING})

OnResult = Callable[[PayoutResult], None]


class Drives(Protocol):
    """What a worker needs of ``Payouts``: its ledger, provider and owner, and driving
    one claimed row as ``resume()`` does."""

    ledger: Ledger
    provider: str
    owner: str

    def _hold(self, claim: Claim) -> None: ...

    async def _drive_claimed(self, claim: Claim, claimed_after: float) -> PayoutResult: ...


@attrs.frozen
class WorkerSummary:
    """What one ``run_worker`` call did.

    ``statuses`` counts the payouts it drove by their status when its drive ended
    (``processing``: still under way at the provider; it or another worker goes on
    following it); ``handed_back`` is how many rows it gave back unfinished when it
    stopped, for other workers (or the next run) to finish.
    """

    provider: str
    owner: str
    statuses: Mapping[PayoutStatus, int]
    handed_back: int

    @property
    def driven(self) -> int:
        """Payouts whose drive ended with a result."""
        return sum(self.statuses.values())


class _StoppingLedger:
    """The ledger as a worker's drives see it. Once ``stopping``, a transition that
    starts a money-moving request (``add_attempt``) is refused before anything is
    written, and any other transition stops its drive once it has been written (the
    row stands at a recovery point). ``sending`` holds the keys whose money-moving
    request may be in flight: recorded, and no outcome recorded since."""

    def __init__(self, ledger: Ledger, gate: PauseGate | None = None) -> None:
        self.ledger = ledger
        self.gate = gate
        self.stopping = False
        self.sending: set[str] = set()
        #: Rows a drive has made final (its task may still be on its way out).
        self.final: dict[str, PayoutRecord] = {}
        #: Transitions under way: one whose drive was cancelled goes on to the end.
        self.writing: set[asyncio.Future[PayoutRecord]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    def __repr__(self) -> str:
        return repr(self.ledger)

    async def transition(
        self, provider: str, key: str, *, add_attempt: bool = False, **arguments: Any
    ) -> PayoutRecord:
        """``Ledger.transition``, refused or followed by a stop once stopping."""
        if add_attempt:
            if self.stopping or await self._paused() or self.stopping:
                raise asyncio.CancelledError  # nothing written, nothing will be sent
            self.sending.add(key)
        write = asyncio.ensure_future(
            self.ledger.transition(provider, key, add_attempt=add_attempt, **arguments)
        )
        self.writing.add(write)
        write.add_done_callback(functools.partial(self._written, key))
        # Every ledger finishes a transition it has started, even when its caller is
        # cancelled; a final one that lands after its drive was stopped still counts.
        record = await asyncio.shield(write)
        if self.gate is not None and refused_for_funds(record):
            self.gate.refused(record)
        if not add_attempt:
            self.sending.discard(key)
            if self.stopping and not record.state.is_final:
                raise asyncio.CancelledError  # a recovery point: stop here
        return record

    async def _paused(self) -> bool:
        """Whether the provider is paused now (``payouts._pause_gate``); a ledger that
        cannot tell counts as paused: the drive stops, nothing sent."""
        if self.gate is None:
            return False
        try:
            return await self.gate.paused()
        except LedgerError as error:
            logger.warning("could not read whether %s is paused: %s", self.ledger, error)
            return True

    def _written(self, key: str, write: asyncio.Future[PayoutRecord]) -> None:
        self.writing.discard(write)
        if not write.cancelled() and write.exception() is None and write.result().state.is_final:
            self.final[key] = write.result()

    async def settled(self) -> None:
        """Wait for the transitions under way (stopped drives' among them)."""
        while self.writing:
            await asyncio.gather(*self.writing, return_exceptions=True)


@attrs.define
class _Drive:
    claim: Claim
    task: asyncio.Task[PayoutResult]


class Worker:
    """One ``run_worker`` call (see ``Payouts.run_worker``)."""

    def __init__(
        self,
        payouts: Drives,
        *,
        lease_seconds: float,
        concurrency: int,
        shutdown_grace: float,
        idle_poll: float,
        on_result: OnResult | None,
        balance_poll: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValidationError("concurrency", "must be at least 1")
        if not (math.isfinite(shutdown_grace) and shutdown_grace >= 0):
            raise ValidationError("shutdown_grace", "must be a number of seconds, 0 or more")
        if not (math.isfinite(idle_poll) and idle_poll > 0):
            raise ValidationError("idle_poll", "must be a positive number of seconds")
        if not (math.isfinite(balance_poll) and balance_poll > 0):
            raise ValidationError("balance_poll", "must be a positive number of seconds")
        self._ledger = payouts.ledger
        self._provider = payouts.provider
        self._owner = payouts.owner
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self._shutdown_grace = shutdown_grace
        self._idle_poll = idle_poll
        self._on_result = on_result
        # The drives run on a twin of ``payouts`` (the same client, owner and in-flight
        # table) that sees the ledger through ``_StoppingLedger``.
        self._gate = PauseGate(
            payouts.ledger,
            payouts.provider,
            payouts.owner,
            balance=_balance_probe(payouts),
            balance_poll=balance_poll,
        )
        self._view = _StoppingLedger(payouts.ledger, self._gate)
        self._driver: Drives = copy.copy(payouts)
        self._driver.ledger = cast(Ledger, self._view)
        self._drives: dict[asyncio.Task[PayoutResult], _Drive] = {}
        self._later: dict[str, float] = {}  # key -> monotonic time to claim it again
        self._dead: list[str] = []
        self._dead_checked = -math.inf
        self._claimed_after = 0.0  # when the latest claim had surely committed
        self._statuses: Counter[PayoutStatus] = Counter()
        self._handed_back = 0
        self._background: set[asyncio.Future[None]] = set()
        self._ended = asyncio.Event()  # a drive has ended since the loop last looked

    async def run(self, stop: asyncio.Event) -> WorkerSummary:
        """Work until ``stop`` is set, then stop cleanly (see the module docstring).
        ``LedgerKeyError`` before anything is claimed when live rows use ledger keys
        this worker lacks."""
        await check_keys(self._ledger)
        listener = await self._ledger.listen_for_work(self._provider)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await self._work(stopped, listener)
            await self._shut_down()
        except BaseException:
            await self._abandon()
            raise
        finally:
            stopped.cancel()
            await shielded(self._gate.settled())
            await listener.aclose()
        return WorkerSummary(
            provider=self._provider,
            owner=self._owner,
            statuses=dict(self._statuses),
            handed_back=self._handed_back,
        )

    # -- working ----------------------------------------------------------------------

    async def _work(self, stopped: asyncio.Future[Any], listener: WorkListener) -> None:
        pause = 0.0
        while not stopped.done():
            self._ended.clear()  # before reaping: a drive ending from now on sets it
            self._reap()
            paused = await self._paused()
            if paused is None:  # the ledger failed: look again later, not in a loop
                pause = min(max(pause * 2, _FIRST_PAUSE), self._idle_poll)
                await _until(stopped, asyncio.sleep(pause))
                continue
            if paused:  # the money ran out: send nothing until it is back
                await self._follow_paid(stopped)
                await self._wait_for_money(stopped, listener)
                continue
            free = self._concurrency - len(self._drives)
            if free == 0:  # busy: claim again when a drive ends
                await _until(stopped, self._ended.wait())
                continue
            claimed = await self._claim_and_drive(stopped, free, ACTIVE_STATES)
            if claimed is None:  # the ledger failed: look again later, not in a loop
                pause = min(max(pause * 2, _FIRST_PAUSE), self._idle_poll)
                await _until(stopped, asyncio.sleep(pause))
                continue
            pause = 0.0
            if claimed < free:  # nothing more to claim now: wait for work
                look_at = time.monotonic() + self._idle_poll
                if self._later:  # a row put off comes due
                    look_at = min(look_at, min(self._later.values()))
                await _until(stopped, listener.wait(max(look_at - time.monotonic(), 0.0)))

    async def _paused(self) -> bool | None:
        """Whether the provider is paused (None: the ledger could not say)."""
        try:
            return await self._gate.paused()
        except LedgerError as error:
            logger.warning("worker %s could not read the pauses: %s", self._owner, error)
            return None

    async def _follow_paid(self, stopped: asyncio.Future[Any]) -> None:
        """While paused: drive the rows whose money has moved (``processing``) to their
        final state -- polling sends no money. A drive that would move money again (an
        execute repeated after the settle window) reads the pause and stops there."""
        free = self._concurrency - len(self._drives)
        if free and not stopped.done():
            await self._claim_and_drive(stopped, free, _PAID)

    async def _claim_and_drive(
        self, stopped: asyncio.Future[Any], limit: int, states: frozenset[LedgerState]
    ) -> int | None:
        """Claim up to ``limit`` rows in ``states`` and drive each -- or, stopped
        meanwhile, give them back. How many were claimed; None when the ledger failed."""
        claims = await self._claim(limit, states)
        if claims is None:
            return None
        if stopped.done():
            await self._release_all(claims)
        else:
            for claim in claims:
                self._start(claim)
        return len(claims)

    async def _wait_for_money(self, stopped: asyncio.Future[Any], listener: WorkListener) -> None:
        """While paused: read the balance when due (it may lift the pause), else sleep
        until woken (``funds resume`` announces work), a drive ends, or ``idle_poll``."""
        try:
            if await self._gate.try_resume():
                return
        except LedgerError as error:
            logger.warning("worker %s could not resume %s: %s", self._owner, self._provider, error)
        due = self._gate.balance_due()
        wait = self._idle_poll if due is None else min(self._idle_poll, due)
        waits: list[Awaitable[Any]] = [listener.wait(wait)]
        if self._drives:  # its drives' ends are to be accounted for
            waits.append(self._ended.wait())
        await _until(stopped, _first(waits))

    async def _claim(self, limit: int, states: frozenset[LedgerState]) -> list[Claim] | None:
        """Up to ``limit`` rows in ``states`` for this worker, or None when the ledger
        failed."""
        try:
            dead = await self._dead_owners()
            now = time.monotonic()
            self._later = {key: at for key, at in self._later.items() if at > now}
            claiming = asyncio.ensure_future(
                self._ledger.claim_stranded(
                    owner=self._owner,
                    lease_seconds=self._lease_seconds,
                    limit=limit,
                    provider=self._provider,
                    states=states,
                    exclude=list(self._later),
                    dead_owners=dead,
                )
            )
            try:
                claims = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                self._release_when_claimed(claiming)  # rows it claims are given back
                raise
        except LedgerError as error:
            logger.warning("worker %s could not claim payouts: %s", self._owner, error)
            return None
        self._claimed_after = time.monotonic()
        return claims

    async def _dead_owners(self) -> list[str]:
        """Owners of live leases that are dead processes of this host (their rows are
        taken over at once, as ``resume()`` does); looked up every ``idle_poll``."""
        now = time.monotonic()
        if now - self._dead_checked >= self._idle_poll:
            holders = await self._ledger.lease_holders(provider=self._provider)
            self._dead = [holder.owner for holder in holders if owner_is_dead(holder.owner)]
            self._dead_checked = now
        return self._dead

    def _start(self, claim: Claim) -> None:
        self._driver._hold(claim)
        task = asyncio.create_task(
            self._driver._drive_claimed(claim, self._claimed_after),
            name=f"worker {self._provider} {claim.record.key}",
        )
        task.add_done_callback(self._drive_ended)
        self._drives[task] = _Drive(claim, task)

    def _drive_ended(self, task: asyncio.Task[PayoutResult]) -> None:
        self._ended.set()

    def _reap(self) -> None:
        """Account for the drives that have ended."""
        for task in [task for task in self._drives if task.done()]:
            drive = self._drives.pop(task)
            key = drive.claim.record.key
            self._view.sending.discard(key)
            final = self._view.final.pop(key, None)
            if task.cancelled():
                if final is None:
                    # Stopped by a stop (handed back), or by a pause (given back to
                    # be paid once the money is back: not a stop's hand-back).
                    self._handed_back += self._view.stopping
                    continue
                result = PayoutResult.from_record(final)  # stopped on its way out
            else:
                result = task.result()  # ``_drive_claimed`` turns every Exception into one
            self._statuses[result.status] += 1
            if result.state is None or result.state in ACTIVE_STATES:
                self._later[drive.claim.record.key] = time.monotonic() + RETRY_UNFINISHED
            if self._on_result is not None:
                self._on_result(result)

    # -- stopping ---------------------------------------------------------------------

    async def _shut_down(self) -> None:
        """Stop every drive at its next recovery point (see the module docstring) and
        give every lease back."""
        self._view.stopping = True
        for task, drive in self._drives.items():
            if drive.claim.record.key not in self._view.sending:
                task.cancel()
        if self._drives:
            await asyncio.wait(self._drives, timeout=self._shutdown_grace)
        await self._abandon()

    async def _abandon(self) -> None:
        """Cancel the drives still running, wait for them to end, and give back the
        lease of every drive that was cancelled (one cancelled before it ran has not
        released its row itself; a second release is a no-op)."""
        self._view.stopping = True
        drives = list(self._drives.values())
        interrupted = await cancel_and_wait([drive.task for drive in drives])
        await shielded(self._view.settled())  # a final write under way counts as driven
        stopped = [drive.claim for drive in drives if drive.task.cancelled()]
        self._reap()
        await self._release_all(stopped)
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if stopped:  # wake idle workers: these rows are free now
            with contextlib.suppress(LedgerError):
                await shielded(self._ledger.announce_work(self._provider))
        if interrupted:
            raise asyncio.CancelledError

    async def _release_all(self, claims: list[Claim]) -> None:
        await shielded(asyncio.gather(*(self._release(claim) for claim in claims)))

    async def _release(self, claim: Claim) -> None:
        record = claim.record
        try:
            await self._ledger.release(
                record.provider, record.key, owner=self._owner, token=record.lease_token
            )
        except LedgerError as error:  # its lease then runs out on its own
            logger.warning("could not give back the lease of %s: %s", record.key, error)

    def _release_when_claimed(self, claiming: asyncio.Future[list[Claim]]) -> None:
        async def release() -> None:
            try:
                claims = await claiming
            except Exception:
                return
            await self._release_all(claims)

        task = asyncio.ensure_future(release())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _balance_probe(payouts: Drives) -> BalanceProbe | None:
    """Reading the balance available, where the provider has a call for it (Enot)."""
    client = getattr(payouts, "client", None)
    if not isinstance(client, EnotClient):
        return None  # IntellectMoney documents no balance call: the operator resumes it

    async def probe() -> Decimal | None:
        return available_balance(await client.get_balance())

    return probe


async def _first(waits: list[Awaitable[Any]]) -> None:
    """Wait until one of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until(stopped: asyncio.Future[Any], waiting: Awaitable[Any]) -> None:
    """Wait for ``waiting`` or ``stopped``, whichever comes first."""
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({stopped, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
