"""``payout-async status`` on a ledger it may only read: a write-protected SQLite file,
a PostgreSQL role with SELECT rights only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import PostgresLedger, SQLiteLedger
from tests.ledger.support import PG_DSN, drop_schema, require_postgres
from tests.ledger.test_ledger_faults_sqlite import write_protected

from .support import cli


async def fill(ledger: SQLiteLedger | PostgresLedger) -> None:
    for key in ("a", "b"):
        await ledger.begin("enot", key, "h", {"amount": "1.00"}, owner="w", lease_seconds=30)


async def test_status_reads_a_write_protected_sqlite_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with SQLiteLedger(path) as ledger:
        await fill(ledger)
    with write_protected(path):
        run = await cli("status", "--ledger", f"sqlite:///{path}", "--json")
    assert run.code == 0, run
    assert json.loads(run.out)["counts"]["enot"]["pending"] == 2


@pytest.mark.postgres
async def test_status_reads_with_a_read_only_postgres_role() -> None:
    require_postgres()
    schema = f"cli_ro_{uuid.uuid4().hex[:10]}"
    role = f"reader_{uuid.uuid4().hex[:8]}"
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        await fill(ledger)
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        url = PG_DSN.replace("postgres@", f"{role}@", 1) + f"?schema={schema}"
        run = await cli("status", "--ledger", url, "--json")
        assert run.code == 0, run
        assert json.loads(run.out)["counts"]["enot"]["pending"] == 2
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
        await drop_schema(schema)
