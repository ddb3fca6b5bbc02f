"""The hook through which ``Payouts`` fences a money-moving request.

Right before a request leaves, the transport awaits the guard installed for the
current task (if any) with the request's total timeout. ``Payouts`` installs one
around each money-moving call: it checks -- and renews if need be -- that the row's
lease outlives the request, and raises ``LeaseLostError`` instead of letting a request
leave from a drive that no longer holds the row. Every retry of the call is checked
again, since each is a request of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

__all__ = ["Guard", "check_before_send", "current_guard", "guarded"]

#: Awaited with the request's total timeout in seconds (``None``: unbounded).
Guard = Callable[[float | None], Awaitable[None]]

_guard: ContextVar[Guard | None] = ContextVar("payout_async_send_guard", default=None)


@contextlib.contextmanager
def guarded(guard: Guard) -> Iterator[None]:
    """Run the body with ``guard`` awaited before every request it sends."""
    token = _guard.set(guard)
    try:
        yield
    finally:
        _guard.reset(token)


def current_guard() -> Guard | None:
    """The guard installed for the current task, if any: the transport awaits it with
    the request's total timeout right before the request leaves."""
    return _guard.get()


async def check_before_send(total_timeout: float | None) -> None:
    """Await the current task's guard, if one is installed."""
    guard = _guard.get()
    if guard is not None:
        await guard(total_timeout)
