"""What only the durable backends have: files, pools, schemas, URLs."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from payout_async import ConfigurationError
from payout_async.ledger import (
    LedgerState,
    MemoryLedger,
    PostgresLedger,
    SQLiteLedger,
    ledger_from_url,
    params_hash,
)
from payout_async.ledger._postgres import drop_statement

from .support import PG_DSN, drop_schema, require_postgres, token_of

PARAMS = {"amount": "1.00"}
HASH = params_hash(PARAMS)


# -- SQLite --------------------------------------------------------------------------


async def test_sqlite_creates_its_schema_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "lazy.db"
    ledger = SQLiteLedger(path)  # no open()
    try:
        assert await ledger.get("enot", "k") is None
        claim = await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        assert claim.created
    finally:
        await ledger.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"payouts", "payout_transitions", "payouts_state_lease"} <= tables
        assert conn.execute("SELECT count(*) FROM payout_transitions").fetchone() == (1,)


async def test_sqlite_instances_opening_one_new_file_at_once(tmp_path: Path) -> None:
    ledgers = [SQLiteLedger(tmp_path / "race.db") for _ in range(5)]
    try:
        await asyncio.gather(*(ledger.open() for ledger in ledgers))
        await asyncio.gather(
            *(
                ledger.begin("enot", f"k{i}", HASH, PARAMS, owner="w", lease_seconds=5)
                for i, ledger in enumerate(ledgers)
            )
        )
        assert len(await ledgers[0].records()) == 5
    finally:
        for ledger in ledgers:
            await ledger.aclose()


async def test_sqlite_close_waits_for_queued_writes_and_reopens(tmp_path: Path) -> None:
    async with SQLiteLedger(tmp_path / "l.db") as ledger:
        writes = [
            asyncio.ensure_future(
                ledger.begin("enot", f"k{i}", HASH, PARAMS, owner="w", lease_seconds=5)
            )
            for i in range(50)
        ]
        await asyncio.sleep(0)
    assert all(write.done() and write.result().created for write in writes)
    assert len(await ledger.records()) == 50  # reopened on use
    await ledger.aclose()


async def test_sqlite_a_cancelled_caller_still_gets_its_write(tmp_path: Path) -> None:
    async with SQLiteLedger(tmp_path / "l.db") as ledger:
        await ledger.open()
        task = asyncio.create_task(
            ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        )
        await asyncio.sleep(0)  # queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        other = await ledger.begin("enot", "k2", HASH, PARAMS, owner="w", lease_seconds=5)
        assert other.created
        assert await ledger.get("enot", "k") is not None


async def test_sqlite_group_commit_under_load(tmp_path: Path) -> None:
    async with SQLiteLedger(tmp_path / "l.db", synchronous="NORMAL") as ledger:

        async def one(i: int) -> None:
            key = f"k{i}"
            await ledger.begin("enot", key, HASH, PARAMS, owner="w", lease_seconds=30)
            for state in (LedgerState.SENDING, LedgerState.PROCESSING, LedgerState.SUCCEEDED):
                await ledger.transition(
                    "enot",
                    key,
                    owner="w",
                    token=await token_of(ledger, "enot", key),
                    state=state,
                    lease_seconds=30,
                    add_attempt=True,
                )
            await ledger.release("enot", key, owner="w", token=await token_of(ledger, "enot", key))

        await asyncio.gather(*(one(i) for i in range(300)))
        assert await ledger.counts() == {LedgerState.SUCCEEDED: 300}
        record = await ledger.get("enot", "k7")
        assert record is not None and record.attempts == 3 and record.lease_owner is None


def test_sqlite_rejects_a_bad_synchronous_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteLedger(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schema(name)


@pytest.mark.postgres
async def test_postgres_leaves_a_callers_pool_open(schema: str) -> None:
    pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=2)
    try:
        ledger = PostgresLedger(pool=pool, schema=schema, table_prefix="pay_")
        await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        await ledger.aclose()
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}"."pay_payouts"') == 1
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".pay_payout_transitions') == 1
    finally:
        await pool.close()


@pytest.mark.postgres
async def test_postgres_many_instances_create_one_schema_at_once(schema: str) -> None:
    ledgers = [PostgresLedger(PG_DSN, schema=schema, max_connections=1) for _ in range(6)]
    try:
        await asyncio.gather(*(ledger.open() for ledger in ledgers))
        await ledgers[0].begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        assert (await ledgers[-1].get("enot", "k")) is not None
    finally:
        for ledger in ledgers:
            await ledger.aclose()


@pytest.mark.postgres
async def test_postgres_table_prefixes_keep_ledgers_apart(schema: str) -> None:
    one = PostgresLedger(PG_DSN, schema=schema, table_prefix="a_")
    two = PostgresLedger(PG_DSN, schema=schema, table_prefix="b_")
    try:
        await one.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        assert await two.get("enot", "k") is None
        assert await two.counts() == {}
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.postgres
async def test_drop_statement_leaves_nothing_of_a_prefixed_ledger(schema: str) -> None:
    # What tests and benchmarks clean up with: a schema object added without it would
    # be left behind by every run (the tables of pauses and of the ledger's identity
    # were, before it existed).
    ledger = PostgresLedger(PG_DSN, schema=schema, table_prefix="gone_")
    other = PostgresLedger(PG_DSN, schema=schema, table_prefix="kept_")
    try:
        for one in (ledger, other):
            claim = await one.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
            await one.transition(
                "enot", "k", owner="w", token=claim.record.lease_token,
                state=LedgerState.SUCCEEDED, lease_seconds=5,
            )  # fmt: skip
            await one.pause_provider("enot", reason="funds", by="w")
            await one.identity()
    finally:
        await ledger.aclose()
        await other.aclose()

    async def names(conn: asyncpg.Connection, prefix: str) -> set[str]:
        rows = await conn.fetch(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND starts_with(c.relname, $2) "
            "UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = $1 AND starts_with(p.proname, $2) "
            "UNION SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND starts_with(t.tgname, $2)",
            schema,
            prefix,
        )
        return {row["name"] for row in rows}

    conn = await asyncpg.connect(PG_DSN)
    try:
        made = await names(conn, "gone_")
        assert {"gone_payouts", "gone_payout_pauses", "gone_payouts_moved"} <= made
        await conn.execute(drop_statement("gone_", schema))
        assert await names(conn, "gone_") == set()
        assert await names(conn, "kept_") == {name.replace("gone_", "kept_") for name in made}
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "options",
    [
        {"schema": "bad-name"},
        {"table_prefix": "x; DROP TABLE"},
        {"max_connections": 0},
        {"dsn": PG_DSN, "pool": object()},
    ],
)
def test_postgres_rejects_bad_options(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PostgresLedger(**options)  # type: ignore[arg-type]


# -- URLs ----------------------------------------------------------------------------


def test_ledger_from_url() -> None:
    assert isinstance(ledger_from_url("memory://"), MemoryLedger)
    relative = ledger_from_url("sqlite:///data/ledger.db")
    assert isinstance(relative, SQLiteLedger) and relative.path == "data/ledger.db"
    absolute = ledger_from_url("sqlite:////var/lib/ledger.db?synchronous=normal")
    assert isinstance(absolute, SQLiteLedger) and absolute.path == "/var/lib/ledger.db"
    bare = ledger_from_url("ledger.db")
    assert isinstance(bare, SQLiteLedger) and bare.path == "ledger.db"
    for url in ("postgresql://u@db.example/pay", "postgres://db.example/pay?sslmode=disable"):
        assert isinstance(ledger_from_url(url), PostgresLedger)
    named = ledger_from_url("postgresql://db.example/pay?schema=pay&table_prefix=t_&sslmode=off")
    assert isinstance(named, PostgresLedger)
    assert (named.schema, named.table_prefix) == ("pay", "t_")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mysql://db/x",
        "redis://localhost",
        "sqlite://host/x.db",
        "sqlite://",
        "sqlite:///x.db?journal=off",
        "sqlite:///x.db?synchronous=OFF",
        "postgresql://db/x?max_connections=many",
    ],
)
def test_ledger_from_url_refuses(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ledger_from_url(url)


@pytest.mark.postgres
async def test_ledger_from_url_opens_a_postgres_ledger(schema: str) -> None:
    ledger = ledger_from_url(f"{PG_DSN}?schema={schema}&max_connections=2")
    try:
        await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
        assert await ledger.counts() == {LedgerState.PENDING: 1}
    finally:
        await ledger.aclose()


async def test_ledger_from_url_opens_a_sqlite_ledger(tmp_path: Path) -> None:
    ledger = ledger_from_url(f"sqlite:///{tmp_path}/via-url.db")  # tmp_path is absolute
    try:
        await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
    finally:
        await ledger.aclose()
    assert (tmp_path / "via-url.db").exists()
