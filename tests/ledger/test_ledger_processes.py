"""Real processes (``spawn``) sharing one durable ledger claim each row exactly once."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest

from payout_async.ledger import Ledger, LedgerState, PostgresLedger, SQLiteLedger, params_hash

from .support import DURABLE, PG_DSN, Backend

WORKERS = 3
ROWS = 240


def claim_everything(kind: str, where: str, owner: str, barrier: Any, results: Any) -> None:
    """A child process: claim stranded rows in small batches until none are left."""
    results.put((owner, asyncio.run(_claim_everything(kind, where, owner, barrier))))


async def _claim_everything(kind: str, where: str, owner: str, barrier: Any) -> list[str]:
    ledger: Ledger
    if kind == "sqlite":
        ledger = SQLiteLedger(where)
    else:
        ledger = PostgresLedger(PG_DSN, schema=where, max_connections=2)
    await ledger.open()
    barrier.wait(timeout=60)  # everybody starts claiming at once
    keys: list[str] = []
    try:
        while batch := await ledger.claim_stranded(owner=owner, lease_seconds=300, limit=4):
            keys += [claim.record.key for claim in batch]
            for claim in batch:  # do a little work on each, as resume() would
                record = claim.record
                await ledger.transition(
                    record.provider,
                    record.key,
                    owner=owner,
                    token=record.lease_token,
                    state=LedgerState.SUCCEEDED,
                    lease_seconds=300,
                    note=owner,
                )
    finally:
        await ledger.aclose()
    return keys


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
async def test_processes_claim_every_row_exactly_once(backend: Backend) -> None:
    ledger = await backend.new()
    digest = params_hash({"amount": "1.00"})
    for i in range(ROWS):
        await ledger.begin(
            "enot", f"k{i:03d}", digest, {"amount": "1.00"}, owner="crashed", lease_seconds=-1
        )
    where = str(backend.path) if backend.kind == "sqlite" else backend.schema

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    processes = [
        context.Process(
            target=claim_everything, args=(backend.kind, where, f"p{i}", barrier, results)
        )
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        got = dict(
            await asyncio.gather(*(asyncio.to_thread(results.get, timeout=60) for _ in processes))
        )
    finally:
        for process in processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)

    flat = [key for keys in got.values() for key in keys]
    assert len(flat) == ROWS  # no row twice
    assert set(flat) == {f"k{i:03d}" for i in range(ROWS)}  # none missed
    assert await ledger.counts() == {LedgerState.SUCCEEDED: ROWS}
    for owner, keys in got.items():
        for key in keys[:5]:
            steps = await ledger.history("enot", key)
            assert [step.note for step in steps] == ["intent recorded", owner]
