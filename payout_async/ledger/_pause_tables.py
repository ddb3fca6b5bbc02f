"""The provider-pause table's SQL (``ledger._pauses``), for the SQLite and PostgreSQL
schemas: its DDL, which the backends' schemas include, and the statements of their
pause methods. Each statement returns ``(provider, since, reason, paused_by)`` rows."""

from __future__ import annotations

__all__ = [
    "SQLITE_PAUSES",
    "PgPauseSQL",
    "SQLitePauseSQL",
    "pg_pauses_table",
    "pg_pauses_table_sql",
]

#: ``CREATE TABLE`` of the pauses in a SQLite file (schema version 7).
SQLITE_PAUSES = """
CREATE TABLE IF NOT EXISTS payout_pauses (
    provider TEXT PRIMARY KEY,
    since REAL NOT NULL,
    reason TEXT NOT NULL,
    paused_by TEXT NOT NULL
);
"""

_COLUMNS = "provider, since, reason, paused_by"


class SQLitePauseSQL:
    """The pause statements in a SQLite file."""

    every = f"SELECT {_COLUMNS} FROM payout_pauses ORDER BY provider"
    one = f"SELECT {_COLUMNS} FROM payout_pauses WHERE provider = ?"
    #: (provider, since, reason, paused_by): a pause already there is kept.
    insert = (
        f"INSERT INTO payout_pauses ({_COLUMNS}) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (provider) DO NOTHING"
    )
    delete = f"DELETE FROM payout_pauses WHERE provider = ? RETURNING {_COLUMNS}"


def pg_pauses_table(schema: str | None, prefix: str) -> str:
    """The pauses table's qualified name in PostgreSQL."""
    qualify = "" if schema is None else f'"{schema}".'
    return f'{qualify}"{prefix}payout_pauses"'


def pg_pauses_table_sql(schema: str | None, prefix: str) -> str:
    """PostgreSQL's ``CREATE TABLE`` of the pauses, part of ``PostgresLedger``'s schema."""
    return f"""
CREATE TABLE IF NOT EXISTS {pg_pauses_table(schema, prefix)} (
    provider text PRIMARY KEY,
    since double precision NOT NULL,
    reason text NOT NULL,
    paused_by text NOT NULL
);
"""


class PgPauseSQL:
    """The pause statements in PostgreSQL, for one schema and table prefix."""

    def __init__(self, schema: str | None, prefix: str) -> None:
        table = pg_pauses_table(schema, prefix)
        self.every = f"SELECT {_COLUMNS} FROM {table} ORDER BY provider"
        #: ($1 provider, $2 reason, $3 paused_by) -> the row this statement inserted
        #: (``made``), or -- none inserted -- the one there; no row: lifted meanwhile.
        self.insert = f"""
WITH ins AS (
    INSERT INTO {table} ({_COLUMNS})
    VALUES ($1, extract(epoch FROM clock_timestamp())::float8, $2, $3)
    ON CONFLICT (provider) DO NOTHING
    RETURNING {_COLUMNS}, true AS made)
SELECT * FROM ins
UNION ALL
SELECT {_COLUMNS}, false FROM {table}
WHERE provider = $1 AND NOT EXISTS (SELECT 1 FROM ins)"""
        self.delete = f"DELETE FROM {table} WHERE provider = $1 RETURNING {_COLUMNS}"
