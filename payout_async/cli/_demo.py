"""``payout-async demo``: a mixed batch through the embedded sandbox with faults on.

Starts the sandbox in-process (about 10% of calls faulted, duplicate Enot order_ids
accepted -- the dangerous case), pays about 200 IntellectMoney and Enot payouts
through a SQLite ledger -- with an encryption key made for the run, so that no card
number or phone is ever written in clear -- and ends with a table of outcomes, what
did not succeed and why (the sandbox fails ``FAILURE_RATIO`` of payouts by design),
and the duplicates found in the sandbox's books, which must be 0. The ledger and its
key file are kept (in a new temporary directory, or at ``--ledger``), and the
commands to look at them are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
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
from ._args import CLIError, at_least_one
from ._console import Column, literal, render_table, say, show, terminal_width
from ._files import write_private
from ._report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ORDER, Work, pay_all
from ._runner import run_async
from ._views import document
from ._waits import WaitBoard

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
#: The share of payouts the sandbox fails on purpose (a provider's own refusals).
FAILURE_RATIO = 0.05
_DESCRIPTION = (
    "Start the provider sandbox in this process (about 10% of calls faulted, duplicate "
    "Enot order_ids accepted: the dangerous case), pay a mixed batch of IntellectMoney "
    "and Enot payouts through a SQLite ledger whose recipients are encrypted with a key "
    "made for the run, and report the outcomes, what did not succeed and why (the "
    f"sandbox fails {FAILURE_RATIO:.0%} of payouts by design, as a provider may) and the "
    "duplicates found in the sandbox's books, which must be 0. The ledger and its key "
    "file are kept, with the commands to look at them."
)


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="pay a mixed batch through the embedded sandbox with 10%% faults",
        description=_DESCRIPTION,
    )
    parser.add_argument("--count", type=at_least_one, default=200, help="payouts to make")
    parser.add_argument(
        "--fault-rate", type=_ratio, default=0.1, help="share of requests the sandbox faults"
    )
    parser.add_argument("--seed", type=int, default=2026, help="sandbox and data seed")
    parser.add_argument(
        "--concurrency", type=at_least_one, default=50, help="payouts in flight per provider"
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        metavar="PATH",
        help="write the demo's SQLite ledger to PATH, a new file (default: payouts.db in a "
        "new temporary directory, kept after the run)",
    )
    parser.add_argument("--json", action="store_true", help="the summary as one JSON document")
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


def _ledger_path(args: argparse.Namespace) -> Path:
    """Where the demo's ledger goes: ``--ledger`` (a new file), else a new temporary
    directory that is kept."""
    if args.ledger is None:
        return Path(tempfile.mkdtemp(prefix="payout-async-demo-")) / "payouts.db"
    path: Path = args.ledger.absolute()
    if path.exists():
        raise CLIError(f"--ledger {path} exists: the demo writes a new ledger; give another path")
    if not path.parent.is_dir():
        raise CLIError(f"--ledger {path}: no such directory {path.parent}")
    return path


async def _demo(args: argparse.Namespace) -> int:
    path = _ledger_path(args)
    config = SandboxConfig(
        fault_rate=args.fault_rate,
        seed=args.seed,
        duplicate_order_id="accept",
        failure_ratio=FAILURE_RATIO,
        stall_seconds=1.5,
        retry_after=0.2,
        latency=(0.01, 0.2),
        im_in_process_after=0.2,
        im_final_after=0.6,
        enot_final_after=0.5,
    )
    try:
        async with Sandbox(config=config) as sandbox:
            say(
                f"sandbox on {sandbox.url}, ledger at {path} "
                "(recipients encrypted with a key made for this run)"
            )
            return await _run(args, sandbox, path)
    except asyncio.CancelledError:
        say(f"Interrupted. The ledger is at {path}.")
        return EXIT_INTERRUPTED


async def _run(args: argparse.Namespace, sandbox: Sandbox, path: Path) -> int:
    rng = random.Random(args.seed)
    options: dict[str, Any] = {"timeouts": _TIMEOUTS, "retry": _RETRY}
    # A real deployment keeps its key (payout-async ledger-key) apart from the ledger;
    # the demo keeps it beside the ledger (0600) so that the ledger can be looked at.
    key = new_encryption_key()
    key_file = path.with_name(path.stem + ".key")
    write_private(key_file, [key + "\n"])
    async with (
        SQLiteLedger(path, encryption_key=key) as ledger,
        sandbox.intellectmoney_client(**options) as im,
        sandbox.enot_client(**options) as enot,
    ):
        banks = await enot.list_sbp_banks()
        im_items, enot_items = _requests(args.count, rng, banks[0].id)
        waits = WaitBoard()
        common: dict[str, Any] = {"poll": _POLL, "lease_seconds": _LEASE, "on_wait": waits.on_wait}
        flows: dict[str, Payouts[Any]] = {
            "intellectmoney": Payouts(im, ledger, execute_settle=_SETTLE, **common),
            "enot": Payouts(enot, ledger, grace=_GRACE, **common),
        }
        results = await pay_all(
            [Work(flows["intellectmoney"], im_items), Work(flows["enot"], enot_items)],
            concurrency=args.concurrency,
            show_progress=not args.no_progress,
            waits=waits,
        )
        if any(r.status is PayoutStatus.PROCESSING for r in results):
            # Left at the poll deadline: finish them the way a later run would.
            results = [r for r in results if r.status is not PayoutStatus.PROCESSING]
            for flow in flows.values():
                results += await flow.resume()
        duplicates = len(sandbox.duplicates())
        summary = _Summary(results, duplicates, sandbox, path, key_file)
        if args.json:
            show(summary.document())
        else:
            summary.print()
    unexplained = [r for r in results if r.status is PayoutStatus.NEEDS_ATTENTION and not r.reason]
    return EXIT_FAILED if duplicates or unexplained else EXIT_OK


def _why(status: str) -> str:
    """What a status other than ``succeeded`` means in the demo."""
    if status == PayoutStatus.FAILED.value:
        return (
            "the provider's own refusals, by design: the sandbox refuses each payout with a "
            f"{FAILURE_RATIO:.0%} chance (failure_ratio), as a real provider may; nothing to fix"
        )
    if status == PayoutStatus.NEEDS_ATTENTION.value:
        return "set aside for an operator: see the reasons below"
    return "see the reasons below"


class _Summary:
    """What the demo did, for people (``print``) or as JSON (``document``)."""

    def __init__(
        self, results: list[Any], duplicates: int, sandbox: Sandbox, path: Path, key_file: Path
    ) -> None:
        self.results = results
        self.duplicates = duplicates
        self.sandbox = sandbox
        self.path = path
        self.key_file = key_file

    def by_provider(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for provider in ("intellectmoney", "enot"):
            tally = Counter(r.status.value for r in self.results if r.provider == provider)
            found[provider] = {name: tally[name] for name in ORDER if tally[name]}
        return found

    def reasons(self) -> list[tuple[str, str, str, int]]:
        """(status, provider, reason, count) of every payout that did not succeed."""
        tally = Counter(
            (r.status.value, r.provider, literal(r.reason or r.provider_status or "-"))
            for r in self.results
            if r.status is not PayoutStatus.SUCCEEDED
        )
        ordered = sorted(tally.items(), key=lambda item: (ORDER.index(item[0][0]), -item[1]))
        return [(status, provider, reason, n) for (status, provider, reason), n in ordered]

    def commands(self) -> list[str]:
        where = f"--ledger {shlex.quote(f'sqlite:///{self.path}')} "
        where += f"--ledger-key-file {shlex.quote(str(self.key_file))}"
        return [f"payout-async status {where}", f"payout-async export {where}"]

    def document(self) -> str:
        reasons = [
            {"status": status, "provider": provider, "reason": reason, "count": n}
            for status, provider, reason, n in self.reasons()
        ]
        return document(
            "demo",
            str(self.path),
            ledger_key_file=str(self.key_file),
            counts=self.by_provider(),
            reasons=reasons,
            failure_ratio=FAILURE_RATIO,
            faults_injected=dict(sorted(self.sandbox.faults.injected.items())),
            duplicates=self.duplicates,
            commands=self.commands(),
        )

    def print(self) -> None:
        statuses = [name for name in ORDER if name != "rejected"]
        found = self.sandbox.duplicates()
        rows = []
        for provider, tally in self.by_provider().items():
            provider_duplicates = sum(1 for d in found if d.provider == provider)
            cells = (str(tally.get(name, 0)) for name in statuses)
            rows.append((provider, *cells, str(provider_duplicates)))
        columns = [Column("provider"), *(Column(name) for name in statuses), Column("duplicates")]
        show("payout-async demo")
        for line in render_table(columns, rows, width=terminal_width()):
            show(line)
        injected = self.sandbox.faults.injected
        show(
            f"{len(self.results)} payouts, {sum(injected.values())} faults injected "
            f"({', '.join(f'{k}={v}' for k, v in sorted(injected.items()))})"
        )
        shown: set[str] = set()
        for status, provider, reason, n in self.reasons():
            if status not in shown:
                shown.add(status)
                total = sum(1 for r in self.results if r.status.value == status)
                show(f"{status} {total}: {_why(status)}")
            show(f"  {n} {provider}: {reason}")
        show(f"duplicates in the sandbox's books: {self.duplicates}")
        show(f"the ledger is kept at {self.path} (its key in {self.key_file}); look at it with:")
        for command in self.commands():
            show(f"  {command}")
