"""The provider-pause table's DDL (``ledger._pauses``), for the SQLite and PostgreSQL
schemas: kept apart so that the backends' schemas can include it."""

from __future__ import annotations

__all__ = ["SQLITE_PAUSES", "pg_pauses_table", "pg_pauses_table_sql"]

#: ``CREATE TABLE`` of the pauses in a SQLite file (schema version 7).
SQLITE_PAUSES = """
CREATE TABLE IF NOT EXISTS payout_pauses (
    provider TEXT PRIMARY KEY,
    since REAL NOT NULL,
    reason TEXT NOT NULL,
    paused_by TEXT NOT NULL
);
"""


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
