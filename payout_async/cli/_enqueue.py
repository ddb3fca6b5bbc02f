"""``payout-async enqueue FILE``: record every row of a file for workers to pay.

The file is checked as ``batch`` checks it (every row, with every rule the real run
applies; the ledger's keys with other parameters; keys paid through another ledger),
then every row is recorded in the ledger -- pending, leased to nobody -- in a few
transactions, and nothing is sent: ``payout-async worker`` pays them, in as many
processes as you like. Enqueueing the same file again records nothing twice.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from ..ledger import Enqueued, EnqueueOutcome, Ledger, LedgerError
from ..payouts import intent_for
from ._args import CLIError
from ._batch_file import PROVIDERS, BadRow, Batch, BatchRow, Rules, bad_rows, read_batch_file
from ._console import say, show
from ._history import (
    add_accept_option,
    check_history,
    note_ledger,
    unknowable_im_rows,
    unknowable_ledger_rows,
)
from ._location import LedgerPlace, locate, open_ledger
from ._preflight import add_switch_option, check_elsewhere, known_rows, remember
from ._registry import default_registry
from ._report import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from ._runner import run_async
from ._setup import add_ledger_option, add_output_options, settings
from ._views import document

__all__ = ["register"]

_ORDER = (
    EnqueueOutcome.NEW,
    EnqueueOutcome.AGAIN,
    EnqueueOutcome.EXISTING,
    EnqueueOutcome.CONFLICT,
)


def register(subparsers: Any) -> None:
    """Add the ``enqueue`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="record every row of a CSV or JSONL file for workers to pay (sends nothing)",
        description="Check every row of FILE as batch does, then record each in the ledger "
        "for `payout-async worker` processes to pay; nothing is sent. Enqueueing the same "
        "file again records nothing twice; a key the ledger holds with other parameters is "
        "a bad row.",
    )
    parser.add_argument("file", type=Path, help="CSV (.csv) or JSON Lines (.jsonl) file")
    parser.add_argument(
        "--new-ledger",
        action="store_true",
        help="record keys this user already paid through another ledger in this one",
    )
    add_switch_option(parser)
    add_accept_option(parser)
    parser.add_argument(
        "--ignore-unknown-columns", action="store_true", help="skip columns batch does not know"
    )
    parser.add_argument("--im-api", choices=("current", "legacy"), help="IntellectMoney API")
    parser.add_argument(
        "--enot-service",
        action="append",
        default=[],
        metavar="CODE",
        help="allow an Enot service code beyond the documented ones (repeatable)",
    )
    add_ledger_option(parser)
    add_output_options(parser)
    parser.set_defaults(run=lambda args: run_async(lambda: _enqueue(args)))


def _report_bad(args: argparse.Namespace, place: LedgerPlace, bad: list[BadRow]) -> int:
    for problem in bad:
        say(f"{args.file}: {problem}")
    say(f"{bad_rows(bad)} bad row(s); nothing was recorded.")
    if args.json:
        rows = [{"line": b.line, "column": b.column, "problem": b.problem} for b in bad]
        show(document("enqueue", place.location, bad_rows=rows))
    return EXIT_BAD_INPUT


async def _enqueue(args: argparse.Namespace) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    rules = Rules(im_api=config.im_api(), enot_services=config.enot_services)
    batch = read_batch_file(args.file, rules, ignore_unknown=args.ignore_unknown_columns)
    if batch.bad:
        return _report_bad(args, place, batch.bad)
    ledger = await open_ledger(place) if place.exists else None
    registry = default_registry()
    try:
        accept = args.accept_restored_ledger
        history = await check_history(registry, place.location, ledger, batch.rows, accept=accept)
        bad = await unknowable_im_rows(history, ledger, batch.rows, None, present=False)
        if bad:
            return _report_bad(args, place, bad)
        if ledger is not None:
            await unknowable_ledger_rows(history, ledger, None)
        known = await known_rows(
            ledger, batch.rows, key_column="key", switch_provider=args.switch_provider
        )
        if known.conflicts:
            return _report_bad(args, place, known.conflicts)
        if not args.new_ledger:
            check_elsewhere(registry, batch.rows, known, place.location)
        if ledger is None:
            ledger = await open_ledger(place, create=True)
        remember(registry, batch.rows, place.location)
        try:
            outcomes, conflicts = await _record(ledger, batch, args.switch_provider)
        finally:
            await note_ledger(history, ledger)
    finally:
        if ledger is not None:
            await ledger.aclose()
    return _report(args, place, outcomes, conflicts)


async def _record(
    ledger: Ledger, batch: Batch, switch_provider: bool
) -> tuple[Counter[EnqueueOutcome], list[BadRow]]:
    """Record every row; the outcomes counted, and the rows refused as conflicts (by
    a race: the check before found none)."""
    outcomes: Counter[EnqueueOutcome] = Counter()
    conflicts: list[BadRow] = []
    for provider in PROVIDERS:
        rows: list[BatchRow] = [row for row in batch.rows if row.provider == provider]
        if not rows:
            continue
        try:
            intents = [intent_for(r.key, r.request) for r in rows]
            results = await ledger.enqueue(provider, intents, switch_provider=switch_provider)
        except LedgerError as error:
            raise CLIError(
                f"the ledger failed while recording the payouts ({error}); some may be "
                "recorded: run the same command again (it records nothing twice)"
            ) from None
        for row, result in zip(rows, results, strict=True):
            outcomes[result.outcome] += 1
            if result.outcome is EnqueueOutcome.CONFLICT:
                why = _conflict(row, result)
                conflicts.append(BadRow(row.line, "key", why))
    return outcomes, conflicts


def _conflict(row: BatchRow, result: Enqueued) -> str:
    """Why the ledger refused to record ``row`` (by a race: the check found nothing)."""
    if result.state is None:
        return "its Enot order_id belongs to another key in the ledger"
    if result.provider is not None:
        return (
            f"{row.key!r} is already in the ledger under {result.provider} (state "
            f"{result.state.value}): a key is one payout, whatever the provider"
        )
    return (
        f"{row.key!r} is already in the ledger with other parameters "
        f"(state {result.state.value}); use a new key for a new payout"
    )


def _report(
    args: argparse.Namespace,
    place: LedgerPlace,
    outcomes: Counter[EnqueueOutcome],
    conflicts: list[BadRow],
) -> int:
    for problem in conflicts:
        say(f"{args.file}: {problem} (not recorded)")
    total = sum(outcomes.values())
    again = outcomes[EnqueueOutcome.AGAIN]
    again_text = f", {again} refused earlier and recorded again" if again else ""
    if args.json:
        rows = [{"line": b.line, "column": b.column, "problem": b.problem} for b in conflicts]
        counts = {outcome.value: outcomes[outcome] for outcome in _ORDER}
        show(document("enqueue", place.location, counts=counts, bad_rows=rows))
    else:
        show(
            f"{total} row(s): {outcomes[EnqueueOutcome.NEW]} new, "
            f"{outcomes[EnqueueOutcome.EXISTING]} already there, {len(conflicts)} "
            f"conflict(s){again_text}. Nothing was sent: `payout-async worker` pays them."
        )
    return EXIT_FAILED if conflicts else EXIT_OK
