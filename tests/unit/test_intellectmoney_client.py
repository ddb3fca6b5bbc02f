"""``IntellectMoneyClient`` against aioresponses: every call, every documented answer."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

import payout_async
from payout_async import (
    ConfigurationError,
    IntellectMoneyClient,
    InvalidResponseError,
    OutcomeUnknownError,
    ProviderRejectedError,
    RateLimitError,
    RequestNotSentError,
    ServerError,
)
from payout_async.intellectmoney import MassPaymentOperationState, PayoutOperation

from .helpers import (
    BEARER,
    CARD,
    FAST,
    HTML_502,
    OP_ID,
    PHONE,
    SECRET,
    body_fields,
    calls,
    im_client,
    im_error,
    im_ok,
    im_url,
    only_call,
    total_requests,
)

METHODS = {
    "current": {"create": "createOperation", "execute": "executeOperation",
                "state": "getOperationState", "delete": "deleteOperation"},
    "legacy": {"create": "CreateOperation", "execute": "ExecuteOperation",
               "state": "GetOperationState", "delete": "DeleteOperation"},
}  # fmt: skip
OPERATIONS = ["create", "execute", "state", "delete"]
READS = ["create", "state", "delete"]  # every call but execute moves no money


async def invoke(client: IntellectMoneyClient, operation: str) -> Any:
    if operation == "create":
        return await client.create_operation(amount="50.00", pan=CARD, recipient_name="Иван")
    if operation == "execute":
        return await client.execute_operation(OP_ID)
    if operation == "state":
        return await client.get_operation_state(OP_ID)
    return await client.delete_operation(OP_ID)


def final_answer(operation: str) -> dict[str, Any]:
    """A successful answer to ``operation``."""
    if operation == "delete":
        return {"OperationState": {"Code": 0, "Desc": ""}, "Result": True}
    return im_ok("InProcess")


def assert_final(operation: str, result: Any) -> None:
    """``result`` is what ``final_answer(operation)`` stands for."""
    if operation == "delete":
        assert result is True
    else:
        assert result.operation_id == OP_ID
        assert result.state is MassPaymentOperationState.IN_PROCESS


def connector_error() -> aiohttp.ClientConnectorError:
    key = type("Key", (), {"host": "api.intellectmoney.ru", "port": 443, "ssl": True})()
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


# --- success ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["current", "legacy"])
async def test_create_success(api: str) -> None:
    answer = im_ok("Created", op_id="2cf4b4bc-56cf-4ab6-bf4f-1b2aa9743154")
    with aioresponses() as m:
        m.post(im_url(METHODS[api]["create"]), payload=answer)
        async with im_client(api) as client:
            operation = await client.create_operation(amount=Decimal("50"), pan=CARD)
    assert isinstance(operation, PayoutOperation)
    assert operation.operation_id == "2cf4b4bc-56cf-4ab6-bf4f-1b2aa9743154"
    assert operation.state is MassPaymentOperationState.CREATED
    assert operation.raw_state == "Created"
    assert operation.api_operation_id == "a654fe39-42eb-4ac3-a3ec-76d148b2ba3a"
    assert operation.accepted is False
    assert operation.is_final is False
    assert operation.raw == answer


@pytest.mark.parametrize("api", ["current", "legacy"])
async def test_execute_success(api: str) -> None:
    with aioresponses() as m:
        m.post(im_url(METHODS[api]["execute"]), payload=im_ok("InProcess"))
        async with im_client(api) as client:
            operation = await client.execute_operation(OP_ID)
    assert operation.operation_id == OP_ID
    assert operation.state is MassPaymentOperationState.IN_PROCESS
    assert operation.is_final is False


@pytest.mark.parametrize("api", ["current", "legacy"])
async def test_state_success(api: str) -> None:
    with aioresponses() as m:
        m.post(
            im_url(METHODS[api]["state"]),
            payload={"OperationState": {"Code": 0, "Desc": ""},
                     "Result": {"PayoutOperationState": "Completed"}},
        )  # fmt: skip
        async with im_client(api) as client:
            operation = await client.get_operation_state(OP_ID)
    assert operation.operation_id == OP_ID  # falls back to the id asked about
    assert operation.state is MassPaymentOperationState.COMPLETED
    assert operation.is_final is True


@pytest.mark.parametrize("named", [OP_ID.upper(), "{" + OP_ID + "}", None])
async def test_state_of_the_operation_asked_about(named: str | None) -> None:
    """The answer names the operation asked about (GUIDs in any case), or none."""
    answer = im_ok("Completed")
    if named is None:
        del answer["Result"]["PayoutOperationId"]
    else:
        answer["Result"]["PayoutOperationId"] = named
    with aioresponses() as m:
        m.post(im_url(METHODS["current"]["state"]), payload=answer)
        async with im_client() as client:
            operation = await client.get_operation_state(OP_ID)
    assert operation.state is MassPaymentOperationState.COMPLETED


@pytest.mark.parametrize(
    ("operation", "error"), [("state", InvalidResponseError), ("execute", OutcomeUnknownError)]
)
async def test_an_answer_about_another_operation_is_not_this_ones(
    operation: str, error: type[Exception]
) -> None:
    """A state (or an execute's answer) naming another operation says nothing of this
    one: an unreadable read, or an execute whose outcome is unknown (its state is
    asked next), carrying the raw answer."""
    other = "2cf4b4bc-56cf-4ab6-bf4f-1b2aa9743154"
    with aioresponses() as m:
        m.post(im_url(METHODS["current"][operation]), payload=im_ok("Completed", op_id=other))
        async with im_client() as client:
            with pytest.raises(error) as caught:
                await invoke(client, operation)
    assert other in str(caught.value) and OP_ID in str(caught.value)
    assert b"Completed" in (caught.value.body or b"")  # type: ignore[attr-defined]


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize(("result", "expected"), [(True, True), (False, False), (None, False)])
async def test_delete(api: str, result: object, expected: bool) -> None:
    with aioresponses() as m:
        m.post(
            im_url(METHODS[api]["delete"]),
            payload={"OperationState": {"Code": 0, "Desc": ""}, "Result": result},
        )
        async with im_client(api) as client:
            assert await client.delete_operation(OP_ID) is expected


@pytest.mark.parametrize(
    "state",
    ["Created", "SentToBank", "InProcess", "Completed", "Failed", "NotEnoughMoney", "Deleted"],
)
async def test_documented_states(state: str) -> None:
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=im_ok(state))
        async with im_client() as client:
            operation = await client.get_operation_state(OP_ID)
    assert operation.state.value == state
    assert operation.raw_state == state
    assert operation.is_final is (state in {"Completed", "Failed", "NotEnoughMoney", "Deleted"})


@pytest.mark.parametrize("state", ["Frozen", "created", "", None, 5])
async def test_unknown_state_is_kept_not_fatal(state: object) -> None:
    answer = im_ok()
    answer["Result"]["PayoutOperationState"] = state
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=answer)
        async with im_client() as client:
            operation = await client.get_operation_state(OP_ID)
    assert operation.state is MassPaymentOperationState.UNKNOWN
    assert operation.raw_state == (None if state is None else str(state))
    assert operation.is_final is False


@pytest.mark.parametrize("operation", ["create", "execute", "state"])
async def test_code_1_is_accepted_not_an_error(operation: str) -> None:
    with aioresponses() as m:
        m.post(im_url(METHODS["current"][operation]), payload=im_ok("InProcess", code=1))
        async with im_client() as client:
            result = await invoke(client, operation)
    assert result.accepted is True
    assert result.state is MassPaymentOperationState.IN_PROCESS


async def test_code_1_delete_is_not_an_error() -> None:
    with aioresponses() as m:
        m.post(
            im_url("deleteOperation"),
            payload={"OperationState": {"Code": 1, "Desc": "в обработке"}, "Result": True},
        )
        async with im_client() as client:
            assert await client.delete_operation(OP_ID) is True


# --- documented and undocumented errors ---------------------------------------------------


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_code_2_is_provider_rejected(api: str, operation: str) -> None:
    raw = json.dumps(im_error(), ensure_ascii=False).encode()
    with aioresponses() as m:
        m.post(im_url(METHODS[api][operation]), body=raw, content_type="application/json")
        async with im_client(api) as client:
            with pytest.raises(ProviderRejectedError) as caught:
                await invoke(client, operation)
        assert total_requests(m) == 1
    error = caught.value
    assert error.code == 2
    assert error.status == 200
    assert "Не переданы реквизиты для выплаты" in error.message
    assert error.body == raw


async def test_other_codes_are_rejections_too() -> None:
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=im_error("странно", code=3))
        async with im_client() as client:
            with pytest.raises(ProviderRejectedError) as caught:
                await client.get_operation_state(OP_ID)
    assert caught.value.code == 3
    assert "странно" in caught.value.message


@pytest.mark.parametrize("status", [502, 504])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_gateway_page(status: int, operation: str) -> None:
    with aioresponses() as m:
        m.post(
            im_url(METHODS["current"][operation]),
            status=status, body=HTML_502, content_type="text/html",
        )  # fmt: skip
        async with im_client() as client:
            expected = OutcomeUnknownError if operation == "execute" else ServerError
            with pytest.raises(expected) as caught:
                await invoke(client, operation)
        assert total_requests(m) == 1
    error = caught.value
    assert type(error) is expected
    assert error.status == status
    assert error.body == HTML_502


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'<?xml version="1.0"?><Response/>', b"[1]", b'{"OperationSt']
)
async def test_unreadable_answer(operation: str, body: bytes) -> None:
    with aioresponses() as m:
        m.post(im_url(METHODS["current"][operation]), status=200, body=body)
        async with im_client() as client:
            expected = OutcomeUnknownError if operation == "execute" else InvalidResponseError
            with pytest.raises(expected) as caught:
                await invoke(client, operation)
    assert type(caught.value) is expected
    assert caught.value.body == body
    assert caught.value.status == 200


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    "answer", [{}, {"OperationState": {"Desc": "x"}}, {"OperationState": {"Code": True}}]
)
async def test_answer_without_code(operation: str, answer: dict[str, Any]) -> None:
    with aioresponses() as m:
        m.post(im_url(METHODS["current"][operation]), payload=answer)
        async with im_client() as client:
            expected = OutcomeUnknownError if operation == "execute" else InvalidResponseError
            with pytest.raises(expected):
                await invoke(client, operation)


async def test_http_error_statuses_are_typed() -> None:
    with aioresponses() as m:
        m.post(im_url("getOperationState"), status=401, payload={"Message": "Unauthorized"})
        m.post(im_url("getOperationState"), status=429, headers={"Retry-After": "3"}, body=b"")
        async with im_client() as client:
            with pytest.raises(payout_async.AuthenticationError) as auth:
                await client.get_operation_state(OP_ID)
            with pytest.raises(RateLimitError) as limited:
                await client.get_operation_state(OP_ID)
    assert auth.value.status == 401
    assert limited.value.retry_after == 3.0


# --- UserToken as an async callable -----------------------------------------------------


class TokenSource:
    """Hands out ``token-1``, ``token-2``... and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return f"token-{self.calls}"


def sent_tokens(m: aioresponses, method: str) -> list[str]:
    return [body_fields(kwargs)["UserToken"] for kwargs in calls(m, "POST", im_url(method))]


async def test_token_callable_is_called_per_request() -> None:
    tokens = TokenSource()
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=im_ok(), repeat=True)
        async with im_client(user_token=tokens) as client:
            await client.get_operation_state(OP_ID)
            await client.get_operation_state(OP_ID)
            await client.get_operation_state(OP_ID)
        assert sent_tokens(m, "getOperationState") == ["token-1", "token-2", "token-3"]
        signs = [k["headers"]["Sign"] for k in calls(m, "POST", im_url("getOperationState"))]
    assert tokens.calls == 3
    assert signs == [
        hashlib.sha256(f"token-{n}::{OP_ID}::SECRET".encode()).hexdigest() for n in (1, 2, 3)
    ]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("desc", ["Неверный UserToken", "Token expired", "Токен устарел"])
