"""SQLiteLedger's transitions without a read first (``ledger._sqlite_held``): a held
row still as the ledger last left it is moved with one UPDATE, and a row written by
anything else since -- another connection, an edit outside payout-async, another
drive -- is read and decided as before: what the ledger remembers is never taken
for the row."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from payout_async.ledger import Claim, LeaseLostError, LedgerState, SQLiteLedger, new_encryption_key
from payout_async.ledger._rows import AT, COLUMNS
from payout_async.ledger._sqlite_held import HeldRows

PROVIDER = "intellectmoney"
PARAMS = {"amount": "1.00", "pan": "4111111111111111", "n": "x"}


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db") as opened:
        yield opened


async def begin(ledger: SQLiteLedger, key: str, **options: Any) -> Claim:
    return await ledger.begin(
        PROVIDER, key, ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=30, **options
    )


async def move(
    ledger: SQLiteLedger, key: str, token: int, state: LedgerState, **changes: Any
) -> Any:
    return await ledger.transition(
        PROVIDER, key, owner="w", token=token, state=state, lease_seconds=30, **changes
    )


def outside(ledger: SQLiteLedger, statement: str, *args: Any) -> None:
    """Write to the file as someone else (another connection, no key)."""
    conn = sqlite3.connect(ledger.path)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


async def statements_of(ledger: SQLiteLedger, write: Any) -> list[str]:
    """The statements ``ledger`` runs for the awaitable ``write`` (its own thread)."""
    ran: list[str] = []
    db = await ledger._connection()
    await db._execute(db._conn.set_trace_callback, ran.append)
    try:
        await write
    finally:
        await db._execute(db._conn.set_trace_callback, None)
    return ran


async def test_a_row_as_the_ledger_left_it_moves_with_one_update(ledger: SQLiteLedger) -> None:
    claim = await begin(ledger, "a")
    token = claim.record.lease_token
    created = LedgerState.CREATED
    ran = await statements_of(ledger, move(ledger, "a", token, created, operation_id="op-1"))
    # (SQLite's trace repeats a statement for each trigger it fires.)
    assert [sql for sql in ran if sql.startswith("SELECT")] == [], ran
    assert len({sql for sql in ran if sql.startswith("UPDATE")}) == 1, ran
    record = await ledger.get(PROVIDER, "a")
    assert record is not None and record.state is created and record.operation_id == "op-1"
    history = await ledger.history(PROVIDER, "a")
    assert [(t.from_state, t.to_state) for t in history] == [
        (None, LedgerState.PENDING),
        (LedgerState.PENDING, created),
    ]


async def test_a_row_written_outside_since_is_read_and_reported_as_it_is(
    ledger: SQLiteLedger,
) -> None:
    claim = await begin(ledger, "a")
    token = claim.record.lease_token
    # Someone else moves the row on (its lease untouched) and notes a status.
    outside(
        ledger,
        "UPDATE payouts SET state = 'created', operation_id = 'op-9', "
        "provider_status = 'edited outside' WHERE key = 'a'",
    )
    record = await move(ledger, "a", token, LedgerState.EXECUTING, add_attempt=True)
    # The record is the row in the file, moved: not the row the ledger remembered.
    assert record.operation_id == "op-9"
    assert record.provider_status == "edited outside"
    history = await ledger.history(PROVIDER, "a")
    assert (history[-1].from_state, history[-1].to_state) == (
        LedgerState.CREATED,
        LedgerState.EXECUTING,
    )
    # ... and from then on, the row as left by that move moves with one statement.
    ran = await statements_of(ledger, move(ledger, "a", token, LedgerState.PROCESSING))
    assert [sql for sql in ran if sql.startswith("SELECT")] == []


async def test_a_row_another_drive_took_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with SQLiteLedger(path) as first, SQLiteLedger(path) as second:
        claim = await first.begin(
            PROVIDER, "a", first.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=0.01
        )
        claims = await second.claim_stranded(
            owner="other", lease_seconds=30, limit=10, provider=PROVIDER, dead_owners=("w",)
        )
        assert [c.record.key for c in claims] == ["a"]
        with pytest.raises(LeaseLostError):
            await move(first, "a", claim.record.lease_token, LedgerState.CREATED)
        row = await second.get(PROVIDER, "a")
        assert row is not None and row.state is LedgerState.PENDING
        assert row.lease_owner == "other"


async def test_a_keyed_row_altered_while_held_is_untrusted_at_its_next_move(
    tmp_path: Path,
) -> None:
    async with SQLiteLedger(tmp_path / "keyed.db", encryption_key=new_encryption_key()) as ledger:
        claim = await begin(ledger, "a")
        outside(ledger, "UPDATE payouts SET operation_id = 'op-attacker' WHERE key = 'a'")
        record = await move(ledger, "a", claim.record.lease_token, LedgerState.CREATED)
        assert record.untrusted is not None


def test_held_rows_keep_the_newest_leased_rows_only() -> None:
    def row(key: str, owner: str | None, token: int = 1) -> tuple[Any, ...]:
        values: list[Any] = [None] * len(COLUMNS)
        values[AT["provider"]], values[AT["key"]] = PROVIDER, key
        values[AT["lease_owner"]], values[AT["lease_token"]] = owner, token
        return tuple(values)

    rows = HeldRows(size=2)
    for key in ("a", "b", "c"):
        rows.remember(row(key, "w"))
    assert rows.held(PROVIDER, "a", "w", 1) is None  # the oldest went
    assert rows.held(PROVIDER, "b", "w", 1) == row("b", "w")
    assert rows.held(PROVIDER, "b", "w", 2) is None  # another claim's token
    assert rows.held(PROVIDER, "b", "other", 1) is None
    rows.remember(row("b", None))  # its lease ended with that write
    assert rows.held(PROVIDER, "b", "w", 1) is None
    rows.forget(PROVIDER, "c")
    assert rows.held(PROVIDER, "c", "w", 1) is None
