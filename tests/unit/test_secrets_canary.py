"""Canary: secrets and card numbers set to marker values must never show up in logs,
reprs or exception messages, whether calls succeed or fail.

Card numbers may appear masked (first 6 and last 4 digits).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from aioresponses import aioresponses

import payout_async
from payout_async import EnotClient, IntellectMoneyClient, PayoutError, Timeouts
from payout_async._redact import Redactor, mask_phone, mask_wallet, redact_fields
from payout_async.enot import (
    CreatedPayoff,
    Payoff,
    PayoffRequest,
    parse_webhook,
    sign_webhook,
)
from payout_async.intellectmoney import OperationRequest

from .helpers import RawServer, closed_port, enot_error, enot_ok, http_response, im_ok

IM_SECRET = "SECRET-CANARY-1f2e"
BEARER = "BEARER-CANARY-7a9c"
USER_TOKEN = "USERTOKEN/CANARY+3b5d"  # "/" and "+" as in real UserTokens (base64)
FRESH_TOKEN = "USERTOKEN/CANARY+fresh"
ENOT_SECRET = "ENOT-SECRET-CANARY-9d8c"
WEBHOOK_KEY = "HOOK-KEY-CANARY-5e6f"
PAN = "2200700000001239"  # passes Luhn
MASKED_PAN = "220070******1239"
PHONE = "+79161234567"
PHONE_DIGITS = PHONE[1:]  # the same phone without "+", as some echo it
MASKED_PHONE = "+7916*****67"
WALLET = "TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE"  # a TRC20 address
MASKED_WALLET = "TQn9Y2************************bLSE"
SBP_BANK = "100000000004"
MARKERS = [IM_SECRET, BEARER, USER_TOKEN, FRESH_TOKEN, ENOT_SECRET, WEBHOOK_KEY, PAN,
           PHONE_DIGITS, WALLET]  # fmt: skip

IM_BASE = "https://api.intellectmoney.ru/personal/payout/"
ENOT_BASE = "https://api.enot.io/"
ENOT_USER = "a6f112da-7c3f-4323-ad99-ec3630e7c8ff"
OP_ID = "81fa5265-de0b-498d-be37-5d48f4aa3ba1"


def echoes(*secrets: str) -> tuple[str, str, str]:
    """A provider message echoing the card and ``secrets`` back: plain, as PHP escapes
    JSON ("\\/", "\\uXXXX") and as .NET does ("+" as "\\u002B")."""
    plain = f"bad sign for {PAN}, " + ", ".join(f"secret {secret}" for secret in secrets)
    php = json.dumps(plain).replace("/", "\\/")[1:-1]
    dotnet = json.dumps(plain)[1:-1].replace("+", "\\u002B")
    return plain, php, dotnet


def assert_clean(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"{marker!r} leaked into {where}: {text!r}"
    # Escaped forms of the markers must not leak either.
    for marker in (USER_TOKEN, FRESH_TOKEN):
        assert marker.replace("/", "\\/") not in text, f"escaped {marker!r} in {where}"
        assert marker.replace("+", "\\u002B") not in text, f"escaped {marker!r} in {where}"


def assert_error_clean(error: BaseException) -> None:
    assert_clean(str(error), f"str({type(error).__name__})")
    assert_clean(repr(error), f"repr({type(error).__name__})")
    for arg in error.args:
        assert_clean(str(arg), f"args of {type(error).__name__}")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="payout_async")
    yield caplog
    records = [r for r in caplog.get_records("call") if r.name.startswith("payout_async")]
    assert records, "nothing was logged: the canary would prove nothing"
    assert any(r.levelno == logging.DEBUG for r in records)
    for record in records:
        assert_clean(logging.Formatter().format(record), "a log line")
        assert_clean(repr(record.args), "log record args")


async def fresh_token() -> str:
    return FRESH_TOKEN


def im(api: str = "current", **kwargs: Any) -> IntellectMoneyClient:
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    kwargs.setdefault("base_url", IM_BASE)
    token = kwargs.pop("user_token", USER_TOKEN)
    return IntellectMoneyClient(
        token,
        IM_SECRET,
        bearer_token=BEARER if api == "current" else None,
        api=api,  # type: ignore[arg-type]
        **kwargs,
    )


def enot(**kwargs: Any) -> EnotClient:
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    return EnotClient(ENOT_USER, ENOT_SECRET, **kwargs)


async def expect_error(action: Callable[[], Awaitable[object]]) -> PayoutError:
    with pytest.raises(PayoutError) as caught:
        await action()
    assert_error_clean(caught.value)
    return caught.value


IM_METHODS = {"current": ("createOperation", "executeOperation", "getOperationState",
                          "deleteOperation"),
              "legacy": ("CreateOperation", "ExecuteOperation", "GetOperationState",
                         "DeleteOperation")}  # fmt: skip


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("body_format", ["json", "form"])
@pytest.mark.parametrize("token", ["string", "callable"])
async def test_intellectmoney_success_and_failure_leak_nothing(
    logs: pytest.LogCaptureFixture, api: str, body_format: str, token: str
) -> None:
    create, execute, state, delete = IM_METHODS[api]
    user_token: Any = USER_TOKEN if token == "string" else fresh_token
    known = [IM_SECRET, USER_TOKEN if token == "string" else FRESH_TOKEN]
    if api == "current":
        known.append(BEARER)
    said, said_php, said_dotnet = echoes(*known)
    with aioresponses() as m:
        m.post(IM_BASE + create, payload=im_ok())
        m.post(IM_BASE + execute, payload=im_ok("InProcess"))
        m.post(IM_BASE + state, payload=im_ok("Completed"))
        m.post(IM_BASE + delete, payload={"OperationState": {"Code": 0}, "Result": True})
        # failures, each echoing every secret back
        m.post(IM_BASE + create, payload={"OperationState": {"Code": 2, "Desc": said},
                                          "Result": False})  # fmt: skip
        m.post(IM_BASE + execute, status=502, body=f"<html>{said}</html>")
        m.post(IM_BASE + state, status=401, payload={"Message": said})
        m.post(IM_BASE + state, status=200, body=f'{{"Desc": "{said_php}"')  # not JSON
        m.post(IM_BASE + execute, status=200, body=f'{{"Desc": "{said_dotnet}"')
        m.post(IM_BASE + delete, status=500, body=f'{{"OperationState": {{"Desc": "{said_php}"}}}}')
        m.post(IM_BASE + state, status=429, body=said_dotnet)

        client = im(api, body_format=body_format, user_token=user_token)
        assert_clean(repr(client), "repr(client)")
        async with client:
            request = OperationRequest(amount=Decimal("50"), pan=PAN, recipient_name="Иван")
            assert_clean(repr(request), "repr(OperationRequest)")
            assert MASKED_PAN in repr(request)
            created = await client.create_operation_from(request)
            assert_clean(repr(created), "repr(PayoutOperation)")
            await client.execute_operation(OP_ID)
            await client.get_operation_state(OP_ID)
            await client.delete_operation(OP_ID)

            errors = [
                await expect_error(lambda: client.create_operation(amount="50.00", pan=PAN)),
                await expect_error(lambda: client.execute_operation(OP_ID)),
                await expect_error(lambda: client.get_operation_state(OP_ID)),
                await expect_error(lambda: client.get_operation_state(OP_ID)),
                await expect_error(lambda: client.execute_operation(OP_ID)),
                await expect_error(lambda: client.delete_operation(OP_ID)),
                await expect_error(lambda: client.get_operation_state(OP_ID)),
            ]
        assert_clean(repr(client), "repr(client)")
    assert [type(e).__name__ for e in errors] == [
        "ProviderRejectedError", "OutcomeUnknownError", "AuthenticationError",
        "InvalidResponseError", "OutcomeUnknownError", "ServerError", "RateLimitError",
    ]  # fmt: skip
    # The provider's text is kept, only the secrets are cut out of it.
    assert "bad sign for" in errors[0].message
    assert MASKED_PAN in errors[0].message
    assert MASKED_PAN in logs.text  # the request's Pan was logged, masked


async def test_token_refresh_leaks_neither_token(logs: pytest.LogCaptureFixture) -> None:
    tokens = iter([USER_TOKEN, FRESH_TOKEN])

    async def source() -> str:
        return next(tokens)

    with aioresponses() as m:
        m.post(IM_BASE + "executeOperation", payload={
            "OperationState": {"Code": 2, "Desc": f"UserToken {USER_TOKEN} expired"},
            "Result": False})  # fmt: skip
        m.post(IM_BASE + "executeOperation", payload={
            "OperationState": {"Code": 2, "Desc": f"UserToken {FRESH_TOKEN} refused, {PAN}"},
            "Result": False})  # fmt: skip
        async with im(user_token=source) as client:
            error = await expect_error(lambda: client.execute_operation(OP_ID))
    assert isinstance(error, payout_async.ProviderRejectedError)
    assert "UserToken *** refused" in error.message


async def test_enot_success_and_failure_leak_nothing(logs: pytest.LogCaptureFixture) -> None:
    create = ENOT_BASE + "payoff/create"
    info = f"{ENOT_BASE}payoff/info?id=p-1&user_id={ENOT_USER}"
    balance = f"{ENOT_BASE}account/users/{ENOT_USER}/balance"
    banks = f"{ENOT_BASE}payoff/get-sbp-bank-list?user_id={ENOT_USER}"
    payoff = {"payoff_id": "p-1", "order_id": "o-1", "status": "success", "wallet": PAN,
              "service": "card", "amount": "10.00", "comment": "ok"}  # fmt: skip
    said, said_php, said_dotnet = echoes(ENOT_SECRET)
    with aioresponses() as m:
        m.post(create, payload=enot_ok({"payoff_id": "p-1", "amount_withdraw_rub": 10}))
        m.get(info, payload=enot_ok(payoff))
        m.get(balance, payload=enot_ok({"balance": "1.00"}))
        m.get(banks, payload=enot_ok({"banks": [{"id": "1", "name": "Банк"}]}))
        m.post(create, status=401, payload=enot_error(401, said))
        m.post(create, status=422, body=json.dumps(enot_error(422, said)).replace("/", "\\/"))
        m.post(create, status=502, body=f"<html><body>{said}</body></html>")
        m.post(create, status=200, body=f'{{"error": "{said_dotnet}"')
        m.get(info, status=502, body=f"<html>{said}</html>")
        m.get(info, status=403, payload=enot_error(403, said))
        m.get(info, status=200, payload=enot_error(404, said))
        m.get(balance, status=500, body=said_php)
        m.get(banks, status=429, headers={"Retry-After": "1"}, payload=enot_error(429, said))

        client = enot()
        assert_clean(repr(client), "repr(EnotClient)")
        async with client:
            request = PayoffRequest(service="card", wallet_to=PAN, amount="10.00",
                                    order_id="o-1", comment="hi")  # fmt: skip
            assert_clean(repr(request), "repr(PayoffRequest)")
            assert MASKED_PAN in repr(request)
            created = await client.create_payoff_from(request)
            assert isinstance(created, CreatedPayoff)
            assert_clean(repr(created), "repr(CreatedPayoff)")
            found = await client.get_payoff(payoff_id="p-1")
            assert isinstance(found, Payoff)
            assert found.wallet == PAN  # the value is there for the caller...
            assert_clean(repr(found), "repr(Payoff)")  # ...but never in its repr
            assert MASKED_PAN in repr(found)
            await client.get_balance()
            await client.list_sbp_banks()

            def create_again() -> Awaitable[object]:
                return client.create_payoff(
                    service="card", wallet_to=PAN, amount="10.00", order_id="o-1"
                )

            errors = [
                await expect_error(create_again),
                await expect_error(create_again),
                await expect_error(create_again),
                await expect_error(create_again),
                await expect_error(lambda: client.get_payoff(payoff_id="p-1")),
                await expect_error(lambda: client.get_payoff(payoff_id="p-1")),
                await expect_error(lambda: client.get_payoff(payoff_id="p-1")),
                await expect_error(client.get_balance),
                await expect_error(client.list_sbp_banks),
            ]
    assert [type(e).__name__ for e in errors] == [
        "AuthenticationError", "InvalidRequestError", "OutcomeUnknownError",
        "OutcomeUnknownError", "ServerError", "PermissionDeniedError", "NotFoundError",
        "ServerError", "RateLimitError",
    ]  # fmt: skip
    assert MASKED_PAN in logs.text


@pytest.mark.parametrize("kind", ["im", "enot"])
async def test_transport_failures_leak_nothing(logs: pytest.LogCaptureFixture, kind: str) -> None:
    timeouts = Timeouts(total=5, connect=1, read=0.3)
    sock, port = closed_port()
    try:
        refused_base = f"http://127.0.0.1:{port}/"
        errors = [await expect_error(lambda: _money_call(kind, refused_base, timeouts))]
    finally:
        sock.close()
    for behaviour in ("close_after_read", "stall", "truncated"):
        async with RawServer(behaviour) as server:
            errors.append(await expect_error(lambda: _money_call(kind, server.url, timeouts)))
    plain, _, _ = echoes(*([IM_SECRET, USER_TOKEN, BEARER] if kind == "im" else [ENOT_SECRET]))
    echo = json.dumps({"error": plain, "OperationState": {"Code": 2, "Desc": plain}}).encode()
    async with RawServer("answer", http_response(echo, status="500 Internal Server Error")) as srv:
        errors.append(await expect_error(lambda: _money_call(kind, srv.url, timeouts)))
    assert [type(e).__name__ for e in errors] == [
        "RequestNotSentError", "OutcomeUnknownError", "OutcomeUnknownError",
        "OutcomeUnknownError", "ServerError",
    ]  # fmt: skip


async def _money_call(kind: str, base: str, timeouts: Timeouts) -> object:
    if kind == "im":
        async with im(base_url=base, timeouts=timeouts) as client:
            return await client.execute_operation(OP_ID)
    async with enot(base_url=base, timeouts=timeouts) as client:
        return await client.create_payoff(
            service="card", wallet_to=PAN, amount="10.00", order_id="o-1"
        )


def test_validation_errors_and_webhooks_leak_nothing() -> None:
    bad_luhn = PAN[:-1] + "0"
    for action in (
        lambda: OperationRequest(amount="50.00", pan=bad_luhn),
        lambda: OperationRequest(amount="50.001", pan=PAN),
        lambda: PayoffRequest(service="card", wallet_to=PAN, amount=1.5),
        lambda: PayoffRequest(service="card", wallet_to=PAN * 20, amount=1),
    ):
        with pytest.raises(payout_async.ValidationError) as caught:
            action()
        assert_error_clean(caught.value)
        assert bad_luhn not in str(caught.value)

    payload = {"payoff_id": "p", "status": "success", "wallet": PAN, "amount": "1.00"}
    body = json.dumps(payload).encode()
    hook = parse_webhook(body, sign_webhook(payload, WEBHOOK_KEY), WEBHOOK_KEY)
    assert_clean(repr(hook), "repr(PayoffWebhook)")
    with pytest.raises(payout_async.SignatureError) as caught_sig:
        parse_webhook(body, "0" * 64, WEBHOOK_KEY)
    assert_error_clean(caught_sig.value)


def test_redactor_hides_a_secret_that_contains_another() -> None:
    # Pairs where one secret is a prefix of another: the longer must go whole,
    # whatever order the secrets were given in.
    for n in range(20):
        short, long = f"KEY{n:02d}", f"KEY{n:02d}-LONGER-TAIL"
        for secrets in ([short, long], [long, short]):
            text = Redactor(secrets)(f"echo {long} and {short}")
            assert "LONGER-TAIL" not in text
            assert text == "echo *** and ***"


def test_redactor_sees_through_json_escapes() -> None:
    redact = Redactor([USER_TOKEN, "ключ-секрет"])
    escaped = json.dumps({"a": USER_TOKEN, "b": "ключ-секрет"}).replace("/", "\\/")
    assert "\\u043a" in escaped
    text = redact(escaped)
    assert "***" in text and "CANARY" not in text
    assert redact(echoes(USER_TOKEN)[2]).endswith(", secret ***")
    # Escapes that are no secret stay readable (and lone surrogates stay escaped).
    assert redact('"\\u0418\\u0432\\u0430\\u043d" \\ud83d') == '"Иван" \\ud83d'


@pytest.mark.parametrize("api", ["current", "legacy"])
async def test_intellectmoney_phones_leak_nothing(logs: pytest.LogCaptureFixture, api: str) -> None:
    """SBP (current) and Qiwi (legacy) payouts to a phone: the phone is masked in the
    request's repr, the request log, the answer log and every error."""
    create, execute, state, _ = IM_METHODS[api]
    echoed = {"Account": PHONE, "PayoutOperationId": OP_ID, "PayoutOperationState": "Created"}
    said = f"счёт {PHONE} / {PHONE_DIGITS} не найден"
    with aioresponses() as m:
        m.post(IM_BASE + create, payload={**im_ok(), "Result": echoed})
        m.post(IM_BASE + create, payload={"OperationState": {"Code": 2, "Desc": said}})
        m.post(IM_BASE + execute, status=500, payload={"OperationState": {"Desc": said}})
        m.post(IM_BASE + state, status=200, body=f'{{"Account": "{PHONE}", "Desc": "{said}"')
        bank = {"bank_id": SBP_BANK} if api == "current" else {}
        request = OperationRequest(amount="50.00", account=PHONE, **bank)
        assert_clean(repr(request), "repr(OperationRequest)")
        assert MASKED_PHONE in repr(request)
        async with im(api) as client:
            created = await client.create_operation_from(request)
            assert_clean(repr(created), "repr(PayoutOperation)")
            errors = [
                await expect_error(lambda: client.create_operation_from(request)),
                await expect_error(lambda: client.execute_operation(OP_ID)),
                await expect_error(lambda: client.get_operation_state(OP_ID)),
            ]
    assert [type(e).__name__ for e in errors] == [
        "ProviderRejectedError", "ServerError", "InvalidResponseError",
    ]  # fmt: skip
    assert f"счёт {MASKED_PHONE} / {MASKED_PHONE[1:]} не найден" in errors[0].message
    assert f'"Account": "{MASKED_PHONE}"' in logs.text  # the answer, logged masked
    assert f"'Account': '{MASKED_PHONE}'" in logs.text  # the request, logged masked