async def test_bad_token_answer_refreshes_and_repeats_once(operation: str, desc: str) -> None:
    tokens = TokenSource()
    method = METHODS["current"][operation]
    with aioresponses() as m:
        m.post(im_url(method), payload=im_error(desc))
        m.post(im_url(method), payload=final_answer(operation))
        async with im_client(user_token=tokens) as client:
            result = await invoke(client, operation)
        assert sent_tokens(m, method) == ["token-1", "token-2"]
        second = calls(m, "POST", im_url(method))[1]
    assert tokens.calls == 2
    assert_final(operation, result)
    if operation != "create":
        expected = hashlib.sha256(f"token-2::{OP_ID}::SECRET".encode()).hexdigest()
        assert second["headers"]["Sign"] == expected


async def test_bad_token_twice_gives_up_after_one_repeat() -> None:
    tokens = TokenSource()
    with aioresponses() as m:
        m.post(im_url("executeOperation"), payload=im_error("UserToken is invalid"), repeat=True)
        async with im_client(user_token=tokens, retry=FAST) as client:
            with pytest.raises(ProviderRejectedError, match="UserToken"):
                await client.execute_operation(OP_ID)
        assert sent_tokens(m, "executeOperation") == ["token-1", "token-2"]


async def test_string_token_is_not_repeated() -> None:
    with aioresponses() as m:
        m.post(im_url("getOperationState"), payload=im_error("Неверный UserToken"), repeat=True)
        async with im_client(retry=FAST) as client:
            with pytest.raises(ProviderRejectedError):
                await client.get_operation_state(OP_ID)
        assert total_requests(m) == 1


