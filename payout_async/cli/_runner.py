"""Running a command's coroutine: SIGTERM is Ctrl-C, and an interruption says what to do."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from ._console import say
from ._report import EXIT_INTERRUPTED

__all__ = ["run_async"]


def run_async(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``command()`` in a new event loop. SIGTERM cancels it exactly as Ctrl-C does
    (payouts in flight are recorded, leases handed back); an interruption that reaches
    this far is exit status 130."""

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await command()

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("Interrupted: run the same command again to finish; nothing will be paid twice.")
        return EXIT_INTERRUPTED
