"""The hook through which ``Payouts`` fences a money-moving request.

Right before a request leaves, the transport awaits the guard installed for the
current task (if any) with the request's total timeout. ``Payouts`` installs one
around each money-moving call: it checks -- and renews if need be -- that the row's
lease outlives the request, and raises ``LeaseLostError`` instead of letting a request
leave from a drive that no longer holds the row. Every retry of the call is checked
again, since each is a request of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token

__all__ = ["Guard", "check_before_send", "current_guard", "guarded"]

#: Awaited with the request's total timeout in seconds (``None``: unbounded).
Guard = Callable[[float | None], Awaitable[None]]

_guard: ContextVar[Guard | None] = ContextVar("payout_async_send_guard", default=None)


class guarded:  # lower case: used as a function, ``with guarded(run.fence):``
    """Run the body with ``guard`` awaited before every request it sends.

    (A class, not a generator: it is entered once per money-moving call.)"""

    __slots__ = ("_guard", "_token")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._token: Token[Guard | None] | None = None

    def __enter__(self) -> None:
        self._token = _guard.set(self._guard)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _guard.reset(self._token)


def current_guard() -> Guard | None:
    """The guard installed for the current task, if any: the transport awaits it with
    the request's total timeout right before the request leaves."""
    return _guard.get()


async def check_before_send(total_timeout: float | None) -> None:
    """Await the current task's guard, if one is installed."""
    guard = _guard.get()
    if guard is not None:
        await guard(total_timeout)
