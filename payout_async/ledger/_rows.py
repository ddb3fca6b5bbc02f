"""What the SQL backends share: the column order, row conversion and argument checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._base import FINAL_STATES, MUTABLE_FIELDS, LedgerState, PayoutRecord, Transition
from ._errors import LedgerKeyError
from ._recipient import MASKED_HASH, Recipients, Resealed, RowFacts, mask_params, plain_hash
from ._texts import scrub, scrub_changes

__all__ = [
    "COLUMNS",
    "FINAL_VALUES",
    "FLOAT_FIELDS",
    "check_changes",
    "dump_params",
    "move_recipient",
    "record_from_row",
    "reseal_row",
    "row_facts",
    "sign_changes",
    "transition_from_row",
]

#: ``payouts`` columns, read by name (``record_from_row``): ``PayoutRecord``'s fields,
#: then ``recipient`` (the full recipient, kept apart), ``provider_api``, and the row's
#: signatures (``ledger._recipient``).
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
    "signature",
    "operation_signature",
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


def sign_changes(
    recipients: Recipients, provider: str, key: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """``transition``'s checked fields, with the operation id's signature when they
    set one (``operation_signature``: a column, not a ``MUTABLE_FIELDS`` name)."""
    signed = dict(fields)
    if "operation_id" in fields:
        signed["operation_signature"] = recipients.sign_operation(
            provider, key, fields["operation_id"]
        )
    return signed


def row_facts(values: Mapping[str, Any], params: Mapping[str, Any]) -> RowFacts:
    """What ``Recipients.authenticate`` checks, from a row's ``COLUMNS`` by name and
    its full ``params``."""
    return RowFacts(
        provider=values["provider"],
        key=values["key"],
        order_id=values["order_id"],
        params_hash=values["params_hash"],
        params=params,
        recipient=values["recipient"],
        signature=values["signature"],
        operation_id=values["operation_id"],
        operation_signature=values["operation_signature"],
    )


def record_from_row(row: Sequence[Any], recipients: Recipients) -> PayoutRecord:
    """A ``PayoutRecord`` from a row holding ``COLUMNS`` in order (more may follow),
    its recipient put back, a live row checked (``PayoutRecord.untrusted``) and its free
    text scrubbed. Never raises for what the row holds: a recipient these keys cannot
    read stays masked."""
    values = dict(zip(COLUMNS, row, strict=False))
    params = values["params"]
    stored = json.loads(params) if isinstance(params, str | bytes) else dict(params)
    state = LedgerState(values["state"])
    untrusted: str | None = None
    try:
        full = recipients.load(values["provider"], values["key"], stored, values["recipient"])
    except LedgerKeyError as error:
        full, untrusted = stored, str(error)
    else:
        if not state.is_final:
            untrusted = recipients.authenticate(row_facts(values, full))
    return PayoutRecord(
        provider=values["provider"],
        key=values["key"],
        params_hash=values["params_hash"],
        params=full,
        state=state,
        operation_id=values["operation_id"],
        order_id=values["order_id"],
        provider_status=values["provider_status"],
        attempts=int(values["attempts"]),
        lease_owner=values["lease_owner"],
        lease_expires_at=values["lease_expires_at"],
        lease_token=int(values["lease_token"]),
        created_at=float(values["created_at"]),
        updated_at=float(values["updated_at"]),
        last_error=scrub(values["last_error"]),
        reason=scrub(values["reason"]),
        unknown_since=values["unknown_since"],
        provider_api=values["provider_api"],
        untrusted=untrusted,
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
    stored = recipients.store(provider, key, params, order_id=None)  # (not signed here)
    recipient = stored.recipient
    if LedgerState(state).is_final:
        recipient, digest = None, MASKED_HASH
    elif digest == plain_hash(params):
        digest = recipients.params_hash(params)
    return dump_params(stored.params), recipient, digest


def reseal_row(recipients: Recipients, row: Sequence[Any]) -> Resealed | str:
    """A live row (``COLUMNS`` in order) under the ledger's current key -- its
    recipient sealed, its fingerprint keyed, its signatures made -- or why it cannot be
    (``Recipients.reseal``: altered, or unreadable with these keys)."""
    values = dict(zip(COLUMNS, row, strict=False))
    params = values["params"]
    stored = json.loads(params) if isinstance(params, str | bytes) else dict(params)
    try:
        full = recipients.load(values["provider"], values["key"], stored, values["recipient"])
    except LedgerKeyError as error:
        return str(error)
    return recipients.reseal(row_facts(values, full))
