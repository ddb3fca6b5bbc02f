"""``EnotClient`` against aioresponses: every call, every documented answer."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from payout_async import (
    AuthenticationError,
    ConfigurationError,
    EnotClient,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitError,
    RequestNotSentError,
    ServerError,
)
from payout_async._redact import mask_card
from payout_async.enot import Balance, CreatedPayoff, Payoff, PayoffStatus, SbpBank

from .helpers import (
    CARD,
    ENOT_BASE,
    ENOT_KEY,
    ENOT_USER,
    FAST,
    HTML_502,
    PAYOFF_ID,
    PHONE,
    calls,
    enot_client,
    enot_error,
    enot_ok,
    only_call,
    total_requests,
)

CREATE = ENOT_BASE + "payoff/create"
INFO_BY_ID = str(URL(ENOT_BASE + "payoff/info").with_query(user_id=ENOT_USER, id=PAYOFF_ID))
INFO_BY_ORDER = str(URL(ENOT_BASE + "payoff/info").with_query(user_id=ENOT_USER, order_id="o-1"))
BANKS = str(URL(ENOT_BASE + "payoff/get-sbp-bank-list").with_query(user_id=ENOT_USER))
BALANCE = ENOT_BASE + f"account/users/{ENOT_USER}/balance"

CALLS = {  # name: (HTTP method, URL, moves money)
    "create": ("POST", CREATE, True),
    "info": ("GET", INFO_BY_ID, False),
    "info_by_order": ("GET", INFO_BY_ORDER, False),
    "banks": ("GET", BANKS, False),
    "balance": ("GET", BALANCE, False),
}
SUCCESS_DATA: dict[str, Any] = {
    "create": {"payoff_id": PAYOFF_ID, "amount_withdraw_rub": "101.50", "balance": 898.5},
    "info": {"payoff_id": PAYOFF_ID, "order_id": "o-1", "status": "wait", "amount": "100.00"},
    "info_by_order": {"payoff_id": PAYOFF_ID, "order_id": "o-1", "status": "success"},
    "banks": {"banks": [{"id": "100000000004", "name": "Т-Банк"}]},
    "balance": {"balance": "1000.00", "active_balance": 900, "freeze_balance": "100.00"},
}


async def invoke(client: EnotClient, name: str) -> Any:
    if name == "create":
        return await client.create_payoff(
            service="card", wallet_to=CARD, amount=Decimal("100.00"), order_id="o-1"
        )
    if name == "info":
        return await client.get_payoff(payoff_id=PAYOFF_ID)
    if name == "info_by_order":
        return await client.get_payoff(order_id="o-1")
    if name == "banks":
        return await client.list_sbp_banks()
    return await client.get_balance()


def assert_success(name: str, result: Any) -> None:
    """``result`` is what ``SUCCESS_DATA[name]`` stands for."""
    if name == "create":
        assert result.payoff_id == PAYOFF_ID
    elif name.startswith("info"):
        assert result.payoff_id == PAYOFF_ID
        assert result.raw_status == SUCCESS_DATA[name]["status"]
    elif name == "banks":
        assert result == [SbpBank("100000000004", "Т-Банк")]
    else:
        assert result.balance == Decimal("1000.00")


def register(m: aioresponses, name: str, **kwargs: Any) -> None:
    method, url, _ = CALLS[name]
    m.add(url, method, **kwargs)


# --- success ---------------------------------------------------------------------------


async def test_create_payoff_sends_documented_body_and_headers() -> None:
    with aioresponses() as m:
        m.post(CREATE, payload=enot_ok(SUCCESS_DATA["create"]))
        async with enot_client() as client:
            created = await client.create_payoff(
                service="sbp", wallet_to=PHONE, amount=Decimal("100.50"), order_id="order-1",
                comment="Выплата", hook_url="https://shop.example/hook", subtract=1,
                sbp_bank_id="100000000004",
            )  # fmt: skip
        sent = only_call(m, "POST", CREATE)
    assert isinstance(created, CreatedPayoff)
    assert created.payoff_id == PAYOFF_ID
    assert created.amount_withdraw_rub == Decimal("101.50")
    assert created.balance == Decimal("898.5")
    assert isinstance(created.balance, Decimal)
    headers = sent["headers"]
    assert headers["x-api-signature-sha256"] == ENOT_KEY
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json"
    body = json.loads(sent["data"], parse_float=Decimal)
    assert body == {
        "user_id": ENOT_USER,
        "service": "sbp",
        "wallet_to": PHONE,
        "amount": Decimal("100.5"),
        "order_id": "order-1",
        "comment": "Выплата",
        "hook_url": "https://shop.example/hook",
        "subtract": 1,
        "payoff_data": {"sbp_bank_type": "100000000004"},
    }


@pytest.mark.parametrize(
    ("amount", "wire"),
    [
        ("100", "100"),
        (Decimal("100.00"), "100"),
        ("0.10", "0.1"),
        ("9999999999.99", "9999999999.99"),
    ],
)
async def test_create_payoff_amount_is_a_json_number(amount: str, wire: str) -> None:
    with aioresponses() as m:
        m.post(CREATE, payload=enot_ok(SUCCESS_DATA["create"]))
        async with enot_client() as client:
            await client.create_payoff(
                service="card", wallet_to=CARD, amount=amount, order_id="o-1"
            )
        data = only_call(m, "POST", CREATE)["data"]
    assert f'"amount":{wire},'.encode() in data
    body = json.loads(data, parse_float=Decimal)
    assert body["amount"] == Decimal(amount)
    assert "comment" not in body and "payoff_data" not in body and "subtract" not in body


async def test_get_payoff_by_id_and_by_order_id() -> None:
    info = {
        "payoff_id": PAYOFF_ID, "order_id": "o-1", "service": "card", "wallet": CARD,
        "type": "api", "subtract": "amount", "amount": 100, "amount_withdraw_rub": "103.00",
        "commission_rub": 3.0, "receive_currency": "RUB", "amount_receive": "100.00",
        "comment": None, "created_at": "2024-01-01 10:00:00", "paid_at": None,
        "error_message": None, "status": "success", "extra": {"kept": True},
    }  # fmt: skip
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_ok(info))
        m.get(INFO_BY_ORDER, payload=enot_ok({**info, "status": "wait"}))
        async with enot_client() as client:
            by_id = await client.get_payoff(payoff_id=PAYOFF_ID)
            by_order = await client.get_payoff(order_id="o-1")
        sent = only_call(m, "GET", INFO_BY_ID)
        assert sent["params"] == {"user_id": ENOT_USER, "id": PAYOFF_ID}
        assert sent["headers"]["x-api-signature-sha256"] == ENOT_KEY
        assert sent["headers"]["Accept"] == "application/json"
        assert sent["headers"]["Cache-Control"] == "no-cache"  # never a kept answer
        assert only_call(m, "GET", INFO_BY_ORDER)["params"] == {
            "user_id": ENOT_USER, "order_id": "o-1"
        }  # fmt: skip
    assert isinstance(by_id, Payoff)
    assert by_id.status is PayoffStatus.SUCCESS
    assert by_id.is_final is True
    assert by_id.amount == Decimal("100")
    assert by_id.amount_withdraw_rub == Decimal("103.00")
    assert by_id.commission_rub == Decimal("3.0")
    assert by_id.wallet == CARD
    assert by_id.type == "api"
    assert by_id.raw["extra"] == {"kept": True}
    assert by_order.status is PayoffStatus.WAIT
    assert by_order.is_final is False


async def test_list_sbp_banks() -> None:
    with aioresponses() as m:
        register(
            m,
            "banks",
            payload=enot_ok(
                {
                    "banks": [
                        {"id": "100000000004", "name": "Т-Банк"},
                        {"id": 100000000111, "name": "Сбер"},
                    ]
                }
            ),
        )
        async with enot_client() as client:
            banks = await client.list_sbp_banks()
    assert banks == [SbpBank("100000000004", "Т-Банк"), SbpBank("100000000111", "Сбер")]


async def test_get_balance() -> None:
    with aioresponses() as m:
        register(m, "balance", payload=enot_ok(SUCCESS_DATA["balance"]))
        async with enot_client() as client:
            balance = await client.get_balance()
    assert isinstance(balance, Balance)
    assert balance.balance == Decimal("1000.00")
    assert balance.active_balance == Decimal("900")
    assert balance.freeze_balance == Decimal("100.00")


@pytest.mark.parametrize(
    ("number", "text"),
    [("100.1", "100.10"), ("1234567.89", "1234567.89"), ("0.3", "0.30"), ("5", "5.00")],
)
async def test_money_as_number_or_string_is_the_same_decimal(number: str, text: str) -> None:
    # The number is written into the raw JSON text: 0.3 must not become 0.2999...
    as_number = (
        f'{{"data":{{"payoff_id":"{PAYOFF_ID}","status":"wait","amount":{number},'
        f'"commission_rub":{number}}},"status":200,"status_check":true}}'
    )
    as_string = json.dumps(
        enot_ok({"payoff_id": PAYOFF_ID, "status": "wait", "amount": text, "commission_rub": text})
    )
    with aioresponses() as m:
        m.get(INFO_BY_ID, body=as_number, content_type="application/json")
        m.get(INFO_BY_ID, body=as_string, content_type="application/json")
        async with enot_client() as client:
            first = await client.get_payoff(payoff_id=PAYOFF_ID)
            second = await client.get_payoff(payoff_id=PAYOFF_ID)
    for payoff in (first, second):
        assert isinstance(payoff.amount, Decimal)
        assert payoff.amount == Decimal(text)
        assert payoff.commission_rub == Decimal(text)
    assert first.amount == second.amount
    assert str(first.amount) == number  # exactly the digits that were sent


@pytest.mark.parametrize(
    ("url", "data", "about"),
    [
        (INFO_BY_ID, {"payoff_id": "another-payoff", "order_id": "o-1"}, "payoff_id"),
        (INFO_BY_ORDER, {"payoff_id": PAYOFF_ID, "order_id": "o-2"}, "order_id"),
        (INFO_BY_ORDER, {"payoff_id": PAYOFF_ID, "order_id": "O-1"}, "order_id"),
    ],
    ids=["by-id", "by-order-id", "order-id-in-another-case"],
)
async def test_an_answer_about_another_payoff_is_unreadable(
    url: str, data: dict[str, Any], about: str
) -> None:
    """``payoff/info`` names the payoff it describes: one that names another than the
    one asked about (a cache keyed on the path alone, a lax provider) is unreadable."""
    with aioresponses() as m:
        m.get(url, payload=enot_ok({**data, "status": "success", "amount": "5.00"}))
        async with enot_client() as client:
            with pytest.raises(InvalidResponseError) as caught:
                if url == INFO_BY_ID:
                    await client.get_payoff(payoff_id=PAYOFF_ID)
                else:
                    await client.get_payoff(order_id="o-1")
    assert about in str(caught.value) and caught.value.status == 200
    assert b"success" in (caught.value.body or b"")


async def test_an_answer_about_another_payoff_names_no_card_number() -> None:
    """The foreign answer is kept whole in ``body``; what is said of it masks the card
    number it may carry (the other payoff's recipient)."""
    foreign = {"payoff_id": "another", "wallet": CARD, "status": "success", "amount": "5.00"}
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_ok(foreign))
        async with enot_client() as client:
            with pytest.raises(InvalidResponseError) as caught:
                await client.get_payoff(payoff_id=PAYOFF_ID)
    assert CARD not in str(caught.value) and CARD not in repr(caught.value)
    assert mask_card(CARD) in str(caught.value)  # the body is shown, the card masked
    assert CARD.encode() in (caught.value.body or b"")


