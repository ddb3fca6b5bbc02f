"""Enot against the sandbox over loopback: every call, auth, money, duplicates."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from payout_async import (
    NO_RETRY,
    AuthenticationError,
    EnotClient,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from payout_async.enot import PayoffStatus
from payout_async.sandbox import Sandbox

from .support import CARD, PHONE, SBP_BANK, ManualClock, card_payoff, enot_raw, fast_config


async def test_every_call(payout_sandbox: Sandbox, payout_enot_client: EnotClient) -> None:
    start = await payout_enot_client.get_balance()
    assert start.balance == payout_sandbox.config.enot_balance

    banks = await payout_enot_client.list_sbp_banks()
    assert SBP_BANK in {bank.id for bank in banks}

    created = await payout_enot_client.create_payoff(
        service="card", wallet_to=CARD, amount=Decimal("100.50"), order_id="o-1", comment="за май"
    )
    assert created.payoff_id
    assert created.amount_withdraw_rub == Decimal("100.50")

    by_id = await payout_enot_client.get_payoff(payoff_id=created.payoff_id)
    by_order = await payout_enot_client.get_payoff(order_id="o-1")
    assert by_id.payoff_id == by_order.payoff_id == created.payoff_id
    assert by_id.status is PayoffStatus.WAIT
    assert (by_id.amount, by_id.order_id, by_id.comment) == (Decimal("100.50"), "o-1", "за май")
    assert by_id.commission_rub == Decimal("2.51")  # 2.5 %, rounded half up
    assert by_id.amount_receive == Decimal("97.99")  # subtract=2: the fee comes off the amount

    waiting = await payout_enot_client.get_balance()
    assert waiting.active_balance == start.balance - Decimal("100.50")
    assert waiting.freeze_balance == Decimal("100.50")

    await asyncio.sleep(0.08)
    done = await payout_enot_client.get_payoff(payoff_id=created.payoff_id)
    assert done.status is PayoffStatus.SUCCESS
    assert done.paid_at
    after = await payout_enot_client.get_balance()
    assert after.balance == after.active_balance == start.balance - Decimal("100.50")
    assert after.freeze_balance == 0

    sbp = await payout_enot_client.create_payoff(
        service="sbp", wallet_to=PHONE, amount=10, order_id="o-2", sbp_bank_id=SBP_BANK, subtract=1
    )
    assert sbp.amount_withdraw_rub == Decimal("10.25")  # subtract=1: fee from the balance


async def test_money_comes_as_numbers_and_strings(payout_sandbox: Sandbox) -> None:
    _, created, _ = await enot_raw(
        payout_sandbox, "POST", "/payoff/create", body=card_payoff(payout_sandbox, amount=12.5)
    )
    assert isinstance(created["data"]["amount_withdraw_rub"], str)
    assert isinstance(created["data"]["balance"], int | float)
    params = {"user_id": payout_sandbox.credentials.enot_user_id, "order_id": "order-1"}
    status, info, _ = await enot_raw(payout_sandbox, "GET", "/payoff/info", params=params)
    assert status == 200
    assert info["status"] == 200 and info["status_check"] is True
    assert info["data"]["amount"] == 12.5
    assert info["data"]["amount_withdraw_rub"] == "12.50"
    assert info["data"]["type"] == "api"
    assert info["data"]["subtract"] == "amount"


async def test_unknown_payoff_is_404(payout_enot_client: EnotClient) -> None:
    with pytest.raises(NotFoundError, match="Вывод не найден"):
        await payout_enot_client.get_payoff(order_id="never")
    with pytest.raises(NotFoundError):
        await payout_enot_client.get_payoff(payoff_id="00000000-0000-4000-8000-000000000000")


async def test_auth_needs_key_and_user_id(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.enot_client(secret_key="wrong", retry=NO_RETRY) as client:
        with pytest.raises(AuthenticationError):
            await client.get_balance()
        with pytest.raises(AuthenticationError):
            await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="x")
    async with payout_sandbox.enot_client(
        user_id="11111111-1111-4111-8111-111111111111", retry=NO_RETRY
    ) as client:
        for call in (client.get_balance, client.list_sbp_banks):
            with pytest.raises(AuthenticationError):
                await call()
        with pytest.raises(AuthenticationError):
            await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="x")
    status, body, _ = await enot_raw(
        payout_sandbox, "GET", "/payoff/get-sbp-bank-list", params={"user_id": "x"}
    )
    assert status == 401
    assert body["data"] is None and body["status"] == 401 and body["status_check"] is False
    assert payout_sandbox.stats().enot.created == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": None},
        {"amount": "ten"},
        {"amount": 10.005},
        {"amount": -5},
        {"wallet_to": None},
        {"wallet_to": "12"},
        {"service": "sbp", "wallet_to": PHONE},  # no payoff_data.sbp_bank_type
        {"service": "sbp", "wallet_to": PHONE, "payoff_data": {"sbp_bank_type": "nope"}},
        {"service": "qiwi", "wallet_to": "not-a-phone"},
        {"order_id": "x" * 256},
        {"comment": "x" * 256},
        {"hook_url": "http://127.0.0.1/" + "x" * 500},
        {"subtract": 3},
    ],
)
async def test_create_validation_is_422(
    payout_sandbox: Sandbox, overrides: dict[str, object]
) -> None:
    body = card_payoff(payout_sandbox, **overrides)
    status, answer, _ = await enot_raw(payout_sandbox, "POST", "/payoff/create", body=body)
    assert status == 422, answer
    assert answer["status"] == 422 and answer["status_check"] is False and answer["error"]
    assert payout_sandbox.stats().enot.created == 0


async def test_garantex_needs_no_wallet(payout_sandbox: Sandbox) -> None:
    body = card_payoff(payout_sandbox, service="garantex", wallet_to=None)
    status, answer, _ = await enot_raw(payout_sandbox, "POST", "/payoff/create", body=body)
    assert status == 200, answer


async def test_balance_too_low_is_403_and_fees_count() -> None:
    async with Sandbox(config=fast_config(enot_balance="102.00")) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            with pytest.raises(PermissionDeniedError, match="Недостаточно"):
                await client.create_payoff(
                    service="card", wallet_to=CARD, amount=100, order_id="a", subtract=1
                )
            created = await client.create_payoff(
                service="card", wallet_to=CARD, amount=100, order_id="b", subtract=2
            )
            assert created.balance == Decimal("2")
            with pytest.raises(PermissionDeniedError):
                await client.create_payoff(service="card", wallet_to=CARD, amount=5, order_id="c")
            with pytest.raises(PermissionDeniedError, match="тарифу"):
                await client.create_payoff(
                    service="card", wallet_to=CARD, amount=Decimal("0.50"), order_id="d"
                )
        assert sandbox.stats().enot.created == 1


async def test_failed_payoff_refunds_its_withdrawal() -> None:
    clock = ManualClock()
    config = fast_config(failure_ratio=1.0, enot_final_after=5)
    async with Sandbox(config=config, clock=clock) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            created = await client.create_payoff(
                service="card", wallet_to=CARD, amount=40, order_id="f"
            )
            assert (await client.get_balance()).active_balance == config.enot_balance - 40
            clock.advance(5)
            payoff = await client.get_payoff(payoff_id=created.payoff_id)
            assert payoff.status is PayoffStatus.FAIL
            assert payoff.error_message
            balance = await client.get_balance()
        assert balance.balance == balance.active_balance == config.enot_balance
        stats = sandbox.stats().enot
        assert (stats.created, stats.failed, stats.paid) == (1, 1, 0)


async def test_duplicate_order_id_accepted_makes_a_second_payoff() -> None:
    async with Sandbox(config=fast_config(duplicate_order_id="accept")) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            first = await client.create_payoff(
                service="card", wallet_to=CARD, amount=10, order_id="same"
            )
            second = await client.create_payoff(
                service="card", wallet_to=CARD, amount=10, order_id="same"
            )
            found = await client.get_payoff(order_id="same")
        assert first.payoff_id != second.payoff_id
        assert found.payoff_id == first.payoff_id
        assert sandbox.stats().enot.by_order_id["same"].created == 2
        [duplicate] = sandbox.duplicates()
        assert (duplicate.provider, duplicate.key, duplicate.count) == ("enot", "same", 2)
        assert set(duplicate.ids) == {first.payoff_id, second.payoff_id}


async def test_duplicate_order_id_rejected_is_422() -> None:
    async with Sandbox(config=fast_config(duplicate_order_id="reject")) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="same")
            with pytest.raises(InvalidRequestError) as refused:
                await client.create_payoff(
                    service="card", wallet_to=CARD, amount=10, order_id="same"
                )
        assert refused.value.status == 422
        assert sandbox.stats().enot.created == 1
        assert sandbox.duplicates() == []
