"""The poll schedule: how late a settled state is seen, and how many polls that costs,
computed from the schedule (no timing), and ``poll_until_final`` following it on a
fake clock."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator

import pytest

from payout_async import PollPolicy, _polling
from payout_async._errors import ServerError

DEFAULT = PollPolicy()


@pytest.fixture(params=["earliest", "latest", "seeded"])
def jitter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run a test with the first poll at each end of its window, and at random."""
    if request.param == "earliest":
        monkeypatch.setattr(_polling, "uniform", lambda low, high: low)
    elif request.param == "latest":
        monkeypatch.setattr(_polling, "uniform", lambda low, high: high)
    else:
        random.seed(13)
    yield


def seen_at(policy: PollPolicy, settle: float) -> tuple[float, int]:
    """When the first poll at or after ``settle`` comes, and how many polls that takes."""
    for count, elapsed in enumerate(policy.times(), start=1):
        if elapsed >= settle:
            return elapsed, count
    raise AssertionError("unreachable")  # pragma: no cover


def settle_times(low: float, high: float, steps: int = 400) -> list[float]:
    """Settle times spread evenly on a log scale from ``low`` to ``high``."""
    ratio = (high / low) ** (1 / steps)
    return [low * ratio**n for n in range(steps + 1)]


@pytest.mark.usefixtures("jitter")
def test_default_sees_a_settled_state_within_20_percent_from_1_to_50_seconds() -> None:
    for settle in settle_times(1.0, 50.0):
        seen, _ = seen_at(DEFAULT, settle)
        assert seen / settle <= 1.2 + 1e-9, settle


@pytest.mark.usefixtures("jitter")
def test_past_the_cap_it_is_late_by_at_most_maximum() -> None:
    for settle in settle_times(50.0, 600.0):
        seen, _ = seen_at(DEFAULT, settle)
        assert seen - settle <= DEFAULT.maximum + 1e-9, settle


@pytest.mark.usefixtures("jitter")
@pytest.mark.parametrize(
    "policy",
    [
        PollPolicy(initial=0.5, multiplier=1.1),
        PollPolicy(initial=2.0, multiplier=1.5, maximum=30.0),
        PollPolicy(initial=0.02, multiplier=1.5, maximum=0.1),
    ],
    ids=str,
)
def test_any_policy_bounds_lateness_by_its_multiplier(policy: PollPolicy) -> None:
    low = policy.initial / policy.multiplier
    high = policy.maximum / (policy.multiplier - 1)
    for settle in settle_times(low, high):
        seen, _ = seen_at(policy, settle)
        assert seen / settle <= policy.multiplier + 1e-9, settle


@pytest.mark.usefixtures("jitter")
@pytest.mark.parametrize(("settle", "most"), [(1.0, 1), (3.0, 8), (5.0, 10)])
def test_the_default_spends_few_polls(settle: float, most: int) -> None:
    """The fewest polls a 20% bound allows from a first poll at 1.0-1.2 s: one, then
    one per factor of 1.2 (log(settle / first) / log(1.2) more)."""
    _, polls = seen_at(DEFAULT, settle)
    assert polls <= most
    assert polls <= 1 + math.ceil(math.log(settle / 1.0) / math.log(1.2))


def test_the_first_poll_is_spread_within_its_window() -> None:
    random.seed(5)
    firsts = [DEFAULT.first() for _ in range(1000)]
    assert 1.0 <= min(firsts) < 1.02 and 1.18 < max(firsts) <= 1.2


def test_pauses_add_up_to_the_poll_times() -> None:
    random.seed(7)
    times = list(itertools.islice(PollPolicy().times(), 40))
    random.seed(7)
    pauses = list(itertools.islice(PollPolicy().delays(), 40))
    assert list(itertools.accumulate(pauses)) == pytest.approx(times)
    assert all(0 < pause <= DEFAULT.maximum + 1e-9 for pause in pauses[1:])


