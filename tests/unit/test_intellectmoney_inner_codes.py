"""``Result.State.Code``, the code inside an IntellectMoney result, against aioresponses.

0 Success, 1 WithWarn (done; the warning is logged and kept), 2 NoAuth
(``AuthenticationError``), anything else ``ProviderRejectedError``; all under an
envelope whose own ``OperationState.Code`` is 0.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from payout_async import (
    AuthenticationError,
    IntellectMoneyClient,
    InvalidResponseError,
    OutcomeUnknownError,
    ProviderRejectedError,
)
from payout_async.intellectmoney import MassPaymentOperationState, PayoutOperation
from payout_async.intellectmoney._signing import ASSUMED_STATE_SIGN_FIELDS, SIGN_FIELDS

from .helpers import CARD, FAST, OP_ID, SECRET, USER_TOKEN, im_client, im_error, im_url

METHODS = {
    "current": {"create": "createOperation", "execute": "executeOperation",
                "state": "getOperationState", "delete": "deleteOperation"},
    "legacy": {"create": "CreateOperation", "execute": "ExecuteOperation",
               "state": "GetOperationState", "delete": "DeleteOperation"},
}  # fmt: skip
OPERATIONS = ["create", "execute", "state", "delete"]
LONG_TOKEN = "user-token-0123456789"
ASSUMED = "Sign pattern of getOperationState is not published"


def answer(operation: str, inner: Any, desc: str | None = "Успешно") -> dict[str, Any]:
    """Outer Code 0; the result carries ``State.Code`` ``inner`` (and ``desc``)."""
    state: dict[str, Any] = {"Code": inner}
    if desc is not None:
        state["Desc"] = desc
    result: dict[str, Any] = {"State": state}
    if operation != "delete":
        result.update(PayoutOperationId=OP_ID, PayoutOperationState="Created")
    return {"OperationState": {"Code": 0, "Desc": "Успешно обработана"}, "Result": result}


async def invoke(client: IntellectMoneyClient, operation: str) -> Any:
    if operation == "create":
        return await client.create_operation(amount="50.00", pan=CARD, recipient_name="Иван")
    if operation == "execute":
        return await client.execute_operation(OP_ID)
    if operation == "state":
        return await client.get_operation_state(OP_ID)
    return await client.delete_operation(OP_ID)


async def call(api: str, operation: str, payload: Any, **kwargs: Any) -> Any:
    with aioresponses() as m:
        m.post(im_url(METHODS[api][operation]), payload=payload)
        async with im_client(api, **kwargs) as client:
            return await invoke(client, operation)


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_inner_success(api: str, operation: str) -> None:
    result = await call(api, operation, answer(operation, 0))
    if operation == "delete":
        assert result is True
    else:
        assert result.state is MassPaymentOperationState.CREATED
        assert result.warning is None


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_inner_warning_is_logged_and_kept(
    api: str, operation: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="payout_async")
    desc = f"Лимит почти исчерпан {LONG_TOKEN} {SECRET} {CARD}"
    result = await call(api, operation, answer(operation, 1, desc), user_token=LONG_TOKEN)
    if operation == "delete":
        assert result is True
    else:
        assert isinstance(result, PayoutOperation)
        assert result.warning is not None and result.warning.startswith("Лимит почти исчерпан")
        assert result.state is MassPaymentOperationState.CREATED
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "Лимит почти исчерпан" in text and METHODS[api][operation] in text
    assert LONG_TOKEN not in text and CARD not in text and SECRET not in text


async def test_inner_warning_without_desc() -> None:
    operation = await call("current", "state", answer("state", 1, None))
    assert operation.warning is not None and "WithWarn" in operation.warning


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_inner_no_auth_is_authentication_error(api: str, operation: str) -> None:
    payload = answer(operation, 2, "Нет прав на выполнение операции")
    with pytest.raises(AuthenticationError) as caught:
        await call(api, operation, payload)
    error = caught.value
    assert error.status == 200
    assert error.code == 2
    assert error.message == "Нет прав на выполнение операции"
    assert b"State" in error.body


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("inner", [3, 7, -1, "5"])
async def test_other_inner_codes_are_rejections(operation: str, inner: Any) -> None:
    with pytest.raises(ProviderRejectedError) as caught:
        await call("current", operation, answer(operation, inner, None))
    assert not isinstance(caught.value, AuthenticationError)
    assert caught.value.code == int(inner)
    assert caught.value.message == f"Result.State.Code {int(inner)}"


@pytest.mark.parametrize("operation", ["create", "state", "delete"])
@pytest.mark.parametrize("inner", [True, 1.5, "two", [], {"x": 1}])
async def test_unreadable_inner_code_on_a_read(operation: str, inner: Any) -> None:
    with pytest.raises(InvalidResponseError, match=r"Result\.State\.Code"):
        await call("current", operation, answer(operation, inner))


@pytest.mark.parametrize("inner", [True, 1.5, "two", [], {"x": 1}])
async def test_unreadable_inner_code_on_execute_is_outcome_unknown(inner: Any) -> None:
    with pytest.raises(OutcomeUnknownError, match=r"Result\.State\.Code"):
        await call("current", "execute", answer("execute", inner))


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_no_inner_code_is_success(operation: str) -> None:
    payload = answer(operation, None, "что-то")
    result = await call("current", operation, payload)
    if operation == "delete":
        assert result is False  # a result object says "deleted" only by its own code
    else:
        assert result.warning is None


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_outer_refusal_wins_over_inner_success(operation: str) -> None:
    payload = answer(operation, 0)
    payload["OperationState"] = {"Code": 2, "Desc": "Операция не найдена"}
    with pytest.raises(ProviderRejectedError, match="Операция не найдена"):
        await call("current", operation, payload)


# --- the assumed getOperationState Sign pattern ------------------------------------------


def test_the_assumption_lives_in_one_named_place() -> None:
    assert SIGN_FIELDS["getOperationState"] is ASSUMED_STATE_SIGN_FIELDS
    assert ASSUMED_STATE_SIGN_FIELDS == ("UserToken", "PayoutOperationId")


@pytest.mark.parametrize(
    "payload",
    [answer("state", 2, "Неверная подпись"), im_error("Неверная подпись запроса (Sign)")],
    ids=["inner", "outer"],
)
async def test_bad_signature_on_state_says_the_pattern_is_assumed(payload: Any) -> None:
    with pytest.raises((AuthenticationError, ProviderRejectedError)) as caught:
        await call("current", "state", payload)
    assert ASSUMED in caught.value.message
    assert caught.value.message.startswith("Неверная подпись")


async def test_bad_signature_on_state_with_a_token_callable_is_not_retried() -> None:
    async def fresh() -> str:
        return USER_TOKEN

    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=im_error("Неверная подпись"))
        async with im_client("current", user_token=fresh) as client:
            with pytest.raises(ProviderRejectedError, match=ASSUMED):
                await client.get_operation_state(OP_ID)
        assert sum(len(v) for v in m.requests.values()) == 1


@pytest.mark.parametrize(
    ("api", "operation", "desc"),
    [
        ("current", "execute", "Неверная подпись"),
        ("current", "state", "Нет прав"),
        ("legacy", "state", "Неверная подпись"),
    ],
)
async def test_other_refusals_do_not_mention_the_assumption(
    api: str, operation: str, desc: str
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await call(api, operation, answer(operation, 2, desc))
    assert caught.value.message == desc


# --- an inner NoAuth naming the token refreshes a callable UserToken ----------------------


class Tokens:
    """Hands out ``token-1``, ``token-2``... and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return f"token-{self.calls}"