async def test_other_rejections_are_not_repeated() -> None:
    tokens = TokenSource()
    with aioresponses() as m:
        m.post(im_url("executeOperation"), payload=im_error("Недостаточно средств"), repeat=True)
        async with im_client(user_token=tokens, retry=FAST) as client:
            with pytest.raises(ProviderRejectedError):
                await client.execute_operation(OP_ID)
        assert total_requests(m) == 1
    assert tokens.calls == 1


async def test_empty_token_from_callable_is_a_configuration_error() -> None:
    async def empty() -> str:
        return ""

    with aioresponses() as m:
        async with im_client(user_token=empty) as client:
            with pytest.raises(ConfigurationError):
                await client.get_operation_state(OP_ID)
        assert m.requests == {}


# --- legacy ProviderType -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "index"),
    [
        ({"pan": CARD}, 0),
        ({"account": PHONE}, 1),
        ({"account": PHONE, "bank_id": "100000000004"}, 2),
    ],
)
@pytest.mark.parametrize("body_format", ["json", "form"])
async def test_legacy_provider_type_index(
    kwargs: dict[str, str], index: int, body_format: str
) -> None:
    with aioresponses() as m:
        m.post(im_url("CreateOperation"), payload=im_ok())
        async with im_client("legacy", body_format=body_format) as client:
            await client.create_operation(amount="50.00", **kwargs)
        body = body_fields(only_call(m, "POST", im_url("CreateOperation")))
    if body_format == "json":
        assert body["ProviderType"] == index
        assert type(body["ProviderType"]) is int
    else:
        assert body["ProviderType"] == str(index)
    assert ("BankId" in body) is (index == 2)


