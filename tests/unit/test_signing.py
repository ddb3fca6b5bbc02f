"""IntellectMoney Sign vectors, and the Sign / auth headers the client really sends.

Every expected digest is computed here from the documented template written out
literally (API.md, "Sign"), never from the library's own field table.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest
from aioresponses import aioresponses

from payout_async import ConfigurationError
from payout_async.intellectmoney import SIGN_FIELDS, sign
from payout_async.intellectmoney._signing import sign_string

from .helpers import BEARER, CARD, OP_ID, PHONE, body_fields, im_client, im_ok, im_url, only_call


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


GUID = "81fa5265-de0b-498d-be37-5d48f4aa3ba1"
assert GUID == OP_ID

VECTORS: list[tuple[str, dict[str, Any], str]] = [
    # legacy CreateOperation: UserToken::Pan::Account::Amount::Currency::RecipientName::secret
    (
        "CreateOperation",
        {"UserToken": "UT", "Pan": "4111111111111111", "Amount": "50.00", "Currency": "RUB",
         "RecipientName": "Иван Иванов"},
        "UT::4111111111111111::::50.00::RUB::Иван Иванов::SECRET",
    ),
    (  # Decimal amount, written as in the body
        "CreateOperation",
        {"UserToken": "UT", "Pan": "4111111111111111", "Amount": Decimal("50"),
         "Currency": "RUB", "RecipientName": "Иван Иванов"},
        "UT::4111111111111111::::50.00::RUB::Иван Иванов::SECRET",
    ),
    (  # SBP / Qiwi: Account instead of Pan; no RecipientName; BankId is not signed
        "CreateOperation",
        {"UserToken": "UT", "Account": "+79001234567", "BankId": "100000000004",
         "Amount": "1234.50", "Currency": "RUB", "ProviderType": 2},
        "UT::::+79001234567::1234.50::RUB::::SECRET",
    ),
    (  # None counts as an empty field
        "CreateOperation",
        {"UserToken": "UT", "Pan": "4111111111111111", "Account": None, "Amount": "50.00",
         "Currency": "RUB", "RecipientName": None},
        "UT::4111111111111111::::50.00::RUB::::SECRET",
    ),
    # legacy ExecuteOperation: two literal empty fields
    (
        "ExecuteOperation",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::SECRET",
    ),
    # legacy GetOperationState and DeleteOperation: four literal empty fields
    (
        "GetOperationState",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::::::SECRET",
    ),
    (
        "DeleteOperation",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::::::SECRET",
    ),
    # current createOperation:
    # UserToken::PreferenceType::Pan::Account::BankId::Amount::Currency::RecipientName::EshopId
    (
        "createOperation",
        {"UserToken": "UT", "PreferenceType": "OutBankCard", "Pan": "4111111111111111",
         "Amount": "50.00", "Currency": "RUB", "RecipientName": "Иван Иванов"},
        "UT::OutBankCard::4111111111111111::::::50.00::RUB::Иван Иванов::::SECRET",
    ),
    (
        "createOperation",
        {"UserToken": "UT", "PreferenceType": "OutSbp", "Account": "+79001234567",
         "BankId": "100000000004", "Amount": Decimal("0.5"), "Currency": "TST",
         "EshopId": "123456", "Description": "not signed"},
        "UT::OutSbp::::+79001234567::100000000004::0.50::TST::::123456::SECRET",
    ),
    (  # only the required fields: every optional one empty
        "createOperation",
        {"UserToken": "UT", "PreferenceType": "OutBankCard", "Pan": "4111111111111111",
         "Amount": "50.00", "Currency": "RUB"},
        "UT::OutBankCard::4111111111111111::::::50.00::RUB::::::SECRET",
    ),
    # current execute / state / delete: UserToken::PayoutOperationId::secret
    (
        "executeOperation",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ),
    (
        "getOperationState",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ),
    (
        "deleteOperation",
        {"UserToken": "UT", "PayoutOperationId": "81fa5265-de0b-498d-be37-5d48f4aa3ba1"},
        "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("method", "params", "template"), VECTORS)
def test_sign_vectors(method: str, params: dict[str, Any], template: str) -> None:
    assert sign(method, params, "SECRET") == sha(template)
    assert sign_string(method, params, "SECRET") == template


def test_every_method_has_a_vector() -> None:
    assert {method for method, _, _ in VECTORS} == set(SIGN_FIELDS)


def test_sign_is_lowercase_hex_of_utf8() -> None:
    digest = sign("executeOperation", {"UserToken": "токен", "PayoutOperationId": "x"}, "ключ")
    assert len(digest) == 64
    assert digest == digest.lower()
    assert digest == hashlib.sha256("токен::x::ключ".encode()).hexdigest()
    # The Cyrillic must be hashed as UTF-8, not as some other encoding.
    assert digest != hashlib.sha256("токен::x::ключ".encode("cp1251")).hexdigest()


def test_sign_depends_on_every_signed_field_and_the_secret() -> None:
    params = {"UserToken": "UT", "PreferenceType": "OutBankCard", "Pan": "4111111111111111",
              "Amount": "50.00", "Currency": "RUB", "RecipientName": "Иван Иванов"}  # fmt: skip
    base = sign("createOperation", params, "SECRET")
    assert sign("createOperation", params, "SECRET2") != base
    for name in params:
        changed = {**params, name: str(params[name]) + "x"}
        assert sign("createOperation", changed, "SECRET") != base, name
    # Fields outside the template do not change the Sign.
    assert sign("createOperation", {**params, "Description": "x"}, "SECRET") == base


def test_unknown_method_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="createoperation"):
        sign("createoperation", {}, "SECRET")


# --- what the client puts on the wire ------------------------------------------------

CARD_NAME = "Иван Иванов"

EXPECTED_SIGN_STRINGS = {
    ("current", "create"): (
        "UT::OutBankCard::4111111111111111::::::50.00::RUB::Иван Иванов::::SECRET"
    ),
    ("current", "execute"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ("current", "state"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ("current", "delete"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::SECRET",
    ("legacy", "create"): "UT::4111111111111111::::50.00::RUB::Иван Иванов::SECRET",
    ("legacy", "execute"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::SECRET",
    ("legacy", "state"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::::::SECRET",
    ("legacy", "delete"): "UT::81fa5265-de0b-498d-be37-5d48f4aa3ba1::::::::::SECRET",
}  # fmt: skip

WIRE_METHODS = {
    "current": {"create": "createOperation", "execute": "executeOperation",
                "state": "getOperationState", "delete": "deleteOperation"},
    "legacy": {"create": "CreateOperation", "execute": "ExecuteOperation",
               "state": "GetOperationState", "delete": "DeleteOperation"},
}  # fmt: skip


async def _invoke(client: Any, operation: str) -> object:
    if operation == "create":
        return await client.create_operation(
            amount=Decimal("50"), pan=CARD, recipient_name=CARD_NAME
        )
    if operation == "execute":
        return await client.execute_operation(OP_ID)
    if operation == "state":
        return await client.get_operation_state(OP_ID)
    return await client.delete_operation(OP_ID)


@pytest.mark.parametrize("api", ["current", "legacy"])
@pytest.mark.parametrize("body_format", ["json", "form"])
@pytest.mark.parametrize("operation", ["create", "execute", "state", "delete"])
async def test_client_sends_the_documented_sign(api: str, body_format: str, operation: str) -> None:
    method = WIRE_METHODS[api][operation]
    expected_sign = sha(EXPECTED_SIGN_STRINGS[(api, operation)])
    with aioresponses() as m:
        m.post(im_url(method), payload=im_ok())
        async with im_client(api, body_format=body_format) as client:
            await _invoke(client, operation)
        sent = only_call(m, "POST", im_url(method))

    headers = sent["headers"]
    assert headers["Sign"] == expected_sign
    assert headers["Accept"] == "application/json"
    assert headers["Cache-Control"] == "no-cache"  # never an answer a cache kept
    if api == "current":
        assert headers["Authorization"] == f"Bearer {BEARER}"
    else:
        assert "Authorization" not in headers
    expected_type = (
        "application/json" if body_format == "json" else ("application/x-www-form-urlencoded")
    )
    assert headers["Content-Type"] == expected_type

    body = body_fields(sent)
    assert body["UserToken"] == "UT"
    if api == "legacy":
        assert body["Sign"] == expected_sign  # legacy: Sign in the body too, by default
    else:
        assert "Sign" not in body
    if operation == "create":
        assert body["Pan"] == CARD
        assert body["Amount"] == "50.00"
        assert body["Currency"] == "RUB"
        assert body["RecipientName"] == CARD_NAME
        if api == "current":
            assert body["PreferenceType"] == "OutBankCard"
            assert "ProviderType" not in body
        else:
            assert str(body["ProviderType"]) == "0"
            assert "PreferenceType" not in body
    else:
        assert body["PayoutOperationId"] == OP_ID


async def test_legacy_sign_in_body_can_be_turned_off() -> None:
    with aioresponses() as m:
        m.post(im_url("ExecuteOperation"), payload=im_ok("InProcess"))
        async with im_client("legacy", sign_in_body=False) as client:
            await client.execute_operation(OP_ID)
        sent = only_call(m, "POST", im_url("ExecuteOperation"))
    assert sent["headers"]["Sign"] == sha(f"UT::{OP_ID}::::::SECRET")
    assert "Sign" not in body_fields(sent)


async def test_current_api_can_also_sign_in_body() -> None:
    with aioresponses() as m:
        m.post(im_url("executeOperation"), payload=im_ok("InProcess"))
        async with im_client("current", sign_in_body=True) as client:
            await client.execute_operation(OP_ID)
        sent = only_call(m, "POST", im_url("executeOperation"))
    assert body_fields(sent)["Sign"] == sha(f"UT::{OP_ID}::SECRET")


@pytest.mark.parametrize("body_format", ["json", "form"])
async def test_sbp_create_signs_and_sends_bank_and_eshop(body_format: str) -> None:
    with aioresponses() as m:
        m.post(im_url("createOperation"), payload=im_ok())
        async with im_client("current", body_format=body_format) as client:
            await client.create_operation(
                amount="1234.5", account=PHONE, bank_id="100000000004", eshop_id=42,
                description="Выплата / май",
            )  # fmt: skip
        sent = only_call(m, "POST", im_url("createOperation"))
    assert sent["headers"]["Sign"] == sha(
        "UT::OutSbp::::+79001234567::100000000004::1234.50::RUB::::42::SECRET"
    )
    body = body_fields(sent)
    assert body["PreferenceType"] == "OutSbp"
    assert body["Account"] == PHONE
    assert body["BankId"] == "100000000004"
    assert body["Amount"] == "1234.50"
    assert body["EshopId"] == "42"
    assert body["Description"] == "Выплата / май"
    assert "Pan" not in body
    assert "RecipientName" not in body


async def test_json_body_keeps_cyrillic_as_utf8() -> None:
    with aioresponses() as m:
        m.post(im_url("createOperation"), payload=im_ok())
        async with im_client() as client:
            await client.create_operation(amount=50, pan=CARD, recipient_name=CARD_NAME)
        sent = only_call(m, "POST", im_url("createOperation"))
    assert CARD_NAME.encode("utf-8") in sent["data"]
