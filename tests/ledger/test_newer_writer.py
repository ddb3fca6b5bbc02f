"""A ledger a newer payout-async has written to is not written to by this one
(``LedgerTooNewError``, nothing written): rows written without what the newer version
records would be taken for altered by it, or trusted where it should not. Read-only,
it can still be looked at. SQLite keeps the format as ``user_version``, PostgreSQL in
its ``format`` row."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import LedgerTooNewError
from payout_async.ledger._rows import FORMAT
from payout_async.sandbox import Sandbox

from ..payouts.support import enot_client, enot_request, fast_config, payouts
from .support import DURABLE, PG_DSN, Backend, backend_of

PARAMS = {"service": "card", "wallet_to": "4111111111111111", "amount": "100.00"}


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for made in backend_of(request.param, tmp_path, Backend):
        yield made


async def _format(store: Backend) -> int:
    if store.kind == "sqlite":
        with sqlite3.connect(store.path) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn = await asyncpg.connect(PG_DSN)
    try:
        value = await conn.fetchval(
            f"SELECT value FROM \"{store.schema}\".payout_ledger WHERE name = 'format'"
        )
        return int(value)
    finally:
        await conn.close()


async def _written_by_a_newer_version(store: Backend) -> None:
    newer = FORMAT + 1
    if store.kind == "sqlite":
        with sqlite3.connect(store.path) as conn:
            conn.execute(f"PRAGMA user_version = {newer}")
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(
            f"UPDATE \"{store.schema}\".payout_ledger SET value = $1 WHERE name = 'format'",
            str(newer),
        )
    finally:
        await conn.close()


async def test_a_ledger_records_the_format_it_is_written_in(store: Backend) -> None:
    async with store.ledger():
        pass
    assert await _format(store) == FORMAT


async def test_a_ledger_a_newer_version_wrote_is_refused_for_writing(store: Backend) -> None:
    async with store.ledger() as ledger:
        await ledger.begin(
            "enot", "k", ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=30,
            order_id="o-k",
        )  # fmt: skip
    await _written_by_a_newer_version(store)

    with pytest.raises(LedgerTooNewError, match=f"ledger format {FORMAT + 1}") as refused:
        async with store.ledger():
            pass
    assert "upgrade payout-async" in str(refused.value)
    async with store.ledger(read_only=True) as reader:
        record = await reader.get("enot", "k")
    assert record is not None
    assert await _format(store) == FORMAT + 1  # nothing written


async def test_a_batch_on_such_a_ledger_is_refused_before_any_payout(store: Backend) -> None:
    """``pay_many`` says so once, before any payout (every one would fail alike), and
    nothing is recorded or sent."""
    async with store.ledger():
        pass
    await _written_by_a_newer_version(store)
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as client:
        ledger = store.ledger()
        try:
            batch = payouts(client, ledger).pay_many([("a", enot_request()), ("b", enot_request())])
            with pytest.raises(LedgerTooNewError):
                await anext(batch)
        finally:
            await ledger.aclose()
        assert sandbox.stats().requests == {}
    async with store.ledger(read_only=True) as reader:
        assert await reader.records() == []