def test_a_multiplier_of_one_polls_at_a_steady_pace() -> None:
    policy = PollPolicy(initial=2.0, multiplier=1.0)
    pauses = list(itertools.islice(policy.delays(), 50))
    assert all(1.0 <= pause <= 2.0 for pause in pauses)


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0.0},
        {"initial": -1.0},
        {"maximum": 0.0},
        {"deadline": float("inf")},
        {"multiplier": 0.9},
        {"multiplier": float("nan")},
    ],
    ids=str,
)
def test_a_policy_that_would_never_pause_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="PollPolicy"):
        PollPolicy(**options)


# --- poll_until_final on a fake clock ---------------------------------------------------


class Clock:
    """A monotonic clock that moves only when the poller sleeps (or a fetch takes time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self.polls: list[float] = []
        monkeypatch.setattr(_polling, "monotonic", lambda: self.now)
        monkeypatch.setattr(_polling, "sleep", self.sleep)

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setattr(_polling, "uniform", lambda low, high: high)
    return Clock(monkeypatch)


async def test_polls_fall_on_the_schedule_and_stop_when_final(clock: Clock) -> None:
    settle_at = clock.now + 3.0

    async def fetch() -> bool:
        clock.polls.append(clock.now - 100.0)
        return clock.now >= settle_at

    assert await _polling.poll_until_final(fetch, bool, policy=DEFAULT) is True
    expected = list(itertools.islice(DEFAULT.times(), len(clock.polls)))
    assert clock.polls == pytest.approx(expected)
    assert clock.polls[0] == pytest.approx(1.2)  # no poll at once: nothing settles that fast
    assert 3.0 <= clock.polls[-1] <= 3.0 * 1.2
    assert len(clock.polls) == 7


async def test_a_slow_answer_delays_the_next_poll_from_when_it_was_made(clock: Clock) -> None:
    """A poll that takes long (the client retrying) is followed ``after`` its start,
    or at once when that has passed: the bound holds between polls actually made."""

    async def fetch() -> bool:
        clock.polls.append(clock.now - 100.0)
        if len(clock.polls) == 2:
            raise ServerError("503", status=503)  # a transient failure: polling goes on
        clock.now += 0.5 if len(clock.polls) == 3 else 0.0
        return len(clock.polls) == 5

    assert await _polling.poll_until_final(fetch, bool, policy=DEFAULT) is True
    assert clock.polls[:3] == pytest.approx([1.2, 1.44, 1.728])
    assert clock.polls[3] == pytest.approx(1.728 + 0.5)  # its due time (2.07) had passed
    assert clock.polls[4] == pytest.approx((1.728 + 0.5) * 1.2)


async def test_the_schedule_counts_from_started(clock: Clock) -> None:
    """A poll whose time has passed (a webhook was waited for meanwhile) is made at
    once; the next one follows the schedule from ``started``."""

    async def fetch() -> bool:
        clock.polls.append(clock.now - 100.0)
        return len(clock.polls) == 2

    started = clock.now - 5.0
    assert await _polling.poll_until_final(fetch, bool, policy=DEFAULT, started=started)
    assert clock.polls == pytest.approx([0.0, 1.0])  # 5 s in: at once, then at 6 s


async def test_the_deadline_returns_the_last_answer(clock: Clock) -> None:
    policy = PollPolicy(deadline=4.0)

    async def fetch() -> str:
        clock.polls.append(clock.now - 100.0)
        return "processing"

    assert await _polling.poll_until_final(fetch, lambda _: False, policy=policy) == "processing"
    assert clock.polls[-1] <= 4.0
    assert len(clock.polls) == 1 + math.floor(math.log(4.0 / 1.2) / math.log(1.2))


async def test_a_deadline_before_the_first_poll_still_polls_once(clock: Clock) -> None:
    policy = PollPolicy(deadline=0.5)

    async def fetch() -> str:
        clock.polls.append(clock.now - 100.0)
        return "processing"

    assert await _polling.poll_until_final(fetch, lambda _: False, policy=policy) == "processing"
    assert clock.polls == pytest.approx([0.5])
