"""Every error from an answer names its request: ``method``, ``url`` and the provider's
request id (IntellectMoney's ``OperationId``; Enot answers carry none), in ``str()``
and ``repr()`` as well as in attributes, like the transport errors do."""

from __future__ import annotations

from typing import Any

import pytest
from aioresponses import aioresponses

from payout_async import (
    APIError,
    AuthenticationError,
    InvalidResponseError,
    NotFoundError,
    OutcomeUnknownError,
    PayoutError,
    ProviderRejectedError,
    RateLimitError,
    RequestNotSentError,
    ServerError,
)

from .helpers import (
    CARD,
    ENOT_BASE,
    ENOT_USER,
    OP_ID,
    PAYOFF_ID,
    SECRET,
    closed_port,
    enot_client,
    enot_error,
    im_client,
    im_url,
)

REQUEST_ID = "a654fe39-42eb-4ac3-a3ec-76d148b2ba3a"
INFO = f"{ENOT_BASE}payoff/info?id={PAYOFF_ID}&user_id={ENOT_USER}"


def envelope(code: int, desc: str, *, inner: int | None = None, **extra: Any) -> dict[str, Any]:
    """An IntellectMoney envelope with an ``OperationId``."""
    result: Any = False
    if inner is not None:
        result = {"State": {"Code": inner, "Desc": desc}, "PayoutOperationId": OP_ID}
    return {"OperationState": {"Code": code, "Desc": desc}, "OperationId": REQUEST_ID,
            "Result": result, **extra}  # fmt: skip


async def im_error_for(method: str, **answer: Any) -> PayoutError:
    with aioresponses() as m:
        m.post(im_url(method), **answer)
        async with im_client() as client:
            with pytest.raises(PayoutError) as caught:
                if method == "executeOperation":
                    await client.execute_operation(OP_ID)
                else:
                    await client.get_operation_state(OP_ID)
    return caught.value


def assert_located(error: PayoutError, method: str, url: str, request_id: str | None) -> None:
    assert isinstance(error, APIError | OutcomeUnknownError)
    assert (error.method, error.url, error.request_id) == (method, url, request_id)
    text = str(error)
    assert text.startswith(f"{method} {url}: {error.message}")
    assert (f"(request id {request_id})" in text) is (request_id is not None)
    shown = repr(error)
    assert type(error).__name__ in shown and url in shown and repr(error.message) in shown
    assert f"request_id={request_id!r}" in shown


@pytest.mark.parametrize(
    ("answer", "error_type", "code"),
    [
        ({"payload": envelope(2, "Операция не найдена")}, ProviderRejectedError, 2),
        ({"payload": envelope(0, "Нет прав", inner=2)}, AuthenticationError, 2),
        ({"payload": envelope(0, "Отказ", inner=5)}, ProviderRejectedError, 5),
        ({"payload": envelope(2, "Сбой"), "status": 500}, ServerError, None),
        ({"payload": envelope(2, "Подождите"), "status": 429}, RateLimitError, None),
        ({"payload": {"OperationId": REQUEST_ID, "Result": {}}}, InvalidResponseError, None),
    ],
    ids=["outer-refusal", "inner-no-auth", "inner-refusal", "http-500", "http-429", "no-code"],
)
async def test_intellectmoney_errors_carry_the_operation_id(
    answer: dict[str, Any], error_type: type[APIError], code: int | None
) -> None:
    error = await im_error_for("getOperationState", **answer)
    assert type(error) is error_type
    assert_located(error, "POST", im_url("getOperationState"), REQUEST_ID)
    assert error.code == code


async def test_provider_refusals_come_with_http_200() -> None:
    error = await im_error_for("executeOperation", payload=envelope(2, "Недостаточно средств"))
    assert isinstance(error, ProviderRejectedError)
    assert error.status == 200 and error.code == 2
    assert str(error) == (
        f"POST {im_url('executeOperation')}: Недостаточно средств (request id {REQUEST_ID})"
    )


async def test_unreadable_execute_answer_carries_the_operation_id() -> None:
    error = await im_error_for("executeOperation", payload={"OperationId": REQUEST_ID})
    assert type(error) is OutcomeUnknownError
    assert_located(error, "POST", im_url("executeOperation"), REQUEST_ID)
    assert error.status == 200


@pytest.mark.parametrize(
    "operation_id",
    [None, "", "   ", True, ["x"], {"a": 1}, "x" * 101, "line\nbreak", 1.5],
    ids=repr,
)
async def test_a_missing_or_odd_operation_id_is_no_request_id(operation_id: Any) -> None:
    payload = envelope(2, "Операция не найдена")
    payload["OperationId"] = operation_id
    error = await im_error_for("getOperationState", payload=payload)
    assert isinstance(error, ProviderRejectedError)
    assert error.request_id is None
    assert "request id" not in str(error)


async def test_a_numeric_operation_id_is_kept_as_text() -> None:
    payload = envelope(2, "Операция не найдена")
    payload["OperationId"] = 12345
    error = await im_error_for("getOperationState", payload=payload)
    assert isinstance(error, APIError) and error.request_id == "12345"


async def test_an_operation_id_echoing_a_secret_or_card_is_redacted() -> None:
    payload = envelope(2, "x")
    payload["OperationId"] = f"{SECRET}-{CARD}"
    error = await im_error_for("getOperationState", payload=payload)
    assert isinstance(error, APIError)
    assert error.request_id == "***-411111******1111"
    assert SECRET not in str(error) + repr(error) and CARD not in str(error) + repr(error)


async def test_enot_errors_carry_method_and_url_and_no_request_id() -> None:
    with aioresponses() as m:
        m.get(INFO, status=404, payload=enot_error(404, "Вывод не найден."))
        m.post(ENOT_BASE + "payoff/create", status=200, payload=enot_error(503, "busy"))
        async with enot_client() as client:
            with pytest.raises(NotFoundError) as missing:
                await client.get_payoff(payoff_id=PAYOFF_ID)
            with pytest.raises(ServerError) as busy:
                await client.create_payoff(
                    service="card", wallet_to=CARD, amount="10.00", order_id="o-1"
                )
    # The query (user_id, id or order_id) is not part of the URL an error names.
    assert_located(missing.value, "GET", ENOT_BASE + "payoff/info", None)
    assert str(missing.value) == f"GET {ENOT_BASE}payoff/info: HTTP 404: Вывод не найден."
    assert_located(busy.value, "POST", ENOT_BASE + "payoff/create", None)
    assert busy.value.status == 503  # the envelope's own status, behind HTTP 200


async def test_transport_errors_read_the_same_way() -> None:
    sock, port = closed_port()
    try:
        base = f"http://127.0.0.1:{port}/"
        async with enot_client(base_url=base) as client:
            with pytest.raises(RequestNotSentError) as caught:
                await client.get_balance()
    finally:
        sock.close()
    error = caught.value
    url = f"{base}account/users/{ENOT_USER}/balance"
    assert (error.method, error.url, error.request_id) == ("GET", url, None)
    assert str(error) == f"GET {url}: {error.message}"
    assert error.message.startswith("cannot connect")
    assert repr(error).startswith(f"RequestNotSentError({error.message!r}, method='GET'")


def test_errors_built_by_hand_show_only_their_message() -> None:
    assert str(ServerError("boom", status=500)) == "boom"
    assert str(OutcomeUnknownError("lost")) == "lost"
    error = ProviderRejectedError("no", status=200, code=2, request_id="r-1")
    assert str(error) == "no (request id r-1)"
