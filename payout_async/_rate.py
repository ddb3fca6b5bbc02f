"""Client-side rate limits: ``RateLimit`` (the setting) and ``RateLimiter`` (its
enforcement, shared by every coroutine of one client).

The limiter is aiolimiter's leaky bucket: ``burst`` requests may leave back to back,
then one every ``1 / per_second`` seconds. A 429 from the provider slows the whole
client down: the rate halves (down to an eighth of the setting) until ``cooldown``
seconds pass without another 429, and a ``Retry-After`` holds every request of the
client until it has passed. Both are said at INFO on the ``payout_async`` logger.

A change of rate replaces the bucket; a request granted by the bucket it replaced
queues again on the new one, so the new rate holds at once for every waiter.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

__all__ = ["RateLimit", "RateLimiter", "limiter_for"]

logger = logging.getLogger("payout_async")

#: The slowest a run of 429s makes a client: this many times below its setting.
MAX_SLOWDOWN = 8
#: The longest a ``Retry-After`` holds the client (as ``RetryPolicy.max_retry_after``).
MAX_PAUSE = 60.0


def _positive_finite(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of requests per second")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite number above 0, not {value!r}")


def _positive_burst(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be a whole number of requests")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen
class RateLimit:
    """At most ``per_second`` requests a second from one client, every coroutine
    together; ``burst`` of them may leave back to back after a quiet spell (``None``:
    1, an even spacing). ``cooldown`` is how long the halved rate after a 429 lasts."""

    per_second: float = attrs.field(validator=_positive_finite)
    burst: int | None = attrs.field(default=None, validator=_positive_burst)
    cooldown: float = attrs.field(default=30.0, kw_only=True, validator=_positive_finite)

    @property
    def capacity(self) -> int:
        """Requests that may leave back to back (``burst``, 1 when unset)."""
        return self.burst or 1

    def __str__(self) -> str:
        burst = f", burst {self.burst}" if self.burst else ""
        return f"{self.per_second:g}/s{burst}"


class RateLimiter:
    """A ``RateLimit`` in force for one client (``name`` is used in log lines).

    ``acquire()`` waits for the request's turn; the transport calls it before the
    lease fence is checked, so the wait never eats into a lease. ``throttled()``
    is told of each 429.
    """

    def __init__(
        self, limit: RateLimit, *, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.name = name
        self._clock = clock
        #: The setting is divided by this (1, 2, 4 or 8) for a while after a 429.
        self._slowdown = 1
        self._bucket = self._new_bucket()
        self._slowed_at = -math.inf  # when the rate was last lowered
        self._slow_until = -math.inf
        self._paused_until = -math.inf
        #: 429s the provider answered this client.
        self.throttled_count = 0

    def __repr__(self) -> str:
        return f"RateLimiter({self.name!r}, {self.limit}, now {self.per_second:g}/s)"

    @property
    def per_second(self) -> float:
        """The rate in force now (lower than the setting for a while after a 429)."""
        self._recover()
        return self.limit.per_second / self._slowdown

    async def acquire(self) -> float:
        """Wait for the next request's turn; returns when it was granted (the
        limiter's clock), for ``throttled``."""
        while True:
            wait = self._paused_until - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._recover()
            bucket = self._bucket
            await bucket.acquire()
            self._recover()
            # A turn granted by a bucket since replaced, or before a pause began, would
            # leave at the old rate or in a burst after the pause: queue again.
            if bucket is self._bucket and self._paused_until <= self._clock():
                return self._clock()

    def moved(self) -> None:
        """The client now runs in another event loop (the last one closed): the turns
        waited for in that one are gone with it; the rate and any hold stay."""
        self._bucket = self._new_bucket()

    def _new_bucket(self) -> AsyncLimiter:
        from aiolimiter import AsyncLimiter  # here: importing it costs 30 ms at start-up

        capacity = self.limit.capacity
        return AsyncLimiter(capacity, capacity * self._slowdown / self.limit.per_second)

    def throttled(self, retry_after: float | None, granted_at: float) -> None:
        """The provider answered 429 to a request granted at ``granted_at``: halve the
        rate (unless the request left before the last slowdown, which already
        answered its cause) and hold every request until ``retry_after`` has passed."""
        self._recover()
        now = self._clock()
        self.throttled_count += 1
        self._slow_until = max(self._slow_until, now + self.limit.cooldown)
        changes: list[str] = []
        if granted_at >= self._slowed_at and self._slowdown < MAX_SLOWDOWN:
            self._slowdown *= 2
            self._bucket = self._new_bucket()
            self._slowed_at = now
            changes.append(
                f"sending at {self.per_second:g}/s instead of {self.limit.per_second:g}/s "
                f"for {self.limit.cooldown:g} s"
            )
        if retry_after is not None and retry_after > 0:
            until = now + min(retry_after, MAX_PAUSE)
            if until > self._paused_until + 0.001:
                self._paused_until = until
                changes.append(f"holding every request for {until - now:g} s (Retry-After)")
        if changes:
            logger.info("%s answered 429 (too many requests): %s", self.name, "; ".join(changes))

    def _recover(self) -> None:
        if self._slowdown > 1 and self._clock() >= self._slow_until:
            self._slowdown = 1
            self._bucket = self._new_bucket()
            logger.info(
                "%s: no 429 for %g s, back to %g/s",
                self.name,
                self.limit.cooldown,
                self.limit.per_second,
            )


def limiter_for(rate_limit: RateLimit | None, name: str) -> RateLimiter | None:
    """The limiter a client named ``name`` keeps for its ``rate_limit=`` argument."""
    if rate_limit is None:
        return None
    if not isinstance(rate_limit, RateLimit):
        raise ConfigurationError("rate_limit must be a RateLimit, e.g. RateLimit(per_second=10)")
    return RateLimiter(rate_limit, name=name)
