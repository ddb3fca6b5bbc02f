"""Keeping secrets out of logs, reprs and exception messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["Redactor", "mask_card", "mask_recipient", "masked_repr", "redact_fields"]

_CARD_RUN = re.compile(r"(?<![0-9])([0-9]{6})([0-9]{2,10})([0-9]{4})(?![0-9])")
# JSON string escapes a provider may use when it echoes a value back: "\/" (PHP) and
# "\uXXXX" (PHP for non-ASCII, .NET for "+", "<", "&"... as well).
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|/)")
_SECRET_FIELDS = frozenset({"usertoken", "sign", "authorization", "x-api-signature-sha256"})
_CARD_FIELDS = frozenset({"pan", "wallet_to", "wallet"})
_HIDDEN = "***"


def mask_card(value: str | None) -> str | None:
    """``4111111111111111 -> 411111******1111``; short values are hidden whole."""
    if value is None:
        return None
    if len(value) < 12:
        return _HIDDEN
    return f"{value[:6]}{'*' * (len(value) - 10)}{value[-4:]}"


def masked_repr(value: str | None) -> str:
    """``repr`` of a card number or wallet with the middle digits hidden (attrs ``repr=``)."""
    return repr(mask_card(value))


def _mask_card_runs(text: str) -> str:
    return _CARD_RUN.sub(lambda m: f"{m[1]}{'*' * len(m[2])}{m[3]}", text)


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
        elif lowered in _CARD_FIELDS and isinstance(value, str):
            clean[name] = mask_card(value)
        else:
            clean[name] = value
    return clean


class Redactor:
    """Replaces known secret values and card-number-like digit runs in free text."""

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
        return _mask_card_runs(text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def mask_recipient(value: str | None) -> str | None:
    """A card number, phone or wallet with the middle hidden: enough to recognise it,
    not enough to use it (a card keeps its first six and last four digits, a phone
    its first three and last two characters). Masking a masked value changes nothing,
    and the length is kept."""
    if value is None:
        return None
    if len(value) >= 12:
        return mask_card(value)
    if len(value) >= 8:
        return f"{value[:3]}{'*' * (len(value) - 5)}{value[-2:]}"
    return _HIDDEN
