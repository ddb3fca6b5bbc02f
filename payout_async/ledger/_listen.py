"""Wake-ups for idle workers inside one process: the part every backend shares.

A ``ListenerHub`` belongs to one ledger object; ``enqueue`` and ``announce_work`` (and,
for PostgreSQL, a ``NOTIFY`` from another process) ``wake`` it, and every listener of
that provider (or of all providers) returns from its ``wait``. Backends that can hear
other processes add their own check (``SQLiteLedger``: the file's ``data_version``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["ListenerHub", "LocalListener"]

#: Polled while waiting: True when work may have arrived (another process wrote).
Check = Callable[[], Awaitable[bool]]


class LocalListener:
    """A ``WorkListener`` woken through its hub, and optionally by ``check`` (awaited
    every ``every`` seconds while waiting)."""

    def __init__(
        self,
        hub: ListenerHub,
        provider: str | None,
        *,
        check: Check | None = None,
        every: float = 1.0,
    ) -> None:
        self.provider = provider
        self._hub = hub
        self._woken = asyncio.Event()
        self._check = check
        self._every = every

    def wake(self) -> None:
        """Make the current or next ``wait`` return True."""
        self._woken.set()

    async def wait(self, seconds: float) -> bool:
        """See ``WorkListener.wait``."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            left = deadline - time.monotonic()
            step = left if self._check is None else min(left, self._every)
            if await self._woken_within(step):
                return True
            if self._check is not None and await self._check():
                return True
            if time.monotonic() >= deadline:
                return False

    async def _woken_within(self, seconds: float) -> bool:
        if not self._woken.is_set() and seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._woken.wait()
            except TimeoutError:
                return False
        if self._woken.is_set():
            self._woken.clear()
            return True
        return False

    async def aclose(self) -> None:
        """See ``WorkListener.aclose``."""
        self._hub.discard(self)


class ListenerHub:
    """The listeners of one ledger object."""

    def __init__(self) -> None:
        self._listeners: set[LocalListener] = set()

    def listener(
        self, provider: str | None, *, check: Check | None = None, every: float = 1.0
    ) -> LocalListener:
        """A new listener for ``provider``'s rows (all when None)."""
        listener = LocalListener(self, provider, check=check, every=every)
        self._listeners.add(listener)
        return listener

    def discard(self, listener: LocalListener) -> None:
        """Forget ``listener``."""
        self._listeners.discard(listener)

    def wake(self, provider: str | None) -> None:
        """Wake the listeners for ``provider`` (every listener when None)."""
        for listener in self._listeners:
            if provider is None or listener.provider in (None, provider):
                listener.wake()
