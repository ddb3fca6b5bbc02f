"""Which request gets which fault: the fault kinds, and the seeded and scripted plan.

Each kind says whether the request's effect is committed before the client's view of
the exchange breaks; ``_inject`` carries them out.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from ._rng import seeded_random

__all__ = ["DEFAULT_KINDS", "MISLEADING", "ROUTES", "FaultKind", "Faults", "check_route"]

#: Every route that can be faulted (and whose calls are counted).
ROUTES: tuple[str, ...] = (
    "im.create",
    "im.execute",
    "im.state",
    "im.delete",
    "enot.create",
    "enot.info",
    "enot.banks",
    "enot.balance",
)


class FaultKind(enum.Enum):
    """A way for one exchange to go wrong; the comment says whether the effect commits."""

    #: Drop the connection before processing: nothing happened.
    CLOSE_BEFORE_READ = "close_before_read"
    #: Process and commit, then drop the connection without answering.
    COMMIT_THEN_CLOSE = "commit_then_close"
    #: Process and commit, then say nothing for ``stall_seconds`` (past the client's timeout).
    COMMIT_THEN_STALL = "commit_then_stall"
    #: HTTP 429 with ``Retry-After``: nothing happened.
    RATE_LIMIT = "rate_limit"
    #: HTTP 500 in the provider's error envelope: nothing happened.
    HTTP_500 = "http_500"
    #: HTTP 502 with an HTML gateway page: nothing happened (the client cannot know that).
    HTTP_502 = "http_502"
    #: HTTP 503 with an HTML page: nothing happened.
    HTTP_503 = "http_503"
    #: HTTP 504 with an HTML gateway page: nothing happened (the client cannot know that).
    HTTP_504 = "http_504"
    #: Process and commit, then send half the body under the full Content-Length and close.
    TRUNCATED_JSON = "truncated_json"
    #: Process and commit, then answer 200 with an HTML body instead of JSON.
    WRONG_CONTENT_TYPE = "wrong_content_type"
    #: Wait a jittered delay, then process and answer normally.
    LATENCY = "latency"
    #: Process and commit, then answer HTTP 408 in the provider's error envelope (a
    #: timeout at the provider's edge after the request was handed on). Scripted only.
    COMMIT_THEN_408 = "commit_then_408"
    #: Process and commit, then answer HTTP 422 in the provider's error envelope (a
    #: proxy or edge refusing the answer). Scripted only.
    COMMIT_THEN_422 = "commit_then_422"


#: Kinds that answer as if nothing happened though it did: they are never drawn at
#: random unless named in ``fault_kinds`` (a refusal is the provider's word, and most
#: flows rightly believe it); scripted, they test a flow that must not.
MISLEADING: frozenset[FaultKind] = frozenset({FaultKind.COMMIT_THEN_408, FaultKind.COMMIT_THEN_422})
#: The kinds drawn at random by default: every kind but the ``MISLEADING`` ones.
DEFAULT_KINDS: frozenset[FaultKind] = frozenset(FaultKind) - MISLEADING


def check_route(route: str) -> str:
    """``route`` if it names a known route, else ``ValueError``."""
    if route not in ROUTES:
        raise ValueError(f"unknown sandbox route {route!r}; known: {', '.join(ROUTES)}")
    return route


class Faults:
    """Decides, call by call, which fault (if any) a route's request gets.

    A scripted fault (``script``) always wins; otherwise, with probability ``rate``, a
    kind is drawn from ``kinds`` by a generator seeded with ``seed``. Only ``routes``
    (all when ``None``) are faulted at random. Calls are counted per route from the
    start or the last ``reset``.
    """

    def __init__(
        self,
        *,
        rate: float = 0.0,
        kinds: Iterable[FaultKind] = DEFAULT_KINDS,
        routes: Iterable[str] | None = None,
        seed: int | None = None,
    ) -> None:
        self.rate = rate
        # Sorted: a set's order follows string hashes, which vary from run to run.
        self.kinds: tuple[FaultKind, ...] = tuple(sorted(set(kinds), key=lambda k: k.value))
        if rate > 0 and not self.kinds:
            raise ValueError("fault_kinds must not be empty when fault_rate > 0")
        self.routes = None if routes is None else frozenset(check_route(r) for r in routes)
        self._seed = seed
        self._rng = seeded_random(seed, "faults")
        self._calls: dict[str, int] = {}
        self._script: dict[tuple[str, int], FaultKind] = {}
        self._injected: dict[str, int] = {}

    def script(self, route: str, *, kind: FaultKind, nth: int | None = None) -> int:
        """Give the ``nth`` call of ``route`` (counted from the start or last reset; the
        next call when ``None``) the fault ``kind``. Returns that call's number."""
        check_route(route)
        done = self._calls.get(route, 0)
        if nth is None:
            nth = done + 1
            while (route, nth) in self._script:
                nth += 1
        if nth <= done:
            raise ValueError(f"call {nth} of {route} already happened ({done} so far)")
        self._script[(route, nth)] = kind
        return nth

    def pick(self, route: str) -> FaultKind | None:
        """Count one call of ``route`` and return its fault, or ``None``."""
        count = self._calls.get(route, 0) + 1
        self._calls[route] = count
        kind = self._script.pop((route, count), None) if self._script else None
        if kind is None:
            if self.rate <= 0 or (self.routes is not None and route not in self.routes):
                return None
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
        self._injected[kind.value] = self._injected.get(kind.value, 0) + 1
        return kind

    def uniform(self, low: float, high: float) -> float:
        """A jitter drawn from the fault generator (for ``LATENCY``)."""
        return self._rng.uniform(low, high)

    def calls(self, route: str | None = None) -> int:
        """Calls of ``route`` so far (of every route when ``None``)."""
        if route is None:
            return sum(self._calls.values())
        return self._calls.get(check_route(route), 0)

    @property
    def call_counts(self) -> Mapping[str, int]:
        """Calls so far, by route."""
        return dict(self._calls)

    @property
    def injected(self) -> Mapping[str, int]:
        """Faults injected so far, by kind name."""
        return dict(self._injected)

    def clear(self) -> None:
        """Forget scripted faults that have not fired yet."""
        self._script.clear()

    def reset(self) -> None:
        """Forget counts and scripts, and restart the seeded generator."""
        self._rng = seeded_random(self._seed, "faults")
        self._calls.clear()
        self._script.clear()
        self._injected.clear()