async def test_enot_phones_and_wallets_leak_nothing(logs: pytest.LogCaptureFixture) -> None:
    """SBP payoffs to a phone and USDT payoffs to a wallet: masked in requests, models,
    logs, errors and webhooks."""
    create = ENOT_BASE + "payoff/create"
    info = f"{ENOT_BASE}payoff/info?id=p-1&user_id={ENOT_USER}"
    said = f"кошелёк {WALLET} или телефон {PHONE} недействителен"
    with aioresponses() as m:
        m.post(create, payload=enot_ok({"payoff_id": "p-1", "wallet_to": PHONE}))
        m.post(create, payload=enot_ok({"payoff_id": "p-1", "wallet_to": WALLET}))
        m.get(info, payload=enot_ok({"payoff_id": "p-1", "status": "wait", "wallet": PHONE}))
        m.get(info, payload=enot_ok({"payoff_id": "p-1", "status": "wait", "wallet": WALLET}))
        m.post(create, status=422, payload={**enot_error(422, said), "wallet_to": WALLET})
        m.get(info, status=200, body=f'{{"data": {{"wallet": "{WALLET}", "phone": "{PHONE}"')
        to_phone = PayoffRequest(service="sbp", wallet_to=PHONE, amount="10.00",
                                 order_id="o-1", sbp_bank_id=SBP_BANK)  # fmt: skip
        to_wallet = PayoffRequest(service="usdt_trc20", wallet_to=WALLET, amount="10.00",
                                  order_id="o-2")  # fmt: skip
        assert MASKED_PHONE in repr(to_phone) and MASKED_WALLET in repr(to_wallet)
        async with enot() as client:
            await client.create_payoff_from(to_phone)
            await client.create_payoff_from(to_wallet)
            by_phone = await client.get_payoff(payoff_id="p-1")
            by_wallet = await client.get_payoff(payoff_id="p-1")
            assert (by_phone.wallet, by_wallet.wallet) == (PHONE, WALLET)  # kept for the caller
            errors = [
                await expect_error(lambda: client.create_payoff_from(to_wallet)),
                await expect_error(lambda: client.get_payoff(payoff_id="p-1")),
            ]
    for shown in (repr(to_phone), repr(to_wallet), repr(by_phone), repr(by_wallet)):
        assert_clean(shown, "a repr")
    assert MASKED_PHONE in repr(by_phone) and MASKED_WALLET in repr(by_wallet)
    assert [type(e).__name__ for e in errors] == ["InvalidRequestError", "InvalidResponseError"]
    # The create's own wallet is masked where Enot's prose echoes it, as is any phone.
    assert f"кошелёк {MASKED_WALLET} или телефон {MASKED_PHONE}" in errors[0].message
    assert f'"wallet": "{MASKED_WALLET}"' in logs.text
    assert f"'wallet_to': '{MASKED_WALLET}'" in logs.text