# --- retries by operation kind ---------------------------------------------------------------


@pytest.mark.parametrize("operation", READS)
@pytest.mark.parametrize(
    "first",
    [
        {"status": 500, "payload": {"Message": "boom"}},
        {"status": 502, "body": HTML_502},
        {"status": 503, "body": b""},
        {"status": 429, "headers": {"Retry-After": "0"}, "body": b""},
        {"status": 200, "body": b"{truncated"},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"exception": aiohttp.ConnectionTimeoutError()},
    ],
)
async def test_calls_that_move_no_money_retry(operation: str, first: dict[str, Any]) -> None:
    method = METHODS["current"][operation]
    with aioresponses() as m:
        m.post(im_url(method), **first)
        m.post(im_url(method), payload=final_answer(operation))
        async with im_client(retry=FAST) as client:
            result = await invoke(client, operation)
        assert total_requests(m) == 2
    assert_final(operation, result)


async def test_reads_give_up_after_the_policy_attempts() -> None:
    with aioresponses() as m:
        m.post(im_url("getOperationState"), status=500, body=b"down", repeat=True)
        async with im_client(retry=FAST) as client:
            with pytest.raises(ServerError):
                await client.get_operation_state(OP_ID)
        assert total_requests(m) == 3


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ({"status": 500, "payload": {"Message": "boom"}}, ServerError),
        ({"status": 502, "body": HTML_502}, OutcomeUnknownError),
        ({"status": 504, "body": b""}, OutcomeUnknownError),
        ({"status": 200, "body": b"{truncated"}, OutcomeUnknownError),
        ({"exception": aiohttp.ServerDisconnectedError()}, OutcomeUnknownError),
        ({"exception": aiohttp.SocketTimeoutError()}, OutcomeUnknownError),
        ({"exception": TimeoutError()}, OutcomeUnknownError),
        ({"payload": im_error("Ошибка")}, ProviderRejectedError),
    ],
)
async def test_execute_is_never_retried_when_it_may_have_happened(
    first: dict[str, Any], error: type[Exception]
) -> None:
    with aioresponses() as m:
        m.post(im_url("executeOperation"), **first)
        m.post(im_url("executeOperation"), payload=im_ok("InProcess"))
        async with im_client(retry=FAST) as client:
            with pytest.raises(error):
                await client.execute_operation(OP_ID)
        assert total_requests(m) == 1


