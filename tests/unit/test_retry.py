"""The retry table by operation kind, the backoff, and cancellation."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import inspect
import random

import pytest
from aioresponses import aioresponses
from multidict import CIMultiDict

from payout_async import (
    NO_RETRY,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    OperationKind,
    OutcomeUnknownError,
    PermissionDeniedError,
    PollPolicy,
    ProviderRejectedError,
    RateLimitError,
    RequestNotSentError,
    RetryPolicy,
    ServerError,
    ValidationError,
    _polling,
)
from payout_async._retry import call_with_retry, is_inconclusive, is_retryable, is_transient
from payout_async._transport import HTTPResponse

from .helpers import (
    ENOT_BASE,
    ENOT_USER,
    HTML_502,
    OP_ID,
    PAYOFF_ID,
    enot_client,
    enot_error,
    enot_ok,
    im_client,
    im_error,
    im_ok,
    im_url,
)

READ, SAFE, MONEY = OperationKind.READ, OperationKind.SAFE_WRITE, OperationKind.MONEY

TABLE: list[tuple[BaseException, bool, bool]] = [
    # exception, retried on READ and SAFE_WRITE, retried on MONEY
    (RequestNotSentError("refused"), True, True),
    (RateLimitError("429", status=429, retry_after=1.0), True, True),
    (OutcomeUnknownError("lost"), True, False),
    (ServerError("500", status=500), True, False),
    (ServerError("503", status=503), True, False),
    (InvalidResponseError("not json", status=200), True, False),
    (InvalidRequestError("408", status=408), True, False),
    (InvalidRequestError("422", status=422), False, False),
    (InvalidRequestError("400", status=400), False, False),
    (AuthenticationError("401", status=401), False, False),
    (PermissionDeniedError("403", status=403), False, False),
    (NotFoundError("404", status=404), False, False),
    (ProviderRejectedError("Code 2", status=200, code=2), False, False),
    (ValidationError("amount", "bad"), False, False),
    (ValueError("x"), False, False),
    (asyncio.CancelledError(), False, False),
    (KeyboardInterrupt(), False, False),
]


@pytest.mark.parametrize(("exc", "reads", "money"), TABLE, ids=lambda v: repr(v)[:40])
def test_is_retryable_table(exc: BaseException, reads: bool, money: bool) -> None:
    assert is_retryable(READ, exc) is reads
    assert is_retryable(SAFE, exc) is reads
    assert is_retryable(MONEY, exc) is money


# --- backoff ------------------------------------------------------------------------------


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    for attempt in (1, 2, 5):
        assert policy.wait_seconds(attempt, _limited(3.0)) == 3.0
        assert policy.wait_seconds(attempt, _limited(0.0)) == 0.0
        assert policy.wait_seconds(attempt, _limited(1000.0)) == 10.0
    assert RetryPolicy().wait_seconds(1, _limited(1000.0)) == 60.0


def _limited(seconds: float | None) -> RateLimitError:
    return RateLimitError("429", status=429, retry_after=seconds)


@pytest.mark.parametrize(
    "exc", [None, ServerError("500", status=500), _limited(None), RequestNotSentError("x")]
)
def test_backoff_grows_exponentially_within_jitter_bounds(exc: BaseException | None) -> None:
    policy = RetryPolicy(initial=0.2, multiplier=2.0, maximum=5.0)
    random.seed(1234)
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 3.2), (6, 5.0), (9, 5.0)]:
        samples = [policy.wait_seconds(attempt, exc) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples), (attempt, min(samples))
        assert len(set(samples)) > 100  # jittered, not a constant
        assert max(samples) > ceiling * 0.9 and min(samples) < ceiling * 0.6


def test_policy_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    assert NO_RETRY.attempts == 1


# --- call_with_retry ------------------------------------------------------------------------


class RecordingPolicy(RetryPolicy):
    """A policy that records every wait asked for and waits ``pause`` seconds."""

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        WAITS.append((attempt, exc))
        return PAUSES.get(attempt, 0.0)


WAITS: list[tuple[int, BaseException | None]] = []
PAUSES: dict[int, float] = {}


@pytest.fixture(autouse=True)
def _reset_recording() -> None:
    WAITS.clear()
    PAUSES.clear()


class Flaky:
    """Raises the given exceptions in turn, then returns ``"ok"``."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


async def test_reads_retry_until_success_with_growing_attempt_numbers() -> None:
    errors = [ServerError("500", status=500), OutcomeUnknownError("x"), _limited(0.0)]
    attempt = Flaky(*errors)
    assert await call_with_retry(RecordingPolicy(attempts=4), READ, attempt) == "ok"
    assert attempt.calls == 4
    assert [n for n, _ in WAITS] == [1, 2, 3]
    assert [e for _, e in WAITS] == errors


async def test_retries_stop_at_the_policy_attempts_and_raise_the_last_error() -> None:
    last = ServerError("third", status=503)
    attempt = Flaky(ServerError("1", status=500), ServerError("2", status=502), last)
    with pytest.raises(ServerError) as caught:
        await call_with_retry(RecordingPolicy(attempts=3), READ, attempt)
    assert caught.value is last
    assert attempt.calls == 3


