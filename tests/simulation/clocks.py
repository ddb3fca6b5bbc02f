"""The simulated clocks, and the patches that make the library read them.

Three kinds of time, all derived from the loop's virtual time:

* each simulated process's ``time.monotonic()`` (its own origin) and ``time.time()``;
* the ledger server's wall clock (``time.time()`` inside ``payout_async.ledger``): the
  clock leases are written on, which the scenario can step forward;
* the loop's own ``time()`` (asyncio's timers and timeouts).

``Patches`` replaces every module-level name in ``payout_async`` that is the ``time``
module, ``time.monotonic``/``time.time``, the ``random`` module or one of its global
functions -- found by scanning the loaded modules, so that a module added later is
covered too -- and puts them back afterwards. It also makes aiosqlite's job queue tell
the loop about each job (``VirtualLoop.thread_job``) and makes the ledgers' listener
hubs wake listeners in a fixed order.
"""

from __future__ import annotations

import random
import sys
import time
import types
from collections.abc import Callable, Iterator
from queue import SimpleQueue
from typing import Any

import aiosqlite.core

from payout_async.ledger import _listen

from .loop import PROCESS, VirtualLoop

__all__ = ["Clocks", "Patches"]

#: Where virtual time 0 sits on the wall clocks.
EPOCH = 1_780_000_000.0


class Clocks:
    """The clocks of one run."""

    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop
        #: How far the ledger server's clock has been stepped forward.
        self.server_offset = 0.0

    def monotonic(self) -> float:
        """The running process's monotonic clock."""
        process = PROCESS.get()
        offset = 0.0 if process is None else getattr(process, "mono_offset", 0.0)
        return self.loop.time() + offset

    def process_wall(self) -> float:
        """The running process's wall clock."""
        return EPOCH + self.monotonic()

    def server_wall(self) -> float:
        """The ledger server's wall clock (also read on aiosqlite's thread)."""
        return EPOCH + self.loop.time() + self.server_offset

    def step_server(self, seconds: float) -> None:
        """Step the ledger server's clock forward."""
        self.server_offset += seconds


class _TimeModule(types.ModuleType):
    """A stand-in for the ``time`` module: ``monotonic``/``time``/``perf_counter``
    read the given clocks; everything else is the real module's."""

    def __init__(self, monotonic: Callable[[], float], wall: Callable[[], float]) -> None:
        super().__init__("time")
        self.monotonic = monotonic
        self.time = wall
        self.perf_counter = monotonic

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _RandomModule(types.ModuleType):
    """A stand-in for the ``random`` module whose functions draw from the run's
    generator."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__("random")
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(self._rng, name):
            return getattr(self._rng, name)
        return getattr(random, name)


class _CountingQueue:
    """aiosqlite's job queue, telling the loop about every job that will be answered."""

    def __init__(self) -> None:
        self._queue: SimpleQueue[Any] = SimpleQueue()

    def put_nowait(self, item: Any) -> None:
        # aiosqlite's own jobs carry their future; the ledger's (``_sqlite_thread.Job``)
        # settle theirs themselves.
        future = item[0] if item[0] is not None else getattr(item[1], "future", None)
        if future is not None:
            loop = future.get_loop()
            if isinstance(loop, VirtualLoop):
                loop.thread_job(future)
        self._queue.put_nowait(item)

    put = put_nowait

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._queue.get(*args, **kwargs)


class _OrderedSet:
    """A set that iterates in insertion order (``ListenerHub`` wakes listeners in the
    order of an ordinary set of objects, which differs from run to run)."""

    def __init__(self) -> None:
        self._items: dict[Any, None] = {}

    def add(self, item: Any) -> None:
        self._items[item] = None

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


def _hub_init(self: _listen.ListenerHub) -> None:
    self._listeners = _OrderedSet()  # type: ignore[assignment]


class Patches:
    """Module attributes replaced for one run; ``undo()`` puts them back."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, target: Any, name: str, value: Any) -> None:
        """Replace ``target.name`` with ``value`` until ``undo``."""
        self._undo.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self) -> None:
        while self._undo:
            target, name, value = self._undo.pop()
            setattr(target, name, value)

    def install(self, clocks: Clocks, rng: random.Random) -> None:
        """Point every clock and random source of ``payout_async`` at the run's."""
        process_time = _TimeModule(clocks.monotonic, clocks.process_wall)
        server_time = _TimeModule(clocks.loop.time, clocks.server_wall)
        for name, module in sorted(sys.modules.items()):
            if module is None or not (name == "payout_async" or name.startswith("payout_async.")):
                continue
            on_server = name.startswith("payout_async.ledger")
            fake = server_time if on_server else process_time
            for attr, value in sorted(vars(module).items()):
                replacement = _replacement(value, fake, rng)
                if replacement is not None:
                    self.set(module, attr, replacement)
        self.count_thread_jobs()
        self.set(_listen.ListenerHub, "__init__", _hub_init)

    def count_thread_jobs(self) -> None:
        """Make aiosqlite tell the loop about every job it hands its thread."""
        self.set(aiosqlite.core, "SimpleQueue", _CountingQueue)


def _replacement(value: Any, fake: _TimeModule, rng: random.Random) -> Any:
    if value is time:
        return fake
    if value is time.monotonic or value is time.perf_counter:
        return fake.monotonic
    if value is time.time:
        return fake.time
    if value is random:
        return _RandomModule(rng)
    bound = getattr(value, "__self__", None)
    if bound is random._inst and callable(value):
        return getattr(rng, value.__name__)
    return None
