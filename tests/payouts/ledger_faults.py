"""A batch paid while the ledger misbehaves, then recovered and checked against the
sandbox's books (shared by tests/payouts/test_ledger_faults.py and, for the faults that
must run in a process of their own, run as a script).

``python -m tests.payouts.ledger_faults FAULT [--count N] [--concurrency C] [--timeout S]
[--hold S]`` runs one fault (``postgres-cut``, ``-refuse``, ``-stall``, ``-flap``,
``sqlite-disk-full``, ``sqlite-lock``) and prints its ``Report`` as JSON; the SQLite ones
run that way in the test suite too (``RLIMIT_FSIZE`` limits the whole process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from payout_async import PayoutResult, PayoutStatus
from payout_async.ledger import Ledger, LedgerError, LedgerState, PostgresLedger, SQLiteLedger
from payout_async.sandbox import Sandbox
from tests.ledger.proxy import FaultyProxy
from tests.ledger.support import PG_DSN, drop_schema, require_postgres
from tests.payouts.support import (
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    books,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
)

Fault = Callable[[], Awaitable[None]]


@attrs.define
class Report:
    """What one faulty batch did: its results by status, the longest stretch in which
    ``pay_many`` yielded nothing, and what recovery took."""

    fault: str
    payouts: int
    first_pass: dict[str, int]
    longest_freeze: float
    batch_seconds: float
    not_started_without_row: int = 0
    attention_without_row: int = 0
    rerun: dict[str, int] = attrs.Factory(dict)
    recovery_passes: int = 0
    final_states: dict[str, int] = attrs.Factory(dict)

    def line(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True)


def pay_many_tasks() -> list[asyncio.Task[Any]]:
    """``pay_many``'s workers still alive (it names them)."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("pay_many") and not task.done()
    ]


async def _pay(
    flows: list[tuple[Any, list[tuple[str, Any]]]], concurrency: int
) -> tuple[list[PayoutResult], float]:
    """Every flow's batch at once: the results and the longest gap between them."""
    results: list[PayoutResult] = []
    last = time.monotonic()
    longest = 0.0

    async def drain(flow: Any, items: list[tuple[str, Any]]) -> None:
        nonlocal last, longest
        async for result in flow.pay_many(items, concurrency=concurrency):
            now = time.monotonic()
            longest, last = max(longest, now - last), now
            results.append(result)

    await asyncio.gather(*(drain(flow, items) for flow, items in flows if items))
    return results, max(longest, time.monotonic() - last)


async def settle(flows: list[Any], ledger: Ledger, *, passes: int = 12) -> int:
    """``resume()`` and ``reconcile()`` until every row is final (waiting out the
    leases of runs the fault interrupted, and trying a pass again whose ledger call
    failed: the ledger's bound is tight); the passes it took."""
    for done in range(1, passes + 1):
        for flow in flows:
            try:
                await flow.resume()
                await flow.reconcile()
            except LedgerError:  # a call past a tight bound on a loaded machine: next pass
                pass
        unfinished = [row for row in await ledger.records() if not row.state.is_final]
        if not unfinished:
            return done
        leases = [row.lease_expires_at for row in unfinished if row.lease_expires_at]
        await asyncio.sleep(max(0.05, min(leases, default=0.0) - time.time() + 0.05))
    raise AssertionError(f"rows still unfinished after {passes} passes: {unfinished}")


