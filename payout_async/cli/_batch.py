"""``payout-async batch FILE``: pay every row of a CSV or JSONL file, at most once."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ._batch_file import PROVIDERS, read_batch
from ._report import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    exit_code,
    pay_all,
    print_results,
    say,
)
from ._setup import add_common_options, build_payouts, open_ledger

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``batch`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="pay every row of a CSV or JSONL file (re-run to finish; never pays twice)",
        description="Pay every row of FILE. Every row is checked first; if any is bad, all "
        "bad rows are listed with their line numbers and nothing is sent. Re-running the "
        "same file with the same ledger pays nothing twice and finishes what was left.",
    )
    parser.add_argument("file", type=Path, help="CSV (.csv) or JSON Lines (.jsonl) file")
    parser.add_argument("--concurrency", type=int, default=32, help="payouts in flight")
    parser.add_argument("--dry-run", action="store_true", help="only check every row")
    parser.add_argument("--json", action="store_true", help="results as JSON lines")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check, then pay, the file."""
    if not args.file.is_file():
        say(f"error: no such file: {args.file}")
        return EXIT_BAD_INPUT
    rows, bad = read_batch(args.file)
    for problem in bad:
        say(f"{args.file}: {problem}")
    if bad:
        say(f"{len(bad)} bad row(s); nothing was sent.")
        return EXIT_BAD_INPUT
    if args.dry_run:
        say(f"{len(rows)} row(s) are valid; nothing was sent (--dry-run).")
        return EXIT_OK
    if args.concurrency < 1:
        say("error: --concurrency must be at least 1")
        return EXIT_BAD_INPUT
    return asyncio.run(_pay(args, rows))


async def _pay(args: argparse.Namespace, rows: list[Any]) -> int:
    ledger = await open_ledger(args.ledger)
    clients = []
    try:
        work = []
        for provider in PROVIDERS:
            items = [(row.key, row.request) for row in rows if row.provider == provider]
            if items:
                payouts = build_payouts(args, provider, ledger)
                clients.append(payouts.client)
                work.append((payouts, items))
        try:
            results = await pay_all(
                work, concurrency=args.concurrency, show_progress=not args.no_progress
            )
        except asyncio.CancelledError:
            say(
                "Interrupted: payouts in flight were recorded. Run the same command again "
                f"(or `payout-async resume --ledger {args.ledger}`) to finish; "
                "nothing will be paid twice."
            )
            return EXIT_INTERRUPTED
        print_results(results, as_json=args.json)
        return exit_code(results)
    except ConfigurationError as error:
        say(f"error: {error}")
        return EXIT_BAD_INPUT
    finally:
        for client in clients:
            await client.aclose()
        await ledger.aclose()