@pytest.mark.parametrize("data", [{}, {"payoff_id": PAYOFF_ID.upper(), "order_id": "o-1"}])
async def test_an_answer_naming_the_payoff_asked_about_or_none_is_read(
    data: dict[str, Any],
) -> None:
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_ok({**data, "status": "success"}))
        m.get(INFO_BY_ORDER, payload=enot_ok({**data, "status": "success"}))
        async with enot_client() as client:
            by_id = await client.get_payoff(payoff_id=PAYOFF_ID)
            by_order_id = await client.get_payoff(order_id="o-1")
    assert by_id.status is by_order_id.status is PayoffStatus.SUCCESS


@pytest.mark.parametrize("status", ["processing", "WAITING", "", None, 3])
async def test_unknown_status_is_kept_not_fatal(status: object) -> None:
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_ok({"payoff_id": PAYOFF_ID, "status": status}))
        async with enot_client() as client:
            payoff = await client.get_payoff(payoff_id=PAYOFF_ID)
    assert payoff.status is PayoffStatus.UNKNOWN
    assert payoff.raw_status == (None if status is None else str(status))
    assert payoff.is_final is False


@pytest.mark.parametrize("status", ["SUCCESS", "Fail"])
async def test_status_case_is_ignored(status: str) -> None:
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_ok({"payoff_id": PAYOFF_ID, "status": status}))
        async with enot_client() as client:
            payoff = await client.get_payoff(payoff_id=PAYOFF_ID)
    assert payoff.status.value == status.lower()
    assert payoff.raw_status == status