@pytest.mark.parametrize(
    "first",
    [
        {"status": 429, "headers": {"Retry-After": "0"}, "body": b""},
        {"exception": aiohttp.ConnectionTimeoutError()},
        {"exception": "connector"},
    ],
)
async def test_execute_retries_when_not_sent_or_rate_limited(first: dict[str, Any]) -> None:
    if first.get("exception") == "connector":
        first = {"exception": connector_error()}
    with aioresponses() as m:
        m.post(im_url("executeOperation"), **first)
        m.post(im_url("executeOperation"), payload=im_ok("InProcess"))
        async with im_client(retry=FAST) as client:
            operation = await client.execute_operation(OP_ID)
        assert total_requests(m) == 2
    assert operation.state is MassPaymentOperationState.IN_PROCESS


async def test_not_sent_surfaces_as_request_not_sent() -> None:
    with aioresponses() as m:
        m.post(im_url("executeOperation"), exception=connector_error())
        async with im_client() as client:
            with pytest.raises(RequestNotSentError):
                await client.execute_operation(OP_ID)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api": "v3", "bearer_token": BEARER},
        {"api": "current"},  # the current API needs a bearer token
        {"api": "legacy", "body_format": "xml"},
    ],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        IntellectMoneyClient("UT", SECRET, **kwargs)


def test_missing_secrets() -> None:
    with pytest.raises(ConfigurationError):
        IntellectMoneyClient("UT", "", bearer_token=BEARER)
    with pytest.raises(ConfigurationError):
        IntellectMoneyClient("", SECRET, bearer_token=BEARER)


async def test_custom_base_url() -> None:
    with aioresponses() as m:
        m.post("https://sandbox.example/payout/getOperationState", payload=im_ok())
        async with im_client(base_url="https://sandbox.example/payout") as client:
            await client.get_operation_state(OP_ID)
        assert total_requests(m) == 1
