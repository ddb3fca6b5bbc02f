"""Enot payoff webhooks: signature check and parsing.

Enot signs ``HMAC-SHA256(additional_key, JSON of the body with top-level keys sorted,
separators (",", ":"))`` and sends the lowercase hex digest in the
``x-api-sha256-signature`` header. The JSON may have been written by PHP (``\\uXXXX``
escapes, ``/`` as ``\\/``) or with non-ASCII kept as is, so every flavour is tried,
each compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from .._errors import SignatureError
from ._models import PayoffWebhook, parse_webhook_payload

__all__ = ["SIGNATURE_HEADER", "parse_webhook", "sign_webhook", "verify_webhook"]

SIGNATURE_HEADER = "x-api-sha256-signature"


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
    """True when ``signature`` is Enot's signature of ``raw_body`` under ``additional_key``."""
    if not additional_key or not signature:
        return False
    try:
        payload = json.loads(raw_body)
    except ValueError:
        return False
    if not isinstance(payload, dict):
        return False
    given = signature.strip().lower().encode()
    matched = False
    seen: set[bytes] = set()
    for ascii_only in (True, False):
        for escape_slashes in (True, False):
            message = _canonical(payload, ascii_only=ascii_only, escape_slashes=escape_slashes)
            if message in seen:
                continue
            seen.add(message)
            expected = _digest(message, additional_key).encode()
            matched |= hmac.compare_digest(expected, given)
    return matched


def parse_webhook(raw_body: bytes, signature: str, additional_key: str) -> PayoffWebhook:
    """Verify and parse a payoff webhook; ``SignatureError`` when it is not Enot's."""
    if not verify_webhook(raw_body, signature, additional_key):
        raise SignatureError("payoff webhook signature does not match its body")
    return parse_webhook_payload(json.loads(raw_body))
