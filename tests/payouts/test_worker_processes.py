"""``payout-async worker`` processes sharing one PostgreSQL ledger, against the sandbox:
every enqueued payout is paid exactly once however workers come and go -- added
mid-run, stopped with SIGTERM (their rows handed back at once), or killed (their rows
finished once their leases run out)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest

from payout_async.ledger import EnqueueOutcome, LedgerState, PostgresLedger
from payout_async.ledger._postgres import drop_statement
from payout_async.payouts import intent_for
from payout_async.sandbox import Sandbox
from tests.cli.support import COMMAND, credentials
from tests.ledger.support import require_postgres

from .support import enot_request, fast_config, im_request

pytestmark = pytest.mark.postgres

ELSEWHERE = Path(__file__).with_name("elsewhere.py")
# Short enough to keep lost answers cheap, long enough for a loaded two-core machine.
FAST = [
    "--request-timeout", "3", "--lease-seconds", "10", "--grace", "4", "--execute-settle", "2",
    # Workers log at INFO by default; these pipes are read only at the end.
    "--log-level", "WARNING",
]  # fmt: skip
FAST += ["--no-lookup-before-create"]  # one call fewer per Enot payout


@attrs.define
class Worker:
    """A running ``payout-async worker`` and the owner name it pays under."""

    process: asyncio.subprocess.Process
    owner: str = ""

    async def ready(self) -> None:
        """Wait for its start-up line (it is listening for work then)."""
        assert self.process.stderr is not None
        said = ""
        while line := (await asyncio.wait_for(self.process.stderr.readline(), 60)).decode():
            if "stops it cleanly" in line:
                self.owner = line.split()[1].rstrip(":")
                return
            said += line
        raise AssertionError(f"the worker never started: {said[-3000:]}")

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
        self.process.send_signal(how)
        out, err = await asyncio.wait_for(self.process.communicate(), 60)
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()


@attrs.define
class Queue:
    """A fresh PostgreSQL ledger (its own table prefix) and the sandbox's settings."""

    url: str
    dsn: str
    prefix: str
    env: dict[str, str]
    ledger: PostgresLedger
    started: list[asyncio.subprocess.Process] = attrs.field(factory=list)

    async def worker(self, *args: str, elsewhere: bool = False) -> Worker:
        command = [sys.executable, str(ELSEWHERE)] if elsewhere else [COMMAND]
        base = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")}
        process = await asyncio.create_subprocess_exec(
            *command, "worker", "--ledger", self.url, "--no-progress", *FAST, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**base, **self.env},
        )  # fmt: skip
        self.started.append(process)
        worker = Worker(process)
        await worker.ready()
        return worker

    async def enqueue_here(self, count: int, *, start: int = 0) -> None:
        """Payouts ``q-{start}`` .. ``q-{count - 1}`` recorded by this process
        (``Payouts.enqueue`` would do the same): IntellectMoney on even keys, Enot on
        odd ones."""
        for provider, parity in (("intellectmoney", 0), ("enot", 1)):
            keys = [f"q-{n}" for n in range(start + (start + parity) % 2, count, 2)]
            requests = [im_request(k) if parity == 0 else enot_request() for k in keys]
            intents = [intent_for(k, r) for k, r in zip(keys, requests, strict=True)]
            results = await self.ledger.enqueue(provider, intents)
            assert {r.outcome for r in results} == {EnqueueOutcome.NEW}

    async def until_released(self, owner: str) -> float:
        """When ``owner`` held no lease any more (monotonic)."""
        while True:
            if owner not in {h.owner for h in await self.ledger.lease_holders()}:
                return time.monotonic()
            await asyncio.sleep(0.02)

    async def succeeded(self) -> int:
        return (await self.ledger.counts()).get(LedgerState.SUCCEEDED, 0)

    async def until_succeeded(self, count: int, *, seconds: float = 100) -> None:
        for _ in range(int(seconds * 20)):
            if await self.succeeded() >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {await self.succeeded()} of {count} succeeded")

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql.replace("{p}", self.prefix), *args))
        finally:
            await conn.close()

    async def paid_by(self) -> dict[str, int]:
        """Payouts per owner of their final transition."""
        rows = await self.query(
            'SELECT owner, count(*) FROM "{p}payout_transitions" '
            "WHERE to_state = 'succeeded' GROUP BY owner"
        )
        return {row[0]: row[1] for row in rows}


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[tuple[Queue, Sandbox]]:
    dsn = require_postgres()
    prefix = f"wq_{uuid.uuid4().hex[:10]}_"
    url = f"{dsn}{'&' if '?' in dsn else '?'}table_prefix={prefix}"
    ledger = PostgresLedger(dsn, table_prefix=prefix, max_connections=2)
    await ledger.open()  # the tables: workers never create a ledger
    made: Queue | None = None
    try:
        async with Sandbox(config=fast_config()) as sandbox:
            env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
            made = Queue(url, dsn, prefix, env, ledger)
            yield made, sandbox
    finally:
        for process in made.started if made is not None else []:
            if process.returncode is None:  # a failed test left it running
                process.kill()
                await process.wait()
        await ledger.aclose()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(drop_statement(prefix))
        finally:
            await conn.close()


