"""Input rules shared by both providers; each failure is a ``ValidationError``."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from ._errors import ConfigurationError, ValidationError
from ._numbers import is_card_number, luhn_ok

__all__ = [
    "check_digits",
    "check_key",
    "check_length",
    "check_pan",
    "check_phone",
    "format_amount",
    "luhn_ok",
    "normalize_phone",
    "parse_amount",
]

_CENT = Decimal("0.01")
_PHONE = re.compile(r"\+?[0-9]{10,15}")
_MAX_AMOUNT_CHARS = 13
#: An amount written as text: ASCII digits, then at most two decimals after a point.
_AMOUNT_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
#: Separators people write inside phone numbers: spaces, hyphens, dots, parentheses.
_PHONE_SEPARATORS = re.compile(r"[\s\-.()\u2010-\u2015]+")
#: Invisible characters ``str.isprintable`` lets through (letters or marks that render
#: as nothing: fillers, variation selectors, the combining grapheme joiner).
_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)


def parse_amount(value: object, field: str = "amount") -> Decimal:
    """A positive amount with at most two decimals and at most 13 characters as
    formatted (``"50.00"``). ``Decimal``, ``str`` and ``int`` are accepted; ``float``
    is refused because it cannot hold money exactly. Text must be ASCII digits with an
    optional point and at most two decimals, nothing else: no sign, exponent, digit
    separators, spaces or non-ASCII digits (``"1e3"``, ``"1_000"``, ``"+5"``, ``"5."``
    and ``"١٠"`` are all refused)."""
    if isinstance(value, bool | float):
        raise ValidationError(field, "must be a Decimal, str or int, not float or bool")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        amount = _amount_from_text(value, field)
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


def _amount_from_text(text: str, field: str) -> Decimal:
    if text.startswith("-") and _AMOUNT_TEXT.fullmatch(text[1:]):
        raise ValidationError(field, "must be greater than zero")
    if not text.isascii() or not _AMOUNT_TEXT.fullmatch(text):
        raise ValidationError(
            field,
            "must be a decimal number like '50.00': ASCII digits, an optional point and "
            "at most two decimals, nothing else",
        )
    if "." in text and len(text.rsplit(".", 1)[1]) > 2:
        raise ValidationError(field, "must have at most two decimal places")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
        raise ValidationError(field, "must be a decimal number like '50.00'") from None


def check_key(key: object, field: str = "key") -> str:
    """An idempotency key fit to be recorded: a non-empty string in Unicode NFC form,
    every character printable (no control, format or zero-width characters, no line
    breaks, no invisible fillers), not starting or ending with a space, and not a card
    number (``_numbers.is_card_number``: it would be kept and shown in clear, and sent
    as Enot's ``order_id``). Returns the key
    unchanged; two keys that look alike but differ invisibly are refused rather than
    paid as two payouts."""
    if not isinstance(key, str) or not key:
        raise ValidationError(field, "must be a non-empty string")
    bad = None if key.isprintable() else next(char for char in key if not char.isprintable())
    if bad is None:
        found = _INVISIBLE.search(key)
        bad = found[0] if found else None
    if bad is not None:
        raise ValidationError(
            field,
            f"must hold only visible characters (found U+{ord(bad):04X} at position "
            f"{key.index(bad) + 1})",
        )
    if key != key.strip():
        raise ValidationError(field, "must not start or end with a space")
    if not unicodedata.is_normalized("NFC", key):
        raise ValidationError(
            field, "must be in Unicode NFC form (it holds decomposed characters; normalise it)"
        )
    if is_card_number(key):
        raise ValidationError(
            field,
            "must not be a card number (12 to 19 digits passing the Luhn check, with or "
            "without separators): a key is stored, shown and sent in clear",
        )
    return key


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


def normalize_phone(text: str, field: str = "account") -> str:
    """A phone written the way people write it (``+7 (900) 123-45-67``) in the form the
    providers take (``+79001234567``): separators (spaces, hyphens, dots, parentheses)
    are removed, a leading ``+`` is kept, and the rest must be 10 to 15 ASCII digits;
    anything else raises ``ValidationError``. Nothing is guessed: no country code is
    added or changed."""
    if not isinstance(text, str):
        raise ValidationError(field, "must be a phone number")
    phone = _PHONE_SEPARATORS.sub("", text)
    check_phone(phone, field)
    return phone


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


def check_credential(value: object, name: str) -> str:
    """A credential (a secret key, a token, a user id) fit to be sent: a non-empty
    string with no control character and no space at either end. A line break read
    with it from a file or a variable would otherwise fail every request -- after the
    intent is recorded, as an unknown outcome, or as a wrong signature. The value is
    never shown. Returns it unchanged; ``ConfigurationError`` otherwise."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} is required (a non-empty string)")
    if value != value.strip() or not value.isprintable():
        raise ConfigurationError(
            f"{name} must not start or end with a space or a line break, nor hold a control "
            "character (read from a file or a variable with its line break?)"
        )
    return value
