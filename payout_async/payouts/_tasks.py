"""Stopping tasks that may swallow their cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

__all__ = ["CANCEL_AGAIN_AFTER", "cancel_and_wait"]

#: Seconds after which a task that ignored its cancellation is cancelled again.
CANCEL_AGAIN_AFTER = 0.5


async def cancel_and_wait(tasks: Sequence[asyncio.Task[Any]]) -> bool:
    """Cancel ``tasks`` and wait until every one has ended, even when the caller is
    cancelled meanwhile (as ``asyncio.TaskGroup`` does), cancelling again after
    ``CANCEL_AGAIN_AFTER`` seconds any that swallowed it. True when the caller was
    cancelled meanwhile (for it to pass that on)."""
    for task in tasks:
        task.cancel()
    cancelled = False
    while pending := [task for task in tasks if not task.done()]:
        try:
            await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
        except asyncio.CancelledError:
            cancelled = True
        for task in pending:
            if not task.done():
                task.cancel()
    return cancelled
