"""``enqueue``, ``worker`` and ``status --watch`` on an SQLite ledger, as processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.ledger import LedgerState, SQLiteLedger, new_encryption_key
from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import (
    CARD,
    COMMAND,
    assert_paid_once,
    calls,
    cli,
    credentials,
    good_rows,
    write_csv,
)

FAST = [
    "--request-timeout", "1", "--lease-seconds", "5", "--grace", "1.5", "--execute-settle", "1",
    # Workers log at INFO by default; these pipes are read only at the end.
    "--log-level", "WARNING",
]  # fmt: skip


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``payout-async ARGS`` in the background (stdout and stderr piped)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")}
    return await asyncio.create_subprocess_exec(
        COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**base, "COLUMNS": "80", **env},
    )  # fmt: skip


async def line_with(stream: asyncio.StreamReader | None, text: str) -> str:
    """Read ``stream`` up to the first line holding ``text``."""
    assert stream is not None
    while line := (await asyncio.wait_for(stream.readline(), 60)).decode():
        if text in line:
            return line
    raise AssertionError(f"{text!r} never came")


async def states(db: Path) -> dict[LedgerState, int]:
    async with SQLiteLedger(db) as ledger:
        return await ledger.counts()


async def test_enqueue_records_once_and_reports_counts(sandbox: Sandbox, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(10))
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    run = await cli("enqueue", str(path), "--ledger", ledger, state=tmp_path)
    assert run.code == 0, run
    assert "10 row(s): 10 new, 0 already there, 0 conflict(s)" in run.out
    assert "creating a new ledger" in run.err
    assert await states(db) == {LedgerState.PENDING: 10}
    assert calls(sandbox) == 0  # nothing sent, not even a read

    run = await cli("enqueue", str(path), "--ledger", ledger, "--json", state=tmp_path)
    assert run.code == 0, run
    report = json.loads(run.out)
    assert (report["command"], report["counts"]) == (
        "enqueue",
        {"new": 0, "again": 0, "existing": 10, "conflict": 0},
    )

    # A key the ledger holds with other parameters is a bad row, as in batch: nothing
    # of the file is recorded.
    rows = good_rows(12)
    rows[3]["amount"] = "99.00"
    changed = write_csv(tmp_path / "changed.csv", rows)
    run = await cli("enqueue", str(changed), "--ledger", ledger, state=tmp_path)
    assert run.code == 2, run
    assert "line 5: key: 'b-3' is already in the ledger with other parameters" in run.err
    assert await states(db) == {LedgerState.PENDING: 10}

    bad = write_csv(tmp_path / "bad.csv", [{**good_rows(1)[0], "amount": "1e3"}])
    run = await cli("enqueue", str(bad), "--ledger", ledger, state=tmp_path)
    assert run.code == 2 and "line 2: amount" in run.err, run


async def test_a_worker_pays_the_queue_and_stops_cleanly_on_sigterm(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    count = 24
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    path = write_csv(tmp_path / "batch.csv", good_rows(count))
    key = {"PAYOUT_ASYNC_LEDGER_KEY": new_encryption_key()}
    env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path), **key}
    run = await cli("enqueue", str(path), "--ledger", ledger, env=key, state=tmp_path)
    assert run.code == 0, run
    # Recorded as begin() records: the card number sealed with the key, masked elsewhere.
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT params, recipient FROM payouts").fetchall()
    assert len(stored) == count
    for params, recipient in stored:
        assert CARD not in params and recipient.startswith("enc:v1:")
    worker = await spawn("worker", "--ledger", ledger, "--concurrency", "4", *FAST, env=env)
    await line_with(worker.stderr, "SIGTERM or Ctrl-C stops it cleanly")
    for _ in range(3000):
        if await states(db) == {LedgerState.SUCCEEDED: count}:
            break
        await asyncio.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, err.decode()[-3000:]
    assert f"drove {count} payout(s): succeeded {count}" in out.decode()
    assert "Traceback" not in err.decode()
    assert_paid_once(sandbox, [f"b-{n}" for n in range(count)])
    assert await states(db) == {LedgerState.SUCCEEDED: count}


async def test_status_shows_the_workers_and_watch_refreshes(tmp_path: Path) -> None:
    slow = fast_config(im_in_process_after=30, im_final_after=60, enot_final_after=60)
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    async with Sandbox(config=slow) as sandbox:
        env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
        path = write_csv(tmp_path / "batch.csv", good_rows(6))
        run = await cli("enqueue", str(path), "--ledger", ledger, state=tmp_path)
        assert run.code == 0, run
        worker = await spawn("worker", "--ledger", ledger, *FAST, env=env)
        started = await line_with(worker.stderr, "SIGTERM or Ctrl-C stops it cleanly")
        owner = started.split()[1].rstrip(":")
        for _ in range(3000):  # every payout sent, and now waiting on the provider
            if await states(db) == {LedgerState.PROCESSING: 6}:
                break
            await asyncio.sleep(0.02)

        run = await cli("status", "--ledger", ledger, "--json")
        assert run.code == 0, run
        [view] = json.loads(run.out)["workers"]
        assert (view["owner"], view["rows"], view["ended"]) == (owner, 6, False)
        run = await cli("status", "--ledger", ledger)
        assert "holding payouts now: the worker pid " in run.out, run  # named by its command
        assert view["command"] == "worker" and view["process"] == owner.rsplit(":", 1)[0]
        assert owner in "".join(run.out.split()), run  # the table may wrap a long owner

        watching = await spawn("status", "--ledger", ledger, "--watch", "--interval", "0.2",
                               env={})  # fmt: skip
        first = await line_with(watching.stdout, "payouts")
        assert "6 payouts, 0 succeeded" in first and "6 in flight (1 worker(s))" in first
        await line_with(watching.stdout, "ended/s")  # a second refresh, with a rate
        watching.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(watching.communicate(), 30)
        assert watching.returncode == 0, err.decode()

        worker.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == 0, err.decode()[-3000:]
        assert "gave 6 unfinished payout(s) back" in out.decode()
        async with SQLiteLedger(db) as book:
            assert await book.lease_holders() == []
            assert await book.counts() == {LedgerState.PROCESSING: 6}
        assert sandbox.duplicates() == []


async def test_worker_refuses_a_ledger_that_does_not_exist(tmp_path: Path) -> None:
    run = await cli("worker", "--ledger", f"sqlite:///{tmp_path / 'none.db'}")
    assert run.code == 2 and "no ledger at" in run.err, run
