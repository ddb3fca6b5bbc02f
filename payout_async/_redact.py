"""Keeping secrets, card numbers, phones and wallets out of logs, reprs, exception
messages and the ledger: ``Redactor`` is the one scrubber every text from a provider
or a file passes before it is stored, logged or printed (``scrub`` when there are no
secrets to know)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import overload

from ._numbers import card_kept, luhn_ok, mask_numbers, phone_kept

__all__ = [
    "Redactor",
    "mask_card",
    "mask_phone",
    "mask_wallet",
    "masked_repr",
    "redact_fields",
    "scrub",
]

# A phone as the clients send it (an optional "+" and 10 to 15 digits), not part of a
# longer number or of an amount ("1234567890.12").
_PHONE_RUN = re.compile(r"(?<![0-9])\+?[0-9]{10,15}(?![0-9]|\.[0-9])")
# JSON string escapes a provider may use when it echoes a value back: "\/" (PHP) and
# "\uXXXX" (PHP for non-ASCII, .NET for "+", "<", "&"... as well).
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|/)")
# HTML character references an error page may write digits, spaces and dashes with
# ("5536&nbsp;9129", "&#8209;"): decoded when they stand for one of those.
_HTML_ESCAPE = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]{2,8}));")
_HTML_NAMED = {
    "nbsp": "\u00a0", "ensp": "\u2002", "emsp": "\u2003", "thinsp": "\u2009",
    "numsp": "\u2007", "hyphen": "\u2010", "dash": "\u2010", "ndash": "\u2013",
    "mdash": "\u2014", "minus": "\u2212", "period": ".", "sol": "/", "lpar": "(",
    "rpar": ")", "plus": "+", "lowbar": "_",
}  # fmt: skip
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
    """Mask recipient fields of JSON text, then card numbers and phones however they
    are written (``mask_numbers``)."""
    text = _RECIPIENT_JSON.sub(lambda m: f'{m[1]}{mask_wallet(m[2])}"', text)
    return mask_numbers(text)


def _html_char(match: re.Match[str]) -> str:
    """The character an HTML reference stands for, if a digit, a space, a dash or other
    punctuation found inside numbers; else the reference as it was."""
    if match[3] is not None:
        return _HTML_NAMED.get(match[3].lower(), match[0])
    code = int(match[1]) if match[1] is not None else int(match[2], 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match[0]
    char = chr(code)
    wanted = char.isdigit() or char.isspace() or char in "+-./()_" or code in range(0x2010, 0x2016)
    return char if wanted else match[0]


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


def _unescape(text: str) -> str:
    """JSON escapes, then HTML references of digits and separators, undone."""
    text = _unescape_json(text)
    return _HTML_ESCAPE.sub(_html_char, text) if "&" in text else text


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
    (``pan``, ``account``, ``wallet_to``, ``wallet``) and card numbers and phones
    however they are written (``_numbers.mask_numbers``), in free text. JSON escapes
    and HTML references of digits and separators are undone first."""

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
        text = _unescape(text)
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
    """A ``Redactor`` that masks some known values, then applies its parent. The
    masks are worked out when first needed: most calls redact nothing (their answer
    is read, no error or debug line is written)."""

    def __init__(self, parent: Redactor, values: Iterable[str | None]) -> None:
        super().__init__()
        self._parent = parent
        self._values = tuple(values)
        self._known: list[tuple[str, str]] | None = None

    @property
    def _masks(self) -> list[tuple[str, str]]:
        if self._known is None:
            known = {value for value in self._values if value and len(value) >= 4}
            self._known = [(value, mask_wallet(value)) for value in sorted(known, key=len)[::-1]]
        return self._known

    def add(self, secret: str | None) -> None:
        self._parent.add(secret)

    def __call__(self, text: str) -> str:
        text = _unescape(text)
        for value, mask in self._masks:
            if value in text:
                text = text.replace(value, mask)
        return self._parent(text)

    def __repr__(self) -> str:
        return f"{self._parent!r} masking {len(self._masks)} values"


_PLAIN = Redactor()


@overload
def scrub(text: str) -> str: ...
@overload
def scrub(text: None) -> None: ...
def scrub(text: str | None) -> str | None:
    """``text`` with card numbers, phones and JSON recipient fields masked: the
    scrubber for text with no secret to know (ledger reasons, batch-file errors)."""
    if not text:
        return text
    return _PLAIN(text)
