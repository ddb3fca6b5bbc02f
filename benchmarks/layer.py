"""What ``Payouts`` itself costs, without HTTP: the project and ``lean.py`` each drive
payouts through clients that answer at once (no socket, no sandbox), so that the CPU
per payout is the orchestration and the ledger alone -- what ``overhead.py``'s
``Payouts`` ways add over its ``clients`` way, measured with far less noise.

The fake clients keep the rules that matter here: a money-moving call runs its fence
(``Run.fence`` in the project, the lean version's fence callable) before it "leaves";
an IntellectMoney payout is created, executed and found ``Completed``, an Enot payoff
created and found ``success``, so both make the same ledger writes as against the
sandbox. Each round runs the project and the lean version of a way back to back, in
alternating order; the table gives medians, over the rounds, of the per-pair ratios.

    python benchmarks/layer.py                # 2,000 + 2,000 payouts, 5 rounds, 64 in flight
    python benchmarks/layer.py --only memory  # one way (memory, sqlite, sqlite+key, postgres)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import lean
from _common import PAN, clients, enot_request, im_request, machine, table
from overhead import POSTGRES_DSN, memory_ledger, postgres_ledger, sqlite_ledger

from payout_async import EnotClient, IntellectMoneyClient, Payouts, PollPolicy
from payout_async._fence import check_before_send
from payout_async.enot import CreatedPayoff, Payoff
from payout_async.intellectmoney import PayoutOperation
from payout_async.ledger import Ledger, new_encryption_key

POLL = PollPolicy(initial=0.0002, multiplier=2.0, maximum=0.01, deadline=60.0)
LEAN_POLL = (0.0002, 2.0, 0.01, 60.0)
WAYS = ("memory", "sqlite", "sqlite+key", "postgres")


class InstantIntellectMoney(IntellectMoneyClient):
    """Creates, executes (after the fence) and finds each operation ``Completed``."""

    made = 0

    async def create_operation_from(self, request: Any) -> PayoutOperation:
        InstantIntellectMoney.made += 1
        return PayoutOperation(operation_id=f"op-{self.made}", raw_state="Created", raw={})

    async def execute_operation(self, operation_id: str) -> PayoutOperation:
        await check_before_send(self.timeouts.total)
        return PayoutOperation(operation_id, raw_state="InProcess", accepted=True, raw={})

    async def get_operation_state(self, operation_id: str) -> PayoutOperation:
        return PayoutOperation(operation_id, raw_state="Completed", raw={})


class InstantEnot(EnotClient):
    """Creates each payoff (after the fence) and finds it ``success``."""

    made = 0

    async def create_payoff_from(
        self, request: Any, *, order_id: str | None = None
    ) -> CreatedPayoff:
        await check_before_send(self.timeouts.total)
        InstantEnot.made += 1
        return CreatedPayoff(payoff_id=f"po-{self.made}", raw={})

    async def get_payoff(
        self, *, payoff_id: str | None = None, order_id: str | None = None
    ) -> Payoff:
        return Payoff(payoff_id=payoff_id, order_id=order_id, raw_status="success", raw={})


class InstantLeanIntellect(lean.Intellect):
    made = 0

    def __init__(self) -> None:  # no session: nothing is sent
        pass

    async def create(self, payout: Any) -> Any:
        InstantLeanIntellect.made += 1
        return lean.Operation(f"op-{self.made}", "Created", False)

    async def execute(self, operation_id: str, fence: Any) -> Any:
        await fence(30.0)
        return lean.Operation(operation_id, "InProcess", True)

    async def state(self, operation_id: str) -> Any:
        return lean.Operation(operation_id, "Completed", False)


class InstantLeanEnot(lean.Enot):
    made = 0

    def __init__(self) -> None:  # no session: nothing is sent
        self.user_id = str(uuid.UUID(int=1))  # an account, shaped as Enot's

    async def create(self, payoff: Any, order_id: str, fence: Any) -> str:
        await fence(30.0)
        InstantLeanEnot.made += 1
        return f"po-{self.made}"

    async def info(self, *, payoff_id: str | None = None, order_id: str | None = None) -> Any:
        return lean.Payoff(payoff_id or "po", "success", None, None, None)


def project_ledger(way: str, folder: Path) -> contextlib.AbstractAsyncContextManager[Ledger]:
    """The way's ledger, as ``overhead.py`` makes it (PostgreSQL tables dropped after)."""
    if way == "memory":
        return memory_ledger()
    if way == "postgres":
        return postgres_ledger(POSTGRES_DSN)()
    return sqlite_ledger(folder, new_encryption_key() if way == "sqlite+key" else None)()


