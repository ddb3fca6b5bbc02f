"""What the SQL backends share: the column order, row conversion and argument checks."""

from __future__ import annotations

import contextlib
import hmac
import json
import operator
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._base import FINAL_STATES, MUTABLE_FIELDS, LedgerState, PayoutRecord, Transition
from ._errors import LedgerKeyError
from ._recipient import (
    MASKED_HASH,
    Recipients,
    Resealed,
    RowFacts,
    canonical_json,
    mask_params,
    plain_hash,
)
from ._texts import TEXT_FIELDS, kept_text, scrub

__all__ = [
    "AT",
    "COLUMNS",
    "FINAL_VALUES",
    "FLOAT_FIELDS",
    "Records",
    "check_changes",
    "dump_params",
    "move_recipient",
    "reseal_row",
    "row_facts",
    "sign_changes",
    "transition_from_row",
]

#: ``payouts`` columns, read by name (``Records``): ``PayoutRecord``'s fields,
#: then ``recipient`` (the full recipient, kept apart), ``provider_api``,
#: ``provider_account``, and the row's signatures (``ledger._recipient``).
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
    "provider_account",
    "signature",
    "operation_signature",
    "account_signature",
)
#: The ledger format this release writes: SQLite's schema version (``user_version``)
#: and PostgreSQL's ``format`` row. A writer refuses a ledger of a newer format
#: (``LedgerTooNewError``): it would write rows without what that version records.
FORMAT = 8
#: Each of ``COLUMNS``' position in a row.
AT = {name: position for position, name in enumerate(COLUMNS)}
#: ``payout_transitions`` columns read back by ``transition_from_row``.
TRANSITION_COLUMNS = ("provider", "key", "from_state", "to_state", "at", "owner", "note")
FINAL_VALUES = tuple(sorted(state.value for state in FINAL_STATES))
FLOAT_FIELDS = frozenset({"unknown_since"})


def dump_params(params: Mapping[str, Any]) -> str:
    """A payout's parameters as JSON text, as ``params_hash`` serialises them."""
    return canonical_json(params).decode()


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``transition``'s extra fields, checked against ``MUTABLE_FIELDS`` (``TypeError``
    like ``MemoryLedger``), their free text scrubbed (``ledger._texts``) and coerced to
    their column types, in a stable order."""
    checked: dict[str, Any] = {}
    if not changes:
        return checked
    if not MUTABLE_FIELDS.issuperset(changes):
        raise TypeError(f"cannot change {sorted(set(changes) - MUTABLE_FIELDS)}")
    for name in sorted(changes):
        value = changes[name]
        if value is not None:
            if name in TEXT_FIELDS:
                value = kept_text(str(value))
            else:
                value = float(value) if name in FLOAT_FIELDS else str(value)
        checked[name] = value
    return checked


def sign_changes(
    recipients: Recipients, provider: str, key: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """``transition``'s checked fields, with the signature of the operation id or
    the provider account when they set one (``operation_signature``,
    ``account_signature``: columns, not ``MUTABLE_FIELDS`` names)."""
    signed = dict(fields)
    if "operation_id" in fields:
        signed["operation_signature"] = recipients.sign_operation(
            provider, key, fields["operation_id"]
        )
    if "provider_account" in fields:
        signed["account_signature"] = recipients.sign_account(
            provider, key, fields["provider_account"]
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
        provider_account=values["provider_account"],
        account_signature=values["account_signature"],
    )


#: The columns a live row's parameters and checks depend on (``Records``): read again
#: with the same values, a row is neither decoded, decrypted nor authenticated again.
#: The row's own (what ``Recipients.sign_row`` covers, its recipient and fingerprint)...
_ROW_CHECKED = ("params", "recipient", "params_hash", "order_id", "signature")
#: ... and where the payout is looked up: its operation id and provider account, each
#: with its signature (``Recipients.sign_operation``, ``sign_account``).
_LOOKUP_CHECKED = ("operation_id", "operation_signature", "provider_account", "account_signature")
#: The order ``Records.read`` unpacks a row in.
_READ = (
    "provider", "key", "params_hash", "params", "state", "operation_id", "order_id",
    "provider_status", "attempts", "lease_owner", "lease_expires_at", "lease_token",
    "created_at", "updated_at", "last_error", "reason", "unknown_since", "recipient",
    "provider_api", "provider_account",
)  # fmt: skip
assert COLUMNS[: len(_READ)] == _READ


def _named(row: Sequence[Any]) -> dict[str, Any]:
    """A row's ``COLUMNS`` by name."""
    return dict(zip(COLUMNS, row, strict=False))