# --- documented errors -------------------------------------------------------------------

ERRORS = [
    (401, AuthenticationError, "Ошибка авторизации"),
    (403, PermissionDeniedError, "Вывод отключен"),
    (404, NotFoundError, "Вывод не найден."),
    (422, InvalidRequestError, "Недействительный кошелёк."),
    (500, ServerError, "Внутренняя ошибка системы"),
]


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(("status", "error_type", "message"), ERRORS)
async def test_documented_error_envelopes(
    name: str, status: int, error_type: type[Exception], message: str
) -> None:
    raw = json.dumps(enot_error(status, message), ensure_ascii=False).encode()
    with aioresponses() as m:
        register(m, name, status=status, body=raw, content_type="application/json")
        async with enot_client() as client:
            with pytest.raises(error_type) as caught:
                await invoke(client, name)
        assert total_requests(m) == 1
    error = caught.value
    assert type(error) is error_type
    assert error.status == status  # type: ignore[attr-defined]
    assert message in error.message  # type: ignore[attr-defined]
    assert error.body == raw  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(CALLS))
async def test_rate_limited_with_retry_after(name: str) -> None:
    with aioresponses() as m:
        register(m, name, status=429, headers={"Retry-After": "7"},
                 payload=enot_error(429, "Too Many Attempts."))  # fmt: skip
        async with enot_client() as client:
            with pytest.raises(RateLimitError) as caught:
                await invoke(client, name)
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429
    assert "Too Many Attempts." in caught.value.message


