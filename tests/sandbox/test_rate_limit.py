"""Rate limits end to end: the sandbox's own limit (429 with Retry-After, counted), the
request times it records, and the client's limiter as the sandbox measures it.

The measured checks are correctness checks of the limiter, not performance figures:
the most requests the sandbox saw in any window of W seconds must not exceed what a
leaky bucket of the set rate and burst lets through in W + SLACK seconds. The slack is
for the way there: the sandbox timestamps a request when its handler runs, so requests
held up by a stall of a busy machine are counted in a later window than the one they
were granted in. A limiter that is wrong by a third or more still fails every check.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from payout_async import NO_RETRY, RateLimit, RateLimitError, RetryPolicy
from payout_async._fence import guarded
from payout_async._rate import RateLimiter
from payout_async.ledger import SQLiteLedger
from payout_async.sandbox import FaultKind, Sandbox, peak_rate

from ..payouts.support import RETRY, TIMEOUTS, enot_request, im_request, payouts
from .support import ManualClock, enot_raw, fast_config, im_raw

SLACK = 0.2  # seconds a request may spend on its way, on a loaded machine


def allowed(per_second: float, window: float, burst: int) -> float:
    """The most requests a leaky bucket lets through in ``window`` seconds, with slack."""
    return per_second * (window + SLACK) + burst


def most_in(times: list[float], window: float) -> int:
    """The most requests found in any ``window`` seconds."""
    return round(peak_rate(times, window) * window)


async def test_the_sandbox_limits_each_provider_and_says_when_to_come_back() -> None:
    clock = ManualClock()
    config = fast_config(rate_limit_per_second=2, rate_limit_burst=2)
    async with Sandbox(config=config, clock=clock) as sandbox:
        path = f"/account/users/{sandbox.credentials.enot_user_id}/balance"
        statuses = [(await enot_raw(sandbox, "GET", path))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        async with (
            aiohttp.ClientSession() as session,
            session.get(sandbox.enot_url + path) as refused,
        ):
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "0.5"  # one interval at 2/s
        status, _ = await im_raw(sandbox, "getOperationState", {"PayoutOperationId": "x"})
        assert status == 200  # IntellectMoney has a bucket of its own
        clock.advance(0.5)
        assert (await enot_raw(sandbox, "GET", path))[0] == 200

        stats = sandbox.stats()
        assert stats.rate_limited == {"enot": 2}
        assert stats.requests["enot.balance"] == 3  # refused requests are not calls
        assert sandbox.request_times("enot.balance") == [clock.now - 0.5] * 4 + [clock.now]
        assert len(sandbox.request_times()) == 6
        async with aiohttp.ClientSession() as session:
            async with session.get(sandbox.url + "/_sandbox/stats") as answer:
                assert (await answer.json())["rate_limited"] == {"enot": 2}
            async with session.get(sandbox.url + "/_sandbox/traffic") as answer:
                traffic = await answer.json()
        assert len(traffic["enot.balance"]) == 5 and len(traffic["im.state"]) == 1


async def test_a_client_without_a_limit_meets_the_sandboxs_429s() -> None:
    config = fast_config(rate_limit_per_second=5)
    async with Sandbox(config=config, clock=ManualClock()) as sandbox:  # all at one instant
        async with sandbox.enot_client(retry=NO_RETRY) as enot:
            answers = await asyncio.gather(
                *(enot.get_balance() for _ in range(10)), return_exceptions=True
            )
        refused = [a for a in answers if isinstance(a, RateLimitError)]
        assert len(refused) == 9
        assert {error.retry_after for error in refused} == {0.2}
        assert sandbox.stats().requests["enot.balance"] == 1
        assert sandbox.stats().rate_limited == {"enot": 9}


async def test_the_sandbox_sees_no_more_than_the_clients_rate() -> None:
    limit = RateLimit(25, burst=3)
    async with Sandbox(config=fast_config()) as sandbox:
        async with sandbox.enot_client(rate_limit=limit) as enot:
            await asyncio.gather(*(enot.get_balance() for _ in range(60)))
        times = sandbox.request_times("enot.balance")
    assert len(times) == 60
    for window in (0.5, 1.0, 2.0):
        most = most_in(times, window)
        assert most <= allowed(limit.per_second, window, limit.capacity), (window, most)


async def test_a_429_slows_every_coroutine_of_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payout_async")
    limit = RateLimit(40, cooldown=60)
    async with Sandbox(config=fast_config(retry_after=0.3)) as sandbox:
        sandbox.faults.script("enot.balance", nth=5, kind=FaultKind.RATE_LIMIT)
        retry = RetryPolicy(attempts=3, max_retry_after=1.0)
        async with sandbox.enot_client(rate_limit=limit, retry=retry) as enot:
            await asyncio.gather(*(enot.get_balance() for _ in range(45)))
            limiter = enot.rate_limiter
            assert limiter is not None
            assert limiter.throttled_count == 1
            assert limiter.per_second == 20
        times = sandbox.request_times("enot.balance")
    assert "enot answered 429" in caplog.text
    assert "holding every request for 0.3 s (Retry-After)" in caplog.text
    limited_at = times[4]
    after = [t for t in times if t > limited_at]
    assert len(after) == 41  # 40 more, and the retry of the refused one
    # At 40/s, 41 requests would fit in about a second; at the halved rate they take two.
    assert most_in(after, 1.0) <= allowed(20, 1.0, limit.capacity) + 1  # + one in flight


async def test_the_limiter_wait_comes_before_the_lease_fence() -> None:
    """A request waiting for its turn must not spend its lease: the fence is checked
    (and the lease renewed if need be) only once the limiter has let it go."""
    events: list[tuple[str, int]] = []

    class Recording(RateLimiter):
        async def acquire(self) -> float:
            granted = await super().acquire()
            events.append(("granted", id(asyncio.current_task())))
            return granted

    async def fence(_: float | None) -> None:
        events.append(("fenced", id(asyncio.current_task())))

    async with Sandbox(config=fast_config()) as sandbox, sandbox.enot_client() as enot:
        enot._transport.limiter = Recording(RateLimit(20), name="enot")

        async def one() -> None:
            with guarded(fence):
                await enot.get_balance()

        await asyncio.gather(*(one() for _ in range(5)))
    for task in {task for _, task in events}:
        mine = [what for what, owner in events if owner == task]
        assert mine == ["granted", "fenced"]


async def test_payouts_at_a_set_rate_against_a_rate_limited_sandbox(tmp_path: Path) -> None:
    """Payouts on both providers through rate-limited clients: each is paid once, and
    the sandbox never sees more than the set rate."""
    limit = RateLimit(30)
    config = fast_config(rate_limit_per_second=30, rate_limit_burst=4)
    async with (
        Sandbox(config=config) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        sandbox.intellectmoney_client(rate_limit=limit, timeouts=TIMEOUTS, retry=RETRY) as im,
        sandbox.enot_client(rate_limit=limit, timeouts=TIMEOUTS, retry=RETRY) as enot,
    ):
        im_items = [(f"r-im-{n}", im_request(f"r-im-{n}")) for n in range(20)]
        enot_items = [(f"r-en-{n}", enot_request()) for n in range(20)]

        async def pay(client: object, items: list[tuple[str, object]]) -> list[str]:
            flow = payouts(client, ledger)  # type: ignore[arg-type]
            return [r.status.value async for r in flow.pay_many(items, concurrency=16)]

        statuses = await asyncio.gather(pay(im, im_items), pay(enot, enot_items))
        assert statuses[0] == ["succeeded"] * 20 and statuses[1] == ["succeeded"] * 20
        assert sandbox.duplicates() == []
        assert max(sandbox.paid_per_payout().values()) == 1
        assert sandbox.stats().intellectmoney.balance == config.im_balance - Decimal(200)
        traffic = sandbox.state.traffic
        for provider in ("intellectmoney", "enot"):
            times = traffic.provider_times(provider)
            most = most_in(times, 1.0)
            assert most <= allowed(limit.per_second, 1.0, limit.capacity), (provider, most)