# Read by position from a row (a tuple, or an asyncpg ``Record``).
_row_checked = operator.itemgetter(*(AT[name] for name in _ROW_CHECKED))
_lookup_checked = operator.itemgetter(*(AT[name] for name in _LOOKUP_CHECKED))
_PARAMS, _RECIPIENT, _STATE = AT["params"], AT["recipient"], AT["state"]
_HASH, _SIGNATURE = AT["params_hash"], AT["signature"]
_OPERATION_ID, _OPERATION_SIGNATURE = AT["operation_id"], AT["operation_signature"]
_ACCOUNT, _ACCOUNT_SIGNATURE = AT["provider_account"], AT["account_signature"]
assert _ROW_CHECKED[0] == "params"  # (what a final read compares)
#: A state's value to the state (a dict lookup: ``LedgerState(value)`` costs a call).
_STATES = {state.value: state for state in LedgerState}


@attrs.frozen
class _Seen:
    """What a live row's checked columns came to."""

    row: tuple[Any, ...]  # the values of ``_ROW_CHECKED``
    lookup: tuple[Any, ...]  # the values of ``_LOOKUP_CHECKED``
    full: dict[str, Any] = attrs.field(repr=False)
    untrusted: str | None
    #: ``params`` as stored (the recipient masked), read from ``row[0]``'s text.
    stored: dict[str, Any] = attrs.field(repr=False)


