"""IntellectMoney request signatures.

``Sign = lower hex SHA-256 of UTF-8 "f1::f2::...::fn::secret"``: the method's fields in
their documented order, absent fields as empty strings, the SignSecretKey last.
``SIGN_FIELDS`` is the single table of those orders; an empty name stands for one of
the literal empty fields that the legacy documents put after ``PayoutOperationId``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal

from .._errors import ConfigurationError

__all__ = [
    "ASSUMED_SIGN_METHODS",
    "ASSUMED_STATE_SIGN_FIELDS",
    "CURRENT_METHODS",
    "LEGACY_METHODS",
    "SIGN_FIELDS",
    "sign",
    "sign_string",
]

_ID = ("UserToken", "PayoutOperationId")

#: The current API's ``getOperationState`` Sign pattern is NOT published; payout-async
#: assumes ``UserToken::PayoutOperationId::key`` like its documented siblings
#: (execute, delete). This is the one place the assumption lives (docs/getting-started.md:
#: known unknowns); a "bad signature" answer to that call says so in its message.
ASSUMED_STATE_SIGN_FIELDS: tuple[str, ...] = _ID

#: Wire methods whose Sign field order is assumed rather than documented.
ASSUMED_SIGN_METHODS: frozenset[str] = frozenset({"getOperationState"})

SIGN_FIELDS: Mapping[str, tuple[str, ...]] = {
    # legacy API
    "CreateOperation": (
        "UserToken", "Pan", "Account", "Amount", "Currency", "RecipientName",
    ),
    "ExecuteOperation": (*_ID, "", ""),
    "GetOperationState": (*_ID, "", "", "", ""),
    "DeleteOperation": (*_ID, "", "", "", ""),
    # current API
    "createOperation": (
        "UserToken", "PreferenceType", "Pan", "Account", "BankId", "Amount", "Currency",
        "RecipientName", "EshopId",
    ),
    "executeOperation": _ID,
    "getOperationState": ASSUMED_STATE_SIGN_FIELDS,  # not published: assumed
    "deleteOperation": _ID,
}  # fmt: skip

#: Wire method names by logical operation, per API generation.
LEGACY_METHODS: Mapping[str, str] = {
    "create": "CreateOperation",
    "execute": "ExecuteOperation",
    "state": "GetOperationState",
    "delete": "DeleteOperation",
}
CURRENT_METHODS: Mapping[str, str] = {
    "create": "createOperation",
    "execute": "executeOperation",
    "state": "getOperationState",
    "delete": "deleteOperation",
}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


def sign_string(method: str, params: Mapping[str, object], secret_key: str) -> str:
    """The exact UTF-8 string that is hashed for ``method`` (for debugging; contains
    the secret, so never log it)."""
    try:
        fields = SIGN_FIELDS[method]
    except KeyError:
        raise ConfigurationError(
            f"unknown IntellectMoney method {method!r}; known: {', '.join(SIGN_FIELDS)}"
        ) from None
    parts = [_text(params.get(name)) if name else "" for name in fields]
    parts.append(secret_key)
    return "::".join(parts)


def sign(method: str, params: Mapping[str, object], secret_key: str) -> str:
    """Return the lowercase hex SHA-256 ``Sign`` of ``params`` for ``method``.

    ``params`` uses the wire field names (``UserToken``, ``Pan``, ``Amount``...);
    missing or ``None`` fields count as empty strings, ``Decimal`` amounts are written
    with two decimals exactly as in the body.
    """
    return hashlib.sha256(sign_string(method, params, secret_key).encode()).hexdigest()