def assert_paid_exactly_once(sandbox: Sandbox, count: int) -> None:
    assert sandbox.duplicates() == []
    paid = sandbox.paid_per_payout()
    assert sorted(paid.values()) == [1] * count
    assert {key for _, key in paid} == {f"q-{n}" for n in range(count)}


async def test_workers_share_a_queue_and_a_stopped_one_hands_its_rows_back(
    queue: tuple[Queue, Sandbox],
) -> None:
    q, sandbox = queue
    count = 1000
    # Four workers, idle; the first holds its rows for two minutes, so that only a
    # hand-back can let the others finish them in time.
    first, *others = await asyncio.gather(
        q.worker("--concurrency", "24", "--lease-seconds", "120"),
        *(q.worker("--concurrency", "24") for _ in range(3)),
    )
    # Half the queue now, the rest once a fifth worker has joined the running ones: it
    # joins mid-run however slowly a loaded machine starts it (a queue long enough to
    # outlast its start-up cost thousands of payouts, and once still did not).
    await q.enqueue_here(count // 2)  # wakes them all
    await q.until_succeeded(count // 20)
    fifth = await q.worker("--concurrency", "24")  # joins mid-run
    assert await q.succeeded() < count * 3 // 4
    await q.enqueue_here(count, start=count // 2)

    await q.until_succeeded(count * 3 // 4)
    signalled = time.monotonic()
    watching = asyncio.ensure_future(q.until_released(first.owner))
    code, out, err = await first.stop(signal.SIGTERM)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    handed_back = int(out.split("gave ")[1].split()[0])
    assert handed_back > 0, out  # it stopped mid-run, with payouts in flight
    # Given back at once: the moment it has exited, it holds nothing.
    assert first.owner not in {h.owner for h in await q.ledger.lease_holders()}
    released = await watching - signalled
    print(
        f"\nSIGTERM: {handed_back} payouts handed back {released:.2f} s after the signal; "
        f"the process exited after {time.monotonic() - signalled:.2f} s"
    )

    await q.until_succeeded(count)
    for worker in (*others, fifth):
        code, _, err = await worker.stop(signal.SIGTERM)
        assert code == 0, err[-3000:]

    assert_paid_exactly_once(sandbox, count)
    assert await q.ledger.counts() == {LedgerState.SUCCEEDED: count}
    assert await q.ledger.lease_holders() == []
    shares = await q.paid_by()
    assert sum(shares.values()) == count
    for worker in (first, *others):
        assert shares.get(worker.owner, 0) >= count // 10, shares
    assert shares.get(fifth.owner, 0) > 0, shares
    # The rows the first worker gave back were finished by the others long before its
    # two-minute lease would have let them (times on the server's clock).
    late = await q.query(
        """
        WITH mine AS (SELECT key, max(at) AS last FROM "{p}payout_transitions"
                      WHERE owner = $1 GROUP BY key),
             done AS (SELECT key, owner, at FROM "{p}payout_transitions"
                      WHERE to_state = 'succeeded')
        SELECT count(*) FILTER (WHERE done.at >= mine.last + 120), count(*)
        FROM mine JOIN done USING (key) WHERE done.owner <> $1
        """,
        first.owner,
    )
    assert late[0][0] == 0 and late[0][1] > 0, late


async def test_a_killed_workers_rows_are_finished_once_its_leases_run_out(
    queue: tuple[Queue, Sandbox],
) -> None:
    q, sandbox = queue
    count = 300
    # The one to be killed "runs on another host": nobody here can tell it has died.
    # Both wait out a lost answer for 1 s + a tenth of the lease + 1.5 s (the killed
    # one's rows: its 5 s lease first), not 3 s + 1 s + 4 s.
    quick = ["--request-timeout", "1", "--grace", "1.5", "--execute-settle", "1"]
    doomed, survivor = await asyncio.gather(
        q.worker("--concurrency", "16", "--lease-seconds", "5", *quick, elsewhere=True),
        q.worker("--concurrency", "16", "--idle-poll", "1", "--lease-seconds", "5", *quick),
    )
    assert doomed.owner.startswith("elsewhere:")
    await q.enqueue_here(count)
    await q.until_succeeded(count // 4)
    code, _, _ = await doomed.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    stranded = await q.query(
        'SELECT key, lease_expires_at FROM "{p}payouts" WHERE lease_owner = $1 '
        "AND state NOT IN ('succeeded', 'failed', 'cancelled')",
        doomed.owner,
    )
    assert stranded  # it died holding payouts

    await q.until_succeeded(count)
    code, _, err = await survivor.stop(signal.SIGTERM)
    assert code == 0, err[-3000:]
    assert_paid_exactly_once(sandbox, count)
    # Each of its rows was taken over only once its lease had run out.
    taken = await q.query(
        'SELECT key, min(at) FROM "{p}payout_transitions" WHERE owner = $1 '
        "AND key = ANY($2::text[]) GROUP BY key",
        survivor.owner,
        [row["key"] for row in stranded],
    )
    expiry = {row["key"]: row["lease_expires_at"] for row in stranded}
    assert len(taken) == len(stranded)
    for key, first_step in taken:
        assert first_step >= expiry[key], (key, first_step, expiry[key])
