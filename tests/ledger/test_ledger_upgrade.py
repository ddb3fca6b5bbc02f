"""Ledgers written by 0.1 (no fencing token, order_id not unique) open and work."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from payout_async import ConfigurationError, IdempotencyConflictError
from payout_async.ledger import (
    Ledger,
    LedgerIdentity,
    LedgerOutdatedError,
    LedgerState,
    OperationTakenError,
    PostgresLedger,
    SQLiteLedger,
    new_encryption_key,
    params_hash,
)

from .at_rest import postgres_hits, sqlite_hits
from .support import PG_DSN, drop_schema, require_postgres

PARAMS = {"amount": "1.00"}
HASH = params_hash(PARAMS)
CURRENT = 8  # SQLite's schema version

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
        await _records_the_api(ledger, claim.record.lease_token)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT
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


def _pg_table(schema: str) -> str:
    return f'"{schema}".payouts'


async def _v1_postgres(schema: str, *statements: str) -> None:
    """A version-1 PostgreSQL table in ``schema`` (``_pg_table``), then ``statements``."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            V1_TABLE.format(table=_pg_table(schema), json="jsonb", real="double precision")
        )
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_postgres_upgrades_a_version_1_table(schema: str) -> None:
    table = _pg_table(schema)
    await _v1_postgres(
        schema,
        f"CREATE INDEX payouts_order_id ON {table} (provider, order_id) WHERE order_id IS NOT NULL",
        V1_ROW.format(table=table, key="old", digest=HASH, order_id="o-old"),
    )
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        old = await ledger.get("enot", "old")
        assert old is not None and old.lease_token == 0
        [claim] = await ledger.claim_stranded(owner="w", lease_seconds=5, limit=5)
        assert claim.record.lease_token == 1
        with pytest.raises(IdempotencyConflictError):
            await ledger.begin(
                "enot", "new", HASH, PARAMS, owner="w", lease_seconds=5, order_id="o-old"
            )
        await _records_the_api(ledger, claim.record.lease_token)


async def _records_the_api(ledger: Ledger, token: int) -> None:
    """An old row has no ``provider_api`` nor ``provider_account`` (columns the upgrade
    added); it keeps them once written."""
    old = await ledger.get("enot", "old")
    assert old is not None and (old.provider_api, old.provider_account) == (None, None)
    moved = await ledger.transition(
        "enot", "old", owner="w", token=token, lease_seconds=5,
        state=LedgerState.PROCESSING, provider_api="current", provider_account="acct",
    )  # fmt: skip
    assert (moved.provider_api, moved.provider_account) == ("current", "acct")
    assert (await ledger.get("enot", "old")) == moved


P = "intellectmoney"
CARD = "4276000012345673"
CARD_PARAMS = f'{{"amount": "1.00", "pan": "{CARD}"}}'
V2_CARD_ROWS = (
    "INSERT INTO {table} (provider, key, params_hash, params, state, attempts, created_at, "
    "updated_at) VALUES ('intellectmoney', 'live', '{digest}', '{params}', 'processing', 1, "
    "1.0, 1.0), ('intellectmoney', 'done', '{digest}', '{params}', 'succeeded', 1, 1.0, 1.0)"
)


@pytest.mark.parametrize("key", [None, new_encryption_key()], ids=["no key", "key"])
async def test_sqlite_upgrade_moves_card_numbers_out_of_the_parameters(
    tmp_path: Path, key: str | None
) -> None:
    """A file whose rows hold the card in their parameters: the live row keeps it apart
    (sealed, with a key), the final one keeps only the masked card; once the live row is
    final too, no copy remains."""
    path = tmp_path / "v2.db"
    _v1_sqlite(path, [])
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE payouts ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0")
    digest = params_hash({"amount": "1.00", "pan": CARD})
    conn.execute(V2_CARD_ROWS.format(table="payouts", digest=digest, params=CARD_PARAMS))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    params = {"amount": "1.00", "pan": CARD}
    async with SQLiteLedger(path, encryption_key=key) as ledger:
        live, done = await ledger.get(P, "live"), await ledger.get(P, "done")
        assert live is not None and live.params["pan"] == CARD
        assert live.untrusted is None  # signed by the upgrade (with a key)
        assert done is not None and done.params["pan"] == "427600******5673"
        assert ledger.params_match(live, params) and ledger.params_match(done, params)
        assert live.params_hash == ledger.params_hash(params)
        assert bool(sqlite_hits(path, CARD)) is (key is None)  # the live row, in clear
        [claim] = await ledger.claim_stranded(owner="w", lease_seconds=5, limit=5)
        await ledger.transition(
            P, "live", owner="w", token=claim.record.lease_token,
            state=LedgerState.SUCCEEDED, lease_seconds=5,
        )  # fmt: skip
    assert sqlite_hits(path, CARD) == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT
    conn.close()


