"""A virtual-time asyncio event loop: the simulation's scheduler.

``VirtualLoop`` is asyncio's own selector loop with three changes:

* ``time()`` is virtual: when nothing is ready, time jumps to the next timer instead of
  waiting for it, so an hour of retries and polls runs in milliseconds;
* work handed to a thread (aiosqlite runs every SQLite statement on its connection's
  thread) is waited for for real, and its completions join the ready queue at the start
  of the next iteration, in the order the jobs were handed over -- never in the middle
  of one, and never after time has moved on. Virtual time therefore stands still while
  a ledger statement is in flight, and a run replays exactly from its seed;
* callbacks run in the context of a simulated process (``PROCESS``) that is frozen are
  put off until it thaws (a pause at whatever await the process happens to be at), and
  those of a killed process never run again (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import selectors
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVarTuple, Unpack

__all__ = ["PROCESS", "Frozen", "SimulationStuck", "VirtualLoop", "neutral_context"]


class Frozen(Protocol):
    """What the loop needs to know of a simulated process."""

    killed: bool
    frozen_until: float
    #: Callbacks of a killed process, kept (never run) so that it can be revived for
    #: the clean-up after the run.
    parked: list[asyncio.Handle]


_Ts = TypeVarTuple("_Ts")

#: The simulated process whose code is running (None: the network, the providers,
#: the ledger server, the scenario itself).
PROCESS: contextvars.ContextVar[Frozen | None] = contextvars.ContextVar(
    "simulated_process", default=None
)

#: How long a thread job may take, in real seconds, before the run is declared stuck.
_THREAD_PATIENCE = 60.0


class SimulationStuck(RuntimeError):
    """Nothing can ever happen again (no callback, no timer, no thread job), or a
    thread job never came back."""


def neutral_context() -> contextvars.Context:
    """A context that belongs to no simulated process."""
    return contextvars.Context()


_NEUTRAL = neutral_context()


class _VirtualSelector:
    """The loop's selector, with ``select`` turned into "advance virtual time"."""

    def __init__(self, loop: VirtualLoop, selector: selectors.BaseSelector) -> None:
        self._loop = loop
        self._selector = selector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self._loop
        ready = loop._collect_threaded()
        if not ready and timeout != 0:
            scheduled = loop._scheduled  # type: ignore[attr-defined]
            if not scheduled:
                raise SimulationStuck("nothing is ready and no timer is set: all wait forever")
            loop._now = max(loop._now, scheduled[0]._when)
            if loop._now > loop.horizon:
                raise SimulationStuck(f"virtual time passed the horizon ({loop.horizon:g}s)")
        if not loop._woken:  # no socket but the loop's own wake-up pipe: nothing to read
            return []
        loop._woken = False
        return self._selector.select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """See the module docstring. ``horizon``: virtual seconds after which the run is
    declared stuck (a livelock of timers)."""

    def __init__(self, horizon: float = 7 * 24 * 3600.0) -> None:
        super().__init__()
        self.horizon = horizon
        self._now = 0.0
        self._selector = _VirtualSelector(self, self._selector)  # type: ignore[has-type,arg-type]
        self._thread_lock = threading.Condition()
        self._thread_jobs: set[asyncio.Future[Any]] = set()
        self._threaded: deque[asyncio.Handle] = deque()
        self._woken = True  # a thread wrote to the wake-up pipe

    def time(self) -> float:
        return self._now

    # -- threads ----------------------------------------------------------------------

    def thread_job(self, future: asyncio.Future[Any]) -> None:
        """A thread was handed work whose completion will resolve ``future``."""
        with self._thread_lock:
            self._thread_jobs.add(future)

    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        with self._thread_lock:
            self._threaded.append(handle)
            if args and isinstance(args[0], asyncio.Future):
                self._thread_jobs.discard(args[0])
            self._thread_lock.notify_all()
            self._woken = True
        self._write_to_self()  # type: ignore[attr-defined]
        return handle

    def _collect_threaded(self) -> bool:
        """Wait for every thread job under way, then move the completions into the
        ready queue; True when anything is ready now."""
        with self._thread_lock:
            if not self._thread_lock.wait_for(
                lambda: not self._thread_jobs, timeout=_THREAD_PATIENCE
            ):
                raise SimulationStuck("a thread job did not come back")
            handles, self._threaded = self._threaded, deque()
        ready: deque[asyncio.Handle] = self._ready  # type: ignore[attr-defined]
        ready.extend(handles)
        return bool(ready)

    # -- frozen and killed processes --------------------------------------------------

    def call_soon(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        until = self._held_until(context)
        if until is None:
            return super().call_soon(callback, *args, context=context)
        if math.isinf(until):  # killed: the callback does not run
            handle = asyncio.Handle(callback, args, self, context)
            process = PROCESS.get() if context is None else context.get(PROCESS)
            assert process is not None
            process.parked.append(handle)
            return handle
        # Asked again when it thaws: it may have been frozen longer, or killed, since.
        return self.call_at(until, self._thawed, callback, args, context, context=_NEUTRAL)

    def _thawed(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> None:
        self.call_soon(callback, *args, context=context)

    def revive(self, process: Frozen) -> None:
        """Let a killed process run again (for the clean-up after a run): its parked
        callbacks become ready, in the order they were parked."""
        process.killed = False
        parked, process.parked = process.parked, []
        self._ready.extend(parked)  # type: ignore[attr-defined]

    def _held_until(self, context: contextvars.Context | None) -> float | None:
        process = PROCESS.get() if context is None else context.get(PROCESS)
        if process is None:
            return None
        if process.killed:
            return math.inf
        if process.frozen_until > self._now:
            return process.frozen_until
        return None
