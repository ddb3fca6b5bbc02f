"""Group commit for ``PostgresLedger``'s hot writes -- ``begin``'s insert, ``transition``
and ``renew`` (``ledger._postgres_writes``): the writes that concurrent payouts queue
are written together, in one statement on one connection.

One writer task at a time takes whatever is queued when it is free (up to ``cap``
writes, never two for one key: a later write for a key already in the batch waits for
the next one), writes them with one statement, and hands every caller its own row (or
None: nothing was written for it). Nothing waits for a timer: a lone write is taken at once,
and writes queue up only while a batch is in flight.

A failure of the statement is every caller's: ``LedgerOutcomeUnknownError`` for each
when the statement was sent and its answer lost, ``LedgerNotWrittenError`` when it
certainly wrote nothing (``BoundedPool`` retries those within its budget). A broken
constraint (SQLSTATE class 23) may be one caller's doing: the batch is then written
again one write at a time, so that only that caller sees it; so is one that waited in
vain for a row lock (a row locked elsewhere all along), each write alone and side by
side, so that only the locked rows' callers fail.

Each caller waits at most its own budget (``Patience``, counted from when it queued). A
batch must end by the earliest deadline of its callers, so that each gets the
statement's own answer in time; if a caller's time runs out while its write is still
queued, the write is taken out (never sent) and the caller gets
``LedgerNotWrittenError``. A payout with less patience left (one whose ledger call ran
out already) does not cut the others' wait short: unless every caller in the batch is
such, the batch keeps the others' deadline, and that caller gets
``LedgerOutcomeUnknownError`` if its time runs out with the batch in flight. Whether
the batch got through or ran out counts for every payout in it. A caller that is
cancelled does not take its write back: the batch goes on, and the write lands (like a
shielded single statement).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from ._errors import LedgerError, LedgerNotWrittenError, LedgerOutcomeUnknownError
from ._patience import Patience, Strain

__all__ = ["CAP", "Batcher", "Pending"]

CAP = 256
# The server gave up waiting (for a row lock, or at ``statement_timeout``): not written.
_WAITED_IN_VAIN = frozenset({"55P03", "57014"})
V = TypeVar("V")


class Pending(Generic[V]):
    """One queued write: its row's ``key``, its ``values``, the caller's payout
    (``scope``), budget and deadline (on the loop's clock), and the caller's future."""

    __slots__ = ("budget", "deadline", "future", "key", "scope", "strained", "values")

    def __init__(
        self,
        key: Hashable,
        values: V,
        scope: Strain | None,
        budget: float,
        deadline: float,
        future: asyncio.Future[Any],
    ) -> None:
        self.key = key
        self.values = values
        self.scope = scope
        self.budget = budget
        self.deadline = deadline
        self.future = future
        self.strained = False


#: Writes a batch by a deadline (on the loop's clock): one result per write, in order.
#: Raises ``LedgerError`` for the whole batch, or the driver's error for a broken
#: constraint.
Write = Callable[[Sequence[Pending[V]], float], Awaitable[Sequence[Any]]]


class Batcher(Generic[V]):
    """Queues writes and writes them in batches through ``write`` (see the module
    docstring)."""

    def __init__(
        self,
        write: Write[V],
        patience: Patience,
        *,
        cap: int = CAP,
        is_integrity_error: Callable[[BaseException], bool],
    ) -> None:
        self._write = write
        self._patience = patience
        self._cap = cap
        self._is_integrity_error = is_integrity_error
        self._queue: deque[Pending[V]] = deque()
        self._flight: list[Pending[V]] = []
        self._until = 0.0  # the deadline of the batch in flight
        self._writer: asyncio.Task[None] | None = None
        # One timer for all the callers waiting (not one each): set while a batch is
        # in flight, for the earliest deadline of a write not answered yet.
        self._timer: asyncio.TimerHandle | None = None
        #: Batches written and writes in them (for tests and benchmarks).
        self.batches = 0
        self.writes = 0

    async def submit(self, key: Hashable, values: V) -> Any:
        """Queue a write and wait for its result (see the module docstring)."""
        loop = asyncio.get_running_loop()
        scope = self._patience.scope()
        budget = self._patience.budget(scope)
        deadline = loop.time() + budget
        pending = Pending(key, values, scope, budget, deadline, loop.create_future())
        pending.strained = budget < self._patience.full
        self._queue.append(pending)
        if self._writer is None:
            # A context of its own: the writer works for every caller, not the first.
            self._writer = loop.create_task(self._drain(), context=contextvars.Context())
        elif self._timer is None or deadline < self._timer.when():
            # The earliest deadline of a caller waiting now (its batch's own deadline
            # covers those in flight; ``_expire`` sets the timer for the next one).
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._expire, loop)
        # Cancelling the caller cancels only its future: the write stays queued or in
        # flight and lands all the same (nothing answers a future that is done).
        return await pending.future

    async def aclose(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for the queued writes to be written."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer}, timeout=wait)

    def _take(self, now: float) -> list[Pending[V]]:
        batch: list[Pending[V]] = []
        seen: set[Hashable] = set()
        later: list[Pending[V]] = []
        queue = self._queue
        while queue and len(batch) < self._cap:
            pending = queue.popleft()
            if pending.deadline <= now:  # its time ran out in the queue
                self._too_late(pending)
            elif pending.key in seen:  # the next batch writes it, after this one
                later.append(pending)
            else:
                seen.add(pending.key)
                batch.append(pending)
        queue.extendleft(reversed(later))
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                self._flight = self._take(loop.time())
                if not self._flight:
                    continue
                # The batch ends by its callers' earliest deadline, so that each gets
                # the statement's own answer (not written, or unknown) in time; a
                # payout with less patience left (``Patience``) does not cut the
                # others' wait short, unless all in the batch are such.
                patient = [p.deadline for p in self._flight if not p.strained]
                self._until = min(patient or [p.deadline for p in self._flight])
                self._arm(loop)
                await self._flush(self._flight, self._until)
                self._flight = []
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
        finally:
            self._writer = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._flight or self._queue:  # the writer itself was cancelled (the loop closes)
                gone = LedgerOutcomeUnknownError("the ledger's writer stopped mid-write")
                _fail(self._flight, gone)
                _fail(list(self._queue), LedgerNotWrittenError("the ledger's writer stopped"))
                self._flight = []
                self._queue.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)set the timer for the earliest deadline of a caller still waiting."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = [p.deadline for p in self._flight if self._expires_first(p)]
        waiting += [p.deadline for p in self._queue]
        if waiting:
            self._timer = loop.call_at(min(waiting), self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer the callers whose time ran out: a write in flight may land, a queued
        one is taken out and never sent."""
        self._timer = None
        now = loop.time()
        for pending in self._flight:
            if pending.deadline <= now and self._expires_first(pending):
                self._patience.ran_out(pending.scope)
                pending.future.set_exception(
                    LedgerOutcomeUnknownError(
                        f"PostgreSQL did not answer within {pending.budget:g}s; "
                        "the write may have committed"
                    )
                )
        if any(pending.deadline <= now for pending in self._queue):
            kept: deque[Pending[V]] = deque()
            for pending in self._queue:
                if pending.deadline > now:
                    kept.append(pending)
                    continue
                self._too_late(pending)
            self._queue = kept
        self._arm(loop)

    def _expires_first(self, pending: Pending[V]) -> bool:
        """A write in flight whose caller has less time than the batch (a payout with
        less patience left): the timer answers it, not the statement."""
        return pending.deadline < self._until and not pending.future.done()

    def _too_late(self, pending: Pending[V]) -> None:
        """Answer a write whose time ran out before it was sent."""
        self._patience.ran_out(pending.scope)
        if not pending.future.done():
            pending.future.set_exception(
                LedgerNotWrittenError(
                    f"the ledger's write did not start within {pending.budget:g}s; nothing was sent"
                )
            )

    async def _flush(self, batch: list[Pending[V]], until: float) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            results = await self._write(batch, until)
        except LedgerError as error:
            if len(batch) > 1 and error.code in _WAITED_IN_VAIN:
                # A row locked elsewhere all along held up the whole batch: each write
                # again alone, side by side, so only the locked rows' callers fail.
                await asyncio.gather(*(self._flush([p], p.deadline) for p in batch))
                return
            _fail(batch, error)
            return
        except Exception as error:
            if len(batch) > 1 and self._is_integrity_error(error):
                for pending in batch:  # whose it is: each alone, in order
                    await self._flush([pending], pending.deadline)
                return
            _fail(batch, error)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _fail(batch: Sequence[Pending[Any]], error: BaseException) -> None:
    """Give each caller its own copy of ``error`` (one exception object raised in
    several tasks would gather all their tracebacks)."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(_copy(error) if len(batch) > 1 else error)


def _copy(error: BaseException) -> BaseException:
    if isinstance(error, LedgerError):
        copy: BaseException = type(error)(str(error), code=error.code)
    else:
        try:
            copy = type(error)(*error.args)
        except Exception:
            return error
        copy.__dict__.update(getattr(error, "__dict__", {}))
    copy.__cause__ = error.__cause__
    return copy