async def test_postgres_upgrade_moves_card_numbers_out_of_the_parameters(schema: str) -> None:
    key = new_encryption_key()
    params = {"amount": "1.00", "pan": CARD}
    rows = V2_CARD_ROWS.format(
        table=_pg_table(schema), digest=params_hash(params), params=CARD_PARAMS
    )
    await _v1_postgres(schema, rows)
    async with PostgresLedger(PG_DSN, schema=schema, encryption_key=key) as ledger:
        live, done = await ledger.get(P, "live"), await ledger.get(P, "done")
        assert live is not None and live.params["pan"] == CARD
        assert live.untrusted is None  # signed by the upgrade (with a key)
        assert done is not None and done.params["pan"] == "427600******5673"
        assert ledger.params_match(done, params)
        assert live.params_hash == ledger.params_hash(params)
    assert await postgres_hits(schema, CARD) == []


# Version 3 let one key have a row under each provider: a key paid twice, perhaps.
SHARED_ROWS = (
    "INSERT INTO {table} (provider, key, params_hash, params, state, attempts, created_at, "
    "updated_at) VALUES ('intellectmoney', 'both', '{digest}', '{{}}', 'succeeded', 1, 1.0, "
    "1.0), ('enot', 'both', '{digest}', '{{}}', 'pending', 0, 1.0, 1.0), "
    "('intellectmoney', 'moved', '{digest}', '{{}}', 'failed', 1, 1.0, 1.0), "
    "('enot', 'moved', '{digest}', '{{}}', 'processing', 1, 1.0, 1.0)"
)


def v3_sqlite_with_shared_keys(path: Path) -> None:
    """A version 3 file holding keys under both providers (``SHARED_ROWS``)."""
    _v1_sqlite(path, [])
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE payouts ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE payouts ADD COLUMN recipient TEXT")
    conn.execute(SHARED_ROWS.format(table="payouts", digest=HASH))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    path.chmod(0o600)


