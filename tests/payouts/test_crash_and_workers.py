"""Processes killed mid-flight, and several processes sharing one PostgreSQL ledger:
every payout succeeds exactly once in the end, none twice, none missing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import LedgerState, ledger_from_url
from payout_async.ledger._postgres import drop_statement
from payout_async.sandbox import Sandbox
from tests.ledger.support import require_postgres

from .support import books, fast_config

WORKER = Path(__file__).with_name("worker.py")


async def start_worker(
    ledger_url: str, sandbox: Sandbox, count: int, seed: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        ledger_url,
        sandbox.intellectmoney_url,
        sandbox.enot_url,
        str(count),
        str(seed),
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process) -> None:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-3000:]


async def check_exactly_once(ledger_url: str, sandbox: Sandbox, count: int) -> None:
    ledger = ledger_from_url(ledger_url)
    await ledger.open()
    try:
        executed, created = books(sandbox.state)
        assert sandbox.duplicates() == []
        for n in range(count):
            key = f"p-{n}"
            provider = "intellectmoney" if n % 2 == 0 else "enot"
            record = await ledger.get(provider, key)
            assert record is not None, f"{key} is missing from the ledger"
            paid = executed[key] if provider == "intellectmoney" else created[key]
            assert paid <= 1, f"{key} paid {paid} times"
            assert record.state is LedgerState.SUCCEEDED, (key, record.state, record.reason)
            assert paid == 1, f"{key} succeeded in the ledger but was not paid"
        ours = {f"p-{n}" for n in range(count)}
        assert set(executed) | set(created) <= ours
    finally:
        await ledger.aclose()


async def first_request_after(sandbox: Sandbox, seen: int) -> None:
    """Return once the sandbox has answered more than ``seen`` requests (60 s at most)."""
    for _ in range(3000):
        if sum(sandbox.faults.call_counts.values()) > seen:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the worker sent nothing within 60 s")


async def test_sigkill_ten_times_then_resume(tmp_path: Path) -> None:
    count = 500
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    rng = random.Random(2026)
    # Payouts settle slowly enough that no run can finish before it is killed.
    slow = fast_config(im_in_process_after=0.3, im_final_after=0.8, enot_final_after=0.8)
    async with Sandbox(config=slow) as sandbox:
        killed = 0
        for kill in range(10):
            process = await start_worker(ledger_url, sandbox, count, seed=kill)
            # Killed a moment after it starts paying, however long its start-up took.
            await first_request_after(sandbox, sum(sandbox.faults.call_counts.values()))
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            killed += await process.wait() == -signal.SIGKILL
        assert killed == 10, "every run should have been killed mid-flight"
        ledger = ledger_from_url(ledger_url)
        await ledger.open()
        stranded = await ledger.counts()
        await ledger.aclose()
        assert sum(stranded.values()) > 0
        # One more run, at once: the rows still leased to the killed processes are taken
        # over without waiting for their leases, and everything ends paid once.
        await finish(await start_worker(ledger_url, sandbox, count, seed=99))
        await check_exactly_once(ledger_url, sandbox, count)


@pytest.mark.postgres
async def test_four_workers_share_one_postgres_ledger() -> None:
    dsn = require_postgres()
    # 500 payouts: each worker has up to 50 in flight (25 per provider) over the same
    # rows in its own shuffled order, so the four contend for claims throughout.
    count = 500
    prefix = f"mw_{uuid.uuid4().hex[:10]}_"
    separator = "&" if "?" in dsn else "?"
    ledger_url = f"{dsn}{separator}table_prefix={prefix}"
    try:
        async with Sandbox(config=fast_config()) as sandbox:
            workers = [await start_worker(ledger_url, sandbox, count, seed=n) for n in range(4)]
            await asyncio.gather(*(finish(worker) for worker in workers))
            await check_exactly_once(ledger_url, sandbox, count)
            executed, created = books(sandbox.state)
            assert sum(executed.values()) + sum(created.values()) == count
            # Each IntellectMoney payout executed once. A create repeated by a worker that
            # took a row over before its first driver recorded the operation id leaves an
            # orphan that is never executed (harmless: it moves no money).
            operations = list(sandbox.state.intellectmoney)
            executed_ops = [op for op in operations if op.executions]
            assert len(executed_ops) == count // 2
            assert all(op.executions == 1 for op in executed_ops)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(drop_statement(prefix))
        finally:
            await conn.close()


def test_worker_script_is_runnable() -> None:
    assert WORKER.exists() and os.access(sys.executable, os.X_OK)
