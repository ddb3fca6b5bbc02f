"""The backoff schedule shared by the state pollers and the reconciliation loops."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import attrs

from ._errors import APIError, InvalidResponseError, RateLimitError, ServerError, TransportError

__all__ = ["PollPolicy", "is_transient"]


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


def is_transient(error: BaseException) -> bool:
    """A failure that says nothing about the payout: the network or the provider is
    having trouble, so polling goes on."""
    if isinstance(error, TransportError | ServerError | RateLimitError | InvalidResponseError):
        return True
    return isinstance(error, APIError) and error.status == 408