@pytest.mark.parametrize(
    "exc",
    [
        OutcomeUnknownError("lost"),
        ServerError("500", status=500),
        InvalidResponseError("junk", status=200),
    ],
)
async def test_money_is_not_retried_when_the_outcome_may_be_known_only_later(
    exc: BaseException,
) -> None:
    attempt = Flaky(exc)
    with pytest.raises(type(exc)):
        await call_with_retry(RecordingPolicy(attempts=5), MONEY, attempt)
    assert attempt.calls == 1
    assert WAITS == []


@pytest.mark.parametrize("exc", [RequestNotSentError("refused"), _limited(0.0)])
async def test_money_is_retried_when_not_sent_or_rate_limited(exc: BaseException) -> None:
    attempt = Flaky(exc, exc)
    assert await call_with_retry(RecordingPolicy(attempts=5), MONEY, attempt) == "ok"
    assert attempt.calls == 3


async def test_money_stops_at_the_first_unknown_after_a_retry() -> None:
    attempt = Flaky(RequestNotSentError("refused"), OutcomeUnknownError("lost"))
    with pytest.raises(OutcomeUnknownError):
        await call_with_retry(RecordingPolicy(attempts=5), MONEY, attempt)
    assert attempt.calls == 2


async def test_non_retryable_errors_are_raised_at_once() -> None:
    attempt = Flaky(NotFoundError("404", status=404))
    with pytest.raises(NotFoundError):
        await call_with_retry(RecordingPolicy(attempts=5), READ, attempt)
    assert attempt.calls == 1


async def test_no_retry_policy_tries_once() -> None:
    attempt = Flaky(RequestNotSentError("refused"))
    with pytest.raises(RequestNotSentError):
        await call_with_retry(NO_RETRY, READ, attempt)
    assert attempt.calls == 1


async def test_a_real_retry_after_wait_is_taken() -> None:
    # RetryPolicy itself (not the recording one): Retry-After 0 waits nothing at all.
    attempt = Flaky(_limited(0.0), _limited(0.0))
    policy = RetryPolicy(attempts=3, initial=100.0, maximum=100.0)
    assert await asyncio.wait_for(call_with_retry(policy, MONEY, attempt), 5) == "ok"
    assert attempt.calls == 3


# --- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [READ, MONEY])
@pytest.mark.parametrize("failures_before_long_wait", [1, 2])
async def test_cancel_mid_backoff_propagates_promptly(
    kind: OperationKind, failures_before_long_wait: int
) -> None:
    # The first wait (bare first try) or a later one (inside tenacity) is an hour long.
    PAUSES[failures_before_long_wait] = 3600.0
    attempt = Flaky(*[RequestNotSentError("refused")] * 5)
    task = asyncio.create_task(call_with_retry(RecordingPolicy(attempts=5), kind, attempt))
    for _ in range(1000):
        if len(WAITS) >= failures_before_long_wait:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    assert done == {task}, "the cancelled call kept waiting"
    assert task.cancelled()
    assert attempt.calls == failures_before_long_wait


@pytest.mark.parametrize("position", [0, 1])
async def test_cancelled_error_from_an_attempt_is_never_retried(position: int) -> None:
    failures: list[BaseException] = [RequestNotSentError("refused")] * position
    attempt = Flaky(*failures, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await call_with_retry(RecordingPolicy(attempts=5), READ, attempt)
    assert attempt.calls == position + 1


async def test_each_call_gets_its_own_retry_state() -> None:
    policy = RecordingPolicy(attempts=2)
    first, second = Flaky(ServerError("x", status=500)), Flaky(ServerError("y", status=500))
    results = await asyncio.gather(
        call_with_retry(policy, READ, first), call_with_retry(policy, READ, second)
    )
    assert list(results) == ["ok", "ok"]
    assert first.calls == second.calls == 2


# --- reading Retry-After ---------------------------------------------------------------------


def _answer(**headers: str) -> HTTPResponse:
    return HTTPResponse(method="GET", url="u", status=429, headers=CIMultiDict(headers), body=b"")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), ("0", 0.0), ("2.5", 2.5), ("-5", 0.0), ("soon", None), ("nan", None),
     ("inf", None), ("", None)],
)  # fmt: skip
def test_retry_after_seconds(value: str, expected: float | None) -> None:
    assert _answer(**{"retry-after": value}).retry_after == expected


def test_retry_after_absent() -> None:
    assert _answer().retry_after is None


def test_retry_after_http_date() -> None:
    future = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30), usegmt=True
    )
    seconds = _answer(**{"Retry-After": future}).retry_after
    assert seconds is not None and 25.0 <= seconds <= 30.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert _answer(**{"Retry-After": past}).retry_after == 0.0


# --- one rule for "transient", shared with the pollers ---------------------------------------


