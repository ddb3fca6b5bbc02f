"""IntellectMoney against the sandbox over loopback: every call, both APIs, both bodies."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from payout_async import (
    NO_RETRY,
    AuthenticationError,
    IntellectMoneyClient,
    ProviderRejectedError,
)
from payout_async.intellectmoney import MassPaymentOperationState as State
from payout_async.intellectmoney import sign
from payout_async.sandbox import Sandbox

from .support import CARD, PHONE, SBP_BANK, ManualClock, fast_config, im_raw

API_BODIES = [
    ("current", "json"),
    ("current", "form"),
    ("legacy", "json"),
    ("legacy", "form"),
]


@pytest.mark.parametrize(("api", "body_format"), API_BODIES)
async def test_every_call_of_both_apis(payout_sandbox: Sandbox, api: Any, body_format: Any) -> None:
    async with payout_sandbox.intellectmoney_client(
        api=api, body_format=body_format, retry=NO_RETRY
    ) as client:
        created = await client.create_operation(
            pan=CARD, amount="50.00", recipient_name="Иван Иванов"
        )
        assert created.state is State.CREATED
        assert created.operation_id
        assert created.api_operation_id  # OperationId of the API call

        executed = await client.execute_operation(created.operation_id)
        assert executed.operation_id == created.operation_id
        assert executed.state in (State.SENT_TO_BANK, State.IN_PROCESS, State.COMPLETED)

        await asyncio.sleep(0.08)
        final = await client.get_operation_state(created.operation_id)
        assert final.state is State.COMPLETED
        assert final.is_final

        sbp = (
            await client.create_operation(account=PHONE, bank_id=SBP_BANK, amount="10.00")
            if api == "current"
            else await client.create_operation(account=PHONE, amount="10.00")  # Qiwi
        )
        assert sbp.operation_id is not None
        assert await client.delete_operation(sbp.operation_id) is True
        deleted = await client.get_operation_state(sbp.operation_id)
        assert deleted.state is State.DELETED

    if api == "current":
        assert final.raw["EshopId"] == payout_sandbox.config.im_eshop_id
    else:
        assert "EshopId" not in final.raw
    stats = payout_sandbox.stats().intellectmoney
    assert (stats.created, stats.executed, stats.paid, stats.deleted) == (2, 1, 1, 1)
    assert stats.balance == payout_sandbox.config.im_balance - Decimal("50.00")


async def test_envelope_is_the_documented_one(payout_sandbox: Sandbox) -> None:
    status, body = await im_raw(
        payout_sandbox,
        "createOperation",
        {"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "100.00", "Currency": "RUB"},
    )
    assert status == 200
    assert body["OperationState"] == {"Code": 0, "Desc": "Успешно обработана"}
    assert set(body) == {"OperationState", "OperationId", "EshopId", "Result"}
    result = body["Result"]
    assert result["State"]["Code"] == 0
    assert result["PayoutOperationState"] == "Created"

    status, body = await im_raw(
        payout_sandbox, "deleteOperation", {"PayoutOperationId": result["PayoutOperationId"]}
    )
    assert (status, body["Result"]) == (200, True)


async def test_state_progression_follows_the_clock() -> None:
    clock = ManualClock()
    config = fast_config(im_in_process_after=10, im_final_after=30)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.intellectmoney_client(retry=NO_RETRY) as client,
    ):
        created = await client.create_operation(pan=CARD, amount="5.00")
        assert created.operation_id is not None
        seen = [(await client.execute_operation(created.operation_id)).state]
        for step in (9.9, 0.2, 19.8, 0.2):
            clock.advance(step)
            seen.append((await client.get_operation_state(created.operation_id)).state)
    assert seen == [
        State.SENT_TO_BANK,
        State.SENT_TO_BANK,
        State.IN_PROCESS,
        State.IN_PROCESS,
        State.COMPLETED,
    ]


async def test_failure_ratio_ends_failed_without_debit() -> None:
    config = fast_config(failure_ratio=1.0, im_in_process_after=0, im_final_after=0)
    async with Sandbox(config=config) as sandbox:
        async with sandbox.intellectmoney_client(retry=NO_RETRY) as client:
            created = await client.create_operation(pan=CARD, amount="5.00")
            assert created.operation_id is not None
            executed = await client.execute_operation(created.operation_id)
        assert executed.state is State.FAILED
        assert executed.error_message
        assert sandbox.stats().intellectmoney.balance == sandbox.config.im_balance


async def test_not_enough_money_when_the_balance_runs_out() -> None:
    async with Sandbox(config=fast_config(im_balance="150.00")) as sandbox:
        async with sandbox.intellectmoney_client(retry=NO_RETRY) as client:
            states = []
            for _ in range(2):
                created = await client.create_operation(pan=CARD, amount="100.00")
                assert created.operation_id is not None
                states.append((await client.execute_operation(created.operation_id)).state)
        assert states[0] is not State.NOT_ENOUGH_MONEY
        assert states[1] is State.NOT_ENOUGH_MONEY
        stats = sandbox.stats().intellectmoney
        assert stats.balance == Decimal("50.00")
        assert stats.not_enough_money == 1


async def test_execute_twice_is_refused_and_moves_no_money_twice(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        created = await client.create_operation(pan=CARD, amount="70.00")
        assert created.operation_id is not None
        await client.execute_operation(created.operation_id)
        with pytest.raises(ProviderRejectedError) as refused:
            await client.execute_operation(created.operation_id)
        assert refused.value.code == 2
        with pytest.raises(ProviderRejectedError):
            await client.delete_operation(created.operation_id)  # only from Created
    stats = payout_sandbox.stats().intellectmoney
    assert stats.executed == 1
    assert stats.balance == payout_sandbox.config.im_balance - Decimal("70.00")


async def test_unknown_operation_is_code_2(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        for call in (client.get_operation_state, client.execute_operation):
            with pytest.raises(ProviderRejectedError, match="не найдена"):
                await call("00000000-0000-4000-8000-000000000000")


async def test_wrong_sign_is_refused(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(
        secret_key="not-the-key", retry=NO_RETRY
    ) as client:
        with pytest.raises(ProviderRejectedError, match="Неверная подпись"):
            await client.create_operation(pan=CARD, amount="1.00")
    status, body = await im_raw(
        payout_sandbox, "getOperationState", {"PayoutOperationId": "x"}, sign_header=False
    )
    assert (status, body) == (200, {"OperationState": {"Code": 2, "Desc": "Неверная подпись"},
                                     "Result": False})  # fmt: skip
    assert payout_sandbox.stats().intellectmoney.created == 0


async def test_legacy_sign_may_travel_in_the_body(payout_sandbox: Sandbox) -> None:
    fields = {"Pan": CARD, "Amount": "12.00", "Currency": "RUB", "ProviderType": "BankCardRussia"}
    credentials = payout_sandbox.credentials
    params = {"UserToken": credentials.im_user_token, **fields}
    signature = sign("CreateOperation", params, credentials.im_secret_key)
    _, body = await im_raw(
        payout_sandbox, "CreateOperation", {**fields, "Sign": signature}, sign_header=False
    )
    assert body["OperationState"]["Code"] == 0, body
    assert body["Result"]["PayoutOperationState"] == "Created"


async def test_current_api_needs_the_bearer_token(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(bearer_token="wrong", retry=NO_RETRY) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.create_operation(pan=CARD, amount="1.00")
    assert refused.value.status == 401
    status, _ = await im_raw(
        payout_sandbox, "getOperationState", {"PayoutOperationId": "x"},
        headers={"Authorization": ""},
    )  # fmt: skip
    assert status == 401


async def test_user_token_expires_and_a_fresh_one_works() -> None:
    clock = ManualClock()
    async with Sandbox(config=fast_config(user_token_lifetime=60), clock=clock) as sandbox:
        async with sandbox.intellectmoney_client(retry=NO_RETRY) as fixed:
            await fixed.create_operation(pan=CARD, amount="1.00")
            clock.advance(61)
            with pytest.raises(ProviderRejectedError, match="UserToken") as expired:
                await fixed.create_operation(pan=CARD, amount="1.00")
            assert expired.value.code == 2
            _, body = await im_raw(sandbox, "getOperationState", {"PayoutOperationId": "x"})
            assert body == {
                "OperationState": {"Code": 2, "Desc": "UserToken недействителен или истёк"},
                "Result": False,
            }

        fetched: list[str] = []

        async def fresh_token() -> str:
            token = sandbox.issue_user_token()
            fetched.append(token)
            return token

        async with sandbox.intellectmoney_client(user_token=fresh_token, retry=NO_RETRY) as client:
            created = await client.create_operation(pan=CARD, amount="1.00")
            assert created.state is State.CREATED
        assert len(fetched) == 1
        assert sandbox.stats().intellectmoney.created == 2


@pytest.mark.parametrize(
    ("fields", "desc"),
    [
        ({"PreferenceType": "OutBankCard", "Amount": "1.00", "Currency": "RUB"},
         "Не переданы реквизиты для выплаты"),
        ({"PreferenceType": "OutSbp", "Account": PHONE, "Amount": "1.00", "Currency": "RUB"},
         "Не переданы реквизиты для выплаты"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "1.5", "Currency": "RUB"},
         "Amount"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "1,50", "Currency": "RUB"},
         "Amount"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "0.00", "Currency": "RUB"},
         "Amount"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "1.00", "Currency": "USD"},
         "Currency"),
        ({"PreferenceType": "OutBankCard", "Pan": "4111111111111112", "Amount": "1.00",
          "Currency": "RUB"}, "Pan"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Account": PHONE, "Amount": "1.00",
          "Currency": "RUB"}, "СБП"),
        ({"PreferenceType": "Cash", "Pan": CARD, "Amount": "1.00", "Currency": "RUB"},
         "PreferenceType"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "1.00", "Currency": "RUB",
          "EshopId": "1234567"}, "EshopId"),
        ({"PreferenceType": "OutBankCard", "Pan": CARD, "Amount": "1.00", "Currency": "RUB",
          "Description": "x" * 256}, "Description"),
    ],
)  # fmt: skip
async def test_current_create_validation(
    payout_sandbox: Sandbox, fields: dict[str, str], desc: str
) -> None:
    status, body = await im_raw(payout_sandbox, "createOperation", fields)
    assert status == 200
    assert body["OperationState"]["Code"] == 2
    assert desc in body["OperationState"]["Desc"]
    assert body["Result"] is False
    assert payout_sandbox.stats().intellectmoney.created == 0


@pytest.mark.parametrize(
    ("provider_type", "extra", "ok"),
    [
        (0, {"Pan": CARD}, True),
        ("BankCardRussia", {"Pan": CARD}, True),
        (1, {"Account": PHONE}, True),
        ("Sbp", {"Account": PHONE, "BankId": SBP_BANK}, True),
        (2, {"Account": PHONE}, False),  # Sbp without BankId
        (7, {"Pan": CARD}, False),
    ],
)
async def test_legacy_provider_type_index_or_name(
    payout_sandbox: Sandbox, provider_type: object, extra: dict[str, str], ok: bool
) -> None:
    fields = {"Amount": "3.50", "Currency": "RUB", "ProviderType": provider_type, **extra}
    status, body = await im_raw(payout_sandbox, "CreateOperation", fields, form=True)
    assert status == 200
    assert (body["OperationState"]["Code"] == 0) is ok, body
    status, body = await im_raw(payout_sandbox, "CreateOperation", fields)
    assert (body["OperationState"]["Code"] == 0) is ok, body


async def test_legacy_recipient_name_is_2_to_50_chars(payout_sandbox: Sandbox) -> None:
    base = {"Pan": CARD, "Amount": "1.00", "Currency": "RUB", "ProviderType": 0}
    _, body = await im_raw(payout_sandbox, "CreateOperation", {**base, "RecipientName": "Я"})
    assert "RecipientName" in body["OperationState"]["Desc"]


async def test_client_helper_builds_a_working_legacy_client(payout_sandbox: Sandbox) -> None:
    client = payout_sandbox.intellectmoney_client(api="legacy")
    assert isinstance(client, IntellectMoneyClient)
    async with client:
        created = await client.create_operation(pan=CARD, amount="2.00")
    assert created.state is State.CREATED