async def test_error_envelope_behind_http_200_trusts_the_envelope() -> None:
    with aioresponses() as m:
        m.get(INFO_BY_ID, payload=enot_error(404, "Вывод не найден."))
        async with enot_client() as client:
            with pytest.raises(NotFoundError) as caught:
                await client.get_payoff(payoff_id=PAYOFF_ID)
    assert caught.value.status == 404
    assert "Вывод не найден." in caught.value.message


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_page(name: str, status: int) -> None:
    moves_money = CALLS[name][2]
    with aioresponses() as m:
        register(m, name, status=status, body=HTML_502, content_type="text/html")
        async with enot_client() as client:
            expected = OutcomeUnknownError if moves_money else ServerError
            with pytest.raises(expected) as caught:
                await invoke(client, name)
    assert type(caught.value) is expected
    assert caught.value.status == status
    assert caught.value.body == HTML_502


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize(
    "body", [b"{oops", b"", b"<html>ok</html>", b"[]", b'{"data": [1, 2]}', b'{"status": 200}']
)
async def test_unreadable_answer(name: str, body: bytes) -> None:
    moves_money = CALLS[name][2]
    with aioresponses() as m:
        register(m, name, status=200, body=body)
        async with enot_client() as client:
            expected = OutcomeUnknownError if moves_money else InvalidResponseError
            with pytest.raises(expected) as caught:
                await invoke(client, name)
    assert type(caught.value) is expected
    assert caught.value.body == body


async def test_html_500_on_create_is_a_server_error_with_the_page() -> None:
    page = b"<html><body>Internal Server Error</body></html>"
    with aioresponses() as m:
        m.post(CREATE, status=500, body=page, content_type="text/html")
        async with enot_client() as client:
            with pytest.raises(ServerError) as caught:
                await invoke(client, "create")
    assert "Internal Server Error" in caught.value.message
    assert caught.value.body == page


@pytest.mark.parametrize("banks", [{"banks": "nope"}, {"banks": [1, 2]}, {"banks": [None]}])
async def test_malformed_bank_list_is_an_invalid_response(banks: dict[str, Any]) -> None:
    with aioresponses() as m:
        register(m, "banks", payload=enot_ok(banks))
        async with enot_client() as client:
            with pytest.raises(InvalidResponseError):
                await client.list_sbp_banks()


