"""What the SQL backends share: the column order, row conversion and argument checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._base import FINAL_STATES, MUTABLE_FIELDS, LedgerState, PayoutRecord, Transition
from ._recipient import MASKED_HASH, Recipients, mask_params, plain_hash
from ._texts import scrub, scrub_changes

__all__ = [
    "COLUMNS",
    "FINAL_VALUES",
    "FLOAT_FIELDS",
    "check_changes",
    "dump_params",
    "move_recipient",
    "record_from_row",
    "transition_from_row",
]

#: ``payouts`` columns, in ``PayoutRecord`` field order (``record_from_row`` relies on
#: it) up to ``unknown_since``, then ``recipient`` (the full recipient, kept apart: see
#: ``ledger._recipient``), then ``provider_api`` (added later, so last).
COLUMNS = (
    "provider",
    "key",
    "params_hash",
    "params",
    "state",
    "operation_id",
    "order_id",
    "provider_status",
    "attempts",
    "lease_owner",
    "lease_expires_at",
    "lease_token",
    "created_at",
    "updated_at",
    "last_error",
    "reason",
    "unknown_since",
    "recipient",
    "provider_api",
)
#: ``payout_transitions`` columns read back by ``transition_from_row``.
TRANSITION_COLUMNS = ("provider", "key", "from_state", "to_state", "at", "owner", "note")
FINAL_VALUES = tuple(sorted(state.value for state in FINAL_STATES))
FLOAT_FIELDS = frozenset({"unknown_since"})


def dump_params(params: Mapping[str, Any]) -> str:
    """A payout's parameters as JSON text (``params_hash`` serialises them alike)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``transition``'s extra fields, checked against ``MUTABLE_FIELDS`` (``TypeError``
    like ``MemoryLedger``), their free text scrubbed (``ledger._texts``) and coerced to
    their column types, in a stable order."""
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise TypeError(f"cannot change {sorted(unknown)}")
    changes = scrub_changes(changes)
    checked: dict[str, Any] = {}
    for name in sorted(changes):
        value = changes[name]
        if value is not None:
            value = float(value) if name in FLOAT_FIELDS else str(value)
        checked[name] = value
    return checked


def record_from_row(row: Sequence[Any], recipients: Recipients) -> PayoutRecord:
    """A ``PayoutRecord`` from a row holding ``COLUMNS`` in order, its recipient put
    back (``LedgerKeyError`` when ``recipients`` cannot) and its free text scrubbed."""
    params = row[3]
    stored = json.loads(params) if isinstance(params, str | bytes) else dict(params)
    return PayoutRecord(
        provider=row[0],
        key=row[1],
        params_hash=row[2],
        params=recipients.load(row[0], row[1], stored, row[17]),
        state=LedgerState(row[4]),
        operation_id=row[5],
        order_id=row[6],
        provider_status=row[7],
        attempts=int(row[8]),
        lease_owner=row[9],
        lease_expires_at=row[10],
        lease_token=int(row[11]),
        created_at=float(row[12]),
        updated_at=float(row[13]),
        last_error=scrub(row[14]),
        reason=scrub(row[15]),
        unknown_since=row[16],
        provider_api=row[18],
    )


def transition_from_row(row: Sequence[Any]) -> Transition:
    """A ``Transition`` from a row holding ``TRANSITION_COLUMNS`` in order (its note
    scrubbed)."""
    return Transition(
        provider=row[0],
        key=row[1],
        from_state=None if row[2] is None else LedgerState(row[2]),
        to_state=LedgerState(row[3]),
        at=float(row[4]),
        owner=row[5],
        note=scrub(row[6]),
    )


def move_recipient(
    recipients: Recipients, provider: str, key: str, params_text: str, state: str, digest: str
) -> tuple[str, str | None, str] | None:
    """One row of a ledger written before the recipient had a column of its own:
    its new ``(params, recipient, params_hash)`` -- the recipient masked in ``params``,
    kept apart (sealed, with a key) while the row is live, dropped once it is final, and
    a live row's plain fingerprint keyed when there is a key -- or None when its
    ``params`` hold no recipient in clear."""
    params = json.loads(params_text)
    if not isinstance(params, dict) or mask_params(params) == params:
        return None
    stored = recipients.store(provider, key, params)
    recipient = stored.recipient
    if LedgerState(state).is_final:
        recipient, digest = None, MASKED_HASH
    elif digest == plain_hash(params):
        digest = recipients.params_hash(params)
    return dump_params(stored.params), recipient, digest
