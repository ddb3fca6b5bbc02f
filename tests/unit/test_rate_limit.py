"""``RateLimit`` validation and ``RateLimiter``'s reaction to 429s (a manual clock)."""

from __future__ import annotations

import logging
import math

import pytest

from payout_async import ConfigurationError, EnotClient, IntellectMoneyClient, RateLimit
from payout_async._rate import MAX_SLOWDOWN, RateLimiter
from payout_async.sandbox import peak_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0,), ValueError),
        ((-1.0,), ValueError),
        ((math.inf,), ValueError),
        ((math.nan,), ValueError),
        ((True,), TypeError),
        (("5",), TypeError),
        ((5, 0), ValueError),
        ((5, 2.5), TypeError),
        ((5, True), TypeError),
    ],
)
def test_rate_limit_refuses_nonsense(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        RateLimit(*args)  # type: ignore[arg-type]


def test_rate_limit_defaults_and_text() -> None:
    assert RateLimit(2.5).capacity == 1
    assert RateLimit(10, burst=4).capacity == 4
    assert str(RateLimit(10, burst=4)) == "10/s, burst 4"
    with pytest.raises(ValueError):
        RateLimit(10, cooldown=0)


def test_clients_take_a_rate_limit_and_refuse_anything_else() -> None:
    enot = EnotClient("u", "s", rate_limit=RateLimit(3))
    assert enot.rate_limiter is not None and enot.rate_limiter.per_second == 3
    assert EnotClient("u", "s").rate_limiter is None
    with pytest.raises(ConfigurationError, match="RateLimit"):
        IntellectMoneyClient("t", "k", bearer_token="b", rate_limit=5)  # type: ignore[arg-type]


def test_a_429_halves_the_rate_for_the_cooldown_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(40, cooldown=30), name="enot", clock=clock)
    caplog.set_level(logging.INFO, logger="payout_async")
    limiter.throttled(None, granted_at=clock.now)
    assert limiter.per_second == 20
    assert "enot answered 429" in caplog.text and "20/s instead of 40/s" in caplog.text
    clock.now += 29.9
    assert limiter.per_second == 20
    clock.now += 0.2
    assert limiter.per_second == 40
    assert "back to 40/s" in caplog.text
    assert limiter.throttled_count == 1


def test_a_429_to_a_request_sent_before_the_slowdown_does_not_halve_again() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(40), name="enot", clock=clock)
    sent = clock.now
    clock.now += 0.01
    limiter.throttled(None, granted_at=sent)  # the first 429 of a burst in flight
    limiter.throttled(None, granted_at=sent)  # its siblings: old news
    limiter.throttled(None, granted_at=sent)
    assert limiter.per_second == 20
    clock.now += 0.01
    limiter.throttled(None, granted_at=clock.now)  # sent at the lower rate: lower again
    assert limiter.per_second == 10
    for _ in range(10):
        clock.now += 0.01
        limiter.throttled(None, granted_at=clock.now)
    assert limiter.per_second == 40 / MAX_SLOWDOWN
    assert limiter.throttled_count == 14


async def test_retry_after_holds_every_request_of_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(1000), name="intellectmoney", clock=clock)
    caplog.set_level(logging.INFO, logger="payout_async")
    limiter.throttled(2.5, granted_at=clock.now)
    assert "holding every request for 2.5 s (Retry-After)" in caplog.text
    assert limiter._paused_until == clock.now + 2.5
    limiter.throttled(1.0, granted_at=clock.now)  # a shorter pause never shortens it
    assert limiter._paused_until == clock.now + 2.5
    clock.now += 2.5
    assert await limiter.acquire() == clock.now  # the pause is over: granted at once


def test_peak_rate_counts_the_busiest_window() -> None:
    times = [0.0, 0.1, 0.2, 1.0, 1.05, 1.1, 1.15, 3.0]
    assert peak_rate(times, 1.0) == 5  # 0.1 .. 1.1 (both ends count)
    assert peak_rate(times, 0.5) == 8  # 1.0 .. 1.15: four in half a second
    assert peak_rate([], 1.0) == 0
    with pytest.raises(ValueError):
        peak_rate(times, 0)