def test_webhooks_and_masks_of_phones_and_wallets() -> None:
    for wallet in (PHONE, WALLET):
        payload = {"payoff_id": "p", "status": "success", "wallet": wallet, "amount": "1.00"}
        hook = parse_webhook(json.dumps(payload).encode(), sign_webhook(payload, WEBHOOK_KEY),
                             WEBHOOK_KEY)  # fmt: skip
        assert_clean(repr(hook), "repr(PayoffWebhook)")
    assert mask_phone(PHONE) == MASKED_PHONE and mask_phone(PHONE_DIGITS) == MASKED_PHONE[1:]
    assert mask_phone("+7900123") == "***"
    assert mask_wallet(WALLET) == MASKED_WALLET
    assert mask_wallet(PHONE) == MASKED_PHONE
    assert mask_wallet(PAN) == MASKED_PAN
    assert mask_wallet("380501234568") == "3805******68"  # 12 digits, not a card (Luhn)
    assert mask_wallet("short") == "***" and mask_wallet(None) is None
    redact = Redactor()
    # Phones in text: with "+" (10-15 digits) or 10-11 bare digits, not inside longer
    # numbers or amounts; card numbers as before.
    assert redact(f"to {PHONE}, {PHONE_DIGITS}.") == f"to {MASKED_PHONE}, {MASKED_PHONE[1:]}."
    assert redact(f"card {PAN}") == f"card {MASKED_PAN}"
    assert redact("amount 1234567890.12, id 123456789") == "amount 1234567890.12, id 123456789"
    # Recipient fields of JSON text are masked whatever they hold.
    assert redact(f'{{"Pan": "{PAN}", "wallet_to": "{WALLET}", "account": "x\\"y"}}') == (
        f'{{"Pan": "{MASKED_PAN}", "wallet_to": "{MASKED_WALLET}", "account": "***"}}'
    )
    assert redact_fields({"Account": PHONE, "wallet": WALLET, "Amount": "1.00"}) == {
        "Account": MASKED_PHONE, "wallet": MASKED_WALLET, "Amount": "1.00"
    }  # fmt: skip


def test_a_masking_redactor_masks_its_values_and_its_parents_later_secrets() -> None:
    parent = Redactor([IM_SECRET])
    redact = parent.masking([WALLET, None, "abc"])
    parent.add(FRESH_TOKEN)  # a token fetched after the call began
    text = redact(f"{WALLET} {IM_SECRET} {FRESH_TOKEN} abc {PHONE}")
    assert text == f"{MASKED_WALLET} *** *** abc {MASKED_PHONE}"
    assert parent(WALLET) == WALLET  # the parent itself does not know the wallet