class Records:
    """``PayoutRecord``\\ s from rows holding ``COLUMNS`` in order (more may follow):
    each record's recipient put back, a live row checked (``PayoutRecord.untrusted``)
    and its free text scrubbed. Never raises for what a row holds: a recipient these
    keys cannot read stays masked.

    What a live row's checked columns came to -- its full parameters and its
    verdict -- is remembered for the row, so that the next write of a payout, which
    changes none of them, costs no JSON, decryption or HMAC; one that records an
    operation id or a provider account costs its signature only (a trusted row whose
    own columns are unchanged stays trusted if what changed carries this ledger's
    signature, the one check that reads it). The values read are compared with the
    ones remembered, so a row altered outside payout-async is checked again in full. A
    row read final is forgotten (so is the oldest row beyond ``size``): nothing of a
    finished payout's recipient stays here.
    """

    def __init__(self, recipients: Recipients, *, size: int = 4096) -> None:
        self.recipients = recipients
        self._size = size
        self._seen: dict[tuple[str, str], _Seen] = {}
        # Rows are read on the event loop and on SQLite's thread.
        self._evicting = threading.Lock()

    def read(self, row: Sequence[Any]) -> PayoutRecord:
        """The record of ``row``."""
        state = _STATES.get(row[_STATE]) or LedgerState(row[_STATE])
        full, untrusted = self._parameters(row, state.is_final)
        return _record(row, state, full, untrusted)

    def begun(
        self, row: Sequence[Any], full: Mapping[str, Any], stored: Mapping[str, Any]
    ) -> PayoutRecord:
        """The record of a live ``row`` this ledger has just inserted, in the
        transaction that hands it back, from the parameters ``full`` (kept as
        ``stored``): what this ledger sealed and signed from them needs neither
        decoding nor checking, so only the fingerprint its caller gave is checked."""
        full = dict(full)
        untrusted = self.recipients.check_begun(row[0], row[1], row[_HASH], row[_SIGNATURE], full)
        self._remember((row[0], row[1]), _Seen(
            _row_checked(row), _lookup_checked(row), full, untrusted, dict(stored)
        ))  # fmt: skip
        return _record(row, _STATES[row[_STATE]], full, untrusted)

    def _parameters(self, row: Sequence[Any], final: bool) -> tuple[dict[str, Any], str | None]:
        """The row's full parameters and why it must not move money (or None)."""
        at = (row[0], row[1])  # provider, key
        if final:
            # A final row's params are its masked ones, as they were while it was live
            # (a final write changes no params): those already read need no decoding.
            seen = self._seen.pop(at, None)
            if seen is not None and seen.row[0] == row[_PARAMS] and row[_RECIPIENT] is None:
                return dict(seen.stored), None
            full, _, _ = self._load(_named(row), final=True)
            return full, None
        own, lookup = _row_checked(row), _lookup_checked(row)
        seen = self._seen.get(at)
        if seen is not None and seen.row == own:
            if seen.lookup == lookup:
                return seen.full, seen.untrusted
            if seen.untrusted is None and self._signed_lookup(row, seen.lookup, lookup):
                self._seen[at] = attrs.evolve(seen, lookup=lookup)
                return seen.full, None
        full, untrusted, stored = self._load(_named(row), final=False)
        self._remember(at, _Seen(own, lookup, full, untrusted, stored))
        return full, untrusted

    def _remember(self, at: tuple[str, str], seen: _Seen) -> None:
        self._seen[at] = seen
        if len(self._seen) > self._size:
            with self._evicting, contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del self._seen[next(iter(self._seen))]

    def _signed_lookup(
        self, row: Sequence[Any], seen: tuple[Any, ...], lookup: tuple[Any, ...]
    ) -> bool:
        """Whether what changed of the row's operation id and provider account since
        ``seen`` carries the signature this ledger makes for it (None without a key)."""
        provider, key, recipients = row[0], row[1], self.recipients
        if seen[:2] != lookup[:2] and not _same(
            recipients.sign_operation(provider, key, row[_OPERATION_ID]), row[_OPERATION_SIGNATURE]
        ):
            return False
        return seen[2:] == lookup[2:] or _same(
            recipients.sign_account(provider, key, row[_ACCOUNT]), row[_ACCOUNT_SIGNATURE]
        )

    def _load(
        self, values: Mapping[str, Any], *, final: bool
    ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
        """The row's full parameters, why it must not move money (or None), and its
        parameters as stored."""
        params = values["params"]
        stored = json.loads(params) if isinstance(params, str | bytes) else dict(params)
        try:
            full = self.recipients.load(
                values["provider"], values["key"], stored, values["recipient"]
            )
        except LedgerKeyError as error:
            return stored, str(error), stored
        untrusted = None if final else self.recipients.authenticate(row_facts(values, full))
        return full, untrusted, stored


def _record(
    row: Sequence[Any], state: LedgerState, full: dict[str, Any], untrusted: str | None
) -> PayoutRecord:
    """The ``PayoutRecord`` of ``row`` at ``state``, with its full parameters."""
    (
        provider, key, params_hash, _, _, operation_id, order_id, provider_status,
        attempts, lease_owner, lease_expires_at, lease_token, created_at, updated_at,
        last_error, reason, unknown_since, _, provider_api, provider_account, *_,
    ) = row  # fmt: skip  # COLUMNS, in order (_READ checks it)
    return PayoutRecord(
        provider=provider,
        key=key,
        params_hash=params_hash,
        params=dict(full),
        state=state,
        operation_id=operation_id,
        order_id=order_id,
        provider_status=provider_status,
        attempts=int(attempts),
        lease_owner=lease_owner,
        lease_expires_at=lease_expires_at,
        lease_token=int(lease_token),
        created_at=float(created_at),
        updated_at=float(updated_at),
        last_error=scrub(last_error),
        reason=scrub(reason),
        unknown_since=unknown_since,
        provider_api=provider_api,
        provider_account=provider_account,
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


def _same(made: str | None, found: str | None) -> bool:
    if made is None or found is None:
        return made is found
    return hmac.compare_digest(made, found)


def reseal_row(recipients: Recipients, row: Sequence[Any]) -> Resealed | str:
    """A live row (``COLUMNS`` in order) under the ledger's current key -- its
    recipient sealed, its fingerprint keyed, its signatures made -- or why it cannot be
    (``Recipients.reseal``: altered, or unreadable with these keys)."""
    values = _named(row)
    params = values["params"]
    stored = json.loads(params) if isinstance(params, str | bytes) else dict(params)
    try:
        full = recipients.load(values["provider"], values["key"], stored, values["recipient"])
    except LedgerKeyError as error:
        return str(error)
    return recipients.reseal(row_facts(values, full))
