"""``SandboxConfig.answer_delay``: a route reads its state when the request arrives and
answers later, with the state as it was read -- "the provider answered 20 s after it
read its state". Held answers are released here by the sandbox's ``closing`` event
(as shutting down does), so no test waits the delay out or measures time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from payout_async import NO_RETRY, Timeouts
from payout_async.enot import PayoffStatus
from payout_async.intellectmoney import MassPaymentOperationState as State
from payout_async.sandbox import Sandbox, SandboxConfig

from .support import CARD, ManualClock, fast_config

HOLD = 600.0  # longer than any test: answers leave only when released
PATIENT = Timeouts(total=HOLD * 2, connect=5.0, read=HOLD * 2)


async def until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (polled every 10 ms, for up to 30 s)."""
    for _ in range(3000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def release(sandbox: Sandbox) -> None:
    """Let every held answer go (what closing the sandbox does first)."""
    sandbox.state.closing.set()


async def held(sandbox: Sandbox, route: str, call: Awaitable[Any]) -> asyncio.Task[Any]:
    """``call`` started, and its request processed by ``route`` (its answer held)."""
    before = sandbox.faults.calls(route)
    task = asyncio.ensure_future(call)
    await until(lambda: sandbox.faults.calls(route) > before)
    await asyncio.sleep(0.05)  # give a (wrongly) unheld answer the chance to arrive
    assert not task.done()
    return task


async def test_payoff_info_answers_with_the_state_it_read_on_arrival() -> None:
    clock = ManualClock()
    config = fast_config(enot_final_after=1.0, answer_delay={"enot.info": HOLD})
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.enot_client(retry=NO_RETRY, timeouts=PATIENT) as client,
    ):
        await client.create_payoff(service="card", wallet_to=CARD, amount=100, order_id="o-1")
        asking = await held(sandbox, "enot.info", client.get_payoff(order_id="o-1"))
        clock.advance(5)  # the payoff has succeeded in the books since
        assert sandbox.paid_per_payout() == {("enot", "o-1"): 1}
        release(sandbox)
        answer = await asyncio.wait_for(asking, 30)
        assert answer.status is PayoffStatus.WAIT  # as it was when the request arrived
        sandbox.delay_answers("enot.info", 0.0)
        sandbox.state.closing.clear()
        assert (await client.get_payoff(order_id="o-1")).status is PayoffStatus.SUCCESS


async def test_a_create_commits_on_arrival_and_its_answer_comes_later() -> None:
    async with (
        Sandbox(config=fast_config(answer_delay={"enot.create": HOLD})) as sandbox,
        sandbox.enot_client(retry=NO_RETRY, timeouts=PATIENT) as client,
    ):
        creating = await held(
            sandbox,
            "enot.create",
            client.create_payoff(service="card", wallet_to=CARD, amount=100, order_id="o-2"),
        )
        [payoff] = list(sandbox.state.enot)  # booked while the answer is held
        assert payoff.details.order_id == "o-2"
        release(sandbox)
        created = await asyncio.wait_for(creating, 30)
        assert created.payoff_id == payoff.id


async def test_get_operation_state_answers_with_the_state_it_read_on_arrival() -> None:
    clock = ManualClock()
    config = fast_config(im_in_process_after=1.0, im_final_after=2.0)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY, timeouts=PATIENT) as client,
    ):
        created = await client.create_operation(pan=CARD, amount=Decimal("40.00"), description="p")
        assert created.operation_id is not None
        await client.execute_operation(created.operation_id)
        sandbox.delay_answers("im.state", HOLD)
        asking = await held(sandbox, "im.state", client.get_operation_state(created.operation_id))
        clock.advance(5)
        release(sandbox)
        answer = await asyncio.wait_for(asking, 30)
        assert answer.state is State.SENT_TO_BANK  # read before InProcess and Completed
        sandbox.delay_answers("im.state", 0.0)
        sandbox.state.closing.clear()
        now = await client.get_operation_state(created.operation_id)
        assert now.state is State.COMPLETED


def test_answer_delay_names_known_routes_and_sane_delays() -> None:
    config = SandboxConfig(answer_delay={"enot.info": 20, "im.state": 20.0})
    assert config.answer_delay == (("enot.info", 20.0), ("im.state", 20.0))
    hash(config)  # still a frozen, hashable value
    with pytest.raises(ValueError, match="unknown sandbox route 'payoff/info'"):
        SandboxConfig(answer_delay={"payoff/info": 20.0})
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="answer_delay"):
            SandboxConfig(answer_delay={"enot.info": bad})


async def test_reset_restores_the_configured_delays() -> None:
    async with Sandbox(config=fast_config(answer_delay={"enot.info": 3.0})) as sandbox:
        sandbox.delay_answers("enot.info", 0.0)
        sandbox.delay_answers("im.state", 7.0)
        assert sandbox.state.answer_delays == {"enot.info": 0.0, "im.state": 7.0}
        sandbox.reset()
        assert sandbox.state.answer_delays == {"enot.info": 3.0}
        with pytest.raises(ValueError):
            sandbox.delay_answers("nowhere", 1.0)
