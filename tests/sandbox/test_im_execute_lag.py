"""IntellectMoney behaviours the documents leave open, over loopback with the real client:
the ``Created`` lag after an accepted execute, a second execute, a delete in the lag."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from payout_async import NO_RETRY, IntellectMoneyClient, ProviderRejectedError
from payout_async.intellectmoney import MassPaymentOperationState as State
from payout_async.sandbox import Sandbox, SandboxConfig

from ..payouts.support import books
from .support import CARD, ManualClock, fast_config, im_raw

LAG = 10.0
AMOUNT = Decimal("40.00")


def lag_config(**overrides: Any) -> SandboxConfig:
    """A lag of ``LAG`` seconds, then InProcess 1 s and final 3 s after it."""
    settings: dict[str, Any] = {
        "im_execute_lag": LAG,
        "im_in_process_after": 1.0,
        "im_final_after": 3.0,
    }
    settings.update(overrides)
    return fast_config(**settings)


async def _created(client: IntellectMoneyClient, description: str | None = "pay-1") -> str:
    created = await client.create_operation(pan=CARD, amount=AMOUNT, description=description)
    assert created.operation_id is not None
    return created.operation_id


async def _states(
    client: IntellectMoneyClient, clock: ManualClock, operation_id: str, steps: list[float]
) -> list[State]:
    seen = []
    for step in steps:
        clock.advance(step)
        seen.append((await client.get_operation_state(operation_id)).state)
    return seen


@pytest.mark.parametrize("api", ["current", "legacy"])
async def test_accepted_execute_reads_created_for_the_lag_then_runs_its_timeline(
    api: Any,
) -> None:
    clock = ManualClock()
    async with (
        Sandbox(config=lag_config(), clock=clock) as sandbox,
        sandbox.intellectmoney_client(api=api, retry=NO_RETRY) as client,
    ):
        # The legacy API has no Description: the books key the payout by its id.
        operation_id = await _created(client, "pay-1" if api == "current" else None)
        key = "pay-1" if api == "current" else operation_id
        executed = await client.execute_operation(operation_id)
        assert executed.accepted  # Code 1: accepted, still processing
        assert executed.state is State.CREATED
        assert executed.operation_id == operation_id
        assert executed.raw["OperationState"] == {
            "Code": 1,
            "Desc": "Операция принята в обработку",
        }
        # The money left at the accepted execute, though the state reads Created.
        assert sandbox.stats().intellectmoney.balance == sandbox.config.im_balance - AMOUNT
        assert sandbox.paid_per_payout() == Counter({("intellectmoney", key): 1})

        seen = await _states(client, clock, operation_id, [0.0, LAG - 0.1, 0.1, 0.9, 0.2, 1.8, 0.2])
        final = await client.get_operation_state(operation_id)
    assert seen == [
        State.CREATED,
        State.CREATED,
        State.SENT_TO_BANK,  # the timeline starts at the end of the lag
        State.SENT_TO_BANK,
        State.IN_PROCESS,
        State.IN_PROCESS,
        State.COMPLETED,
    ]
    assert not final.accepted  # state reads are plain Code 0 answers
    stats = sandbox.stats().intellectmoney
    assert (stats.executed, stats.paid) == (1, 1)


async def test_lag_with_the_real_clock() -> None:
    config = fast_config(im_execute_lag=0.15, im_in_process_after=0.0, im_final_after=0.0)
    async with (
        Sandbox(config=config) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        assert (await client.execute_operation(operation_id)).accepted
        assert (await client.get_operation_state(operation_id)).state is State.CREATED
        await asyncio.sleep(0.2)
        assert (await client.get_operation_state(operation_id)).state is State.COMPLETED


async def test_not_enough_money_also_waits_out_the_lag() -> None:
    clock = ManualClock()
    config = lag_config(im_balance="10.00")
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        assert (await client.execute_operation(operation_id)).accepted
        seen = await _states(client, clock, operation_id, [LAG - 0.1, 0.1])
    assert seen == [State.CREATED, State.NOT_ENOUGH_MONEY]
    assert sandbox.stats().intellectmoney.balance == Decimal("10.00")
    assert sandbox.paid_per_payout() == Counter()


async def test_without_a_lag_execute_answers_code_0_as_before(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        operation_id = await _created(client)
        executed = await client.execute_operation(operation_id)
    assert not executed.accepted
    assert executed.raw["OperationState"]["Code"] == 0
    assert executed.state is not State.CREATED


@pytest.mark.parametrize("mode", ["refuse", "accept", "pay_again"])
@pytest.mark.parametrize("when", ["in the lag", "after the lag"])
async def test_second_execute(mode: Any, when: str) -> None:
    clock = ManualClock()
    config = lag_config(im_second_execute=mode)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        await client.execute_operation(operation_id)
        clock.advance(LAG / 2 if when == "in the lag" else LAG + 5)
        if mode == "refuse":
            with pytest.raises(ProviderRejectedError) as refused:
                await client.execute_operation(operation_id)
            assert refused.value.code == 2
        else:
            again = await client.execute_operation(operation_id)
            # Answered like the first accepted execute, whatever happened behind it.
            assert again.accepted is (when == "in the lag")
            expected = State.CREATED if when == "in the lag" else State.COMPLETED
            assert again.state is expected
        clock.advance(LAG + 5)
        final = await client.get_operation_state(operation_id)
    times = 2 if mode == "pay_again" else 1
    assert final.state is State.COMPLETED
    assert sandbox.stats().intellectmoney.balance == config.im_balance - times * AMOUNT
    assert [operation.executions for operation in sandbox.state.intellectmoney] == [times]
    assert books(sandbox.state)[0] == Counter({"pay-1": times})
    assert sandbox.paid_per_payout() == Counter({("intellectmoney", "pay-1"): times})
    stats = sandbox.stats().intellectmoney
    assert (stats.executed, stats.paid, stats.by_recipient[CARD].paid) == (times, times, times)
    assert [d.count for d in sandbox.duplicates()] == ([2] if mode == "pay_again" else [])


async def test_refused_second_execute_in_the_lag_says_it_is_processing() -> None:
    clock = ManualClock()
    async with Sandbox(config=lag_config(), clock=clock) as sandbox:
        async with sandbox.intellectmoney_client(retry=NO_RETRY) as client:
            operation_id = await _created(client)
            await client.execute_operation(operation_id)
        status, body = await im_raw(
            sandbox, "executeOperation", {"PayoutOperationId": operation_id}
        )
    assert status == 200
    assert body == {
        "OperationState": {"Code": 2, "Desc": "Операция уже принята в обработку"},
        "Result": False,
    }


async def test_duplicates_flag_one_operation_paid_again() -> None:
    async with (
        Sandbox(config=fast_config(im_second_execute="pay_again")) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client, "bonus")
        await client.execute_operation(operation_id)
        await client.execute_operation(operation_id)
        other = await _created(client, "salary")
        await client.execute_operation(other)
    [duplicate] = sandbox.duplicates()
    assert (duplicate.provider, duplicate.key) == ("intellectmoney", f"{CARD}|40.00|bonus")
    assert (duplicate.count, duplicate.ids) == (2, (operation_id, operation_id))
    assert sandbox.paid_per_payout() == Counter(
        {("intellectmoney", "bonus"): 2, ("intellectmoney", "salary"): 1}
    )


async def test_pay_again_is_refused_when_the_balance_cannot_cover_it() -> None:
    config = fast_config(im_second_execute="pay_again", im_balance="50.00")
    async with (
        Sandbox(config=config) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        await client.execute_operation(operation_id)
        with pytest.raises(ProviderRejectedError, match="Недостаточно средств"):
            await client.execute_operation(operation_id)
    assert sandbox.stats().intellectmoney.balance == Decimal("10.00")
    assert sandbox.paid_per_payout() == Counter({("intellectmoney", "pay-1"): 1})


async def test_pay_again_of_a_failed_outcome_counts_but_pays_nothing() -> None:
    config = fast_config(im_second_execute="pay_again", failure_ratio=1.0)
    async with (
        Sandbox(config=config) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        await client.execute_operation(operation_id)
        await client.execute_operation(operation_id)
    assert books(sandbox.state)[0] == Counter({"pay-1": 2})  # executed twice: a client bug
    assert sandbox.paid_per_payout() == Counter()  # but nobody was paid
    assert sandbox.stats().intellectmoney.balance == config.im_balance


@pytest.mark.parametrize("mode", ["refuse", "accept", "pay_again"])
async def test_delete_in_the_lag_is_accepted_yet_the_execute_pays(mode: Any) -> None:
    clock = ManualClock()
    config = lag_config(im_second_execute=mode)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        await client.execute_operation(operation_id)
        clock.advance(1.0)
        assert (await client.get_operation_state(operation_id)).state is State.CREATED
        assert await client.delete_operation(operation_id) is True
        seen = await _states(client, clock, operation_id, [0.0, LAG - 1.1, 0.2, 3.0])
        with pytest.raises(ProviderRejectedError, match="Created"):
            await client.delete_operation(operation_id)  # after the lag: refused as usual
    # Deleted (a terminal state!) until the lag ends, then the execution's own states.
    assert seen == [State.DELETED, State.DELETED, State.SENT_TO_BANK, State.COMPLETED]
    assert sandbox.stats().intellectmoney.balance == config.im_balance - AMOUNT
    assert sandbox.stats().intellectmoney.deleted == 0
    assert sandbox.paid_per_payout() == Counter({("intellectmoney", "pay-1"): 1})


async def test_a_deleted_operation_never_executed_stays_unexecutable() -> None:
    async with (
        Sandbox(config=fast_config(im_execute_lag=5.0, im_second_execute="pay_again")) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        operation_id = await _created(client)
        assert await client.delete_operation(operation_id) is True
        with pytest.raises(ProviderRejectedError, match="Deleted"):
            await client.execute_operation(operation_id)
        assert (await client.get_operation_state(operation_id)).state is State.DELETED
    assert books(sandbox.state)[0] == Counter()
    assert sandbox.stats().intellectmoney.balance == sandbox.config.im_balance


def test_the_new_settings_are_off_by_default_and_validated() -> None:
    config = SandboxConfig()
    assert (config.im_execute_lag, config.im_second_execute, config.enot_info_lag) == (
        0.0,
        "refuse",
        0.0,
    )
    with pytest.raises(ValueError, match="im_execute_lag"):
        SandboxConfig(im_execute_lag=-1)
    with pytest.raises(ValueError, match="enot_info_lag"):
        SandboxConfig(enot_info_lag=-0.1)
    with pytest.raises(ValueError, match="im_second_execute"):
        SandboxConfig(im_second_execute="twice")  # type: ignore[arg-type]
