"""The requests each provider route saw, when, and the providers' rate limits.

Every request to a provider route is timestamped on arrival (the sandbox's clock), so
that a test can measure the rate the sandbox saw (``peak_rate``). With
``rate_limit_per_second`` set, each provider (IntellectMoney's four routes together,
Enot's four together) accepts that many requests a second with a burst of
``rate_limit_burst`` and answers the others 429 with a ``Retry-After`` saying when the
next one would be accepted; those are counted in ``rate_limited`` and are not
processed, faulted or counted as calls.

The provider's bucket is the same leaky bucket as the client's limiter (aiolimiter's),
kept here on the sandbox's clock -- which a test may drive by hand -- rather than on the
event loop's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs

from ._config import SandboxConfig
from ._faults import ROUTES, check_route

__all__ = ["Traffic", "peak_rate", "provider_of"]


def provider_of(route: str) -> str:
    """``"intellectmoney"`` for an ``im.*`` route, ``"enot"`` for an ``enot.*`` one."""
    return "intellectmoney" if route.startswith("im.") else "enot"


@attrs.define
class _Bucket:
    """A leaky bucket holding ``burst`` requests that drains ``per_second``."""

    per_second: float
    burst: int
    level: float = 0.0
    last: float = -math.inf

    def admit(self, now: float) -> float | None:
        """Take a request arriving at ``now``: None when admitted, else the seconds
        until one would be."""
        if self.last > -math.inf:
            self.level = max(0.0, self.level - (now - self.last) * self.per_second)
        self.last = now
        excess = self.level + 1 - self.burst
        if excess > 1e-9:
            return excess / self.per_second
        self.level += 1
        return None


class Traffic:
    """Arrival times by route, 429s by provider, and the per-provider buckets."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._times: dict[str, list[float]] = {route: [] for route in ROUTES}
        self._limited: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        per_second = config.rate_limit_per_second
        if per_second is not None:
            for provider in ("intellectmoney", "enot"):
                self._buckets[provider] = _Bucket(per_second, config.rate_limit_burst)

    def arrive(self, route: str) -> float | None:
        """Record a request of ``route``: None when it may be served, else the
        ``Retry-After`` in seconds its provider's rate limit refuses it with (counted
        in ``rate_limited``)."""
        now = self._clock()
        self._times[route].append(now)
        provider = provider_of(route)
        bucket = self._buckets.get(provider)
        if bucket is None:
            return None
        wait = bucket.admit(now)
        if wait is not None:
            self._limited[provider] = self._limited.get(provider, 0) + 1
            return math.ceil(wait * 1000) / 1000  # in whole milliseconds, never early
        return None

    def times(self, route: str | None = None) -> list[float]:
        """Arrival times (the sandbox's clock, seconds) of ``route``'s requests, or of
        every route's when ``None``, oldest first; refused ones included."""
        if route is not None:
            return list(self._times[check_route(route)])
        return sorted(t for times in self._times.values() for t in times)

    def provider_times(self, provider: str) -> list[float]:
        """Arrival times of every request to ``provider``, oldest first."""
        found = [t for route, times in self._times.items() if provider_of(route) == provider
                 for t in times]  # fmt: skip
        return sorted(found)

    @property
    def rate_limited(self) -> Mapping[str, int]:
        """Requests answered 429 by the rate limit, by provider."""
        return dict(self._limited)


def peak_rate(times: list[float], window: float) -> float:
    """The most requests found in any ``window`` seconds of ``times`` (sorted), divided
    by ``window``: the highest rate the arrivals reached over that span."""
    if window <= 0:
        raise ValueError("window must be above 0")
    most = start = 0
    for end, at in enumerate(times):
        while at - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most / window
