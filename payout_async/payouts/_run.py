"""One claimed ledger row being driven, with the writes it makes shielded from
cancellation so that a cancelled ``pay()`` never leaves a half-written step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..ledger import LeaseLostError, Ledger, LedgerState, PayoutRecord

__all__ = ["Run"]


class Run:
    """The lease holder's view of one row: ``move`` writes the next recovery point."""

    def __init__(
        self, ledger: Ledger, record: PayoutRecord, *, owner: str, lease_seconds: float
    ) -> None:
        self.ledger = ledger
        self.record = record
        self.owner = owner
        self.lease_seconds = lease_seconds

    async def move(
        self,
        state: LedgerState,
        *,
        note: str | None = None,
        add_attempt: bool = False,
        **changes: Any,
    ) -> PayoutRecord:
        """Durably move the row to ``state`` before anything else happens."""
        self.record = await asyncio.shield(
            self.ledger.transition(
                self.record.provider,
                self.record.key,
                owner=self.owner,
                state=state,
                lease_seconds=self.lease_seconds,
                note=note,
                add_attempt=add_attempt,
                **changes,
            )
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

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.lease_seconds / 3)
                try:
                    await self.ledger.renew(
                        self.record.provider,
                        self.record.key,
                        owner=self.owner,
                        lease_seconds=self.lease_seconds,
                    )
                except LeaseLostError:
                    return

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def release(self) -> None:
        """Give the row back (shielded: it must happen even when cancelled)."""
        await asyncio.shield(
            self.ledger.release(self.record.provider, self.record.key, owner=self.owner)
        )
