"""Retry decisions, by operation kind, in one table.

* ``READ`` (state, info, balance, bank list) -- retried on every transient failure
  (``is_transient``: *not sent*, *outcome unknown*, 408, 429, 5xx, unreadable answers).
* ``SAFE_WRITE`` (IntellectMoney create and delete: they move no money) -- as reads.
* ``MONEY`` (IntellectMoney execute, Enot payoff create) -- retried only when the
  request was *not sent* or the provider said 429. An unknown outcome is never retried
  blindly: it goes to reconciliation.

The pollers and lookups that follow a payout go on, within their deadline, through
more than the client retries: any failed read but "not found" (``is_inconclusive``).

Backoff is jittered and exponential; the ``Retry-After`` of an answer that is retried
(429, 503, any retried status) wins when present.
A fresh tenacity ``AsyncRetrying`` is built for every call; cancellation is never
retried.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import attrs
import tenacity

from ._errors import (
    APIError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    RequestNotSentError,
    ServerError,
    TransportError,
)
from ._holds import on_hold

__all__ = [
    "NO_RETRY",
    "OperationKind",
    "RetryPolicy",
    "call_with_retry",
    "is_inconclusive",
    "is_retryable",
    "is_transient",
]

T = TypeVar("T")


class OperationKind(enum.Enum):
    """What a call does to the provider's books, which decides how it may be retried."""

    READ = "read"
    SAFE_WRITE = "safe_write"
    MONEY = "money"


def is_transient(exc: BaseException) -> bool:
    """A failure that says nothing about the payout and may pass: the network failed
    (*not sent* or *outcome unknown*), the provider is overloaded or failing (408,
    429, 5xx) or its answer could not be read. Reads are retried on it, and the
    pollers keep polling through it; anything else is an answer, or a bug."""
    if isinstance(exc, TransportError | ServerError | RateLimitError | InvalidResponseError):
        return True
    return isinstance(exc, APIError) and exc.status == 408


def is_inconclusive(exc: BaseException) -> bool:
    """A failed read that says nothing about the payout: a transient failure, or the
    provider's (or a proxy's) error answer to the read itself -- a 422, a 401, a
    provider code saying no -- anything but "not found", which is an answer. The
    pollers and the lookups by order_id go on through it until their deadline (the
    client does not retry a 4xx: it may not pass); a check of our own input
    (``ValidationError``) or a bug stops them."""
    if isinstance(exc, NotFoundError):
        return False
    return isinstance(exc, TransportError | APIError)


def _retry_money(exc: BaseException) -> bool:
    return isinstance(exc, RequestNotSentError | RateLimitError)


_RETRY_ON: Mapping[OperationKind, Callable[[BaseException], bool]] = {
    OperationKind.READ: is_transient,
    OperationKind.SAFE_WRITE: is_transient,
    OperationKind.MONEY: _retry_money,
}


def is_retryable(kind: OperationKind, exc: BaseException) -> bool:
    """Whether ``exc`` from a call of ``kind`` may be retried as is."""
    return _RETRY_ON[kind](exc)


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry.

    ``attempts`` counts the first try. Waits grow from ``initial`` by ``multiplier``
    up to ``maximum`` seconds, each randomised between half and all of its value;
    the ``Retry-After`` of the answer being retried (429, 503 or any other retried
    ``APIError``) is honoured instead, up to ``max_retry_after`` seconds.
    """

    attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    initial: float = 0.2
    multiplier: float = 2.0
    maximum: float = 5.0
    max_retry_after: float = 60.0

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        """The pause before try number ``attempt + 1``."""
        if isinstance(exc, APIError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_after)
        ceiling = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(attempts=1)


async def call_with_retry(
    policy: RetryPolicy, kind: OperationKind, attempt: Callable[[], Awaitable[T]]
) -> T:
    """Run ``attempt`` under ``policy`` with the retry rule for ``kind``.

    The first try runs bare (the common case costs nothing); after a retryable
    failure the remaining tries run under a fresh tenacity ``AsyncRetrying``.
    """
    retry_on = _RETRY_ON[kind]
    try:
        return await attempt()
    except Exception as error:
        if policy.attempts == 1 or not retry_on(error):
            raise
        first_error = error
    delay = policy.wait_seconds(1, first_error)
    with on_hold(delay, first_error):  # a Retry-After is told to whoever listens
        await asyncio.sleep(delay)
    last: list[BaseException | None] = [None]

    def wait(state: tenacity.RetryCallState) -> float:
        last[0] = state.outcome.exception() if state.outcome else None
        return policy.wait_seconds(state.attempt_number + 1, last[0])

    async def sleep(seconds: float) -> None:
        with on_hold(seconds, last[0]):
            await asyncio.sleep(seconds)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts - 1),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_on),
        sleep=sleep,
        reraise=True,
    )
    return await retrying(attempt)
