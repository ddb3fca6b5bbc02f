"""Long waits a payout sits out, said as they begin and end: the ``on_wait`` hook.

A payout whose money-moving answer was lost cannot be sent again at once: Enot's
order_id must stay "not found" for the grace period (``grace``), counted from the lost
answer -- or, for a row taken over from another worker, from when no request of that
worker can still be in flight -- and an IntellectMoney operation must keep reading
``Created`` for the settle window (``execute_settle``); a provider's ``Retry-After``
holds a request back (``RETRY_AFTER``). Such a wait can last a minute
with nothing to show for it, so ``Payouts(on_wait=...)`` hears of each one twice: a
``Waiting`` with ``until`` (wall-clock UNIX seconds) when it begins, and the same
``Waiting`` with ``until=None`` when it is over (found, settled, or given up).

``on_wait`` must be a quick plain function (a command line counts them into one
line); whatever it raises is logged and dropped. Without a hook nothing is made, bar
a DEBUG log line when DEBUG is on: the common path of a payout pays nothing for this.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Final

import attrs

__all__ = ["GRACE", "RETRY_AFTER", "SETTLE", "TAKEN_OVER", "OnWait", "Waiting", "announce"]

logger = logging.getLogger("payout_async")

#: Enot: "not found" must hold for the grace period after a lost create answer.
GRACE: Final = "grace"
#: Enot: the same, for a row taken over from another worker (counted from when no
#: request of that worker can still be in flight).
TAKEN_OVER: Final = "taken_over"
#: IntellectMoney: ``Created`` must hold for the settle window after a lost execute.
SETTLE: Final = "settle"
#: The provider answered with ``Retry-After`` (429, 503): the request is sent again
#: after that long (a second or more; see ``_holds``).
RETRY_AFTER: Final = "retry_after"


@attrs.frozen
class Waiting:
    """One payout waiting out ``reason`` (``GRACE``, ``TAKEN_OVER``, ``SETTLE``), a
    window of ``window`` seconds, until the wall-clock time ``until`` (UNIX seconds);
    ``until`` is None once the wait is over."""

    key: str
    provider: str
    reason: str
    window: float
    until: float | None

    @property
    def over(self) -> bool:
        """True for the event that ends a wait."""
        return self.until is None


#: ``on_wait(waiting)``: a quick plain function.
OnWait = Callable[[Waiting], None]


def _tell(hook: OnWait | None, event: Waiting) -> None:
    if hook is None:
        return
    try:
        hook(event)
    except Exception:
        logger.exception("on_wait failed for payout %s; the payout goes on", event.key)


@contextlib.contextmanager
def announce(
    hook: OnWait | None, key: str, provider: str, reason: str, window: float, until: float
) -> Iterator[None]:
    """Tell ``hook`` (and the DEBUG log) that payout ``key`` waits until ``until`` (a
    ``time.monotonic()`` value) while the body runs, and that it is over after; a wait
    already over by now is not told."""
    left = until - time.monotonic()
    if left <= 0:
        yield
        return
    event = Waiting(key, provider, reason, window, time.time() + left)
    logger.debug(
        "payout %s (%s): waiting out the %gs %s until %s",
        key,
        provider,
        window,
        reason,
        time.strftime("%H:%M:%S", time.localtime(event.until)),
    )
    _tell(hook, event)
    try:
        yield
    finally:
        _tell(hook, attrs.evolve(event, until=None))
