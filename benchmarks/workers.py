"""How ``payout-async worker`` scales out: payouts/s with 1, 2 and 4 worker processes
sharing one PostgreSQL ledger, against a sandbox that answers every request 50-300 ms
late, as real providers do.

For each round the ledger gets fresh tables (a unique prefix, dropped afterwards) and
the sandbox fresh books. The workers start first and wait, idle, on ``LISTEN``; then
``--n`` payouts (half IntellectMoney, half Enot) are enqueued in one go -- that wakes
them -- and the clock runs until every payout has succeeded. Then the workers get
SIGTERM. A last round (``--no-handback`` skips it) measures the hand-back: with
``--handback-workers`` workers paying, one of them (its lease two minutes long) gets
SIGTERM half-way, and the script times how long until that worker holds no lease (its
rows are free for the others) and until its process has exited. The last column of
the table is the machine's one-minute load average at the end of the round: other
processes slow the figures down.

``--fault-rate R`` (default 0: skipped) adds a round against a sandbox of its own that
faults that share of all calls, over every fault kind, and accepts a second Enot payoff
with an ``order_id`` it has seen: three workers (lease 6 s) pay ``--n`` payouts; one is
SIGKILLed at 30% of the payouts settled and another at 60%, each replaced by a new
worker; once no row is left active, the books are checked payout by payout. Payouts
parked by the send budget (``max_send_attempts``) are reported; ``reconcile`` pays them.

Exit status 1 only when a payout was paid twice, did not succeed (in the scale rounds),
or disagrees with the books (in the fault round); a figure is reported, never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _common import (
    ROOT,
    SandboxProcess,
    disagreement,
    drop_postgres_tables,
    enot_request,
    im_request,
    machine,
    postgres_cpu_seconds,
    process_cpu_seconds,
    table,
)

from payout_async.cli._sandbox import Served
from payout_async.cli._sandbox import environment as sandbox_environment
from payout_async.ledger import ACTIVE_STATES, EnqueueOutcome, LedgerState, PostgresLedger
from payout_async.payouts import intent_for
from payout_async.sandbox import FaultKind

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
READY = "stops it cleanly"


class Worker:
    """One ``payout-async worker`` process. Once it is ready, what it writes to stderr
    (a line per transition at its default INFO level) is read and dropped as it comes:
    a pipe nobody reads fills up and blocks the worker."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.owner = ""
        self._reading: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, env: dict[str, str], args: Sequence[str]) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payout_async", "worker", "--ledger", url, "--no-progress",
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=ROOT,
        )  # fmt: skip
        worker = cls(process)
        assert process.stderr is not None
        said = ""
        while line := (await asyncio.wait_for(process.stderr.readline(), 120)).decode():
            if READY in line:
                worker.owner = line.split()[1].rstrip(":")
                worker._reading = asyncio.create_task(_drain(process.stderr))
                return worker
            said += line
        raise RuntimeError(f"a worker did not start: {said[-2000:]}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    async def stop(self) -> int:
        """SIGTERM, and its exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.ended()

    async def ended(self) -> int:
        """Its exit status, once it has exited (a second SIGTERM would stop it at once)."""
        await asyncio.wait_for(self.process.wait(), 120)
        if self._reading is not None:
            await self._reading
        return self.process.returncode or 0


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


class Round:
    """Fresh tables for one round; dropped by ``close``."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"bw_{uuid.uuid4().hex[:10]}_"
        self.url = f"{dsn}{'&' if '?' in dsn else '?'}table_prefix={self.prefix}"
        self.ledger = PostgresLedger(dsn, table_prefix=self.prefix, max_connections=2)

    async def open(self) -> None:
        await self.ledger.open()

    async def enqueue(self, count: int) -> None:
        for provider, parity in (("intellectmoney", 0), ("enot", 1)):
            keys = [f"w-{n}" for n in range(parity, count, 2)]
            requests: list[Any] = [im_request(k) if parity == 0 else enot_request() for k in keys]
            results = await self.ledger.enqueue(
                provider, [intent_for(k, r) for k, r in zip(keys, requests, strict=True)]
            )
            assert {r.outcome for r in results} == {EnqueueOutcome.NEW}

    async def succeeded(self) -> int:
        return (await self.ledger.counts()).get(LedgerState.SUCCEEDED, 0)

    async def settled(self) -> int:
        """Rows in no active state (final, refused or parked)."""
        counts = await self.ledger.counts()
        return sum(n for state, n in counts.items() if state not in ACTIVE_STATES)

    async def until_succeeded(self, count: int, limit: float) -> None:
        await self._until(self.succeeded, "succeeded", count, limit)

    async def until_settled(self, count: float, limit: float) -> None:
        await self._until(self.settled, "settled", count, limit)

    async def _until(
        self, counted: Callable[[], Awaitable[int]], what: str, count: float, limit: float
    ) -> None:
        deadline = time.monotonic() + limit
        while await counted() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {await counted()} of {count:.0f} {what}")
            await asyncio.sleep(0.05)

    async def close(self, left: Sequence[Worker] = ()) -> None:
        """SIGKILL the workers ``left`` running (the round failed), then drop the
        round's tables."""
        for worker in left:
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
        await self.ledger.aclose()
        await drop_postgres_tables(self.dsn, self.prefix)


def environment(sandbox: Served) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")}
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {
        **base,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        **sandbox_environment(sandbox),
    }


def check_books(sandbox: SandboxProcess, count: int) -> list[str]:
    """What is wrong with the sandbox's books (nothing, normally)."""
    stats = sandbox.stats()
    problems = [f"duplicate: {d}" for d in stats["duplicates"]]
    paid = stats["paid_per_payout"]
    times = [n for book in paid.values() for n in book.values()]
    if sorted(times) != [1] * count:
        problems.append(f"{len(times)} payouts paid, {sum(times)} payments, for {count}")
    return problems


async def scale_round(
    args: argparse.Namespace, sandbox: SandboxProcess, env: dict[str, str], workers: int
) -> tuple[dict[str, Any], list[str]]:
    sandbox.reset()
    run = Round(args.postgres)
    await run.open()
    started: list[Worker] = []
    try:
        options = ["--concurrency", str(args.concurrency)]
        started = list(
            await asyncio.gather(*(Worker.start(run.url, env, options) for _ in range(workers)))
        )
        cpu = [w.cpu_seconds() for w in started]
        sandbox_cpu, pg_cpu = sandbox.cpu_seconds(), postgres_cpu_seconds()
        began = time.perf_counter()
        await run.enqueue(args.n)
        await run.until_succeeded(args.n, args.timeout)
        wall = time.perf_counter() - began
        worker_cpu = sum(w.cpu_seconds() - c for w, c in zip(started, cpu, strict=True))
        sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
        pg_cpu = postgres_cpu_seconds() - pg_cpu
        codes = [await w.stop() for w in started]
        problems = check_books(sandbox, args.n)
        problems += [f"a worker exited {code}" for code in codes if code != 0]
        counts = await run.ledger.counts()
        if counts != {LedgerState.SUCCEEDED: args.n}:
            problems.append(f"ledger: { {s.value: n for s, n in counts.items()} }")
    finally:
        await run.close(left=started)
    return {
        "workers": workers,
        "load": os.getloadavg()[0],  # other processes share the machine
        "wall": wall,
        "rate": args.n / wall,
        "worker_cpu_ms": 1000 * worker_cpu / args.n,
        "sandbox_cpu": sandbox_cpu / wall,
        "pg_cpu": pg_cpu / wall,
    }, problems


async def handback_round(
    args: argparse.Namespace, sandbox: SandboxProcess, env: dict[str, str]
) -> tuple[dict[str, float], list[str]]:
    sandbox.reset()
    run = Round(args.postgres)
    await run.open()
    started: list[Worker] = []
    try:
        options = ["--concurrency", str(args.concurrency)]
        first = await Worker.start(run.url, env, [*options, "--lease-seconds", "120"])
        started = [first]
        started += await asyncio.gather(
            *(Worker.start(run.url, env, options) for _ in range(args.handback_workers - 1))
        )
        await run.enqueue(args.n)
        await run.until_succeeded(args.n // 2, args.timeout)
        held = sum(h.rows for h in await run.ledger.lease_holders() if h.owner == first.owner)
        signalled = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        while True:  # until it holds no lease
            if first.owner not in {h.owner for h in await run.ledger.lease_holders()}:
                break
            await asyncio.sleep(0.01)
        released = time.monotonic() - signalled
        code = await first.ended()
        exited = time.monotonic() - signalled
        await run.until_succeeded(args.n, args.timeout)
        finished = time.monotonic() - signalled
        codes = [code] + [await w.stop() for w in started[1:]]
        problems = check_books(sandbox, args.n)
        problems += [f"a worker exited {c}" for c in codes if c != 0]
    finally:
        await run.close(left=started)
    return {"held": held, "released": released, "exited": exited, "finished": finished}, problems


#: The fault round's workers: short leases and windows, so that the killed workers'
#: rows are taken over within seconds (the Enot grace must exceed the request timeout).
FAULT_WORKER_OPTIONS = [
    "--lease-seconds", "6", "--request-timeout", "3", "--grace", "4",
    "--execute-settle", "4", "--idle-poll", "0.5",
]  # fmt: skip


async def fault_round(args: argparse.Namespace) -> list[str]:
    """Workers paying through faults while two of them are SIGKILLed; then the books."""
    options: dict[str, object] = {
        "fault_rate": args.fault_rate,
        "fault_kinds": ",".join(kind.name for kind in FaultKind),
        "duplicate_order_id": "accept",
        "stall_seconds": 1.0,
        "im_in_process_after": 0.1,
        "im_final_after": 0.3,
        "enot_final_after": 0.3,
        "seed": 11,
    }
    with SandboxProcess(**options) as sandbox:
        env = environment(sandbox)
        run = Round(args.postgres)
        await run.open()
        workers: list[Worker] = []
        worker_options = ["--concurrency", str(args.concurrency), *FAULT_WORKER_OPTIONS]
        try:
            workers = list(
                await asyncio.gather(*(Worker.start(run.url, env, worker_options) for _ in "abc"))
            )
            began = time.monotonic()
            await run.enqueue(args.n)
            for share, victim in ((0.3, 0), (0.6, 1)):
                await run.until_settled(share * args.n, args.timeout)
                workers[victim].process.kill()
                await workers[victim].process.wait()
                print(f"  SIGKILLed a worker at {await run.settled()} of {args.n} settled")
                workers.append(await Worker.start(run.url, env, worker_options))
            await run.until_settled(args.n, args.timeout)
            counts = await run.ledger.counts()
            print(
                f"  after {time.monotonic() - began:.1f} s: "
                + ", ".join(f"{state.value} {n}" for state, n in sorted(counts.items()))
            )
            records = await run.ledger.records()
            for record in records:
                if record.state is LedgerState.NEEDS_ATTENTION:
                    print(f"  parked {record.key} ({record.provider}): {record.reason}")
            problems = disagreements(sandbox.stats(), records)
            live = [worker for worker in workers if worker.process.returncode is None]
            problems += [
                f"a worker exited {code}" for code in [await w.stop() for w in live] if code
            ]
        finally:
            await run.close(left=workers)
    return problems


def disagreements(stats: dict[str, Any], records: Sequence[Any]) -> list[str]:
    """Where the ledger and the sandbox's books disagree: a payout paid twice, or a row
    whose end does not match its payments (``_common.disagreement``)."""
    paid = stats["paid_per_payout"]
    problems = [f"duplicate: {d}" for d in stats["duplicates"]]
    for record in records:
        problem = disagreement(record, paid.get(record.provider, {}).get(record.key, 0))
        if problem is not None:
            problems.append(problem)
    return problems


async def main(args: argparse.Namespace) -> int:
    sandbox_options: dict[str, object] = {
        "fault_rate": 1.0,
        "fault_kinds": "LATENCY",  # every answer 50-300 ms late
        "im_in_process_after": 0.1,
        "im_final_after": 0.3,
        "enot_final_after": 0.3,
        "seed": 7,
    }
    rows: list[list[object]] = []
    problems: list[str] = []
    print(f"{machine()}; {args.n} payouts per round, --concurrency {args.concurrency} per "
          "provider per worker, answers 50-300 ms late", flush=True)  # fmt: skip
    with SandboxProcess(**sandbox_options) as sandbox:
        env = environment(sandbox)
        base_rate = None
        for workers in args.workers:
            result, found = await scale_round(args, sandbox, env, workers)
            problems += found
            base_rate = base_rate or result["rate"]
            rows.append([
                workers, f"{result['wall']:.1f}", f"{result['rate']:.0f}",
                f"{result['rate'] / base_rate:.2f}", f"{result['worker_cpu_ms']:.2f}",
                f"{100 * result['sandbox_cpu']:.0f}%", f"{100 * result['pg_cpu']:.0f}%",
                f"{result['load']:.1f}",
            ])  # fmt: skip
            print(f"  {workers} worker(s): {result['rate']:.0f} payouts/s", flush=True)
        print()
        print(table(["workers", "wall s", "payouts/s", "vs 1 worker", "worker CPU ms/payout",
                     "sandbox CPU", "PostgreSQL CPU", "load avg"], rows))  # fmt: skip
        if args.handback:
            handback, found = await handback_round(args, sandbox, env)
            problems += found
            print(
                f"\nSIGTERM to one of {args.handback_workers} workers half-way, holding "
                f"{handback['held']} payouts (lease 120 s): leases given back after "
                f"{handback['released']:.2f} s, process exited after {handback['exited']:.2f} s, "
                f"the run finished {handback['finished']:.1f} s after the signal."
            )
    if args.fault_rate:
        print(
            f"\nFault round: {args.n} payouts, {args.fault_rate:.0%} of calls faulted over "
            "every kind, duplicate order_ids accepted, 3 workers, 2 SIGKILLed and replaced"
        )
        problems += await fault_round(args)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="payouts per round (default 2000)")
    parser.add_argument(
        "--workers", default="1,2,4", help="worker processes per round (default 1,2,4)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="per provider per worker (default 16)"
    )
    parser.add_argument("--postgres", default=DEFAULT_DSN, help=f"default {DEFAULT_DSN}")
    parser.add_argument("--timeout", type=float, default=240, help="limit per round, s")
    parser.add_argument("--no-handback", dest="handback", action="store_false")
    parser.add_argument("--handback-workers", type=int, default=4)
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="also run the fault round at this fault rate (default 0: skip it)",
    )
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
