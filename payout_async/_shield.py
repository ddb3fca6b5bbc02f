"""Shielding a write from its caller's cancellation, without losing its error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["shielded"]

T = TypeVar("T")

logger = logging.getLogger("payout_async")


async def shielded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` so that cancelling the caller does not cancel it (a started
    write completes). If the caller is gone by the time it fails, its error is logged
    at DEBUG instead of asyncio's "Task exception was never retrieved"."""
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.debug("a shielded ledger write failed after its caller left: %r", error)
