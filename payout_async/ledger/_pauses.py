"""Provider pauses: "send nothing more to this provider" shared through the ledger.

A worker whose payout a provider refused for want of money records a pause of that
provider here, so that every worker sharing the ledger stops claiming its rows (and
starts no money-moving request for it) until the pause is lifted -- by a worker whose
balance check shows money again, or by the operator (``payout-async funds resume``).
One record per provider: who paused it (``by``: a lease owner, or ``operator``), when
(``since``, UNIX seconds) and why (``reason``). A pause moves no row: rows stay
``pending`` or ``refused``, payable once it is lifted.

The record lives beside the rows: a ``payout_pauses`` table in a SQLite file (schema
version 7) or in PostgreSQL (``{prefix}payout_pauses``, created with the other tables),
or a dict of a ``MemoryLedger``. Each function is one atomic statement.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from typing import Any

import attrs

from .._errors import ConfigurationError
from ._base import Ledger
from ._memory import MemoryLedger
from ._pause_tables import pg_pauses_table
from ._postgres import PostgresLedger
from ._sqlite import SQLiteLedger
from ._sqlite_batch import HistoryRow

__all__ = [
    "ProviderPause",
    "lift_pause",
    "pause_of",
    "pause_provider",
    "pauses",
]

_MEMORY: weakref.WeakKeyDictionary[MemoryLedger, dict[str, ProviderPause]] = (
    weakref.WeakKeyDictionary()
)
_REASON_LIMIT = 500  # characters of a reason kept (a provider's answer may be long)


@attrs.frozen
class ProviderPause:
    """One provider's pause: since when (UNIX seconds), why, and by whom."""

    provider: str
    since: float
    reason: str
    by: str


def _plain(ledger: Ledger) -> Ledger:
    """The ledger itself, also when seen through a worker's view of it."""
    inner = getattr(ledger, "ledger", None)
    return inner if isinstance(inner, MemoryLedger | SQLiteLedger | PostgresLedger) else ledger


def _unsupported(ledger: Ledger) -> ConfigurationError:
    return ConfigurationError(f"{ledger!r} cannot keep provider pauses")


def _pause(row: Any) -> ProviderPause:
    return ProviderPause(provider=row[0], since=float(row[1]), reason=row[2], by=row[3])


async def pauses(ledger: Ledger) -> list[ProviderPause]:
    """Every provider paused now, by provider."""
    ledger = _plain(ledger)
    if isinstance(ledger, MemoryLedger):
        return sorted(_MEMORY.get(ledger, {}).values(), key=lambda p: p.provider)
    if isinstance(ledger, SQLiteLedger):
        rows = await ledger._read(
            "SELECT provider, since, reason, paused_by FROM payout_pauses ORDER BY provider", ()
        )
        return [_pause(row) for row in rows]
    if isinstance(ledger, PostgresLedger):
        table = pg_pauses_table(ledger.schema, ledger.table_prefix)
        rows = await ledger._fetch(
            f"SELECT provider, since, reason, paused_by FROM {table} ORDER BY provider"
        )
        return [_pause(row) for row in rows]
    raise _unsupported(ledger)


async def pause_of(ledger: Ledger, provider: str) -> ProviderPause | None:
    """``provider``'s pause, or None when it is not paused."""
    return next((pause for pause in await pauses(ledger) if pause.provider == provider), None)


async def pause_provider(
    ledger: Ledger, provider: str, *, reason: str, by: str
) -> tuple[ProviderPause, bool]:
    """Pause ``provider`` unless it is paused already. Returns the pause in force and
    whether this call made it (False: an earlier pause is kept as it was)."""
    ledger = _plain(ledger)
    reason = " ".join(reason.split())[:_REASON_LIMIT]
    wanted = ProviderPause(provider=provider, since=time.time(), reason=reason, by=by)
    if isinstance(ledger, MemoryLedger):
        held = _MEMORY.setdefault(ledger, {})
        if provider in held:
            return held[provider], False
        held[provider] = wanted
        return wanted, True
    if isinstance(ledger, SQLiteLedger):

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> tuple[ProviderPause, bool]:
            made = conn.execute(
                "INSERT INTO payout_pauses (provider, since, reason, paused_by) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (provider) DO NOTHING",
                (provider, wanted.since, reason, by),
            ).rowcount
            row = conn.execute(
                "SELECT provider, since, reason, paused_by FROM payout_pauses WHERE provider = ?",
                (provider,),
            ).fetchone()
            return _pause(row), bool(made)

        return await ledger._write(op)
    if isinstance(ledger, PostgresLedger):
        table = pg_pauses_table(ledger.schema, ledger.table_prefix)
        # One statement: the row this call inserted, or (none inserted) the one there.
        row = await ledger._fetchrow(
            f"""
WITH ins AS (
    INSERT INTO {table} (provider, since, reason, paused_by)
    VALUES ($1, extract(epoch FROM clock_timestamp())::float8, $2, $3)
    ON CONFLICT (provider) DO NOTHING
    RETURNING provider, since, reason, paused_by, true AS made)
SELECT * FROM ins
UNION ALL
SELECT provider, since, reason, paused_by, false FROM {table}
WHERE provider = $1 AND NOT EXISTS (SELECT 1 FROM ins)""",
            provider,
            reason,
            by,
        )
        if row is None:  # lifted between the insert's check and the read: try once more
            return await pause_provider(ledger, provider, reason=reason, by=by)
        return _pause(row), bool(row[4])
    raise _unsupported(ledger)


async def lift_pause(ledger: Ledger, provider: str) -> ProviderPause | None:
    """End ``provider``'s pause; returns the pause it ended (None: it was not paused)."""
    ledger = _plain(ledger)
    if isinstance(ledger, MemoryLedger):
        return _MEMORY.get(ledger, {}).pop(provider, None)
    if isinstance(ledger, SQLiteLedger):

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> ProviderPause | None:
            row = conn.execute(
                "DELETE FROM payout_pauses WHERE provider = ? "
                "RETURNING provider, since, reason, paused_by",
                (provider,),
            ).fetchone()
            return None if row is None else _pause(row)

        return await ledger._write(op, atomic=True)
    if isinstance(ledger, PostgresLedger):
        table = pg_pauses_table(ledger.schema, ledger.table_prefix)
        row = await ledger._fetchrow(
            f"DELETE FROM {table} WHERE provider = $1 RETURNING provider, since, reason, paused_by",
            provider,
        )
        return None if row is None else _pause(row)
    raise _unsupported(ledger)
