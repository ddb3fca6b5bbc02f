"""How payout-async scales: 20,000 payouts (``--n 100000`` for 100,000) through
``Payouts.pay_many(concurrency=1000)``, on the SQLite ledger and on PostgreSQL.

The sandbox runs in a process of its own with faults off and short but non-zero
settling delays (so that a payout really waits on the provider while others run).
Each size of the growth table runs in a fresh child process, so that its peak RSS
(``ru_maxrss``) is its own: wall time, payouts/s, the child's CPU time and peak RSS,
and how they grow from 1,000 to 20,000 payouts. By default half the payouts go
through IntellectMoney and half through Enot: two ``pay_many(concurrency=1000)`` calls
run side by side on one ledger, so up to 2,000 payouts are in flight. ``--ledger``
chooses the ledgers (default ``sqlite,postgres``; PostgreSQL is skipped when
unreachable). The default sizes take about a minute per ledger on two quiet cores;
``--n 100000 --sizes 100000`` took 4.5-5 minutes per ledger on two loaded ones.

Exit status 1 only when the books and the ledger disagree with what was asked (a
payout missing, unfinished or paid twice); a missed target is reported, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import SandboxProcess, clients, enot_request, im_request, machine, peak_rss_mb, table

RSS_TARGET_MB = 250.0
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


# -- the child: pays ``size`` payouts and reports -----------------------------------------


async def pay(args: argparse.Namespace) -> dict[str, Any]:
    from payout_async import Payouts, PollPolicy
    from payout_async.ledger import LedgerState, PostgresLedger, SQLiteLedger
    from payout_async.ledger._postgres import drop_statement

    poll = PollPolicy(initial=args.poll, multiplier=1.5, maximum=1.0, deadline=120.0)
    providers = ["intellectmoney", "enot"] if args.provider == "both" else [args.provider]
    shares = {name: args.child // len(providers) for name in providers}
    shares[providers[0]] += args.child - sum(shares.values())
    started_rss = peak_rss_mb()
    im_client, enot_client = clients(args.im_url, args.enot_url)
    if args.child_ledger.startswith("postgresql://"):
        opened: Any = PostgresLedger(args.child_ledger, table_prefix=args.prefix)
    else:
        opened = SQLiteLedger(args.child_ledger)
    async with opened as ledger, im_client as im, enot_client as enot:
        flows: dict[str, Payouts[Any]] = {
            "intellectmoney": Payouts(im, ledger, poll=poll),
            "enot": Payouts(enot, ledger, poll=poll),
        }

        def items(provider: str, count: int) -> Any:
            for n in range(count):
                key = f"{provider[:2]}-{n}"
                yield key, im_request(key) if provider == "intellectmoney" else enot_request()

        statuses: dict[str, int] = {}

        async def run(provider: str) -> None:
            flow = flows[provider]
            async for result in flow.pay_many(
                items(provider, shares[provider]), concurrency=args.concurrency
            ):
                statuses[result.status.value] = statuses.get(result.status.value, 0) + 1

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(run(provider) for provider in providers))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        counts = await ledger.counts()
        if isinstance(ledger, PostgresLedger):
            pool = await ledger._connection_pool()
            await pool.execute(drop_statement(args.prefix))
    return {
        "payouts": args.child,
        "shares": shares,
        "wall": wall,
        "cpu": cpu,
        "rss_start": started_rss,
        "rss_peak": peak_rss_mb(),
        "statuses": statuses,
        "ledger": {state.value: counts.get(state, 0) for state in LedgerState},
    }


# -- the parent: one child per size, then the table ----------------------------------------


def run_size(
    args: argparse.Namespace, sandbox: SandboxProcess, size: int, ledger: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(size),
        "--child-ledger",
        ledger,
        "--prefix",
        f"scale_{uuid.uuid4().hex[:10]}_",
        "--im-url",
        sandbox.intellectmoney_url,
        "--enot-url",
        sandbox.enot_url,
        "--concurrency",
        str(args.concurrency),
        "--provider",
        args.provider,
        "--poll",
        str(args.poll),
    ]
    sandbox_cpu = sandbox.cpu_seconds()
    limit = max(args.timeout, size / 100)  # 100,000 payouts get 1,000 s
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    if done.returncode != 0:
        raise RuntimeError(f"the child for {size} payouts failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["sandbox_cpu"] = sandbox.cpu_seconds() - sandbox_cpu
    stats = sandbox.stats()
    result["calls"] = sum(stats["requests"].values())
    result["duplicates"] = stats["duplicates"]
    result["im_executed"] = stats["intellectmoney"]["executed"]
    result["enot_created"] = stats["enot"]["created"]
    sandbox.reset()
    return result


def problems(result: dict[str, Any]) -> list[str]:
    """What makes a run incorrect: payouts paid twice, missing, or left unfinished."""
    found = []
    if result["duplicates"]:
        found.append(f"{len(result['duplicates'])} paid twice, e.g. {result['duplicates'][:2]}")
    shares = result["shares"]
    paid = {"intellectmoney": result["im_executed"], "enot": result["enot_created"]}
    for provider, count in shares.items():
        if paid[provider] != count:
            found.append(f"{provider}: asked {count}, the books hold {paid[provider]}")
    ledger = result["ledger"]
    rows = sum(ledger.values())
    if rows != result["payouts"]:
        found.append(f"the ledger holds {rows} rows for {result['payouts']} payouts")
    unfinished = rows - ledger["succeeded"] - ledger["failed"] - ledger["cancelled"]
    if unfinished - ledger["needs_attention"]:
        found.append(f"{unfinished - ledger['needs_attention']} payouts left unfinished")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="largest size (default 20000)")
    parser.add_argument(
        "--sizes", default="1000,2000,5000,10000", help="smaller sizes for the growth table"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1000, help="pay_many concurrency (default 1000)"
    )
    parser.add_argument("--provider", choices=("both", "intellectmoney", "enot"), default="both")
    parser.add_argument(
        "--settle", type=float, default=0.1, help="sandbox seconds until a payout is final"
    )
    parser.add_argument("--poll", type=float, default=0.05, help="first poll interval, s")
    parser.add_argument(
        "--timeout", type=float, default=240, help="limit per size, s (at least size/100)"
    )
    parser.add_argument(
        "--ledger",
        default="sqlite,postgres",
        help="ledgers to run, comma-separated: sqlite, postgres (default both)",
    )
    parser.add_argument("--postgres", default=POSTGRES_DSN, help="PostgreSQL DSN")
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-ledger", help=argparse.SUPPRESS)
    parser.add_argument("--im-url", help=argparse.SUPPRESS)
    parser.add_argument("--enot-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(pay(args))))
        return 0

    sizes = sorted({int(size) for size in args.sizes.split(",") if size} | {args.n})
    sizes = [size for size in sizes if 0 < size <= args.n]
    print(f"payout-async scale benchmark on {machine()}")
    print(
        f"pay_many(concurrency={args.concurrency}) per provider ({args.provider}); "
        f"payouts settle {args.settle:g} s after execute/create"
    )
    options = {
        "seed": 1,
        "im_in_process_after": args.settle / 2,
        "im_final_after": args.settle,
        "enot_final_after": args.settle,
        "im_balance": Decimal(10**9),
        "enot_balance": Decimal(10**9),
    }
    failures: list[str] = []
    wanted = [name.strip() for name in args.ledger.split(",") if name.strip()]
    with tempfile.TemporaryDirectory() as directory, SandboxProcess(**options) as sandbox:
        for name in wanted:
            if name == "postgres" and not postgres_reachable(args.postgres):
                print(f"\npostgres: skipped, {args.postgres} not reachable")
                continue
            print(f"\n{LEDGERS[name]}:")
            results = []
            for size in sizes:
                where = args.postgres if name == "postgres" else f"{directory}/{size}.db"
                result = run_size(args, sandbox, size, where)
                results.append(result)
                found = problems(result)
                failures += [f"{name} {size}: {problem}" for problem in found]
                print(
                    f"  {size:>6} payouts: {result['wall']:7.2f} s, "
                    f"{size / result['wall']:6.0f} payouts/s, peak RSS "
                    f"{result['rss_peak']:5.1f} MB" + (f"  PROBLEMS: {found}" if found else ""),
                    flush=True,
                )
            report(results)
    if failures:
        print("\nCORRECTNESS FAILURE:\n  " + "\n  ".join(failures))
        return 1
    print("\nevery payout paid exactly once and final in the ledger (duplicates=0 lost=0)")
    return 0


LEDGERS = {
    "sqlite": "SQLiteLedger (synchronous=FULL)",
    "postgres": "PostgresLedger (synchronous_commit as the server has it)",
}


def postgres_reachable(dsn: str) -> bool:
    async def connect() -> None:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(dsn), 5)
        await conn.close()

    try:
        asyncio.run(connect())
    except Exception:
        return False
    return True


def report(results: list[dict[str, Any]]) -> None:
    """The growth table of one ledger, and the verdict on the largest size."""
    first = results[0]
    rows = []
    for result in results:
        size = result["payouts"]
        rows.append(
            [
                f"{size}",
                f"{result['wall']:.2f}",
                f"{size / result['wall']:.0f}",
                f"{result['wall'] / size * 1e6:.0f}",
                f"{result['cpu'] / size * 1e6:.0f}",
                f"{result['calls'] / size:.2f}",
                f"{result['sandbox_cpu'] / result['wall']:.0%}",
                f"{result['rss_start']:.1f}",
                f"{result['rss_peak']:.1f}",
                f"{result['rss_peak'] - result['rss_start']:.1f}",
                f"{(result['wall'] / size) / (first['wall'] / first['payouts']):.2f}",
            ]
        )
    headers = [
        "payouts",
        "wall s",
        "payouts/s",
        "wall us/payout",
        "CPU us/payout",
        "calls/payout",
        "sandbox CPU",
        "RSS start MB",
        "RSS peak MB",
        "growth MB",
        "time/payout vs first",
    ]
    print(table(headers, rows))
    last = results[-1]
    verdict = "met" if last["rss_peak"] < RSS_TARGET_MB else "MISSED"
    print(
        f"{last['payouts']} payouts: {last['wall']:.1f} s wall, "
        f"{last['payouts'] / last['wall']:.0f} payouts/s, peak RSS {last['rss_peak']:.1f} MB "
        f"(target < {RSS_TARGET_MB:.0f} MB: {verdict}); statuses {last['statuses']}"
    )


if __name__ == "__main__":
    sys.exit(main())