@pytest.mark.parametrize("name", ["create", "info", "balance"])
async def test_missing_fields_do_not_crash(name: str) -> None:
    with aioresponses() as m:
        register(m, name, payload=enot_ok({"unexpected": 1}))
        async with enot_client() as client:
            result = await invoke(client, name)
    assert result.raw == {"unexpected": 1}


# --- retries by operation kind -------------------------------------------------------------

READS = ["info", "info_by_order", "banks", "balance"]


@pytest.mark.parametrize("name", READS)
@pytest.mark.parametrize(
    "first",
    [
        {"status": 500, "payload": enot_error(500, "boom")},
        {"status": 502, "body": HTML_502},
        {"status": 429, "headers": {"Retry-After": "0"}, "payload": enot_error(429, "slow")},
        {"status": 200, "body": b"{trunc"},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"exception": aiohttp.ConnectionTimeoutError()},
    ],
)
async def test_reads_retry(name: str, first: dict[str, Any]) -> None:
    with aioresponses() as m:
        register(m, name, **first)
        register(m, name, payload=enot_ok(SUCCESS_DATA[name]))
        async with enot_client(retry=FAST) as client:
            result = await invoke(client, name)
        assert total_requests(m) == 2
    assert_success(name, result)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_reads_do_not_retry_client_errors(status: int) -> None:
    with aioresponses() as m:
        m.get(INFO_BY_ID, status=status, payload=enot_error(status, "no"), repeat=True)
        async with enot_client(retry=FAST) as client:
            with pytest.raises(Exception) as caught:
                await client.get_payoff(payoff_id=PAYOFF_ID)
        assert total_requests(m) == 1
    assert caught.value.status == status  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("first", "error"),
    [
        ({"status": 500, "payload": enot_error(500, "boom")}, ServerError),
        ({"status": 502, "body": HTML_502}, OutcomeUnknownError),
        ({"status": 200, "body": b"{trunc"}, OutcomeUnknownError),
        ({"status": 200, "payload": {"status": 200}}, OutcomeUnknownError),
        ({"exception": aiohttp.ServerDisconnectedError()}, OutcomeUnknownError),
        ({"exception": aiohttp.SocketTimeoutError()}, OutcomeUnknownError),
        ({"exception": aiohttp.ClientPayloadError("truncated")}, OutcomeUnknownError),
        ({"exception": TimeoutError()}, OutcomeUnknownError),
    ],
)
async def test_create_is_never_retried_when_it_may_have_happened(
    first: dict[str, Any], error: type[Exception]
) -> None:
    with aioresponses() as m:
        m.post(CREATE, **first)
        m.post(CREATE, payload=enot_ok(SUCCESS_DATA["create"]))
        async with enot_client(retry=FAST) as client:
            with pytest.raises(error):
                await invoke(client, "create")
        assert total_requests(m) == 1


@pytest.mark.parametrize(
    "first",
    [
        {"status": 429, "headers": {"Retry-After": "0"}, "payload": enot_error(429, "slow")},
        {"exception": aiohttp.ConnectionTimeoutError()},
        {"exception": aiohttp.InvalidURL("https://api.enot.io/")},
    ],
)
async def test_create_retries_when_not_sent_or_rate_limited(first: dict[str, Any]) -> None:
    with aioresponses() as m:
        m.post(CREATE, **first)
        m.post(CREATE, payload=enot_ok(SUCCESS_DATA["create"]))
        async with enot_client(retry=FAST) as client:
            created = await invoke(client, "create")
        bodies = [kwargs["data"] for kwargs in calls(m, "POST", CREATE)]
    assert created.payoff_id == PAYOFF_ID
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]  # the very same order_id goes again


async def test_not_sent_surfaces_as_request_not_sent() -> None:
    with aioresponses() as m:
        m.post(CREATE, exception=aiohttp.ConnectionTimeoutError())
        async with enot_client() as client:
            with pytest.raises(RequestNotSentError):
                await invoke(client, "create")


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        EnotClient("", ENOT_KEY)
    with pytest.raises(ConfigurationError):
        EnotClient(ENOT_USER, "")
