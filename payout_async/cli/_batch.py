"""``payout-async batch FILE``: pay every row of a CSV or JSONL file, at most once."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from ..enot import EnotClient
from ..intellectmoney import IntellectMoneyClient
from ..ledger import Ledger
from ..payouts import PayoutStatus
from ..payouts._owner import BATCH, new_owner
from ._args import CLIError, non_negative_int
from ._batch_file import PROVIDERS, Batch, BatchRow, Rules, bad_rows, read_batch_file
from ._console import literal, say, show
from ._funds import check_enot_balance, funds_notice, warn_of_pauses
from ._history import (
    ACCEPT_FLAG,
    add_accept_option,
    check_history,
    note_ledger,
    unknowable_im_rows,
    unknowable_ledger_rows,
)
from ._leases import leased_rows, print_leases
from ._location import LedgerPlace, locate, open_ledger
from ._preflight import (
    Known,
    add_switch_option,
    check_elsewhere,
    check_reachable,
    known_rows,
    probe_enot,
    remember,
)
from ._registry import default_registry
from ._report import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Work,
    counts,
    exit_code,
    pay_all,
    print_results,
)
from ._runner import run_async
from ._setup import (
    Settings,
    add_output_options,
    add_provider_options,
    build_client,
    make_payouts,
    settings,
)
from ._setup import check_credentials as require_credentials
from ._views import document, payout_from_record, payout_from_result
from ._waits import WaitBoard

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``batch`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="pay every row of a CSV or JSONL file (re-run to finish; never pays twice)",
        description="Pay every row of FILE. Every row is checked first, with every rule the "
        "real run applies; if any is bad, all bad rows are listed with their line numbers "
        "and nothing is sent. Re-running the same file with the same ledger pays nothing "
        "twice and finishes what was left.",
    )
    parser.add_argument("file", type=Path, help="CSV (.csv) or JSON Lines (.jsonl) file")
    parser.add_argument("--dry-run", action="store_true", help="only check; send nothing")
    parser.add_argument(
        "--new-ledger",
        action="store_true",
        help="pay keys this user already paid through another ledger (or that Enot already "
        "knows) through this one",
    )
    add_switch_option(parser)
    add_accept_option(parser)
    parser.add_argument(
        "--ignore-unknown-columns", action="store_true", help="skip columns batch does not know"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="Enot: pay even when its balance does not cover the file's Enot rows (the "
        "batch stops sending to Enot at its first refusal for want of money)",
    )
    parser.add_argument(
        "--max-refusals",
        type=non_negative_int,
        default=5,
        metavar="N",
        help="stop sending to a provider after N refusals in a row (wrong secret...): the "
        "payouts already under way finish, the rest is reported not sent; 0: never stop "
        "(default 5)",
    )
    add_provider_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=lambda args: run_async(lambda: _batch(args)))


def _report_bad(args: argparse.Namespace, place: LedgerPlace, batch: Batch) -> int:
    for problem in batch.bad:
        say(f"{args.file}: {problem}")
    say(f"{bad_rows(batch.bad)} bad row(s); nothing was sent.")
    if args.json:
        bad = [{"line": b.line, "column": b.column, "problem": b.problem} for b in batch.bad]
        show(document("batch", place.location, dry_run=args.dry_run, bad_rows=bad, payouts=[]))
    return EXIT_BAD_INPUT


async def _batch(args: argparse.Namespace) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    rules = Rules(im_api=config.im_api(), enot_services=config.enot_services)
    batch = read_batch_file(args.file, rules, ignore_unknown=args.ignore_unknown_columns)
    if batch.bad:
        return _report_bad(args, place, batch)
    providers = [p for p in PROVIDERS if any(row.provider == p for row in batch.rows)]
    for provider in providers:
        require_credentials(config, provider)
    ledger = await open_ledger(place) if place.exists else None
    clients: dict[str, IntellectMoneyClient | EnotClient] = {}
    registry = default_registry()
    try:
        accept = args.accept_restored_ledger
        history = await check_history(registry, place.location, ledger, batch.rows, accept=accept)
        if history.restored and not args.lookup_before_create:
            raise CLIError(f"{ACCEPT_FLAG} needs Enot's lookup before create: drop "
                           "--no-lookup-before-create")  # fmt: skip
        known = await known_rows(
            ledger, batch.rows, key_column="key", switch_provider=args.switch_provider
        )
        if known.conflicts:
            return _report_bad(args, place, Batch(batch.rows, known.conflicts))
        if not args.new_ledger:
            check_elsewhere(registry, batch.rows, known, place.location)
        if args.dry_run:
            await _dry_run_balance(args, config, batch, known)
            return _dry_run(args, place, batch, len(known.records))
        for provider in providers:
            clients[provider] = build_client(args, config, provider)
            if any(_to_send(row, known) for row in batch.rows if row.provider == provider):
                balance = await check_reachable(clients[provider], provider)
                if provider == "enot":
                    check_enot_balance(balance, batch.rows, known, allow_partial=args.allow_partial)
        if history.restored:
            im = clients.get("intellectmoney")
            im_client = im if isinstance(im, IntellectMoneyClient) else None
            bad = await unknowable_im_rows(history, ledger, batch.rows, im_client)
            if bad:
                return _report_bad(args, place, Batch(batch.rows, bad))
            if ledger is not None:
                await unknowable_ledger_rows(history, ledger, im_client)
        enot = clients.get("enot")
        if ledger is None and not args.new_ledger and isinstance(enot, EnotClient):
            await probe_enot(enot, batch.rows)
        if ledger is None:
            ledger = await open_ledger(place, create=True)
        remember(registry, batch.rows, place.location)
        await warn_of_pauses(ledger, providers)
        try:
            return await _pay(args, place, ledger, batch.rows, clients)
        finally:
            await note_ledger(history, ledger)
    finally:
        for client in clients.values():
            await client.aclose()
        if ledger is not None:
            await ledger.aclose()


def _to_send(row: BatchRow, known: Known) -> bool:
    """Whether paying ``row`` may send something (it is not final in the ledger)."""
    record = known.records.get((row.provider, row.key))
    return record is None or not record.state.is_final


async def _dry_run_balance(
    args: argparse.Namespace, config: Settings, batch: Batch, known: Known
) -> None:
    """The real run's money check, in a dry run: Enot's balance against the file's
    Enot rows still to pay (``check_enot_balance``; a shortfall ends the dry run as it
    would end the real one). A balance that cannot be read is a warning here."""
    if not any(row.provider == "enot" and _to_send(row, known) for row in batch.rows):
        return
    client = build_client(args, config, "enot")
    try:
        try:
            balance = await check_reachable(client, "enot")
        except CLIError as error:
            say(f"warning: {error}; the Enot balance was not checked (--dry-run)")
            return
        try:
            check_enot_balance(balance, batch.rows, known, allow_partial=args.allow_partial)
        except CLIError as error:
            raise CLIError(f"{error} (--dry-run: the real run would stop here)") from None
    finally:
        await client.aclose()


def _dry_run(args: argparse.Namespace, place: LedgerPlace, batch: Batch, known: int) -> int:
    """The dry run's verdict: a result, so on stdout (as one JSON document with ``--json``)."""
    fresh = len(batch.rows) - known
    if args.json:
        show(document("batch", place.location, dry_run=True, valid=len(batch.rows),
                      to_send=fresh, bad_rows=[], payouts=[]))  # fmt: skip
        return EXIT_OK
    where = "" if place.exists else f"; a new ledger would be created at {place.location}"
    show(
        literal(
            f"{len(batch.rows)} row(s) are valid: {fresh} would be sent, {known} are already "
            f"in the ledger{where}; nothing was sent (--dry-run)."
        )
    )
    return EXIT_OK


