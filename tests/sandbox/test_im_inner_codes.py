"""IntellectMoney inner result codes from the sandbox, read by the real client over loopback.

``Sandbox.script_inner_code`` makes the next answer of a route carry
``OperationState.Code`` 0 with ``Result.State.Code`` 1 (done, with a warning) or 2
(NoAuth: refused, nothing done).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from payout_async import NO_RETRY, AuthenticationError, ProviderRejectedError
from payout_async.intellectmoney import IntellectMoneyClient
from payout_async.intellectmoney import MassPaymentOperationState as State
from payout_async.sandbox import Sandbox

from .support import CARD

OPERATIONS = ["create", "execute", "state", "delete"]
ASSUMED = "Sign pattern of getOperationState is not published"


async def created_id(client: IntellectMoneyClient) -> str:
    created = await client.create_operation(pan=CARD, amount="50.00", recipient_name="Иван")
    assert created.operation_id is not None
    return created.operation_id


async def invoke(client: IntellectMoneyClient, operation: str, operation_id: str) -> Any:
    if operation == "create":
        return await client.create_operation(pan=CARD, amount="50.00", recipient_name="Иван")
    if operation == "execute":
        return await client.execute_operation(operation_id)
    if operation == "state":
        return await client.get_operation_state(operation_id)
    return await client.delete_operation(operation_id)


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_inner_codes(payout_sandbox: Sandbox, api: Any, operation: str) -> None:
    async with payout_sandbox.intellectmoney_client(api=api, retry=NO_RETRY) as client:
        operation_id = await created_id(client)
        books = payout_sandbox.stats().intellectmoney
        # 2 NoAuth: refused, nothing happens.
        payout_sandbox.script_inner_code(f"im.{operation}", 2, "Нет прав на операцию")
        with pytest.raises(AuthenticationError) as caught:
            await invoke(client, operation, operation_id)
        assert caught.value.code == 2 and caught.value.status == 200
        assert caught.value.message == "Нет прав на операцию"
        assert b'"State":{"Code":2' in caught.value.body
        assert payout_sandbox.stats().intellectmoney == books
        # 0: the normal answer.
        if operation != "delete":
            normal = await invoke(client, operation, operation_id)
            assert normal.warning is None
        # 1 WithWarn: done, the warning kept.
        payout_sandbox.script_inner_code(f"im.{operation}", 1, "Комиссия изменена")
        if operation == "execute":
            operation_id = await created_id(client)
        warned = await invoke(client, operation, operation_id)
        if operation == "delete":
            assert warned is True
            state = await client.get_operation_state(operation_id)
            assert state.state is State.DELETED
        else:
            assert warned.warning == "Комиссия изменена"
            assert warned.state is not State.UNKNOWN


async def test_inner_no_auth_on_execute_moves_no_money(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        operation_id = await created_id(client)
        payout_sandbox.script_inner_code("im.execute", 2)
        with pytest.raises(AuthenticationError):
            await client.execute_operation(operation_id)
        state = await client.get_operation_state(operation_id)
        assert state.state is State.CREATED
        assert payout_sandbox.stats().intellectmoney.executed == 0


async def test_undocumented_inner_code(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        operation_id = await created_id(client)
        payout_sandbox.script_inner_code("im.state", 9)
        with pytest.raises(ProviderRejectedError) as caught:
            await client.get_operation_state(operation_id)
        assert not isinstance(caught.value, AuthenticationError)
        assert caught.value.code == 9


async def test_warning_is_logged(payout_sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="payout_async")
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        payout_sandbox.script_inner_code("im.create", 1)
        created = await client.create_operation(pan=CARD, amount="50.00")
    assert created.warning == "Операция выполнена с предупреждением"
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "createOperation" in record.getMessage()
    assert payout_sandbox.credentials.im_user_token not in record.getMessage()


async def test_state_signature_refusal_says_the_pattern_is_assumed(
    payout_sandbox: Sandbox,
) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        operation_id = await created_id(client)
        payout_sandbox.script_inner_code("im.state", 2)  # "Неверная подпись"
        with pytest.raises(AuthenticationError, match=ASSUMED):
            await client.get_operation_state(operation_id)
    # The sandbox's own refusal of a wrong Sign (outer Code 2) says so too.
    async with payout_sandbox.intellectmoney_client(
        retry=NO_RETRY, secret_key="not-the-sandbox-key"
    ) as client:
        with pytest.raises(ProviderRejectedError, match=ASSUMED):
            await client.get_operation_state(operation_id)


def test_script_refuses_what_it_cannot_do(payout_sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="IntellectMoney"):
        payout_sandbox.script_inner_code("enot.create", 2)
    with pytest.raises(ValueError, match="non-zero"):
        payout_sandbox.script_inner_code("im.state", 0)
    with pytest.raises(ValueError, match="unknown"):
        payout_sandbox.script_inner_code("im.nothing", 2)


async def test_reset_forgets_scripted_codes(payout_sandbox: Sandbox) -> None:
    payout_sandbox.script_inner_code("im.create", 2)
    payout_sandbox.reset()
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        created = await client.create_operation(pan=CARD, amount="50.00")
    assert created.warning is None and created.state is State.CREATED


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_inner_no_auth_naming_the_token_refreshes_it(
    payout_sandbox: Sandbox, api: Any, operation: str
) -> None:
    """An inner NoAuth whose Desc names the UserToken goes the way of an outer bad-token
    answer: a callable ``user_token`` is asked again and the call repeated once."""
    fetched: list[str] = []

    async def fresh_token() -> str:
        fetched.append(payout_sandbox.issue_user_token())
        return fetched[-1]

    async with payout_sandbox.intellectmoney_client(
        api=api, retry=NO_RETRY, user_token=fresh_token
    ) as client:
        operation_id = await created_id(client)
        books = payout_sandbox.stats().intellectmoney
        payout_sandbox.script_inner_code(f"im.{operation}", 2, "UserToken недействителен")
        result = await invoke(client, operation, operation_id)
        after = payout_sandbox.stats().intellectmoney
    assert len(fetched) == 3 and len(set(fetched)) == 3  # the create, the refusal, the repeat
    if operation == "delete":
        assert result is True
        assert after.deleted == books.deleted + 1
    else:
        assert result.warning is None and result.state is not State.UNKNOWN
    # The refused call did nothing; the repeat did it once.
    assert after.created == books.created + (1 if operation == "create" else 0)
    assert after.executed == books.executed + (1 if operation == "execute" else 0)


async def test_inner_no_auth_naming_the_token_with_a_string_token_is_refused(
    payout_sandbox: Sandbox,
) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        operation_id = await created_id(client)
        payout_sandbox.script_inner_code("im.execute", 2, "UserToken недействителен")
        with pytest.raises(AuthenticationError, match="UserToken"):
            await client.execute_operation(operation_id)
        assert payout_sandbox.stats().intellectmoney.executed == 0