@pytest.mark.parametrize(("exc", "reads", "money"), TABLE, ids=lambda v: repr(v)[:40])
def test_transient_is_the_read_rule(exc: BaseException, reads: bool, money: bool) -> None:
    assert is_transient(exc) is reads


@pytest.mark.parametrize(("exc", "reads", "money"), TABLE, ids=lambda v: repr(v)[:40])
def test_a_poll_goes_on_through_every_failed_read_but_not_found(
    exc: BaseException, reads: bool, money: bool
) -> None:
    # What the client retries, and any other error answer to the read itself (a 4xx a
    # proxy may send, a provider code saying no): none says anything about the payout.
    answered = isinstance(exc, APIError) and not isinstance(exc, NotFoundError)
    assert is_inconclusive(exc) is (reads or answered)


def test_the_pollers_use_the_same_rule() -> None:
    assert _polling.is_transient is is_transient
    assert _polling.is_inconclusive is is_inconclusive
    keep_going = inspect.signature(_polling.poll_until_final).parameters["keep_going"]
    assert keep_going.default is is_inconclusive


async def test_polling_goes_on_through_failed_reads_but_not_found_or_a_bug() -> None:
    policy = PollPolicy(initial=0.001, maximum=0.001, deadline=60.0)
    answers = Flaky(
        ServerError("503", status=503),
        OutcomeUnknownError("lost"),
        InvalidRequestError("422", status=422),
        ProviderRejectedError("Code 2", status=200, code=2),
    )
    assert await _polling.poll_until_final(answers, lambda _: True, policy=policy) == "ok"
    assert answers.calls == 5
    failures = (
        NotFoundError("404", status=404),
        ValidationError("operation_id", "bad"),
        RuntimeError("a bug"),
    )
    for failure in failures:
        broken = Flaky(failure)
        with pytest.raises(type(failure)):
            await _polling.poll_until_final(broken, lambda _: True, policy=policy)
        assert broken.calls == 1


# --- Retry-After on every retried answer, not only 429 ---------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ServerError("503", status=503, retry_after=3.0),
        ServerError("500", status=500, retry_after=3.0),
        InvalidRequestError("408", status=408, retry_after=3.0),
        InvalidResponseError("junk", status=200, retry_after=3.0),
        RateLimitError("429", status=429, retry_after=3.0),
    ],
    ids=lambda e: type(e).__name__ + str(e.status),
)
def test_retry_after_is_honoured_on_any_api_error(exc: APIError) -> None:
    assert RetryPolicy(max_retry_after=10.0).wait_seconds(2, exc) == 3.0
    exc.retry_after = 1000.0
    assert RetryPolicy(max_retry_after=10.0).wait_seconds(2, exc) == 10.0


ASKED: list[float] = []


class MeasuringPolicy(RetryPolicy):
    """The real ``wait_seconds``, recorded; the wait itself is skipped."""

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        ASKED.append(super().wait_seconds(attempt, exc))
        return 0.0


@pytest.fixture(autouse=True)
def _reset_asked() -> None:
    ASKED.clear()


async def test_a_client_waits_what_each_retried_answer_says() -> None:
    url = im_url("getOperationState")
    with aioresponses() as m:
        m.post(url, status=503, headers={"Retry-After": "7"}, body=HTML_502)
        m.post(url, status=500, headers={"Retry-After": "3"}, payload=im_error("Сбой"))
        m.post(url, status=408, headers={"Retry-After": "2.5"}, body=b"timeout")
        m.post(url, status=429, headers={"Retry-After": "1"}, body=b"slow down")
        m.post(url, status=503, body=HTML_502)  # no Retry-After: the backoff's own wait
        m.post(url, payload=im_ok())
        policy = MeasuringPolicy(attempts=6, initial=0.2, maximum=0.2, max_retry_after=60.0)
        async with im_client(retry=policy) as client:
            await client.get_operation_state(OP_ID)
    assert ASKED[:4] == [7.0, 3.0, 2.5, 1.0]
    assert 0.1 <= ASKED[4] <= 0.2 and len(ASKED) == 5


async def test_retry_after_of_an_enot_error_envelope_behind_http_200() -> None:
    info = f"{ENOT_BASE}payoff/info?id={PAYOFF_ID}&user_id={ENOT_USER}"
    with aioresponses() as m:
        m.get(info, headers={"Retry-After": "4"}, payload=enot_error(503, "busy"))
        m.get(info, payload=enot_ok({"payoff_id": PAYOFF_ID, "status": "wait"}))
        async with enot_client(retry=MeasuringPolicy(attempts=2)) as client:
            await client.get_payoff(payoff_id=PAYOFF_ID)
    assert ASKED == [4.0]


async def test_a_503_with_retry_after_on_execute_is_still_not_retried() -> None:
    with aioresponses() as m:
        m.post(im_url("executeOperation"), status=503, headers={"Retry-After": "7"}, body=b"")
        async with im_client(retry=MeasuringPolicy(attempts=5)) as client:
            with pytest.raises(ServerError) as caught:
                await client.execute_operation(OP_ID)
    assert ASKED == []
    assert caught.value.retry_after == 7.0