@contextlib.asynccontextmanager
async def lean_ledger(way: str, folder: Path) -> AsyncIterator[lean.Ledger]:
    ledger: lean.Ledger
    if way == "memory":
        ledger = lean.MemoryLedger()
    elif way == "postgres":
        ledger = lean.PostgresLedger(POSTGRES_DSN, f"lean_{uuid.uuid4().hex[:10]}_")
    else:
        ledger = lean.SQLiteLedger(folder / f"{uuid.uuid4().hex}.db")
    await ledger.open()
    try:
        yield ledger
    finally:
        if isinstance(ledger, lean.PostgresLedger):
            await ledger.drop()
        await ledger.aclose()


async def project_run(way: str, folder: Path, count: int, concurrency: int) -> float:
    """CPU seconds per payout of ``count`` IntellectMoney and ``count`` Enot payouts."""
    im, enot = clients("http://127.0.0.1:9/", "http://127.0.0.1:9/")
    im.__class__, enot.__class__ = InstantIntellectMoney, InstantEnot
    tag = uuid.uuid4().hex[:6]
    async with project_ledger(way, folder) as ledger:
        im_payouts, enot_payouts = Payouts(im, ledger, poll=POLL), Payouts(enot, ledger, poll=POLL)

        async def pay(items: Any, payouts: Payouts[Any]) -> None:
            async for result in payouts.pay_many(items, concurrency=concurrency):
                if result.status.value != "succeeded":
                    raise RuntimeError(f"{result.key}: {result.status} {result.reason}")

        async def both(prefix: str, n: int) -> None:
            await pay(
                ((f"{prefix}-i{i}", im_request(f"{prefix}-i{i}")) for i in range(n)), im_payouts
            )
            await pay(((f"{prefix}-e{i}", enot_request()) for i in range(n)), enot_payouts)

        return await _timed(both, tag, count)


async def lean_run(way: str, folder: Path, count: int, concurrency: int) -> float:
    key = new_encryption_key() if way == "sqlite+key" else None
    recipients, amount, tag = lean.Recipients(key), Decimal("1.00"), uuid.uuid4().hex[:6]
    async with lean_ledger(way, folder) as ledger:
        im = lean.Payouts(InstantLeanIntellect(), ledger, recipients, poll=LEAN_POLL)
        enot = lean.Payouts(InstantLeanEnot(), ledger, recipients, poll=LEAN_POLL)

        async def pay(items: Any, payouts: lean.Payouts) -> None:
            async for key, state in payouts.pay_many(items, concurrency=concurrency):
                if state != "succeeded":
                    raise RuntimeError(f"{key}: {state}")

        async def both(prefix: str, n: int) -> None:
            ims = (
                (f"{prefix}-i{i}", lean.ImPayout(PAN, amount, f"{prefix}-i{i}")) for i in range(n)
            )
            await pay(ims, im)
            await pay(
                ((f"{prefix}-e{i}", lean.EnotPayoff("card", PAN, amount)) for i in range(n)), enot
            )

        return await _timed(both, tag, count)


async def _timed(both: Callable[[str, int], Awaitable[None]], tag: str, count: int) -> float:
    await both(f"w{tag}", 100)  # warm up, untimed
    started = time.process_time()
    await both(tag, count)
    return (time.process_time() - started) / (2 * count)


async def main(args: argparse.Namespace) -> None:
    ways = [w.strip() for w in args.only.split(",")] if args.only else list(WAYS)
    print(f"payout-async Payouts layer, no HTTP, on {machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for way in ways:
            pairs = []
            for round_ in range(args.repeat):
                sides = [project_run, lean_run] if round_ % 2 == 0 else [lean_run, project_run]
                cpu = {side: await side(way, folder, args.n, args.concurrency) for side in sides}
                pairs.append((cpu[project_run], cpu[lean_run]))
            project = statistics.median(p for p, _ in pairs)
            lean_cpu = statistics.median(q for _, q in pairs)
            ratios = sorted(q / p for p, q in pairs)
            rows.append(
                [
                    way,
                    f"{project * 1e6:.0f}",
                    f"{lean_cpu * 1e6:.0f}",
                    f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})",
                ]
            )
    print(
        f"\n{args.n} IntellectMoney + {args.n} Enot payouts per run, {args.concurrency} in "
        f"flight, clients answering at once; medians of {args.repeat} rounds:"
    )
    print(table(["way", "project us CPU/payout", "lean us CPU/payout", "project / lean"], rows))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="payouts per provider and run")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per way")
    parser.add_argument("--concurrency", type=int, default=64, help="payouts in flight")
    parser.add_argument("--only", default="", help=f"comma-separated ways ({', '.join(WAYS)})")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
