"""``payout-async demo``: a mixed batch through the embedded sandbox with faults on.

Starts the sandbox in-process (about 10% of calls faulted, duplicate Enot order_ids
accepted -- the dangerous case), pays about 200 IntellectMoney and Enot payouts
through a SQLite ledger in a temporary directory -- with an encryption key made for
the run, so that no card number or phone is ever written in clear -- and ends with a
table of outcomes and the duplicates found in the sandbox's books, which must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._polling import PollPolicy
from .._retry import RetryPolicy
from .._transport import Timeouts
from ..enot import PayoffRequest
from ..intellectmoney import OperationRequest
from ..ledger import SQLiteLedger, new_encryption_key
from ..payouts import Payouts, PayoutStatus
from ..sandbox import Sandbox, SandboxConfig
from ._args import at_least_one
from ._console import Column, literal, render_table, say, show, terminal_width
from ._report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ORDER, Work, pay_all
from ._runner import run_async

__all__ = ["register"]

_TIMEOUTS = Timeouts(total=5.0, connect=2.0, read=1.0)
# The sandbox shows a payoff at once and an executed operation at once (no lag), so the
# Enot grace period and the IntellectMoney settle window can be short here.
_GRACE = 2.0
_SETTLE = 1.0
# A short lease keeps the fence margin (a tenth of it) and so the wait after a lost
# answer (the request timeout plus that margin) short too.
_LEASE = 10.0
_RETRY = RetryPolicy(attempts=4, initial=0.05, maximum=0.5, max_retry_after=1.0)
_POLL = PollPolicy(initial=0.1, multiplier=1.6, maximum=0.5, deadline=30.0)  # its old pace


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="pay a mixed batch through the embedded sandbox with 10%% faults",
        description=__doc__,
    )
    parser.add_argument("--count", type=at_least_one, default=200, help="payouts (default 200)")
    parser.add_argument("--fault-rate", type=_ratio, default=0.1, help="default 0.1")
    parser.add_argument("--seed", type=int, default=2026, help="sandbox and data seed")
    parser.add_argument("--concurrency", type=at_least_one, default=50, help="per provider")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=lambda args: run_async(lambda: _demo(args)))


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, not {text!r}")
    return value


def _card(rng: random.Random) -> str:
    digits = [4, *(rng.randrange(10) for _ in range(14))]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def _requests(
    count: int, rng: random.Random, bank_id: str
) -> tuple[list[tuple[str, OperationRequest]], list[tuple[str, PayoffRequest]]]:
    im: list[tuple[str, OperationRequest]] = []
    enot: list[tuple[str, PayoffRequest]] = []
    for n in range(count):
        amount = Decimal(rng.randrange(100, 500_000)) / 100
        phone = f"79{rng.randrange(10**9):09d}"
        sbp = rng.random() < 0.3
        if n % 2 == 0:
            im.append((f"demo-im-{n}", OperationRequest(
                amount=amount,
                pan=None if sbp else _card(rng),
                account=phone if sbp else None,
                bank_id=bank_id if sbp else None,
                recipient_name="Иванов Иван",
                description=f"demo payout {n}",
            )))  # fmt: skip
        else:
            enot.append((f"demo-enot-{n}", PayoffRequest(
                service="sbp" if sbp else "card",
                wallet_to=phone if sbp else _card(rng),
                amount=amount,
                sbp_bank_id=bank_id if sbp else None,
                comment=f"demo payout {n}",
            )))  # fmt: skip
    return im, enot


async def _demo(args: argparse.Namespace) -> int:
    config = SandboxConfig(
        fault_rate=args.fault_rate,
        seed=args.seed,
        duplicate_order_id="accept",
        failure_ratio=0.05,
        stall_seconds=1.5,
        retry_after=0.2,
        latency=(0.01, 0.2),
        im_in_process_after=0.2,
        im_final_after=0.6,
        enot_final_after=0.5,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="payout-async-demo-") as directory:
            async with Sandbox(config=config) as sandbox:
                say(
                    f"sandbox on {sandbox.url}, ledger in {directory} "
                    "(recipients encrypted with a key made for this run)"
                )
                return await _run(args, sandbox, Path(directory) / "payouts.db")
    except asyncio.CancelledError:
        say("Interrupted.")
        return EXIT_INTERRUPTED


async def _run(args: argparse.Namespace, sandbox: Sandbox, path: Path) -> int:
    rng = random.Random(args.seed)
    options: dict[str, Any] = {"timeouts": _TIMEOUTS, "retry": _RETRY}
    # A real deployment keeps its key (payout-async ledger-key) apart from the ledger.
    key = new_encryption_key()
    async with (
        SQLiteLedger(path, encryption_key=key) as ledger,
        sandbox.intellectmoney_client(**options) as im,
        sandbox.enot_client(**options) as enot,
    ):
        banks = await enot.list_sbp_banks()
        im_items, enot_items = _requests(args.count, rng, banks[0].id)
        flows: dict[str, Payouts[Any]] = {
            "intellectmoney": Payouts(
                im, ledger, poll=_POLL, execute_settle=_SETTLE, lease_seconds=_LEASE
            ),
            "enot": Payouts(enot, ledger, poll=_POLL, grace=_GRACE, lease_seconds=_LEASE),
        }
        results = await pay_all(
            [Work(flows["intellectmoney"], im_items), Work(flows["enot"], enot_items)],
            concurrency=args.concurrency,
            show_progress=not args.no_progress,
        )
        if any(r.status is PayoutStatus.PROCESSING for r in results):
            # Left at the poll deadline: finish them the way a later run would.
            results = [r for r in results if r.status is not PayoutStatus.PROCESSING]
            for flow in flows.values():
                results += await flow.resume()
        duplicates = sandbox.duplicates()
        _print_summary(results, len(duplicates), sandbox)
    unexplained = [r for r in results if r.status is PayoutStatus.NEEDS_ATTENTION and not r.reason]
    return EXIT_FAILED if duplicates or unexplained else EXIT_OK


def _print_summary(results: list[Any], duplicates: int, sandbox: Sandbox) -> None:
    found = sandbox.duplicates()
    statuses = [name for name in ORDER if name != "rejected"]
    rows = []
    for provider in ("intellectmoney", "enot"):
        counts = Counter(r.status.value for r in results if r.provider == provider)
        provider_duplicates = sum(1 for d in found if d.provider == provider)
        rows.append((provider, *(str(counts[name]) for name in statuses), str(provider_duplicates)))
    columns = [Column("provider"), *(Column(name) for name in statuses), Column("duplicates")]
    show("payout-async demo")
    for line in render_table(columns, rows, width=terminal_width()):
        show(line)
    injected = sum(sandbox.faults.injected.values())
    show(
        f"{len(results)} payouts, {injected} faults injected "
        f"({', '.join(f'{k}={v}' for k, v in sorted(sandbox.faults.injected.items()))})"
    )
    for result in results:
        if result.status is PayoutStatus.NEEDS_ATTENTION:
            show(f"needs attention: {literal(result.key)}: {literal(result.reason)}")
    show(f"duplicates in the sandbox's books: {duplicates}")