async def run(
    name: str,
    ledger: Ledger,
    fault: Fault,
    *,
    count: int = 20,
    concurrency: int = 8,
    recover_with: Ledger | None = None,
) -> Report:
    """Pay ``count`` IntellectMoney and ``count`` Enot payouts while ``fault`` runs,
    then re-run what did not start, resume, reconcile, and check the books: each
    payout paid exactly once and recorded as succeeded.

    ``recover_with`` is the same ledger opened without the fault's tight bound: the
    recovery after the fault is driven through it (by other ``Payouts``, as after a
    restart), so a loaded machine's slow answer there is not taken for the fault."""
    config = fast_config(duplicate_order_id="accept")
    async with (
        Sandbox(config=config) as sandbox,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as im,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        im_items = [(f"im-{n}", im_request(f"im-{n}")) for n in range(count)]
        enot_items = [(f"en-{n}", enot_request()) for n in range(count)]
        clients = [(im, im_items), (enot, enot_items)]
        flows = [(payouts(c, ledger, lease_seconds=SHORT_LEASE), items) for c, items in clients]

        started = time.monotonic()
        faulting = asyncio.create_task(fault())
        try:
            first, freeze = await _pay(flows, concurrency)
        finally:
            await faulting
        report = Report(
            fault=name,
            payouts=2 * count,
            first_pass=dict(Counter(result.status.value for result in first)),
            longest_freeze=round(freeze, 3),
            batch_seconds=round(time.monotonic() - started, 3),
        )
        assert pay_many_tasks() == [], "pay_many left workers running"
        assert len(first) == 2 * count
        for result in first:
            if await ledger.get(result.provider, result.key) is not None:
                continue
            if result.status is PayoutStatus.NOT_STARTED:
                report.not_started_without_row += 1
            else:
                report.attention_without_row += 1
        assert report.attention_without_row == 0, "a result claims a row the ledger lacks"

        if recover_with is not None:
            ledger = recover_with
            flows = [(payouts(c, ledger, lease_seconds=SHORT_LEASE), items) for c, items in clients]
        again = {result.key for result in first if result.status is PayoutStatus.NOT_STARTED}
        rerun_flows = [(flow, [(k, r) for k, r in items if k in again]) for flow, items in flows]
        rerun, _ = await _pay(rerun_flows, concurrency)
        report.rerun = dict(Counter(result.status.value for result in rerun))
        report.recovery_passes = await settle([flow for flow, _ in flows], ledger)

        rows = await ledger.records()
        report.final_states = dict(Counter(row.state.value for row in rows))
        executed, created = books(sandbox.state)
        assert sandbox.duplicates() == []
        for provider, items, paid in (
            ("intellectmoney", im_items, executed),
            ("enot", enot_items, created),
        ):
            for key, _ in items:
                row = await ledger.get(provider, key)
                assert row is not None, key
                assert row.state is LedgerState.SUCCEEDED, (key, row.state, row.reason)
                assert paid[key] == 1, f"{key} paid {paid[key]} times"
        return report


# -- PostgreSQL faults, through a proxy ------------------------------------------------


def cut(proxy: FaultyProxy, *, after: float = 0.15, hold: float = 0.3) -> Fault:
    """Every connection cut ``after`` seconds in, and again each ``after`` seconds for
    ``hold`` seconds."""

    async def fault() -> None:
        await asyncio.sleep(after)
        proxy.cut()
        for _ in range(round(hold / after)):
            await asyncio.sleep(after)
            proxy.cut()

    return fault


def refuse(proxy: FaultyProxy, *, after: float = 0.15, hold: float = 0.8) -> Fault:
    """The server down (connections cut, new ones refused) for ``hold`` seconds."""

    async def fault() -> None:
        await asyncio.sleep(after)
        await proxy.refuse()
        proxy.cut()
        await asyncio.sleep(hold)
        await proxy.accept()

    return fault


def stall(proxy: FaultyProxy, *, after: float = 0.15, hold: float = 2.0) -> Fault:
    """No byte moves either way for ``hold`` seconds."""

    async def fault() -> None:
        await asyncio.sleep(after)
        proxy.stall()
        await asyncio.sleep(hold)
        proxy.unstall()
        await proxy.quiet()  # what was sent into the stall lands before anything is checked

    return fault


def flap(proxy: FaultyProxy, *, after: float = 0.1, hold: float = 1.0) -> Fault:
    """0.1 s outages every 0.25 s for ``hold`` seconds."""

    async def fault() -> None:
        await asyncio.sleep(after)
        proxy.flap(up=0.15, down=0.1)
        await asyncio.sleep(hold)
        await proxy.steady()

    return fault


POSTGRES_FAULTS = {"cut": cut, "refuse": refuse, "stall": stall, "flap": flap}


# -- SQLite faults that need a process of their own -----------------------------------


def disk_full(path: Path, *, after: float = 0.15, hold: float = 0.6) -> Fault:
    """After ``after`` seconds no file of this process may grow (``RLIMIT_FSIZE`` just
    above the ledger's files' sizes), for ``hold`` seconds."""

    async def fault() -> None:
        await asyncio.sleep(after)
        sizes = [p.stat().st_size for p in path.parent.glob(path.name + "*")]
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 4096, hard))
        await asyncio.sleep(hold)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return fault


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
print("ready", flush=True)
sys.stdin.readline()
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


