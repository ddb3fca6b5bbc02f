"""Input rules shared by both providers; each failure is a ``ValidationError``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ._errors import ValidationError

__all__ = [
    "check_digits",
    "check_length",
    "check_pan",
    "check_phone",
    "format_amount",
    "luhn_ok",
    "parse_amount",
]

_CENT = Decimal("0.01")
_PHONE = re.compile(r"\+?[0-9]{10,15}")
_MAX_AMOUNT_CHARS = 13


def parse_amount(value: object, field: str = "amount") -> Decimal:
    """A positive amount with at most two decimals and at most 13 characters as
    formatted (``"50.00"``). ``Decimal``, ``str`` and ``int`` are accepted; ``float``
    is refused because it cannot hold money exactly."""
    if isinstance(value, bool | float):
        raise ValidationError(field, "must be a Decimal, str or int, not float or bool")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError(field, "must be a decimal number like '50.00'") from None
    else:
        raise ValidationError(field, f"must be a Decimal, str or int, not {type(value).__name__}")
    if not amount.is_finite():
        raise ValidationError(field, "must be a finite number")
    if amount <= 0:
        raise ValidationError(field, "must be greater than zero")
    if amount.adjusted() >= _MAX_AMOUNT_CHARS - 3:  # digits before the point + ".00"
        raise ValidationError(field, f"must be at most {_MAX_AMOUNT_CHARS} characters as formatted")
    cents = amount.quantize(_CENT)
    if cents != amount:
        raise ValidationError(field, "must have at most two decimal places")
    return cents


def format_amount(amount: Decimal) -> str:
    """Two decimals, no separators: ``Decimal("50") -> "50.00"``."""
    return f"{amount:.2f}"


def check_length(value: str | None, field: str, *, low: int = 0, high: int) -> None:
    """Require ``low <= len(value) <= high`` when ``value`` is given."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    if not low <= len(value) <= high:
        rule = (
            f"must be at most {high} characters"
            if low == 0
            else (f"must be {low} to {high} characters")
        )
        raise ValidationError(field, f"{rule} (got {len(value)})")


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def check_pan(pan: str, field: str = "pan") -> None:
    """A card number: 12 to 20 digits passing the Luhn check."""
    if not isinstance(pan, str) or not pan.isascii() or not pan.isdigit():
        raise ValidationError(field, "must be a string of digits")
    if not 12 <= len(pan) <= 20:
        raise ValidationError(field, "must be 12 to 20 digits")
    if not luhn_ok(pan):
        raise ValidationError(field, "fails the Luhn check")


def check_phone(phone: str, field: str = "account") -> None:
    """A phone in E.164-like form: an optional ``+`` and 10 to 15 digits."""
    if not isinstance(phone, str) or not _PHONE.fullmatch(phone):
        raise ValidationError(field, "must be a phone number: optional '+' and 10 to 15 digits")


def check_digits(value: str | int | None, field: str, *, high: int) -> str | None:
    """Up to ``high`` digits, as a string (``None`` passes through)."""
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        raise ValidationError(field, "must be digits")
    if len(text) > high:
        raise ValidationError(field, f"must be at most {high} digits")
    return text
