"""One claimed ledger row being driven: its recovery points and its lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..ledger import LeaseLostError, Ledger, LedgerState, PayoutRecord

__all__ = ["Run"]

logger = logging.getLogger("payout_async")


class Run:
    """The lease holder's view of one row: ``move`` writes the next recovery point."""

    def __init__(
        self,
        ledger: Ledger,
        record: PayoutRecord,
        *,
        owner: str,
        lease_seconds: float,
        attempts_before: int = 0,
    ) -> None:
        self.ledger = ledger
        self.record = record
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.attempts_before = attempts_before

    @property
    def attempts_this_pass(self) -> int:
        """Money-moving requests sent since this pass began: ``reconcile()`` grants a
        parked row a fresh budget, so it counts from where it reopened the row."""
        return self.record.attempts - self.attempts_before

    async def move(
        self,
        state: LedgerState,
        *,
        note: str | None = None,
        add_attempt: bool = False,
        **changes: Any,
    ) -> PayoutRecord:
        """Durably move the row to ``state`` before anything else happens.

        Every ledger finishes a transition it has started even when the caller is
        cancelled (the ``Ledger.transition`` contract), so no shield is needed here.
        """
        self.record = await self.ledger.transition(
            self.record.provider,
            self.record.key,
            owner=self.owner,
            state=state,
            lease_seconds=self.lease_seconds,
            note=note,
            add_attempt=add_attempt,
            **changes,
        )
        return self.record

    async def give_up(self, reason: str, error: BaseException | None = None) -> PayoutRecord:
        """Park the row in ``needs_attention``: ``reason`` (and ``error``) say why."""
        if error is None:
            return await self.move(LedgerState.NEEDS_ATTENTION, reason=reason)
        return await self.move(
            LedgerState.NEEDS_ATTENTION, reason=f"{reason}: {error}", last_error=str(error)
        )

    @contextlib.asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Renew the lease every third of its length while the body runs, so that a
        long poll or reconciliation keeps the row. A lost lease is noticed by the next
        ``move`` (``LeaseLostError``), which fences every network step."""
        beat = _Heartbeat(self)
        try:
            yield
        finally:
            await beat.stop()

    async def release(self) -> None:
        """Give the row back (shielded: it must happen even when cancelled)."""
        await asyncio.shield(
            self.ledger.release(self.record.provider, self.record.key, owner=self.owner)
        )


class _Heartbeat:
    """Lease renewal on a timer: no task exists until a renewal is due, so that a
    payout that finishes within a third of its lease costs one timer handle."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._loop = asyncio.get_running_loop()
        self._renewing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._schedule()

    def _schedule(self) -> asyncio.TimerHandle:
        return self._loop.call_later(self._run.lease_seconds / 3, self._due)

    def _due(self) -> None:
        self._timer = None
        self._renewing = self._loop.create_task(self._renew())

    async def _renew(self) -> None:
        run = self._run
        try:
            await run.ledger.renew(
                run.record.provider,
                run.record.key,
                owner=run.owner,
                lease_seconds=run.lease_seconds,
            )
        except LeaseLostError:
            return  # the next move() raises it where it can be handled
        except Exception as error:  # the ledger is unreachable: try again next time
            logger.warning("could not renew the lease of %s: %s", run.record.key, error)
        self._timer = self._schedule()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._renewing is not None and not self._renewing.done():
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