async def _pay(
    args: argparse.Namespace,
    place: LedgerPlace,
    ledger: Ledger,
    rows: list[BatchRow],
    clients: dict[str, IntellectMoneyClient | EnotClient],
) -> int:
    work: list[Work] = []
    waits = WaitBoard()
    on_wait = None if args.no_progress else waits.on_wait  # nobody listens: no hook
    for provider, client in clients.items():
        items = [(row.key, row.request) for row in rows if row.provider == provider]
        owner = new_owner(BATCH)  # ``status`` names the holder of its leases "batch"
        payouts = make_payouts(
            args,
            client,
            ledger,
            switch_provider=args.switch_provider,
            owner=owner,
            on_wait=on_wait,
        )
        work.append(Work(payouts, items))
    try:
        results = await pay_all(
            work,
            concurrency=args.concurrency,
            show_progress=not args.no_progress,
            max_refusals=args.max_refusals,
            waits=waits,
        )
    except asyncio.CancelledError:
        say(
            "Interrupted: payouts in flight were recorded. Run the same command again "
            f"(or `payout-async resume --ledger {place.location}`) to finish; "
            "nothing will be paid twice."
        )
        return EXIT_INTERRUPTED
    busy = {(r.provider, r.key) for r in results if r.status is PayoutStatus.PROCESSING}
    leased = await leased_rows(ledger, PROVIDERS, keys=busy) if busy else []
    requests = {(row.provider, row.key): row.request for row in rows}
    if args.json:
        views = [payout_from_result(r, requests.get((r.provider, r.key))) for r in results]
        show(document("batch", place.location, payouts=views, counts=counts(results),
                      leased=[payout_from_record(r) for r in leased]))  # fmt: skip
    else:
        print_results(results)
        print_leases(leased)
    notice = funds_notice(results)
    if notice is not None:
        say(notice)
    return exit_code(results)
