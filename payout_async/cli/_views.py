"""What the commands report about a payout, and the one JSON document they print.

Every ``--json`` output is one JSON object on stdout::

    {"schema": 1, "command": "batch", "ledger": "/abs/payouts.db", ...sections}

Sections (each present only where it applies): ``payouts`` (a list of payout objects,
below), ``counts`` (``{status: n}`` for results; ``{provider: {state: n}}`` for
``status``), ``bad_rows`` (``[{"line", "column", "problem"}]``), ``leased``
(payout objects of rows other workers hold), ``dry_run`` (true) and ``valid`` (rows
checked). A payout object always has every key below, ``null`` where unknown::

    key, provider, status, state, amount, recipient (masked), provider_id,
    provider_status, order_id, attempts, reason, last_error, lease_owner,
    lease_expires_at, created_at, updated_at        (+ history for ``status KEY``)

``reason``, ``last_error`` and history notes are scrubbed (``_redact.scrub``: card
numbers and phones masked however they are written). ``status`` is what the caller
should conclude (``succeeded``, ``failed``,
``processing``, ``needs_attention``, ``rejected``...), ``state`` the ledger's recovery
point; times are UNIX seconds. ``schema`` changes only when a key changes meaning or
goes away.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .._redact import mask_wallet, scrub
from ..enot import PayoffRequest
from ..intellectmoney import OperationRequest
from ..ledger import PayoutRecord, Transition
from ..payouts import PayoutResult
from ._escape import json_text

__all__ = [
    "SCHEMA",
    "document",
    "mask_wallet",
    "payout_from_record",
    "payout_from_result",
    "request_summary",
]

SCHEMA = 1
_RECIPIENT_FIELDS = ("pan", "account", "wallet_to")


def request_summary(
    params: Mapping[str, Any] | OperationRequest | PayoffRequest | None,
) -> tuple[str | None, str | None]:
    """(amount, masked recipient) of a request or of a ledger row's parameters."""
    if params is None:
        return None, None
    if isinstance(params, OperationRequest | PayoffRequest):
        recipient = getattr(params, "pan", None) or getattr(params, "account", None)
        recipient = recipient or getattr(params, "wallet_to", None)
        return f"{params.amount:.2f}", mask_wallet(recipient)
    raw = params.get("amount")
    amount = str(raw) if isinstance(raw, str | Decimal | int) else None
    recipient = next((params[name] for name in _RECIPIENT_FIELDS if params.get(name)), None)
    return amount, mask_wallet(recipient if isinstance(recipient, str) else None)


def payout_from_result(
    result: PayoutResult, request: OperationRequest | PayoffRequest | None = None
) -> dict[str, Any]:
    """A payout object for a result (``request`` adds amount and recipient)."""
    amount, recipient = request_summary(request)
    return {
        "key": result.key,
        "provider": result.provider,
        "status": result.status.value,
        "state": None if result.state is None else result.state.value,
        "amount": amount,
        "recipient": recipient,
        "provider_id": result.provider_id,
        "provider_status": result.provider_status,
        "order_id": result.order_id,
        "attempts": result.attempts,
        "reason": scrub(result.reason),
        "last_error": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "created_at": None,
        "updated_at": None,
    }


def payout_from_record(
    record: PayoutRecord, history: list[Transition] | None = None
) -> dict[str, Any]:
    """A payout object for a ledger row (with its history when given)."""
    amount, recipient = request_summary(record.params)
    view: dict[str, Any] = {
        "key": record.key,
        "provider": record.provider,
        "status": PayoutResult.from_record(record).status.value,
        "state": record.state.value,
        "amount": amount,
        "recipient": recipient,
        "provider_id": record.operation_id,
        "provider_status": record.provider_status,
        "order_id": record.order_id,
        "attempts": record.attempts,
        "reason": scrub(record.reason),
        "last_error": scrub(record.last_error),
        "lease_owner": record.lease_owner,
        "lease_expires_at": record.lease_expires_at,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if history is not None:
        view["history"] = [
            {
                "from": None if step.from_state is None else step.from_state.value,
                "to": step.to_state.value,
                "at": step.at,
                "note": scrub(step.note),
            }
            for step in history
        ]
    return view


def document(command: str, ledger: str | None, **sections: Any) -> str:
    """The one JSON document a ``--json`` command prints (no control or bidi
    character raw: see ``json_text``)."""
    body: dict[str, Any] = {"schema": SCHEMA, "command": command, "ledger": ledger}
    body.update(sections)
    return json_text(body)
