"""Provider pauses (``ledger._pauses``): one record per provider, shared by every
instance over the same store, kept by SQLite from schema version 7 on (a version-6
file is upgraded) and created by PostgreSQL when missing; and the rows refused for
want of money queued again once each (``payouts._funds``)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import Ledger, LedgerState, PostgresLedger, SQLiteLedger
from payout_async.payouts._funds import requeue_refused_for_funds
from payout_async.payouts._pause_gate import PauseGate, resume_provider
from payout_async.payouts._worker import _StoppingLedger

from .support import PG_DSN, Backend, drop_schema, require_postgres

PARAMS = {"amount": "10.00", "wallet_to": "4111111111111111", "service": "card"}


async def test_a_pause_is_shared_and_the_first_one_kept(backend: Backend) -> None:
    a, b = await backend.new(), await backend.new()
    assert await a.pauses() == [] and await b.pause_of("enot") is None
    first, made = await a.pause_provider("enot", reason="no money\nat all", by="w1")
    assert made and first.reason == "no money at all"  # one line
    again, made = await b.pause_provider("enot", reason="other", by="w2")
    assert not made and again == first  # the first pause stands
    await b.pause_provider("intellectmoney", reason="by hand", by="operator")
    assert [p.provider for p in await a.pauses()] == ["enot", "intellectmoney"]
    assert await a.pause_of("enot") == first
    assert await b.lift_pause("enot") == first
    assert await a.pause_of("enot") is None and await a.lift_pause("enot") is None
    assert [p.provider for p in await b.pauses()] == ["intellectmoney"]


async def test_a_pause_reason_is_kept_as_any_text_the_ledger_keeps(backend: Backend) -> None:
    """Scrubbed of card numbers and on one line of at most 500 characters, whoever
    writes it (a worker quoting a provider, an operator's ``--reason``)."""
    ledger = await backend.new()
    reason = "refused card 4111 1111 1111 1111:\n" + "no money " * 100
    pause, _ = await ledger.pause_provider("enot", reason=reason, by="operator")
    [kept] = await ledger.pauses()
    assert kept == pause
    assert "4111 1111 1111 1111" not in kept.reason and "\n" not in kept.reason
    assert kept.reason.startswith("refused card 4111 11** **** 1111: no money")
    assert len(kept.reason) <= 500


async def _refused(ledger: Ledger, key: str, reason: str, status: str | None = None) -> None:
    claim = await ledger.begin(
        "enot", key, ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=60,
        order_id=key,
    )  # fmt: skip
    await ledger.transition(
        "enot", key, owner="w", token=claim.record.lease_token, state=LedgerState.REFUSED,
        lease_seconds=60, release=True, reason=reason, provider_status=status,
    )  # fmt: skip


async def test_rows_refused_for_want_of_money_are_queued_again_once(backend: Backend) -> None:
    ledger = await backend.new()
    await _refused(ledger, "poor-1", "create refused: HTTP 403: Недостаточно средств на балансе.")
    await _refused(ledger, "poor-2", "create refused: HTTP 403: Insufficient funds")
    await _refused(ledger, "wrong", "create refused: HTTP 403: Сумма вывода больше доступной")
    await ledger.pause_provider("enot", reason="no money", by="w")
    other = await backend.new()
    results = await asyncio.gather(*(requeue_refused_for_funds(x, "enot") for x in (ledger, other)))
    assert sum(results) == 2  # each row once, whichever instance queued it
    states = {k: (await ledger.get("enot", k)) for k in ("poor-1", "poor-2", "wrong")}
    assert {k: r.state for k, r in states.items() if r} == {
        "poor-1": LedgerState.PENDING, "poor-2": LedgerState.PENDING,
        "wrong": LedgerState.REFUSED,  # refused for another reason: left for the operator
    }  # fmt: skip
    lifted, requeued = await resume_provider(other, "enot")
    assert lifted is not None and requeued == 0 and await ledger.pauses() == []


async def test_a_paused_provider_gets_no_money_moving_step(backend: Backend) -> None:
    """Before each money-moving request a worker's drive reads the pause afresh: one
    recorded by another worker since stops it, with nothing written."""
    ledger, elsewhere = await backend.new(), await backend.new()
    claim = await ledger.begin(
        "enot", "k", ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=60
    )
    view = _StoppingLedger(ledger, PauseGate(ledger, "enot", "w"))
    await elsewhere.pause_provider("enot", reason="no money", by="other worker")
    with pytest.raises(asyncio.CancelledError):
        await view.transition(
            "enot", "k", owner="w", token=claim.record.lease_token, state=LedgerState.SENDING,
            lease_seconds=60, add_attempt=True,
        )  # fmt: skip
    record = await ledger.get("enot", "k")
    assert record is not None and (record.state, record.attempts) == (LedgerState.PENDING, 0)
    await elsewhere.lift_pause("enot")
    moved = await view.transition(
        "enot", "k", owner="w", token=claim.record.lease_token, state=LedgerState.SENDING,
        lease_seconds=60, add_attempt=True,
    )  # fmt: skip
    assert (moved.state, moved.attempts) == (LedgerState.SENDING, 1)


async def test_sqlite_upgrades_a_version_6_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path) as ledger:
        await _refused(ledger, "old", "create refused: HTTP 403: Insufficient funds")
    with sqlite3.connect(path) as conn:  # what version 6 wrote: no pause table
        conn.execute("DROP TABLE payout_pauses")
        conn.execute("PRAGMA user_version = 6")
    conn.close()
    async with SQLiteLedger(path) as ledger:
        made = await ledger.pause_provider("enot", reason="no money", by="w")
        assert made[1] and [p.provider for p in await ledger.pauses()] == ["enot"]
        record = await ledger.get("enot", "old")
        assert record is not None and record.state is LedgerState.REFUSED
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
    conn.close()
    async with SQLiteLedger(path, read_only=True) as ledger:  # current: no write needed
        assert [p.provider for p in await ledger.pauses()] == ["enot"]


@pytest.mark.postgres
async def test_postgres_creates_the_pause_table_when_missing() -> None:
    require_postgres()
    schema = f"pauses_upgrade_{uuid.uuid4().hex[:10]}"
    await drop_schema(schema)
    try:
        async with PostgresLedger(PG_DSN, schema=schema) as ledger:
            await _refused(ledger, "old", "create refused: HTTP 403: Insufficient funds")
        conn = await asyncpg.connect(PG_DSN)
        try:  # a table an older version made: no pauses
            await conn.execute(f'DROP TABLE "{schema}"."payout_pauses"')
        finally:
            await conn.close()
        async with PostgresLedger(PG_DSN, schema=schema) as ledger:
            assert await ledger.pauses() == []
            await ledger.pause_provider("intellectmoney", reason="NotEnoughMoney", by="w")
            assert [p.by for p in await ledger.pauses()] == ["w"]
            record = await ledger.get("enot", "old")
            assert record is not None and record.state is LedgerState.REFUSED
    finally:
        await drop_schema(schema)
