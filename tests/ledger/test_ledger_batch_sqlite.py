"""SQLiteLedger's group commit (``ledger._sqlite_batch``): the writes queued together
share one transaction, and yet each is atomic on its own -- a write that fails (a
broken constraint, a lost lease, a conflict) leaves no row change and no history row,
and its neighbours land with theirs -- while the history of the batch is written in
the order of its writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from payout_async import IdempotencyConflictError
from payout_async.ledger import Claim, LeaseLostError, LedgerState, SQLiteLedger
from payout_async.ledger._sqlite_batch import HistoryRow, Op, commit_batch

PROVIDER = "enot"
SENDING = LedgerState.SENDING


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db") as opened:
        yield opened


async def begin(ledger: SQLiteLedger, key: str, *, order_id: str | None = None) -> Claim:
    params = {"amount": "1.00", "n": key}
    return await ledger.begin(
        PROVIDER,
        key,
        ledger.params_hash(params),
        params,
        owner="w",
        lease_seconds=30,
        order_id=order_id,
    )


async def move(ledger: SQLiteLedger, key: str, token: int, **changes: Any) -> Any:
    return await ledger.transition(
        PROVIDER, key, owner="w", token=token, state=SENDING, lease_seconds=30, **changes
    )


async def notes(ledger: SQLiteLedger, key: str) -> list[str | None]:
    return [t.note for t in await ledger.history(PROVIDER, key)]


async def test_a_broken_constraint_is_only_its_writers_error(ledger: SQLiteLedger) -> None:
    tokens = {
        key: (await begin(ledger, key, order_id=f"o-{key}")).record.lease_token for key in "abc"
    }
    # Queued in one go: one transaction writes them.
    results = await asyncio.gather(
        move(ledger, "a", tokens["a"], order_id="o-new", note="a moved"),
        move(ledger, "b", tokens["b"], order_id="o-new", note="b moved"),  # taken by a
        move(ledger, "c", tokens["c"], note="c moved"),
        return_exceptions=True,
    )
    assert results[0].order_id == "o-new" and results[0].state is SENDING
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2].state is SENDING
    row = await ledger.get(PROVIDER, "b")
    assert row is not None and (row.state, row.order_id) == (LedgerState.PENDING, "o-b")
    assert await notes(ledger, "a") == ["intent recorded", "a moved"]
    assert await notes(ledger, "b") == ["intent recorded"]  # no trace of the failed move
    assert await notes(ledger, "c") == ["intent recorded", "c moved"]


async def test_lost_leases_and_conflicts_leave_no_trace_beside_writes_that_land(
    ledger: SQLiteLedger,
) -> None:
    held = await begin(ledger, "held", order_id="o-held")
    await begin(ledger, "lost")
    results = await asyncio.gather(
        begin(ledger, "new-1", order_id="o-1"),
        begin(ledger, "thief", order_id="o-held"),  # another key's order_id
        move(ledger, "lost", 99),  # not its token
        move(ledger, "held", held.record.lease_token, note="moved"),
        begin(ledger, "new-2", order_id="o-2"),
        return_exceptions=True,
    )
    new_1, thief, lost, moved, new_2 = results
    assert isinstance(new_1, Claim) and new_1.created and new_1.record.order_id == "o-1"
    assert isinstance(thief, IdempotencyConflictError) and thief.order_id == "o-held"
    assert isinstance(lost, LeaseLostError)
    assert moved.state is SENDING
    assert isinstance(new_2, Claim) and new_2.created
    assert await ledger.get(PROVIDER, "thief") is None
    assert await ledger.history(PROVIDER, "thief") == []
    assert await notes(ledger, "lost") == ["intent recorded"]
    assert await notes(ledger, "held") == ["intent recorded", "moved"]
    identity = await ledger.identity()
    # Rows begun (held, lost, new-1, new-2) and one change of state (held).
    assert identity.mark == 5


async def test_a_batchs_history_keeps_the_order_of_its_writes(ledger: SQLiteLedger) -> None:
    keys = [f"k{n:02d}" for n in range(30)]
    claims = await asyncio.gather(*(begin(ledger, key) for key in keys))
    await asyncio.gather(
        *(
            move(ledger, key, claim.record.lease_token, note=f"{key} moved")
            for key, claim in zip(keys, claims, strict=True)
        )
    )
    db = sqlite3.connect(ledger.path)
    try:
        rows = db.execute("SELECT key, note FROM payout_transitions ORDER BY id").fetchall()
    finally:
        db.close()
    assert rows == [(key, "intent recorded") for key in keys] + [
        (key, f"{key} moved") for key in keys
    ]


async def test_a_write_that_fails_takes_its_history_rows_back(ledger: SQLiteLedger) -> None:
    await begin(ledger, "a")

    def row(note: str) -> HistoryRow:
        return HistoryRow(PROVIDER, "a", "pending", "pending", 1.0, None, note)

    def fails(conn: sqlite3.Connection, history: list[HistoryRow]) -> None:
        conn.execute("UPDATE payouts SET reason = 'half-done' WHERE key = 'a'")
        history.append(row("from a write that failed"))
        raise ValueError("failed after writing")

    def lands(conn: sqlite3.Connection, history: list[HistoryRow]) -> str:
        history.append(row("from a write that landed"))
        return "landed"

    conn = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        outcome = commit_batch(conn, [Op(fails), Op(lands)], 1.0, 1.0)
    finally:
        conn.close()
    assert outcome.error is None
    [(failed, error), (landed, value)] = outcome.outcomes
    assert not failed and isinstance(error, ValueError)
    assert landed and value == "landed"
    record = await ledger.get(PROVIDER, "a")
    assert record is not None and record.reason is None
    assert await notes(ledger, "a") == ["intent recorded", "from a write that landed"]
