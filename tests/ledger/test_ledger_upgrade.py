"""Ledgers written by 0.1 (no fencing token, order_id not unique) open and work."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from payout_async import ConfigurationError, IdempotencyConflictError
from payout_async.ledger import LedgerState, PostgresLedger, SQLiteLedger, params_hash

from .support import PG_DSN, drop_schema, require_postgres

PARAMS = {"amount": "1.00"}
HASH = params_hash(PARAMS)

# The payouts table as version 0.1 created it.
V1_TABLE = """
CREATE TABLE {table} (
    provider TEXT NOT NULL, key TEXT NOT NULL, params_hash TEXT NOT NULL,
    params {json} NOT NULL, state TEXT NOT NULL, operation_id TEXT, order_id TEXT,
    provider_status TEXT, attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT,
    lease_expires_at {real}, created_at {real} NOT NULL, updated_at {real} NOT NULL,
    last_error TEXT, reason TEXT, unknown_since {real}, PRIMARY KEY (provider, key)
)"""
V1_ROW = (
    "INSERT INTO {table} (provider, key, params_hash, params, state, order_id, attempts, "
    "created_at, updated_at) VALUES ('enot', '{key}', '{digest}', '{{}}', 'processing', "
    "'{order_id}', 1, 1.0, 1.0)"
)


def _v1_sqlite(path: Path, rows: list[tuple[str, str]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute(V1_TABLE.format(table="payouts", json="TEXT", real="REAL"))
    conn.execute("CREATE INDEX payouts_order_id ON payouts (provider, order_id)")
    for key, order_id in rows:
        conn.execute(V1_ROW.format(table="payouts", key=key, digest=HASH, order_id=order_id))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


async def test_sqlite_upgrades_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_sqlite(path, [("old", "o-old")])
    async with SQLiteLedger(path) as ledger:
        old = await ledger.get("enot", "old")
        assert old is not None and old.lease_token == 0
        assert old.state is LedgerState.PROCESSING
        [claim] = await ledger.claim_stranded(owner="w", lease_seconds=5, limit=5)
        assert claim.record.lease_token == 1
        with pytest.raises(IdempotencyConflictError):
            await ledger.begin(
                "enot", "new", HASH, PARAMS, owner="w", lease_seconds=5, order_id="o-old"
            )
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()


async def test_sqlite_refuses_to_upgrade_a_file_with_a_shared_order_id(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_sqlite(path, [("a", "o-1"), ("b", "o-1")])
    ledger = SQLiteLedger(path)
    with pytest.raises(ConfigurationError, match="order_id"):
        await ledger.open()
    await ledger.aclose()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"pa_upgrade_{id(object())}"
    try:
        yield name
    finally:
        await drop_schema(name)


async def test_postgres_upgrades_a_version_1_table(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        table = f'"{schema}".payouts'
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(V1_TABLE.format(table=table, json="jsonb", real="double precision"))
        await conn.execute(
            f"CREATE INDEX payouts_order_id ON {table} (provider, order_id) "
            "WHERE order_id IS NOT NULL"
        )
        await conn.execute(V1_ROW.format(table=table, key="old", digest=HASH, order_id="o-old"))
    finally:
        await conn.close()
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        old = await ledger.get("enot", "old")
        assert old is not None and old.lease_token == 0
        [claim] = await ledger.claim_stranded(owner="w", lease_seconds=5, limit=5)
        assert claim.record.lease_token == 1
        with pytest.raises(IdempotencyConflictError):
            await ledger.begin(
                "enot", "new", HASH, PARAMS, owner="w", lease_seconds=5, order_id="o-old"
            )
