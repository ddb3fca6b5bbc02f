"""``payout-async status`` on a ledger it may only read: a write-protected SQLite file,
a PostgreSQL role with SELECT rights only; and the commands that only look (status,
export, funds, ledger-key status) writing nothing to a ledger an older version wrote."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import PostgresLedger, SQLiteLedger
from tests.ledger.support import PG_DSN, drop_schema, require_postgres
from tests.ledger.test_ledger_faults_sqlite import write_protected
from tests.ledger.test_ledger_upgrade import HASH, V1_ROW, V1_TABLE, _v1_sqlite

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


LOOKING = [["status"], ["status", "old"], ["export"], ["funds"], ["ledger-key", "status"]]
OLDER = "written by an older payout-async"


@pytest.mark.parametrize("command", LOOKING, ids=" ".join)
async def test_looking_at_an_older_sqlite_ledger_upgrades_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """A command that only looks never writes -- not even the schema upgrade that
    opening an older ledger read-write makes (which older workers still using it
    would not expect)."""
    path = tmp_path / "v1.db"
    _v1_sqlite(path, [("old", "o-old")])
    path.chmod(0o600)
    before = path.read_bytes()
    run = await cli(*command, "--ledger", f"sqlite:///{path}")
    assert run.code == 2, run
    assert OLDER in run.err and "upgrades nothing" in run.err
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["v1.db"]  # no -wal, no -shm
    async with SQLiteLedger(path):  # a writer of this version upgrades it
        pass
    assert (await cli(*command, "--ledger", f"sqlite:///{path}")).code == 0


@pytest.mark.postgres
async def test_looking_at_an_older_postgres_ledger_upgrades_nothing() -> None:
    require_postgres()
    schema = f"cli_v1_{uuid.uuid4().hex[:10]}"
    table = f'"{schema}".payouts'
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(V1_TABLE.format(table=table, json="jsonb", real="double precision"))
        await conn.execute(V1_ROW.format(table=table, key="old", digest=HASH, order_id="o-1"))
        url = f"{PG_DSN}?schema={schema}"
        for command in LOOKING:
            run = await cli(*command, "--ledger", url)
            assert run.code == 2 and OLDER in run.err, (command, run)
        columns = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1", schema
        )
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema
        )
        assert (tables, columns) == (1, 16)  # as version 0.1 left it
        async with PostgresLedger(PG_DSN, schema=schema):  # a writer upgrades it
            pass
        run = await cli("status", "--ledger", url, "--json")
        assert run.code == 0, run
        assert json.loads(run.out)["counts"]["enot"]["processing"] == 1
    finally:
        await conn.close()
        await drop_schema(schema)
