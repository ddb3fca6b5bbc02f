"""Enot payoff webhooks: signature check and parsing.

Enot signs ``HMAC-SHA256(additional_key, JSON of the body with top-level keys sorted,
separators (",", ":"))`` and sends the lowercase hex digest in the
``x-api-sha256-signature`` header. The JSON may have been written by PHP (``\\uXXXX``
escapes, ``/`` as ``\\/``) or with non-ASCII kept as is, so every flavour is tried,
each compared in constant time.

Every check fails closed: a body that is not a JSON object within the decoder's
bounds (``_decode``), or a header that is not ASCII, is simply not verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from .._decode import UnreadableError, loads
from .._errors import SignatureError
from .._redact import Redactor
from ._models import PayoffWebhook, parse_webhook_payload

__all__ = ["SIGNATURE_HEADER", "parse_webhook", "sign_webhook", "verify_webhook"]

SIGNATURE_HEADER = "x-api-sha256-signature"

_REDACT = Redactor()  # no secrets to know here; masks card-number-like runs


def _canonical(payload: Mapping[str, Any], *, ascii_only: bool, escape_slashes: bool) -> bytes:
    text = json.dumps(dict(sorted(payload.items())), separators=(",", ":"), ensure_ascii=ascii_only)
    if escape_slashes:
        text = text.replace("/", "\\/")
    return text.encode()


def _digest(message: bytes, key: str) -> str:
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign_webhook(payload: Mapping[str, Any], additional_key: str, *, php: bool = True) -> str:
    """The signature Enot would send for ``payload`` (PHP flavour by default)."""
    return _digest(_canonical(payload, ascii_only=php, escape_slashes=php), additional_key)


def verify_webhook(raw_body: bytes, signature: str, additional_key: str) -> bool:
    """True when ``signature`` is Enot's signature of ``raw_body`` under ``additional_key``.

    Never raises: any body or header that cannot be checked gives False.
    """
    return verified_payload(raw_body, signature, additional_key) is not None


def verified_payload(raw_body: bytes, signature: str, additional_key: str) -> dict[str, Any] | None:
    """The decoded body (numbers as ``float``, as signed) when the signature matches;
    ``None`` otherwise."""
    if not additional_key or not isinstance(signature, str):
        return None
    given = signature.strip().lower()
    if not given or not given.isascii():  # a hex digest; undecodable header bytes are not
        return None
    if not isinstance(raw_body, bytes | bytearray):
        return None
    try:
        payload = loads(raw_body, numbers=float)
    except UnreadableError:
        return None
    if not isinstance(payload, dict):
        return None
    given_digest = given.encode("ascii")
    matched = False
    seen: set[bytes] = set()
    for ascii_only in (True, False):
        for escape_slashes in (True, False):
            message = _canonical(payload, ascii_only=ascii_only, escape_slashes=escape_slashes)
            if message in seen:
                continue
            seen.add(message)
            expected = _digest(message, additional_key).encode()
            matched |= hmac.compare_digest(expected, given_digest)
    return payload if matched else None


def read_webhook(raw_body: bytes) -> PayoffWebhook:
    """A ``PayoffWebhook`` from a verified body, money read exactly as ``Decimal``;
    ``UnreadableError`` when a field cannot be read."""
    payload = loads(raw_body)
    if not isinstance(payload, dict):
        raise UnreadableError("not a JSON object")
    return parse_webhook_payload(payload)


def parse_webhook(raw_body: bytes, signature: str, additional_key: str) -> PayoffWebhook:
    """Verify and parse a payoff webhook.

    ``SignatureError`` when it is not Enot's, or when it is signed but a field cannot
    be read (a money field that is not a finite number): nothing else is raised.
    """
    if verified_payload(raw_body, signature, additional_key) is None:
        raise SignatureError("payoff webhook signature does not match its body")
    try:
        return read_webhook(raw_body)
    except UnreadableError as error:
        raise SignatureError(_REDACT(f"payoff webhook body cannot be read: {error}")) from None
