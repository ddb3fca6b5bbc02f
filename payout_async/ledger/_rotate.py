"""Key rotation: live rows re-sealed and re-signed with a ledger's current key.

A ledger's ``encryption_key`` may be a key ring (``ledger._recipient``): the first key
seals and signs, the others still read. ``rotate`` moves every live row to the first
key -- its recipient sealed again (a clear one sealed for the first time), its
fingerprint keyed, its signatures made -- in bounded batches, each committed on its
own, in (provider, key) order. Interrupted, it is run again: rows already under the
current key are not selected, so it goes on where it stopped. ``key_use`` counts the
live rows by the key they are signed with, and the clear and unsigned ones, without
any key.

A signed row that fails its checks is left as it is and reported (rotation never
signs an altered row). An unsigned row -- written before the ledger had a key, or
before rows were signed, and set aside for that if a keyed drive met it -- is signed
if its plain fingerprint matches its parameters: running ``rotate`` vouches for those
rows (a fingerprint anyone can compute), so look at them first (``ledger-key status``
counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ._base import LedgerState
from ._errors import LedgerKeyError
from ._recipient import ALTERED, Recipients, Resealed
from ._rows import COLUMNS, FINAL_VALUES, reseal_row

__all__ = ["KeyUse", "Rotatable", "RotationBatch", "RotationReport", "rotate"]

_FINAL = ", ".join(f"'{state}'" for state in FINAL_VALUES)
_CLEAR = "recipient IS NOT NULL AND recipient NOT LIKE 'enc:%'"
#: Live rows by the id of the key they are signed with (``v1:<id>:...``), and clear.
KEY_USE = (
    f"SELECT substr(signature, 4, 8), {_CLEAR}, count(*) FROM {{table}} "
    f"WHERE state NOT IN ({_FINAL}) GROUP BY 1, 2"
)
#: The next live rows not under the current key (or whose account is not signed: rows
#: of a keyed ledger upgraded without its key), after a (provider, key).
TO_ROTATE = (
    f"SELECT {', '.join(COLUMNS)} FROM {{table}} WHERE state NOT IN ({_FINAL}) "
    "AND (provider, key) > ({p_after}, {k_after}) "
    "AND (signature IS NULL OR account_signature IS NULL "
    f"OR substr(signature, 4, 8) <> {{current}} OR ({_CLEAR})) "
    "ORDER BY provider, key LIMIT {limit}"
)
RESEAL = (
    "UPDATE {table} SET params_hash = {0}, recipient = {1}, signature = {2}, "
    "operation_signature = {3}, account_signature = {4} WHERE provider = {5} AND key = {6}"
)


@attrs.frozen
class KeyUse:
    """Live rows by the key they are signed with (key id -> rows), how many carry no
    signature, and how many keep their recipient in clear."""

    by_key: dict[str, int]
    unsigned: int
    clear: int

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> KeyUse:
        """From ``KEY_USE``'s rows: (key id or NULL, clear, count)."""
        by_key: dict[str, int] = {}
        unsigned = clear = 0
        for key_id, is_clear, count in rows:
            if key_id is None:
                unsigned += int(count)
            else:
                by_key[key_id] = by_key.get(key_id, 0) + int(count)
            if is_clear:
                clear += int(count)
        return cls(dict(sorted(by_key.items())), unsigned, clear)


@attrs.frozen
class RotationBatch:
    """One batch: rows moved to the current key, rows left as they are (provider, key,
    why), and the last row looked at (None: nothing was left to look at)."""

    rotated: int
    left: list[tuple[str, str, str]]
    last: tuple[str, str] | None


@attrs.frozen
class RotationReport:
    """What ``rotate`` did, and the live rows' keys afterwards."""

    rotated: int
    left: list[tuple[str, str, str]]
    use: KeyUse


@runtime_checkable
class Rotatable(Protocol):
    """A ledger whose keys can rotate (``SQLiteLedger``, ``PostgresLedger``)."""

    async def key_use(self) -> KeyUse:
        """Live rows by key (``KeyUse``); needs no key."""
        ...

    async def rotate_batch(self, *, after: tuple[str, str], limit: int) -> RotationBatch:
        """Move up to ``limit`` live rows after ``after`` to the current key, in one
        transaction."""
        ...


def plan(recipients: Recipients, row: Sequence[Any]) -> Resealed | str:
    """A live row's values under the current key, or why it stays as it is."""
    values = dict(zip(COLUMNS, row, strict=False))
    reason = values["reason"] or ""
    set_aside = values["state"] == LedgerState.NEEDS_ATTENTION.value and reason.startswith(ALTERED)
    if set_aside and values["signature"] is not None:  # it failed a real signature
        return "set aside as altered outside payout-async: left as it is"
    return reseal_row(recipients, row)


async def rotate(
    ledger: Rotatable,
    *,
    batch: int = 200,
    progress: Callable[[RotationBatch], None] | None = None,
) -> RotationReport:
    """Move every live row of ``ledger`` to its current key, ``batch`` rows per
    transaction (``progress`` hears of each batch). Resumable: run it again after an
    interruption and it goes on."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    after, rotated, left = ("", ""), 0, []
    while True:
        done = await ledger.rotate_batch(after=after, limit=batch)
        rotated += done.rotated
        left += done.left
        if progress is not None:
            progress(done)
        if done.last is None:
            return RotationReport(rotated, left, await ledger.key_use())
        after = done.last


async def check_keys(ledger: object) -> None:
    """Raise ``LedgerKeyError`` when live rows of ``ledger`` are signed with keys it
    does not hold (a worker started with another key would set them all aside):
    before a worker claims anything. A ledger that keeps no signatures passes."""
    recipients = getattr(ledger, "_recipients", None)
    if not isinstance(ledger, Rotatable) or not isinstance(recipients, Recipients):
        return
    use = await ledger.key_use()
    missing = {kid: rows for kid, rows in use.by_key.items() if kid not in recipients.key_ids}
    if missing:
        named = ", ".join(f"{kid} ({rows} live rows)" for kid, rows in missing.items())
        raise LedgerKeyError(
            f"this ledger's live rows use key id(s) {named} that the given "
            "encryption_key does not hold: give the key (ring) they were written with"
        )
