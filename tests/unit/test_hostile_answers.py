"""The six hostile answers of issue 18, one plain test each, over a loopback server.

Every one of them let a non-``PayoutError`` escape (or a wrong result through) before:
a huge number and deep nesting in any answer, a ``Retry-After`` date past year 9999,
undecodable webhook headers and bodies, non-finite money, and an Enot error envelope
that carries a ``data`` object.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from multidict import CIMultiDict

from payout_async import (
    InvalidResponseError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    SignatureError,
    ValidationError,
)
from payout_async._transport import HTTPResponse, parse_retry_after
from payout_async.enot import (
    Balance,
    CreatedPayoff,
    Payoff,
    PayoffWebhook,
    parse_webhook,
    sign_webhook,
    verify_webhook,
)

from .answers import (
    HOOK_KEY,
    METHODS,
    Answer,
    AnswerServer,
    Clients,
    check_contract,
    enot_envelope,
    json_answer,
)

ALL = list(METHODS)
ENOT = [name for name, method in METHODS.items() if method.is_enot]
HUGE = "1e999999999999999999999999"
FAR_FUTURE = "Wed, 21 Oct 99999999999999999999 07:28:00 GMT"

# Exactly as printed in API.md.
VECTOR_BODY = b"""{"amount":"100.00","credited":"95.50","custom_fields":{"user":1},
 "invoice_id":"a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a",
 "order_id":"c78d8fe9-ab44-3f21-a37a-ce4ca269cb47","pay_service":"card",
 "pay_time":"2023-04-06 16=>27=>59","payer_details":"553691******1279",
 "status":"success","type":1}"""
VECTOR_SIGNATURE = "98e2c0563c06851e1934fe968d7239ed06f7dae05f7b43c3d046d39776980e98"


@pytest.fixture
async def server() -> AsyncIterator[AnswerServer]:
    answering = AnswerServer()
    await answering.start()
    yield answering
    await answering.close()


@pytest.fixture
async def clients(server: AnswerServer) -> AsyncIterator[Clients]:
    made = server.clients()
    yield made
    await made.aclose()


def with_raw_field(payload: dict[str, Any], raw: str, *, inside_data: bool = False) -> bytes:
    """``payload`` as JSON with one more field whose value is the raw JSON text ``raw``
    (inside Enot's ``data`` object when asked)."""
    if inside_data:
        data = json.dumps(payload["data"])
        rest = json.dumps({key: value for key, value in payload.items() if key != "data"})
        return f'{{"data": {data[:-1]}, "extra": {raw}}}, {rest[1:]}'.encode()
    return f'{json.dumps(payload)[:-1]}, "extra": {raw}}}'.encode()


def unreadable_type(name: str) -> type[Exception]:
    return OutcomeUnknownError if METHODS[name].moves_money else InvalidResponseError


async def expect_unreadable(
    server: AnswerServer, clients: Clients, name: str, body: bytes
) -> Exception:
    server.answer = Answer(200, {"Content-Type": "application/json"}, body)
    error = await check_contract(METHODS[name], clients, server.answer)
    assert type(error) is unreadable_type(name), error
    assert error.status == 200  # type: ignore[attr-defined]
    assert error.body == body  # type: ignore[attr-defined]
    return error


# --- 1. a number too big for Decimal, anywhere in any answer ----------------------------------


@pytest.mark.parametrize("name", ALL)
async def test_huge_number_is_unreadable(server: AnswerServer, clients: Clients, name: str) -> None:
    body = with_raw_field(METHODS[name].success, HUGE)
    error = await expect_unreadable(server, clients, name, body)
    assert "number" in str(error)


@pytest.mark.parametrize("name", ENOT)
@pytest.mark.parametrize("raw", [HUGE, "1e999999", "1" * 5000, "0." + "0" * 100 + "1"])
async def test_huge_number_inside_enot_data_is_unreadable(
    server: AnswerServer, clients: Clients, name: str, raw: str
) -> None:
    await expect_unreadable(
        server, clients, name, with_raw_field(METHODS[name].success, raw, inside_data=True)
    )


# --- 2. deep nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("where", ["whole body", "in a field", "unclosed"])
async def test_deep_nesting_is_unreadable(
    server: AnswerServer, clients: Clients, name: str, where: str
) -> None:
    deep = "[" * 1000 + "]" * 1000
    if where == "whole body":
        body = deep.encode()
    elif where == "in a field":
        body = with_raw_field(METHODS[name].success, deep)
    else:
        body = with_raw_field(METHODS[name].success, "[" * 1000)
    error = await expect_unreadable(server, clients, name, body)
    if where != "unclosed":
        assert "nested deeper" in str(error)


@pytest.mark.parametrize("name", ["enot-balance", "im-current-state"])
async def test_moderate_nesting_is_still_read(
    server: AnswerServer, clients: Clients, name: str
) -> None:
    nested = "[" * 20 + "]" * 20
    server.answer = Answer(200, {}, with_raw_field(METHODS[name].success, nested))
    result = await check_contract(METHODS[name], clients, server.answer)
    assert not isinstance(result, Exception)


# --- 3. Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [FAR_FUTURE, "Fri, 31 Dec 9999 23:59:59 -2359", "Mon, 01 Jan 0001 00:00:00 +2359", "1e400",
     "-1e400", "nan", "-inf", "9" * 400, "Wed, 99 Oct 2015 07:28:00 GMT", "\udcff\udcfe", "1_0",
     "0x10", "+", "Wed,", ", , ,", "Wed, 21 Oct 2015 07:28:00 +99999999999999999999"],
)  # fmt: skip
def test_retry_after_is_a_finite_non_negative_number_or_none(value: str) -> None:
    response = HTTPResponse("GET", "u", 429, CIMultiDict({"Retry-After": value}), b"")
    seconds = response.retry_after
    assert seconds is None or (seconds >= 0.0 and seconds < float("inf"))
    assert (parse_retry_after(value) is None) is (seconds is None)


