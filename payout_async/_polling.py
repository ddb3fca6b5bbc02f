"""The backoff schedule shared by the state pollers and the reconciliation loops."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs

from ._retry import is_transient

__all__ = ["PollPolicy", "is_transient", "poll_until_final"]

T = TypeVar("T")


@attrs.frozen
class PollPolicy:
    """How to poll: waits grow from ``initial`` by ``multiplier`` up to ``maximum``
    seconds (each randomised between half and all of its value), and polling gives
    up at ``deadline`` seconds after it started."""

    initial: float = 0.5
    multiplier: float = 1.6
    maximum: float = 10.0
    deadline: float = 300.0

    def delays(self) -> Iterator[float]:
        """Jittered pauses, endless; the caller checks ``deadline``."""
        ceiling = self.initial
        while True:
            yield random.uniform(ceiling / 2, ceiling)
            ceiling = min(self.maximum, ceiling * self.multiplier)

    def expires_at(self) -> float:
        """The monotonic time at which polling that starts now must stop."""
        return time.monotonic() + self.deadline


async def poll_until_final(
    fetch: Callable[[], Awaitable[T]],
    is_final: Callable[[T], bool],
    *,
    policy: PollPolicy,
    on_poll: Callable[[T], Awaitable[None]] | None = None,
    keep_going: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Call ``fetch`` with backoff until ``is_final`` holds, and return that answer.

    At ``policy.deadline`` the last answer is returned as it is. Errors for which
    ``keep_going`` holds (default: ``is_transient``, the rule reads are retried on)
    do not stop the polling; if no answer at all arrived by the
    deadline, the last error is raised. ``on_poll`` sees every answer.
    """
    stop_at = policy.expires_at()
    last: T | None = None
    have_answer = False
    for delay in policy.delays():
        try:
            last = await fetch()
        except Exception as error:
            if not keep_going(error) or (not have_answer and time.monotonic() >= stop_at):
                raise
        else:
            have_answer = True
            if on_poll is not None:
                await on_poll(last)
            if is_final(last):
                return last
        if time.monotonic() + delay >= stop_at:
            if have_answer:
                return last  # type: ignore[return-value]  # set whenever have_answer
            delay = max(0.0, stop_at - time.monotonic())
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - delays() never ends