def sent_tokens(m: aioresponses, method: str) -> list[bytes]:
    return [call.kwargs["data"] for call in m.requests[("POST", URL(im_url(method)))]]


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("desc", ["UserToken недействителен или истёк", "Токен устарел"])
async def test_inner_no_auth_naming_the_token_refreshes_and_repeats_once(
    api: str, operation: str, desc: str
) -> None:
    tokens = Tokens()
    method = METHODS[api][operation]
    with aioresponses() as m:
        m.post(im_url(method), payload=answer(operation, 2, desc))
        m.post(im_url(method), payload=answer(operation, 0))
        async with im_client(api, user_token=tokens) as client:
            result = await invoke(client, operation)
        sent = sent_tokens(m, method)
    assert tokens.calls == 2
    assert [b"token-1" in body for body in sent] == [True, False]
    assert b"token-2" in sent[1]
    assert result is True if operation == "delete" else result.operation_id == OP_ID


async def test_inner_no_auth_naming_the_token_twice_gives_up_after_one_repeat() -> None:
    tokens = Tokens()
    with aioresponses() as m:
        m.post(im_url("executeOperation"), payload=answer("execute", 2, "Bad token"), repeat=True)
        async with im_client(user_token=tokens, retry=FAST) as client:
            with pytest.raises(AuthenticationError, match="Bad token"):
                await client.execute_operation(OP_ID)
        assert len(sent_tokens(m, "executeOperation")) == 2
    assert tokens.calls == 2


@pytest.mark.parametrize(
    ("token", "payload", "status"),
    [
        ("string", answer("state", 2, "UserToken недействителен"), 200),
        ("callable", answer("state", 2, "Нет прав на операцию"), 200),
        ("callable", {"Message": "Bearer token is invalid"}, 401),
    ],
    ids=["string-token", "no-auth-not-naming-the-token", "http-401"],
)
async def test_other_auth_refusals_are_not_repeated(
    token: str, payload: dict[str, Any], status: int
) -> None:
    tokens = Tokens()
    user_token: Any = USER_TOKEN if token == "string" else tokens
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=payload, status=status, repeat=True)
        async with im_client(user_token=user_token, retry=FAST) as client:
            with pytest.raises(AuthenticationError):
                await client.get_operation_state(OP_ID)
        assert len(sent_tokens(m, "getOperationState")) == 1
    assert tokens.calls == (0 if token == "string" else 1)