def test_far_future_retry_after_is_none() -> None:
    assert parse_retry_after(FAR_FUTURE) is None
    soon = email.utils.format_datetime(email.utils.localtime(), usegmt=False)
    assert parse_retry_after(soon) == 0.0


@pytest.mark.parametrize("name", ALL)
async def test_429_with_a_far_future_date_is_a_retried_rate_limit(
    server: AnswerServer, clients: Clients, name: str
) -> None:
    server.answer = json_answer({"error": "slow down"}, 429, **{"Retry-After": FAR_FUTURE})
    error = await check_contract(METHODS[name], clients, server.answer)
    assert isinstance(error, RateLimitError)
    assert error.retry_after is None
    assert server.calls == 2  # retried (instantly) like any 429, money-moving or not


# --- 4. the webhook check and handler ---------------------------------------------------------


UNDECODABLE_HEADER = b"\xff\xfe" * 32
LONE_SURROGATE = b'{"order_id": "\\ud800", "status": "success", "amount": "1.00"}'
DEEP_BODY = b"[" * 1024


def test_webhook_check_refuses_an_undecodable_header() -> None:
    as_aiohttp_reads_it = UNDECODABLE_HEADER.decode("utf-8", "surrogateescape")
    assert verify_webhook(VECTOR_BODY, as_aiohttp_reads_it, HOOK_KEY) is False
    with pytest.raises(SignatureError):
        parse_webhook(VECTOR_BODY, as_aiohttp_reads_it, HOOK_KEY)


@pytest.mark.parametrize("body", [LONE_SURROGATE, DEEP_BODY], ids=["surrogate", "deep"])
def test_webhook_check_refuses_an_unreadable_body_whatever_the_signature(body: bytes) -> None:
    php = sign_webhook(json.loads(LONE_SURROGATE), HOOK_KEY)  # what PHP would have signed
    for signature in (php, VECTOR_SIGNATURE, "0" * 64, "x"):
        assert verify_webhook(body, signature, HOOK_KEY) is False
        with pytest.raises(SignatureError):
            parse_webhook(body, signature, HOOK_KEY)


def test_webhook_api_md_vector_still_verifies() -> None:
    assert verify_webhook(VECTOR_BODY, VECTOR_SIGNATURE, HOOK_KEY) is True
    hook = parse_webhook(VECTOR_BODY, VECTOR_SIGNATURE, HOOK_KEY)
    assert hook.amount == Decimal("100.00")
    assert hook.payoff_id == "a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a"


def test_signed_webhook_with_unreadable_money_is_refused() -> None:
    payload = {"order_id": "o-1", "status": "success", "amount": "NaN"}
    body = json.dumps(payload).encode()
    signature = sign_webhook(payload, HOOK_KEY)
    assert verify_webhook(body, signature, HOOK_KEY) is True  # the signature is fine...
    with pytest.raises(SignatureError, match="cannot be read"):  # ...the money is not
        parse_webhook(body, signature, HOOK_KEY)


