"""Enot payoff webhook: the API.md vector, both escaping flavours, tampering, parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import pytest

from payout_async import SignatureError
from payout_async.enot import (
    SIGNATURE_HEADER,
    PayoffStatus,
    PayoffWebhook,
    parse_webhook,
    sign_webhook,
    verify_webhook,
)

# Exactly as printed in API.md (line breaks and indentation included).
VECTOR_BODY = b"""{"amount":"100.00","credited":"95.50","custom_fields":{"user":1},
 "invoice_id":"a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a",
 "order_id":"c78d8fe9-ab44-3f21-a37a-ce4ca269cb47","pay_service":"card",
 "pay_time":"2023-04-06 16=>27=>59","payer_details":"553691******1279",
 "status":"success","type":1}"""
VECTOR_KEY = "payoffExample"
VECTOR_SIGNATURE = "98e2c0563c06851e1934fe968d7239ed06f7dae05f7b43c3d046d39776980e98"


def hmac_hex(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode("utf-8"), hashlib.sha256).hexdigest()


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "x-api-sha256-signature"


def test_api_md_vector() -> None:
    assert verify_webhook(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_KEY) is True
    # The same body compact, with its keys in another order, still verifies.
    shuffled = json.dumps(dict(reversed(json.loads(VECTOR_BODY).items()))).encode()
    assert verify_webhook(shuffled, VECTOR_SIGNATURE, VECTOR_KEY) is True
    # Case and surrounding whitespace of the header value do not matter.
    assert verify_webhook(VECTOR_BODY, f" {VECTOR_SIGNATURE.upper()} ", VECTOR_KEY) is True


def test_api_md_vector_is_hmac_of_sorted_compact_json() -> None:
    canonical = (
        '{"amount":"100.00","credited":"95.50","custom_fields":{"user":1},'
        '"invoice_id":"a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a",'
        '"order_id":"c78d8fe9-ab44-3f21-a37a-ce4ca269cb47","pay_service":"card",'
        '"pay_time":"2023-04-06 16=>27=>59","payer_details":"553691******1279",'
        '"status":"success","type":1}'
    )
    assert hmac_hex(VECTOR_KEY, canonical) == VECTOR_SIGNATURE
    assert sign_webhook(json.loads(VECTOR_BODY), VECTOR_KEY) == VECTOR_SIGNATURE
    assert sign_webhook(json.loads(VECTOR_BODY), VECTOR_KEY, php=False) == VECTOR_SIGNATURE


# A body with Cyrillic and "/" signs differently in the two flavours.
FLAVOUR_BODY = (
    '{"status": "success", "order_id": "заказ/1", "amount": "10.00",'
    ' "payoff_id": "p-1", "wallet": "http://x/y"}'
).encode()
PHP_CANONICAL = (
    '{"amount":"10.00","order_id":"\\u0437\\u0430\\u043a\\u0430\\u0437\\/1",'
    '"payoff_id":"p-1","status":"success","wallet":"http:\\/\\/x\\/y"}'
)
KEPT_CANONICAL = (
    '{"amount":"10.00","order_id":"заказ/1","payoff_id":"p-1","status":"success",'
    '"wallet":"http://x/y"}'
)


def test_both_escaping_flavours_verify() -> None:
    php_signature = hmac_hex("additional", PHP_CANONICAL)
    kept_signature = hmac_hex("additional", KEPT_CANONICAL)
    assert php_signature != kept_signature
    assert verify_webhook(FLAVOUR_BODY, php_signature, "additional") is True
    assert verify_webhook(FLAVOUR_BODY, kept_signature, "additional") is True
    payload = json.loads(FLAVOUR_BODY)
    assert sign_webhook(payload, "additional") == php_signature
    assert sign_webhook(payload, "additional", php=False) == kept_signature


def test_python_snippet_separators_are_not_accepted() -> None:
    # The provider's Python snippet uses ", " / ": " separators: API.md says follow
    # the compact form; a digest over the spaced form must not verify.
    spaced = json.dumps(dict(sorted(json.loads(VECTOR_BODY).items())))
    assert verify_webhook(VECTOR_BODY, hmac_hex(VECTOR_KEY, spaced), VECTOR_KEY) is False


@pytest.mark.parametrize(
    "body",
    [
        VECTOR_BODY.replace(b'"100.00"', b'"100.01"'),
        VECTOR_BODY.replace(b'"success"', b'"fail"'),
        VECTOR_BODY.replace(b'{"user":1}', b'{"user":2}'),
        VECTOR_BODY.replace(b'"type":1}', b'"type":1,"extra":0}'),
        VECTOR_BODY.replace(b'"credited":"95.50",', b""),
    ],
)
def test_tampered_body_fails(body: bytes) -> None:
    assert body != VECTOR_BODY
    assert verify_webhook(body, VECTOR_SIGNATURE, VECTOR_KEY) is False


@pytest.mark.parametrize("key", ["payoffexample", "payoffExample ", "other", ""])
def test_wrong_key_fails(key: str) -> None:
    assert verify_webhook(VECTOR_BODY, VECTOR_SIGNATURE, key) is False


@pytest.mark.parametrize(
    "signature",
    [
        VECTOR_SIGNATURE[:-1] + "f",
        VECTOR_SIGNATURE[:-2],
        VECTOR_SIGNATURE + "00",
        "",
        "not hex at all",
        hashlib.sha256(VECTOR_BODY).hexdigest(),
    ],
)
def test_wrong_signature_fails(signature: str) -> None:
    assert verify_webhook(VECTOR_BODY, signature, VECTOR_KEY) is False


@pytest.mark.parametrize("body", [b"", b"not json", b"<html></html>", b"[1, 2]", b'"x"', b"\xff"])
def test_non_json_or_non_object_body_is_false(body: bytes) -> None:
    assert verify_webhook(body, VECTOR_SIGNATURE, VECTOR_KEY) is False


def test_parse_webhook_rejects_bad_signature() -> None:
    with pytest.raises(SignatureError):
        parse_webhook(VECTOR_BODY, VECTOR_SIGNATURE[:-1] + "0", VECTOR_KEY)
    with pytest.raises(SignatureError):
        parse_webhook(VECTOR_BODY.replace(b"100.00", b"900.00"), VECTOR_SIGNATURE, VECTOR_KEY)
    with pytest.raises(SignatureError):
        parse_webhook(b"garbage", VECTOR_SIGNATURE, VECTOR_KEY)


def test_parse_webhook_returns_typed_payload() -> None:
    hook = parse_webhook(VECTOR_BODY, VECTOR_SIGNATURE, VECTOR_KEY)
    assert isinstance(hook, PayoffWebhook)
    assert hook.amount == Decimal("100.00")
    assert isinstance(hook.amount, Decimal)
    assert hook.status is PayoffStatus.SUCCESS
    assert hook.raw_status == "success"
    assert hook.order_id == "c78d8fe9-ab44-3f21-a37a-ce4ca269cb47"
    assert hook.payoff_id == "a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a"  # from invoice_id
    assert hook.raw["credited"] == "95.50"
    assert hook.raw["custom_fields"] == {"user": 1}


def test_parse_webhook_payoff_fields_and_numeric_money() -> None:
    payload = {
        "payoff_id": "p-7", "order_id": "o-7", "status": "fail", "amount": 100.5,
        "commission": "1.25", "service": "card", "wallet": "4111111111111111",
    }  # fmt: skip
    body = json.dumps(payload).encode()
    hook = parse_webhook(body, sign_webhook(payload, "k"), "k")
    assert hook.payoff_id == "p-7"
    assert hook.status is PayoffStatus.FAIL
    assert hook.amount == Decimal("100.5")
    assert isinstance(hook.amount, Decimal)
    assert hook.commission == Decimal("1.25")
    assert hook.wallet == "4111111111111111"
    assert "4111111111111111" not in repr(hook)
    assert "411111******1111" in repr(hook)


def test_parse_webhook_unknown_status_is_kept() -> None:
    payload = {"payoff_id": "p-8", "status": "refunded", "amount": "5.00"}
    hook = parse_webhook(json.dumps(payload).encode(), sign_webhook(payload, "k"), "k")
    assert hook.status is PayoffStatus.UNKNOWN
    assert hook.raw_status == "refunded"
