"""Input rules (issue 3, item 6): each bad input raises ``ValidationError`` naming the
field, before anything is sent.

Every client call here runs under an aioresponses mock with no URL registered, so a
request would fail with a transport error; on top of that, no request may be recorded.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st

from payout_async import ValidationError
from payout_async._validation import (
    check_digits,
    check_key,
    check_length,
    check_pan,
    check_phone,
    format_amount,
    luhn_ok,
    normalize_phone,
    parse_amount,
)
from payout_async.enot import PayoffRequest
from payout_async.enot._request import check_service
from payout_async.intellectmoney import OperationRequest

from .helpers import CARD, PHONE, enot_client, im_client

Call = Callable[[Any], Awaitable[object]]


async def assert_refused_offline(api: str | None, call: Call, field: str) -> ValidationError:
    """Run ``call(client)`` and require a ``ValidationError`` on ``field`` with no request."""
    with aioresponses() as m:
        client = enot_client() if api is None else im_client(api)
        async with client:
            with pytest.raises(ValidationError) as caught:
                await call(client)
        assert m.requests == {}
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


# --- amounts -------------------------------------------------------------------------

BAD_AMOUNTS: list[tuple[object, str]] = [
    (50.0, "float"),
    (0.1, "float"),
    (True, "float or bool"),
    (False, "float or bool"),
    ("50.001", "two decimal places"),
    (Decimal("0.001"), "two decimal places"),
    (Decimal("1.005"), "two decimal places"),
    (0, "greater than zero"),
    ("0.00", "greater than zero"),
    (Decimal("-1"), "greater than zero"),
    ("-50.00", "greater than zero"),
    ("-0", "greater than zero"),
    ("10000000000", "13 characters"),  # "10000000000.00" is 14 characters
    (Decimal("99999999999.99"), "13 characters"),
    (10**20, "13 characters"),
    ("NaN", "decimal number"),
    (Decimal("NaN"), "finite"),
    (Decimal("sNaN"), "finite"),
    ("Infinity", "decimal number"),
    (Decimal("-Infinity"), "finite"),
    ("1,000.00", "decimal number"),
    ("50 00", "decimal number"),
    ("", "decimal number"),
    ("abc", "decimal number"),
    (None, "not NoneType"),
    ([50], "not list"),
]


@pytest.mark.parametrize(("value", "rule"), BAD_AMOUNTS)
def test_parse_amount_refuses(value: object, rule: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(rule)) as caught:
        parse_amount(value)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("50"), "50.00"),
        ("50", "50.00"),
        (50, "50.00"),
        ("0.01", "0.01"),
        ("7.5", "7.50"),
        ("007.50", "7.50"),
        (Decimal("5.000"), "5.00"),  # the value has two places; trailing zeros are fine
        (Decimal("9999999999.99"), "9999999999.99"),
        (Decimal("1E+2"), "100.00"),  # a Decimal is a value, not text
    ],
)
def test_parse_amount_accepts_and_formats(value: object, expected: str) -> None:
    amount = parse_amount(value)
    assert isinstance(amount, Decimal)
    assert format_amount(amount) == expected


# Text is ASCII digits, an optional point and at most two decimals, nothing else (issue 17).
LOOSE_AMOUNT_TEXT = [
    "1_000", "1e3", "1E+2", "+5", "5.", ".5", " 7.5 ", "7.5\n", "５０", "١٠", "٥.٠٠", "1 000",
    "0x10", "5.000", "--5",
]  # fmt: skip


@pytest.mark.parametrize("text", LOOSE_AMOUNT_TEXT)
def test_parse_amount_refuses_loose_text(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_amount(text)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(("value", "rule"), BAD_AMOUNTS[:20])
async def test_intellectmoney_amount_refused_before_sending(value: object, rule: str) -> None:
    error = await assert_refused_offline(
        "current", lambda c: c.create_operation(amount=value, pan=CARD), "amount"
    )
    assert rule in error.rule


@pytest.mark.parametrize(("value", "rule"), BAD_AMOUNTS[:20])
async def test_enot_amount_refused_before_sending(value: object, rule: str) -> None:
    error = await assert_refused_offline(
        None,
        lambda c: c.create_payoff(service="card", wallet_to=CARD, amount=value, order_id="o-1"),
        "amount",
    )
    assert rule in error.rule


MAX_AMOUNT = Decimal("9999999999.99")


@given(
    st.decimals(
        min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2,
        allow_nan=False, allow_infinity=False,
    )
)  # fmt: skip
def test_property_two_place_amounts_are_accepted(value: Decimal) -> None:
    for given_as in (value, str(value)):
        amount = parse_amount(given_as)
        assert amount == value
        text = format_amount(amount)
        assert len(text) <= 13
        assert re.fullmatch(r"[0-9]{1,10}\.[0-9]{2}", text)
        assert Decimal(text) == value


@given(st.integers(min_value=1, max_value=9_999_999_999))
def test_property_whole_amounts_are_accepted(value: int) -> None:
    assert format_amount(parse_amount(value)) == f"{value}.00"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_property_floats_are_always_refused(value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_amount(value)
    assert caught.value.field == "amount"
    assert "float" in caught.value.rule


@given(
    st.decimals(
        min_value=Decimal("0.001"), max_value=MAX_AMOUNT, places=3,
        allow_nan=False, allow_infinity=False,
    ).filter(lambda d: d != d.quantize(Decimal("0.01")))
)  # fmt: skip
def test_property_three_places_are_refused(value: Decimal) -> None:
    with pytest.raises(ValidationError, match="two decimal places"):
        parse_amount(value)


@given(st.decimals(min_value=Decimal("10000000000"), allow_nan=False, allow_infinity=False))
def test_property_too_long_amounts_are_refused(value: Decimal) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_amount(value)
    assert caught.value.field == "amount"


# --- cards, phones, digits -----------------------------------------------------------


@pytest.mark.parametrize(
    "pan", ["4111111111111111", "2200700000001239", "5536913779421276", "371449635398431"]
)
def test_luhn_valid_cards(pan: str) -> None:
    assert luhn_ok(pan)
    check_pan(pan)


@pytest.mark.parametrize(
    ("pan", "rule"),
    [
        ("4111111111111112", "Luhn"),
        ("5536913779421279", "Luhn"),
        ("41111111116", "12 to 20"),  # 11 digits
        ("4" + "0" * 19 + "00", "12 to 20"),  # 22 digits
        ("4111 1111 1111 1111", "digits"),
        ("4111-1111-1111-1111", "digits"),
        ("", "digits"),
        ("４１１１１１１１１１１１１１１１", "digits"),  # full-width digits
    ],
)
async def test_bad_pan_refused(pan: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        check_pan(pan)
    for api in ("current", "legacy"):
        error = await assert_refused_offline(
            api, lambda c: c.create_operation(amount="50.00", pan=pan), "pan"
        )
        assert rule in error.rule


def test_pan_length_bounds() -> None:
    twelve = _with_check_digit("41111111111")
    twenty = _with_check_digit("4111111111111111111")
    twenty_one = _with_check_digit("41111111111111111111")
    eleven = _with_check_digit("4111111111")
    check_pan(twelve)
    check_pan(twenty)
    for bad in (eleven, twenty_one):
        with pytest.raises(ValidationError, match="12 to 20"):
            check_pan(bad)


def _with_check_digit(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_ok(prefix + digit):
            return prefix + digit
    raise AssertionError("unreachable")


@pytest.mark.parametrize("phone", ["+79001234567", "79001234567", "9001234567", "+123456789012345"])
def test_good_phones(phone: str) -> None:
    check_phone(phone)


@pytest.mark.parametrize(
    "phone", ["12345", "+7900abc4567", "+7 900 123 45 67", "+1234567890123456", "", "++79001234567"]
)
async def test_bad_sbp_phone_refused(phone: str) -> None:
    with pytest.raises(ValidationError):
        check_phone(phone)
    await assert_refused_offline(
        "current",
        lambda c: c.create_operation(amount="50.00", account=phone, bank_id="100000000004"),
        "account",
    )


def test_check_digits_and_length_helpers() -> None:
    assert check_digits(123456, "eshop_id", high=6) == "123456"
    assert check_digits(None, "eshop_id", high=6) is None
    with pytest.raises(ValidationError, match="at most 6 digits"):
        check_digits("1234567", "eshop_id", high=6)
    with pytest.raises(ValidationError, match="digits"):
        check_digits(True, "eshop_id", high=6)
    check_length("ab", "x", low=2, high=3)
    with pytest.raises(ValidationError, match="2 to 3"):
        check_length("a", "x", low=2, high=3)
    with pytest.raises(ValidationError, match="string"):
        check_length(5, "x", high=3)  # type: ignore[arg-type]


# --- IntellectMoney create_operation --------------------------------------------------

IM_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    # (api, keyword arguments, field)
    ("current", {"pan": CARD, "account": PHONE}, "pan"),
    ("current", {}, "pan"),
    ("current", {"account": PHONE}, "bank_id"),  # SBP needs BankId on the current API
    ("current", {"account": PHONE, "bank_id": ""}, "bank_id"),
    ("current", {"pan": CARD, "bank_id": "100000000004"}, "bank_id"),
    ("current", {"pan": CARD, "recipient_name": "И" * 256}, "recipient_name"),
    ("current", {"pan": CARD, "description": "d" * 256}, "description"),
    ("current", {"pan": CARD, "currency": "USD"}, "currency"),
    ("current", {"pan": CARD, "currency": "rub"}, "currency"),
    ("current", {"pan": CARD, "eshop_id": "1234567"}, "eshop_id"),
    ("current", {"pan": CARD, "eshop_id": 1234567}, "eshop_id"),
    ("current", {"pan": CARD, "eshop_id": "12a"}, "eshop_id"),
    ("current", {"pan": CARD, "eshop_id": "-1"}, "eshop_id"),
    ("legacy", {"pan": CARD, "recipient_name": "И"}, "recipient_name"),
    ("legacy", {"pan": CARD, "recipient_name": ""}, "recipient_name"),
    ("legacy", {"pan": CARD, "recipient_name": "И" * 51}, "recipient_name"),
    ("legacy", {"pan": CARD, "eshop_id": "1"}, "eshop_id"),
    ("legacy", {"pan": CARD, "description": "d"}, "description"),
    ("legacy", {"pan": CARD, "currency": "EUR"}, "currency"),
    ("legacy", {"account": "+7900"}, "account"),
]


@pytest.mark.parametrize(("api", "kwargs", "field"), IM_REFUSALS)
async def test_intellectmoney_create_refused(api: str, kwargs: dict[str, Any], field: str) -> None:
    await assert_refused_offline(api, lambda c: c.create_operation(amount="50.00", **kwargs), field)


@pytest.mark.parametrize(
    ("api", "kwargs"),
    [
        ("current", {"pan": CARD, "recipient_name": "И" * 255, "description": "d" * 255}),
        ("current", {"pan": CARD, "eshop_id": "123456", "currency": "TST"}),
        ("current", {"account": PHONE, "bank_id": "100000000004"}),
        ("legacy", {"pan": CARD, "recipient_name": "Ян"}),
        ("legacy", {"pan": CARD, "recipient_name": "И" * 50}),
        ("legacy", {"account": PHONE}),  # Qiwi
        ("legacy", {"account": PHONE, "bank_id": "100000000004"}),  # SBP
    ],
)
def test_intellectmoney_boundaries_accepted(api: str, kwargs: dict[str, Any]) -> None:
    request = OperationRequest(amount="50.00", **kwargs)
    request.validate_for(api)  # type: ignore[arg-type]
    assert request.amount == Decimal("50.00")


@pytest.mark.parametrize("method", ["execute_operation", "get_operation_state", "delete_operation"])
@pytest.mark.parametrize("operation_id", ["", "   ", "x" * 65])
async def test_operation_id_refused(method: str, operation_id: str) -> None:
    await assert_refused_offline(
        "current", lambda c: getattr(c, method)(operation_id), "operation_id"
    )


# --- Enot create_payoff / get_payoff ---------------------------------------------------

ENOT_REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"order_id": "o" * 256}, "order_id"),
    ({"order_id": ""}, "order_id"),
    ({"comment": "c" * 256}, "comment"),
    ({"hook_url": "https://x.example/" + "h" * 483}, "hook_url"),  # 501 characters
    ({"subtract": 0}, "subtract"),
    ({"subtract": 3}, "subtract"),
    ({"subtract": True}, "subtract"),
    ({"subtract": "1"}, "subtract"),
    ({"service": "sbp", "wallet_to": PHONE}, "sbp_bank_id"),
    ({"service": "SBP", "wallet_to": PHONE, "sbp_bank_id": ""}, "sbp_bank_id"),
    ({"service": ""}, "service"),
    ({"wallet_to": None}, "wallet_to"),
    ({"wallet_to": ""}, "wallet_to"),
    ({"wallet_to": "w" * 256}, "wallet_to"),
    ({"amount": 10.5}, "amount"),
]


@pytest.mark.parametrize(("overrides", "field"), ENOT_REFUSALS)
async def test_enot_create_refused(overrides: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {
        "service": "card", "wallet_to": CARD, "amount": "100.00", "order_id": "o-1",
        **overrides,
    }  # fmt: skip
    await assert_refused_offline(
        None,
        lambda c: c.create_payoff(
            service=args.pop("service"),
            wallet_to=args.pop("wallet_to"),
            amount=args.pop("amount"),
            **args,
        ),
        field,
    )


def test_enot_boundaries_accepted() -> None:
    request = PayoffRequest(
        service="sbp", wallet_to=PHONE, amount="100.00", order_id="o" * 255,
        comment="c" * 255, hook_url="h" * 500, subtract=1, sbp_bank_id="100000000004",
    )  # fmt: skip
    assert request.subtract == 1
    assert PayoffRequest(service="garantex", wallet_to=None, amount=1).wallet_to is None
    assert PayoffRequest(service="card", wallet_to=CARD, amount=1, subtract=2).subtract == 2


async def test_enot_create_from_request_needs_order_id() -> None:
    request = PayoffRequest(service="card", wallet_to=CARD, amount="1.00")
    await assert_refused_offline(None, lambda c: c.create_payoff_from(request), "order_id")
    await assert_refused_offline(
        None, lambda c: c.create_payoff_from(request, order_id="o" * 256), "order_id"
    )


@pytest.mark.parametrize("kwargs", [{}, {"payoff_id": "p", "order_id": "o"}])
async def test_enot_get_payoff_needs_exactly_one_id(kwargs: dict[str, str]) -> None:
    await assert_refused_offline(None, lambda c: c.get_payoff(**kwargs), "payoff_id")


def test_validation_error_is_a_value_error_naming_the_rule() -> None:
    with pytest.raises(ValueError, match=r"^amount: .*two decimal places") as caught:
        parse_amount("1.234")
    assert isinstance(caught.value, ValidationError)
    assert caught.value.rule == "must have at most two decimal places"


# --- keys, phones, Enot wallets and services (issue 17) --------------------------------


@pytest.mark.parametrize(
    "key", ["withdrawal-42", "mk[/]-1", "[bold red]mk-2[/bold red]", "café", "заказ 7", "a b"]
)
def test_check_key_accepts_visible_nfc_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("k\u200b1", "U+200B"),  # zero-width space
        ("k\u200d1", "U+200D"),  # zero-width joiner
        ("\ufeffk1", "U+FEFF"),  # byte-order mark
        ("k\x001", "U+0000"),
        ("k\n1", "U+000A"),
        ("k\t1", "U+0009"),
        ("k\u00a01", "U+00A0"),  # no-break space
        ("k\u31641", "U+3164"),  # Hangul filler: a letter that renders as nothing
        ("k\ufe0f1", "U+FE0F"),  # variation selector
        ("cafe\u0301", "NFC"),  # decomposed é
        (" k1", "space"),
        ("k1 ", "space"),
        ("", "non-empty"),
    ],
)
def test_check_key_refuses_invisible_differences(key: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(rule)) as caught:
        check_key(key)
    assert caught.value.field == "key"


def test_check_key_refuses_non_strings() -> None:
    with pytest.raises(ValidationError, match="non-empty string"):
        check_key(42)


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("+7 (900) 123-45-67", "+79001234567"),
        ("7 900 123 45 67", "79001234567"),
        ("+7.900.123.45.67", "+79001234567"),
        ("+7\u00a0900\u2011123\u201345\u201367", "+79001234567"),
        ("79001234567", "79001234567"),
    ],
)
def test_normalize_phone(written: str, normal: str) -> None:
    assert normalize_phone(written) == normal


@pytest.mark.parametrize(
    "written",
    ["+7 900 abc 45 67", "+7900", "８９００１２３４５６７", "7+9001234567", "", "++79001234567"],
)
def test_normalize_phone_refuses(written: str) -> None:
    with pytest.raises(ValidationError):
        normalize_phone(written, "recipient")


@pytest.mark.parametrize(
    ("service", "wallet", "rule"),
    [
        ("card", "4111111111111112", "Luhn"),
        ("CARD", "4111 1111 1111 1111", "digits"),
        ("sbp", "not-a-phone", "phone"),
        ("qiwi", "+7900", "phone"),
        ("card ", CARD, "service code"),
    ],
)
def test_enot_wallet_rules_by_service(service: str, wallet: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        PayoffRequest(service=service, wallet_to=wallet, amount=1, sbp_bank_id="100000000004")


def test_enot_other_services_keep_free_wallets() -> None:
    assert PayoffRequest(service="usdt_trc20", wallet_to="TXyz", amount=1).wallet_to == "TXyz"


def test_check_service_knows_the_documented_services_and_allows_more() -> None:
    for service in ("card", "SBP", "qiwi", "usdt_trc20", "garantex"):
        check_service(service)
    with pytest.raises(ValidationError, match="unknown service 'cardd'"):
        check_service("cardd")
    check_service("usdt_erc20", allowed=["USDT_ERC20"])


@pytest.mark.parametrize(
    "key",
    [
        "5536912998877664",
        "5536 9129 9887 7664",
        "5536-9129-9887-7664",
        "553691 299887 7664",
        "4111111111111111",
        "123456789015",
    ],
)
def test_check_key_refuses_a_card_number(key: str) -> None:
    """A key is stored, shown and sent (Enot's order_id) in clear (issue 24)."""
    with pytest.raises(ValidationError, match="must not be a card number") as caught:
        check_key(key)
    assert caught.value.field == "key"
    assert "Luhn" in caught.value.rule and key not in str(caught.value)


@pytest.mark.parametrize(
    "key", ["5536912998877665", "order-5536912998877664", "1234567890", "2024-05-01-7"]
)
def test_check_key_accepts_numbers_that_are_no_card(key: str) -> None:
    assert check_key(key) == key
