"""Reading untrusted JSON and money: every way it can go wrong is one ``UnreadableError``.

Provider answers and webhook bodies come from the network, so the decoder bounds what
the standard ``json`` module does not: nesting depth (deep nesting raises
``RecursionError`` in ``json``), the size of numbers (``1e999999999999999999999999``
makes ``Decimal`` raise ``InvalidOperation``), the ``NaN``/``Infinity`` literals
(not JSON, accepted by ``json``) and lone surrogate escapes (``"\\ud800"``: a string no
UTF-8 encoder, log handler or database driver accepts). ``money`` reads one money
field into a finite ``Decimal``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from ._numbers import clip

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_NUMBER_CHARS",
    "UnreadableError",
    "check_about",
    "loads",
    "money",
]

#: Arrays and objects nested deeper than this make a body unreadable (answers and
#: webhooks of both providers nest four levels at most).
MAX_DEPTH = 32
#: Longest number literal, in characters, in JSON or in a money string.
MAX_NUMBER_CHARS = 64
#: Numbers beyond ``1e±MAX_EXPONENT`` make a body unreadable.
MAX_EXPONENT = 64


class UnreadableError(ValueError):
    """A body or a field cannot be read; the message says why (never the whole body)."""


def _guid(text: str) -> str:
    return text.strip().removeprefix("{").removesuffix("}").casefold()


def check_about(field: str, asked: str, named: str | None, *, any_case: bool = False) -> None:
    """``UnreadableError`` when an answer to a read about ``asked`` names another
    ``field`` (``named``): it is about something else -- a cache that keys answers on
    the path alone, a gateway or a provider laxer than documented -- and says nothing of
    what was asked. An answer that leaves the field out is not held against it.
    ``any_case``: the values are GUIDs, compared as GUIDs are written either way
    (in any case, with or without braces)."""
    if named is None or named == asked or (any_case and _guid(named) == _guid(asked)):
        return
    raise UnreadableError(
        f"the answer is about {field} {clip(named, 80)!r}, not {clip(asked, 80)!r}"
    )


# A JSON string (escapes included) or one bracket; used only when a body has enough
# brackets to be too deep, so the common answer is never scanned.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# A \uD800-\uDFFF escape: only then can a decoded string hold a lone surrogate (the
# decoder joins proper pairs into one character; raw UTF-8 holds no surrogates).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Every digit as "0", anything else as " ": a body holds a run of MAX_NUMBER_CHARS
# digits (an integer literal around it may pass the bound) iff its translation holds
# ``_LONG_RUN`` (a C translate and substring search: a regex costs ten times more).
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_RUN = b"0" * MAX_NUMBER_CHARS
_BOM = b"\xef\xbb\xbf"
_MONEY_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _STRUCTURE.finditer(text):
        token = match[0]
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise UnreadableError(f"nested deeper than {MAX_DEPTH} levels")
        elif token in "]}":
            depth -= 1


def _bounded(literal: str) -> str:
    if len(literal) > MAX_NUMBER_CHARS:
        raise UnreadableError(f"a number longer than {MAX_NUMBER_CHARS} characters")
    return literal


def _exponent_ok(number: Decimal) -> bool:
    return number.is_finite() and abs(number.adjusted()) <= MAX_EXPONENT


def _decimal(literal: str) -> Decimal:
    try:
        number = Decimal(_bounded(literal))
    except ArithmeticError:  # an exponent beyond what Decimal itself can hold
        number = Decimal("NaN")
    if not _exponent_ok(number):
        raise UnreadableError(f"a number beyond 1e±{MAX_EXPONENT}")
    return number


def _float(literal: str) -> float:
    _decimal(literal)  # the same bounds as for Decimal
    return float(literal)


def _int(literal: str) -> int:
    return int(_bounded(literal))


def _no_constant(name: str) -> Any:
    raise UnreadableError(f"{name} is not a JSON number")


def _decoder(parse_float: Callable[[str], Any]) -> json.JSONDecoder:
    return json.JSONDecoder(parse_float=parse_float, parse_int=_int, parse_constant=_no_constant)


_DECODERS = {Decimal: _decoder(_decimal), float: _decoder(_float)}


def _check_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise UnreadableError("a string holds a lone surrogate escape")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


#: The C parser of the common case: strict JSON (no ``NaN``, no lone surrogate, valid
#: UTF-8), each fractional literal through ``_decimal`` and its bounds.
_FAST = msgspec.json.Decoder(float_hook=_decimal)


def _fast(body: bytes) -> tuple[bool, Any]:
    """``(True, value)`` when the C parser reads ``body`` within every bound; ``(False,
    None)`` when it might not (too many brackets, a long digit run) or refuses it: then
    ``_careful`` decides, and words the error."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH or _LONG_RUN in body.translate(_DIGITS):
        return False, None
    try:
        return True, _FAST.decode(body[3:] if body.startswith(_BOM) else body)
    except (msgspec.MsgspecError, RecursionError):
        return False, None


def loads(body: bytes | str, *, numbers: type[Decimal] | type[float] = Decimal) -> Any:
    """Decode a JSON body (UTF-8, a BOM tolerated) within the bounds above.

    Fractional numbers become ``numbers`` (``Decimal`` for answers; ``float`` where
    the JSON must be written back exactly as ``json`` would, as for webhook
    signatures). Raises ``UnreadableError`` and nothing else.

    A ``Decimal`` body goes through msgspec's parser first (integers within the bound
    since no literal holds ``MAX_NUMBER_CHARS`` digits, depth since it holds at most
    ``MAX_DEPTH`` brackets); whatever it refuses is read again by ``json`` below,
    which accepts no more than it and says why.
    """
    if numbers is Decimal and isinstance(body, bytes):
        done, value = _fast(body)
        if done:
            return value
    return _careful(body, numbers)


def _careful(body: bytes | str, numbers: type[Decimal] | type[float]) -> Any:
    try:
        text = body.decode("utf-8-sig") if isinstance(body, bytes | bytearray) else str(body)
        _check_depth(text)
        value = _DECODERS[numbers].decode(text)
    except UnreadableError:
        raise
    except UnicodeDecodeError:
        raise UnreadableError("not UTF-8") from None
    except ValueError as error:  # json.JSONDecodeError, int() beyond its digit limit
        raise UnreadableError(f"not JSON ({clip(str(error), 100)})") from None
    except (ArithmeticError, RecursionError) as error:  # cannot happen within the bounds
        raise UnreadableError(f"not readable JSON ({type(error).__name__})") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(value)
    return value


def money(value: object, field: str = "amount") -> Decimal | None:
    """A money field as a finite ``Decimal``; ``None`` when absent (``null`` or blank).

    Numbers and numeric strings are accepted; anything else (``NaN``, ``Infinity``,
    ``sNaN``, booleans, objects, ``"1,5"``, numbers beyond ``1e±MAX_EXPONENT``)
    raises ``UnreadableError`` naming ``field``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if len(str(abs(value))) <= MAX_NUMBER_CHARS:
            number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) <= MAX_NUMBER_CHARS and _MONEY_TEXT.fullmatch(text):
            number = Decimal(text)
    if number is None or not _exponent_ok(number):
        raise UnreadableError(f"{field}: not a finite number ({_sample(value)})")
    return number


def _sample(value: object) -> str:
    """A short description of a bad value for an error message."""
    if isinstance(value, str | int | float | Decimal) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 40 else clip(text, 37) + "..."
    return type(value).__name__
