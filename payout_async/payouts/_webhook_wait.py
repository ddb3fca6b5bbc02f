"""Drives waiting for an Enot webhook instead of polling, and what wakes them.

A drive that has just created a payoff (``Payouts(..., webhook_wait=seconds)``)
registers its order_id here before the create leaves; ``Payouts.apply_webhook`` hands
the row it settled to the drive waiting for that order_id -- and to no other. Nothing
here is durable: a webhook handled by another process is found by reading the ledger
row once the wait runs out.
"""

from __future__ import annotations

import asyncio
import time

from ..ledger import PayoutRecord

__all__ = ["WebhookWaits"]


class _Waiter:
    __slots__ = ("future", "since")

    def __init__(self, future: asyncio.Future[PayoutRecord], since: float) -> None:
        self.future = future
        self.since = since


class WebhookWaits:
    """The order_ids whose drives wait for a webhook, in this process."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiter] = {}

    def expect(self, order_id: str) -> None:
        """Register ``order_id`` (its create is about to leave: now is when the wait
        and, should it run out, the poll schedule count from)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[order_id] = _Waiter(future, time.monotonic())

    def since(self, order_id: str) -> float | None:
        """When the create of ``order_id`` left (monotonic), while it is registered."""
        waiter = self._waiting.get(order_id)
        return None if waiter is None else waiter.since

    async def wait(self, order_id: str, seconds: float) -> PayoutRecord | None:
        """The row a webhook for ``order_id`` settled, if one comes within ``seconds``
        (or came already); else None."""
        waiter = self._waiting.get(order_id)
        if waiter is None:
            return None
        if not waiter.future.done() and seconds > 0:
            await asyncio.wait((waiter.future,), timeout=seconds)
        return waiter.future.result() if waiter.future.done() else None

    def settled(self, record: PayoutRecord) -> None:
        """Wake the drive waiting for ``record``'s order_id, if any, with ``record``."""
        if record.order_id is None:
            return
        waiter = self._waiting.get(record.order_id)
        if waiter is None or waiter.future.done():
            return
        loop = waiter.future.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            waiter.future.set_result(record)
        else:  # applied from another thread's loop: wake the drive in its own
            loop.call_soon_threadsafe(_resolve, waiter.future, record)

    def forget(self, order_id: str) -> float | None:
        """Unregister ``order_id``; when its create left, if it was registered."""
        waiter = self._waiting.pop(order_id, None)
        return None if waiter is None else waiter.since


def _resolve(future: asyncio.Future[PayoutRecord], record: PayoutRecord) -> None:
    if not future.done():
        future.set_result(record)
