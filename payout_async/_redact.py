"""Keeping secrets, card numbers, phones and wallets out of logs, reprs and exception
messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import overload

from ._numbers import card_kept, luhn_ok, phone_kept

__all__ = ["Redactor", "mask_card", "mask_phone", "mask_wallet", "masked_repr", "redact_fields"]

_CARD_RUN = re.compile(r"(?<![0-9])[0-9]{12,20}(?![0-9])")
# A phone as the clients send it (an optional "+" and 10 to 15 digits), not part of a
# longer number or of an amount ("1234567890.12").
_PHONE_RUN = re.compile(r"(?<![0-9])\+?[0-9]{10,15}(?![0-9]|\.[0-9])")
# JSON string escapes a provider may use when it echoes a value back: "\/" (PHP) and
# "\uXXXX" (PHP for non-ASCII, .NET for "+", "<", "&"... as well).
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|/)")
_SECRET_FIELDS = frozenset({"usertoken", "sign", "authorization", "x-api-signature-sha256"})
_RECIPIENT_FIELDS = frozenset({"pan", "account", "wallet_to", "wallet"})
# A recipient field in JSON text (an answer or webhook body): its value is masked
# whatever it holds, so that a wallet id no digit pattern recognises is masked too.
_RECIPIENT_JSON = re.compile(
    r'("(?:pan|account|wallet_to|wallet)"\s*:\s*")((?:[^"\\]|\\.)*)"', re.IGNORECASE
)
_HIDDEN = "***"


def mask_card(value: str | None) -> str | None:
    """``4111111111111111 -> 411111******1111``: the last four characters and as many of
    the first six as leave at least six hidden (``card_kept``: a 12-digit number keeps
    two, ``123456789012 -> 12******9012``); values shorter than 12 are hidden whole."""
    if value is None:
        return None
    if len(value) < 12:
        return _HIDDEN
    return _keep(value, card_kept(len(value)))


def _keep(value: str, kept: tuple[int, int]) -> str:
    head, tail = kept
    return f"{value[:head]}{'*' * (len(value) - head - tail)}{value[len(value) - tail :]}"


def _is_phone(value: str) -> bool:
    """``+`` and 10 to 15 digits, 10 or 11 bare digits, or 12 to 15 bare digits failing
    the Luhn check (a card number of that length passes it)."""
    if not _PHONE_RUN.fullmatch(value):
        return False
    return value.startswith("+") or len(value) <= 11 or not luhn_ok(value)


@overload
def mask_phone(value: str) -> str: ...
@overload
def mask_phone(value: None) -> None: ...
def mask_phone(value: str | None) -> str | None:
    """``+79001234567 -> +7900*****67``: the first four digits (country and operator
    code) and the last two are kept; a value with fewer than 10 digits is hidden whole."""
    if value is None:
        return None
    sign, digits = ("+", value[1:]) if value.startswith("+") else ("", value)
    if len(digits) < 10:
        return _HIDDEN
    return sign + _keep(digits, phone_kept(len(digits)))


@overload
def mask_wallet(value: str) -> str: ...
@overload
def mask_wallet(value: None) -> None: ...
def mask_wallet(value: str | None) -> str | None:
    """A recipient of any kind masked: a phone (see ``mask_phone``) as a phone, a card
    number or a wallet id as a card (``mask_card``). A value already masked (it holds
    ``*``) is returned unchanged, so masking twice changes nothing."""
    if value is None:
        return None
    if "*" in value:
        return value
    return mask_phone(value) if _is_phone(value) else (mask_card(value) or _HIDDEN)


def masked_repr(value: str | None) -> str:
    """``repr`` of a card number, phone or wallet, masked (attrs ``repr=``)."""
    return repr(mask_wallet(value))


def _mask_recipients(text: str) -> str:
    """Mask recipient fields of JSON text, then phone-like runs as phones, then
    card-number-like runs as cards."""
    text = _RECIPIENT_JSON.sub(lambda m: f'{m[1]}{mask_wallet(m[2])}"', text)
    text = _PHONE_RUN.sub(lambda m: mask_phone(m[0]) if _is_phone(m[0]) else m[0], text)
    return _CARD_RUN.sub(lambda m: mask_card(m[0]) or _HIDDEN, text)


def _unescape_json(text: str) -> str:
    """Undo ``\\/`` and printable ``\\uXXXX`` escapes so that an echoed secret is found
    however the provider's JSON encoder wrote it (surrogates and control characters
    are left escaped)."""
    if "\\" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match[1] is None:
            return "/"
        code = int(match[1], 16)
        return match[0] if code < 0x20 or 0xD800 <= code <= 0xDFFF else chr(code)

    return _JSON_ESCAPE.sub(replace, text)


def redact_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """A copy of a request's fields fit for a log line."""
    clean: dict[str, object] = {}
    for name, value in fields.items():
        lowered = name.lower()
        if lowered in _SECRET_FIELDS:
            clean[name] = _HIDDEN
        elif lowered in _RECIPIENT_FIELDS and isinstance(value, str):
            clean[name] = mask_wallet(value)
        else:
            clean[name] = value
    return clean


class Redactor:
    """Replaces known secret values, and masks recipient fields of JSON
    (``pan``, ``account``, ``wallet_to``, ``wallet``) and card-number-like and
    phone-like digit runs, in free text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Also hide ``secret`` from now on (tokens fetched at run time)."""
        if secret and len(secret) >= 4 and secret not in self._secrets:
            # Longest first, so that a secret containing another is hidden whole.
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = _unescape_json(text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _HIDDEN)
        return _mask_recipients(text)

    def masking(self, values: Iterable[str | None]) -> Redactor:
        """This redactor, also masking ``values`` (a request's own recipients, e.g. a
        wallet id no pattern recognises) wherever they appear, as ``mask_wallet``
        shows them. Secrets added to this one later are hidden by the result too."""
        return _Masking(self, values)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


class _Masking(Redactor):
    """A ``Redactor`` that masks some known values, then applies its parent."""

    def __init__(self, parent: Redactor, values: Iterable[str | None]) -> None:
        super().__init__()
        self._parent = parent
        known = {value for value in values if value and len(value) >= 4}
        self._masks = [(value, mask_wallet(value)) for value in sorted(known, key=len)[::-1]]

    def add(self, secret: str | None) -> None:
        self._parent.add(secret)

    def __call__(self, text: str) -> str:
        text = _unescape_json(text)
        for value, mask in self._masks:
            if value in text:
                text = text.replace(value, mask)
        return self._parent(text)

    def __repr__(self) -> str:
        return f"{self._parent!r} masking {len(self._masks)} values"