async def test_webhook_handler_answers_401_or_400_never_500(server: AnswerServer) -> None:
    assert await server.post_hook(VECTOR_BODY, UNDECODABLE_HEADER) == 401
    assert await server.post_hook(LONE_SURROGATE, VECTOR_SIGNATURE.encode()) == 401
    php = sign_webhook(json.loads(LONE_SURROGATE), HOOK_KEY).encode()
    assert await server.post_hook(LONE_SURROGATE, php) == 401
    assert await server.post_hook(DEEP_BODY, VECTOR_SIGNATURE.encode()) == 401
    assert await server.post_hook(VECTOR_BODY, None) == 401
    nan = {"order_id": "o-1", "status": "success", "amount": "sNaN"}
    signed = sign_webhook(nan, HOOK_KEY).encode()
    assert await server.post_hook(json.dumps(nan).encode(), signed) == 400
    assert await server.post_hook(VECTOR_BODY, VECTOR_SIGNATURE.encode()) == 200


async def test_webhook_handler_reads_a_body_sent_in_pieces(server: AnswerServer) -> None:
    body = json.dumps({"order_id": "o-1", "status": "wait", "pad": "x" * 40000}).encode()
    signature = sign_webhook(json.loads(body), HOOK_KEY).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        f"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\nx-api-sha256-signature: "
    ).encode()
    writer.write(head + signature + b"\r\n\r\n")
    for start in range(0, len(body), 8192):
        writer.write(body[start : start + 8192])
        await writer.drain()
        await asyncio.sleep(0.001)
    status = int((await reader.readline()).split()[1])
    writer.close()
    assert status == 200


# --- 5. money is finite -----------------------------------------------------------------------

NON_FINITE_LITERALS = ["NaN", "Infinity", "-Infinity"]
NON_FINITE_STRINGS = ["NaN", "nan", "sNaN", "-sNaN", "Infinity", "-inf", "Inf", "1e999999", "1,5"]


@pytest.mark.parametrize("name", ["enot-create", "enot-info-by-id", "enot-balance"])
@pytest.mark.parametrize("literal", NON_FINITE_LITERALS)
async def test_non_finite_json_literal_is_unreadable(
    server: AnswerServer, clients: Clients, name: str, literal: str
) -> None:
    field = "amount" if name.startswith("enot-info") else "balance"
    success = METHODS[name].success
    data = {key: value for key, value in success["data"].items() if key != field}
    body = with_raw_field(enot_envelope(data), literal, inside_data=True).replace(
        b'"extra"', f'"{field}"'.encode()
    )
    await expect_unreadable(server, clients, name, body)


@pytest.mark.parametrize("name", ["enot-create", "enot-info-by-order", "enot-balance"])
@pytest.mark.parametrize("text", NON_FINITE_STRINGS)
async def test_non_finite_money_string_is_unreadable(
    server: AnswerServer, clients: Clients, name: str, text: str
) -> None:
    field = "amount" if name.startswith("enot-info") else "balance"
    success = METHODS[name].success
    body = json.dumps(enot_envelope({**success["data"], field: text})).encode()
    error = await expect_unreadable(server, clients, name, body)
    assert field in str(error)


@pytest.mark.parametrize("model", [CreatedPayoff, Payoff, Balance, PayoffWebhook])
@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_models_refuse_non_finite_money(model: type[Any], value: str) -> None:
    field = "balance" if model is Balance else "amount_withdraw_rub"
    field = "amount" if model is PayoffWebhook else field
    with pytest.raises(ValidationError, match=field):
        model(**{field: Decimal(value)})


def test_models_compare_and_hash() -> None:
    first, second = Balance(balance=Decimal("1.0")), Balance(balance=Decimal("1.00"))
    assert first == second and hash(first) == hash(second)
    assert Payoff(amount=Decimal("5")) != Payoff(amount=None)


# --- 6. Enot: the envelope decides before data ----------------------------------------------


@pytest.mark.parametrize("name", ENOT)
async def test_error_envelope_with_a_data_object_is_an_error(
    server: AnswerServer, clients: Clients, name: str
) -> None:
    server.answer = json_answer({"data": {}, "status": 500, "status_check": False, "error": "x"})
    error = await check_contract(METHODS[name], clients, server.answer)
    assert isinstance(error, ServerError)
    assert error.status == 500 and "x" in error.message
    assert server.calls == (1 if METHODS[name].moves_money else 2)


@pytest.mark.parametrize("name", ENOT)
@pytest.mark.parametrize(
    "envelope",
    [
        {"data": {"payoff_id": "p"}, "status_check": False, "error": "said no"},
        {"data": {"payoff_id": "p"}, "status": 200, "status_check": True, "error": "said no"},
        {"data": {"payoff_id": "p"}, "status": 302, "status_check": True},
        {"data": {"payoff_id": "p"}, "status": True, "status_check": False},
    ],
)
async def test_error_envelope_without_an_error_status_is_unreadable(
    server: AnswerServer, clients: Clients, name: str, envelope: dict[str, Any]
) -> None:
    error = await expect_unreadable(server, clients, name, json.dumps(envelope).encode())
    if "error" in envelope:
        assert "said no" in str(error)