async def test_sqlite_upgrade_reports_a_key_held_under_two_providers(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    v3_sqlite_with_shared_keys(path)
    async with SQLiteLedger(path) as ledger:  # the upgrade does not fail on it
        assert await ledger.shared_keys() == ["both"]
        await _one_live_row_per_key_from_now_on(ledger)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT
    conn.close()


async def v1_postgres_with_shared_keys(schema: str) -> None:
    """A version-1 PostgreSQL table in ``schema`` holding four rows, one key under both
    providers."""
    await _v1_postgres(schema, SHARED_ROWS.format(table=_pg_table(schema), digest=HASH))


async def test_postgres_upgrade_reports_a_key_held_under_two_providers(schema: str) -> None:
    await v1_postgres_with_shared_keys(schema)
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        assert await ledger.shared_keys() == ["both"]
        await _one_live_row_per_key_from_now_on(ledger)


async def _one_live_row_per_key_from_now_on(ledger: SQLiteLedger | PostgresLedger) -> None:
    again = await ledger.begin(P, "moved", HASH, PARAMS, owner="w", lease_seconds=5)
    assert not again.claimed and again.record.state is LedgerState.FAILED
    assert (await ledger.begin("enot", "new", HASH, PARAMS, owner="w", lease_seconds=5)).created
    with pytest.raises(IdempotencyConflictError, match="through enot"):
        await ledger.begin(P, "new", HASH, PARAMS, owner="w", lease_seconds=5)


async def test_an_upgraded_ledger_gets_an_identity_counting_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    v3_sqlite_with_shared_keys(path)  # four rows
    async with SQLiteLedger(path) as ledger:
        identity = await ledger.identity()
        assert identity.mark == 4
        await ledger.begin("enot", "new", HASH, PARAMS, owner="w", lease_seconds=5)
        assert await ledger.identity() == LedgerIdentity(identity.ledger_id, 5)
    async with SQLiteLedger(path) as ledger:  # kept in the file
        assert (await ledger.identity()).ledger_id == identity.ledger_id
    async with SQLiteLedger(tmp_path / "other.db") as ledger:  # another ledger
        assert (await ledger.identity()).ledger_id != identity.ledger_id


async def test_postgres_upgrade_gives_an_identity_counting_its_rows(schema: str) -> None:
    await v1_postgres_with_shared_keys(schema)
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        identity = await ledger.identity()
        assert identity.mark == 4
        await ledger.begin("enot", "new", HASH, PARAMS, owner="w", lease_seconds=5)
        assert await ledger.identity() == LedgerIdentity(identity.ledger_id, 5)


@pytest.mark.parametrize(
    "make",
    [lambda path: _v1_sqlite(path, [("old", "o-old")]), v3_sqlite_with_shared_keys],
    ids=["version 1", "version 3 (no unique order_id index)"],
)
async def test_once_upgraded_a_file_opens_read_only(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    """Whatever an older file lacked, one read-write open makes it current: the commands
    that only look (read-only) can open it from then on."""
    path = tmp_path / "old.db"
    make(path)
    with pytest.raises(LedgerOutdatedError):
        await SQLiteLedger(path, read_only=True).open()
    async with SQLiteLedger(path):
        pass
    async with SQLiteLedger(path, read_only=True) as reader:
        assert len(await reader.records()) >= 1


# -- the unique index of operations ---------------------------------------------------


def _v1_sqlite_with_operations(path: Path, operations: dict[str, str]) -> None:
    """A version-1 file whose rows (key: operation id) name those operations."""
    _v1_sqlite(path, [(key, f"o-{key}") for key in operations])
    conn = sqlite3.connect(path)
    for key, operation_id in operations.items():
        conn.execute("UPDATE payouts SET operation_id = ? WHERE key = ?", (operation_id, key))
    conn.commit()
    conn.close()


async def test_sqlite_upgrade_gives_each_operation_one_row(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_sqlite_with_operations(path, {"a": "op-a", "b": "op-b"})
    async with SQLiteLedger(path) as ledger:
        [claim] = [c for c in await ledger.claim_stranded(owner="w", lease_seconds=5, limit=5)
                   if c.record.key == "b"]  # fmt: skip
        with pytest.raises(OperationTakenError, match="'a'"):
            await ledger.transition(
                "enot", "b", owner="w", token=claim.record.lease_token,
                state=LedgerState.PROCESSING, lease_seconds=5, operation_id="op-a",
            )  # fmt: skip


async def test_sqlite_refuses_to_upgrade_a_file_with_a_shared_operation(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_sqlite_with_operations(path, {"a": "op-1", "b": "op-1", "c": "op-2"})
    ledger = SQLiteLedger(path)
    with pytest.raises(ConfigurationError, match=r"several payouts \(enot: a, b\)"):
        await ledger.open()
    await ledger.aclose()


async def test_postgres_refuses_to_upgrade_a_table_with_a_shared_operation(schema: str) -> None:
    table = _pg_table(schema)
    await _v1_postgres(
        schema,
        *(V1_ROW.format(table=table, key=key, digest=HASH, order_id=key) for key in "ab"),
        f"UPDATE {table} SET operation_id = 'op-1'",
    )
    ledger = PostgresLedger(PG_DSN, schema=schema)
    with pytest.raises(ConfigurationError, match="several payouts"):
        await ledger.open()
    await ledger.aclose()


async def test_a_file_of_the_last_release_is_read_as_it_is_and_upgraded_by_a_writer(
    tmp_path: Path,
) -> None:
    """A file that lacks only the index of operations (as the last release left it):
    the commands that only look read it as it is; the first writer adds the index."""
    path = tmp_path / "ledger.db"
    async with SQLiteLedger(path) as ledger:
        await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX payouts_operation_id_unique")
    conn.commit()
    conn.close()
    async with SQLiteLedger(path, read_only=True) as reader:
        assert [r.key for r in await reader.records()] == ["k"]
    async with SQLiteLedger(path):
        pass
    conn = sqlite3.connect(path)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "payouts_operation_id_unique" in names


async def test_a_table_of_the_last_release_is_read_as_it_is_and_upgraded_by_a_writer(
    schema: str,
) -> None:
    async with PostgresLedger(PG_DSN, schema=schema) as ledger:
        await ledger.begin("enot", "k", HASH, PARAMS, owner="w", lease_seconds=5)
    index = f'"{schema}".payouts_operation_id_unique'
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"DROP INDEX {index}")
        async with PostgresLedger(PG_DSN, schema=schema, read_only=True) as reader:
            assert [r.key for r in await reader.records()] == ["k"]
        assert await conn.fetchval("SELECT to_regclass($1)", index) is None
        async with PostgresLedger(PG_DSN, schema=schema):
            pass
        assert await conn.fetchval("SELECT to_regclass($1)", index) is not None
    finally:
        await conn.close()
