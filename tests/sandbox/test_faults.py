"""Every fault kind, seen through the real clients: the error class the transport
gives it, and what the sandbox's books say actually happened."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from payout_async import (
    NO_RETRY,
    InvalidRequestError,
    InvalidResponseError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    Timeouts,
)
from payout_async.intellectmoney import MassPaymentOperationState as State
from payout_async.sandbox import DEFAULT_KINDS, MISLEADING, FaultKind, Faults, Sandbox

from .support import CARD, fast_config

#: (fault, error on a money-moving call, error on a read, did the effect commit?)
CASES = [
    (FaultKind.CLOSE_BEFORE_READ, OutcomeUnknownError, OutcomeUnknownError, False),
    (FaultKind.COMMIT_THEN_CLOSE, OutcomeUnknownError, OutcomeUnknownError, True),
    (FaultKind.COMMIT_THEN_STALL, OutcomeUnknownError, OutcomeUnknownError, True),
    (FaultKind.RATE_LIMIT, RateLimitError, RateLimitError, False),
    (FaultKind.HTTP_500, ServerError, ServerError, False),
    (FaultKind.HTTP_502, OutcomeUnknownError, ServerError, False),
    (FaultKind.HTTP_503, ServerError, ServerError, False),
    (FaultKind.HTTP_504, OutcomeUnknownError, ServerError, False),
    (FaultKind.TRUNCATED_JSON, OutcomeUnknownError, OutcomeUnknownError, True),
    (FaultKind.WRONG_CONTENT_TYPE, OutcomeUnknownError, InvalidResponseError, True),
    (FaultKind.LATENCY, None, None, True),
    # Processed, then refused in words: a 408 on a call that moves money says nothing.
    (FaultKind.COMMIT_THEN_408, OutcomeUnknownError, InvalidRequestError, True),
    (FaultKind.COMMIT_THEN_422, InvalidRequestError, InvalidRequestError, True),
]
DROPS = (FaultKind.CLOSE_BEFORE_READ, FaultKind.COMMIT_THEN_CLOSE)
SHORT = Timeouts(total=3.0, connect=1.0, read=0.3)


@pytest.mark.parametrize(("kind", "money_error", "_read", "commits"), CASES)
async def test_enot_create(
    payout_sandbox: Sandbox,
    kind: FaultKind,
    money_error: type[Exception] | None,
    _read: object,
    commits: bool,
) -> None:
    payout_sandbox.faults.script("enot.create", kind=kind, nth=1)
    async with payout_sandbox.enot_client(retry=NO_RETRY, timeouts=SHORT) as client:
        if money_error is None:
            await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="k")
        else:
            with pytest.raises(money_error) as raised:
                await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="k")
            if kind is FaultKind.RATE_LIMIT:
                assert isinstance(raised.value, RateLimitError)
                assert raised.value.retry_after == payout_sandbox.config.retry_after
        # The books say what happened, whatever the client saw:
        assert payout_sandbox.stats().enot.created == int(commits)
        assert payout_sandbox.faults.injected == {kind.value: 1}
        # The next call is served normally.
        await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="k2")
    assert payout_sandbox.stats().enot.created == int(commits) + 1


@pytest.mark.parametrize(("kind", "money_error", "_read", "commits"), CASES)
async def test_intellectmoney_execute(
    payout_sandbox: Sandbox,
    kind: FaultKind,
    money_error: type[Exception] | None,
    _read: object,
    commits: bool,
) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY, timeouts=SHORT) as client:
        created = await client.create_operation(pan=CARD, amount="10.00")
        assert created.operation_id is not None
        payout_sandbox.faults.script("im.execute", kind=kind)
        if money_error is None:
            await client.execute_operation(created.operation_id)
        else:
            with pytest.raises(money_error):
                await client.execute_operation(created.operation_id)
        after = await client.get_operation_state(created.operation_id)
    assert (after.state is not State.CREATED) is commits
    assert payout_sandbox.stats().intellectmoney.executed == int(commits)


async def _expect(call: Callable[[], Awaitable[object]], error: type[Exception] | None) -> None:
    if error is None:
        await call()
    else:
        with pytest.raises(error):
            await call()


@pytest.mark.parametrize(("kind", "_money", "read_error", "_commits"), CASES)
async def test_reads(
    payout_sandbox: Sandbox,
    kind: FaultKind,
    _money: object,
    read_error: type[Exception] | None,
    _commits: bool,
) -> None:
    sandbox = payout_sandbox
    async with sandbox.intellectmoney_client(retry=NO_RETRY) as im:
        operation = await im.create_operation(pan=CARD, amount="1.00")
    async with sandbox.enot_client(retry=NO_RETRY) as enot:
        await enot.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="r")
    operation_id = operation.operation_id
    assert operation_id is not None
    injected = 0
    for route in ("enot.info", "enot.balance", "enot.banks", "im.state"):
        # aiohttp repeats a GET (Enot's reads) once by itself after a dropped connection
        # (next test): a dropped GET reaches the caller only when the repeat drops too.
        times = 2 if kind in DROPS and route.startswith("enot.") else 1
        injected += times
        for _ in range(times):
            sandbox.faults.script(route, kind=kind)
        async with (
            sandbox.enot_client(retry=NO_RETRY, timeouts=SHORT) as enot,
            sandbox.intellectmoney_client(retry=NO_RETRY, timeouts=SHORT) as im,
        ):
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "enot.info": lambda: enot.get_payoff(order_id="r"),
                "enot.balance": enot.get_balance,
                "enot.banks": enot.list_sbp_banks,
                "im.state": lambda: im.get_operation_state(operation_id),
            }
            await _expect(calls[route], read_error)
        assert sandbox.faults.calls(route) == times
    assert sandbox.faults.injected == {kind.value: injected}


@pytest.mark.parametrize("kind", [FaultKind.CLOSE_BEFORE_READ, FaultKind.COMMIT_THEN_CLOSE])
async def test_aiohttp_repeats_a_dropped_get_once_but_never_a_post(
    payout_sandbox: Sandbox, kind: FaultKind
) -> None:
    """Not the library's retry: aiohttp (RFC 9112 section 9.3.1.1) sends an idempotent
    request once more when the connection drops. A POST is never repeated."""
    faults = payout_sandbox.faults
    async with payout_sandbox.enot_client(retry=NO_RETRY) as client:
        faults.script("enot.balance", kind=kind)
        await client.get_balance()
        assert faults.calls("enot.balance") == 2
        faults.script("enot.create", kind=kind)
        with pytest.raises(OutcomeUnknownError):
            await client.create_payoff(service="card", wallet_to=CARD, amount=1, order_id="q")
        assert faults.calls("enot.create") == 1


async def test_faults_reach_the_intellectmoney_create_too(payout_sandbox: Sandbox) -> None:
    payout_sandbox.faults.script("im.create", kind=FaultKind.COMMIT_THEN_CLOSE)
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.create_operation(pan=CARD, amount="1.00")
    # The lost create left a harmless Created operation behind.
    stats = payout_sandbox.stats().intellectmoney
    assert (stats.created, stats.executed) == (1, 0)


async def test_script_counts_calls_per_route(payout_sandbox: Sandbox) -> None:
    faults = payout_sandbox.faults
    assert faults.script("enot.balance", kind=FaultKind.HTTP_500, nth=3) == 3
    async with payout_sandbox.enot_client(retry=NO_RETRY) as client:
        await client.get_balance()
        await client.get_balance()
        with pytest.raises(ServerError):
            await client.get_balance()
        await client.get_balance()
    assert faults.calls("enot.balance") == 4
    with pytest.raises(ValueError, match="already happened"):
        faults.script("enot.balance", kind=FaultKind.HTTP_500, nth=2)
    with pytest.raises(ValueError, match="unknown sandbox route"):
        faults.script("enot.nope", kind=FaultKind.HTTP_500)


def test_seeded_faults_are_reproducible() -> None:
    def draws(seed: int) -> list[FaultKind | None]:
        faults = Faults(rate=0.5, seed=seed)
        return [faults.pick("im.state") for _ in range(200)]

    first = draws(11)
    assert first == draws(11)
    assert first != draws(12)
    hits = sum(kind is not None for kind in first)
    assert 60 < hits < 140
    assert len({kind for kind in first if kind is not None}) > 5


def test_misleading_kinds_are_drawn_only_when_named() -> None:
    assert {FaultKind.COMMIT_THEN_408, FaultKind.COMMIT_THEN_422} == MISLEADING
    assert Faults().kinds == tuple(sorted(DEFAULT_KINDS, key=lambda kind: kind.value))
    assert fast_config().fault_kinds == DEFAULT_KINDS == frozenset(FaultKind) - MISLEADING
    faults = Faults(rate=1.0, kinds=[FaultKind.COMMIT_THEN_422], seed=1)
    assert faults.pick("enot.create") is FaultKind.COMMIT_THEN_422


def test_fault_routes_and_kinds_limit_the_draw() -> None:
    faults = Faults(rate=1.0, kinds=[FaultKind.HTTP_503], routes=["enot.create"], seed=1)
    assert faults.pick("enot.info") is None
    assert faults.pick("enot.create") is FaultKind.HTTP_503
    assert faults.injected == {"http_503": 1}
    assert faults.call_counts == {"enot.info": 1, "enot.create": 1}


async def test_random_faults_over_http_match_the_books() -> None:
    config = fast_config(
        fault_rate=0.5,
        fault_kinds=[FaultKind.HTTP_500, FaultKind.COMMIT_THEN_CLOSE],
        fault_routes=["enot.create"],
    )
    async with Sandbox(config=config) as sandbox:
        outcomes = []
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            for index in range(30):
                try:
                    await client.create_payoff(
                        service="card", wallet_to=CARD, amount=1, order_id=f"o{index}"
                    )
                except ServerError:
                    outcomes.append("500")
                except OutcomeUnknownError:
                    outcomes.append("lost")
                else:
                    outcomes.append("ok")
        injected = sandbox.faults.injected
        assert outcomes.count("500") == injected.get("http_500", 0) > 0
        assert outcomes.count("lost") == injected.get("commit_then_close", 0) > 0
        assert sandbox.stats().enot.created == outcomes.count("ok") + outcomes.count("lost")