class LockHolder:
    """Another process that holds the ledger's write lock for ``hold`` seconds, from
    ``after`` seconds into the fault. ``start()`` it before the batch: a start-up that
    a loaded machine makes slow must not let the batch finish before the lock."""

    def __init__(self, path: Path, *, after: float = 0.15, hold: float = 1.5) -> None:
        self.path, self.after, self.hold = path, after, hold
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLD_LOCK,
            str(self.path),
            str(self.hold),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert await self.process.stdout.readline() == b"ready\n"

    async def __call__(self) -> None:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        await asyncio.sleep(self.after)
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        assert await process.stdout.readline() == b"locked\n"
        assert await process.wait() == 0


def locked_by_another_process(path: Path, *, after: float = 0.15, hold: float = 1.5) -> LockHolder:
    """After ``after`` seconds another process holds the ledger's write lock for
    ``hold`` seconds (``start()`` the holder first)."""
    return LockHolder(path, after=after, hold=hold)


@asynccontextmanager
async def sqlite_ledger(path: Path, busy_timeout: float) -> AsyncIterator[SQLiteLedger]:
    ledger = SQLiteLedger(path, busy_timeout=busy_timeout)
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.aclose()


async def _main(fault_name: str, options: argparse.Namespace) -> Report:
    size = {"count": options.count, "concurrency": options.concurrency}
    timing = {} if options.hold is None else {"hold": options.hold}
    if fault_name.startswith("postgres-"):
        require_postgres()
        schema = f"ledger_fault_{uuid.uuid4().hex[:12]}"
        async with FaultyProxy(PG_DSN) as proxy:
            ledger = PostgresLedger(
                proxy.dsn, schema=schema, command_timeout=options.timeout, max_connections=10
            )
            try:
                await ledger.open()
                fault = POSTGRES_FAULTS[fault_name.removeprefix("postgres-")](proxy, **timing)
                return await run(fault_name, ledger, fault, **size)
            finally:
                await ledger.aclose()
                await drop_schema(schema)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        faults = {"sqlite-disk-full": disk_full, "sqlite-lock": locked_by_another_process}
        async with sqlite_ledger(path, options.timeout) as ledger:
            fault = faults[fault_name](path, **timing)
            if isinstance(fault, LockHolder):
                await fault.start()
            return await run(fault_name, ledger, fault, **size)


FAULT_NAMES = [f"postgres-{name}" for name in POSTGRES_FAULTS] + [
    "sqlite-disk-full",
    "sqlite-lock",
]

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("fault", choices=FAULT_NAMES)
    parser.add_argument("--count", type=int, default=20, help="payouts per provider")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--timeout", type=float, default=0.3, help="command_timeout or busy_timeout, seconds"
    )
    parser.add_argument("--hold", type=float, default=None, help="how long the fault lasts")
    options = parser.parse_args()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full "disk" fails the write instead
    print(asyncio.run(_main(options.fault, options)).line())
