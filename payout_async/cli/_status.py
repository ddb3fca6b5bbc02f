"""``payout-async status [KEY]``: what the ledger holds, without changing it."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ..ledger import ROW_ALTERED, Ledger, LedgerState, PayoutRecord
from ._args import CLIError, seconds
from ._attention import backlog, print_backlog
from ._batch_file import PROVIDERS
from ._console import Column, literal, render_table, show, terminal_width
from ._funds_commands import pause_lines, pause_views
from ._leases import lease_holders, leased_rows, print_leases, print_workers, until, worker_views
from ._location import locate, open_ledger, require_existing
from ._report import EXIT_OK
from ._runner import run_async
from ._setup import add_ledger_option, add_output_options, settings
from ._views import document, payout_from_record
from ._watch import watch

__all__ = ["register"]

_PROBLEM_COLUMNS = (
    Column("key"),
    Column("provider"),
    Column("state"),
    Column("reason", "wrap", minimum=24),
)
_HISTORY_COLUMNS = (
    Column("at"),
    Column("from"),
    Column("to"),
    Column("note", "wrap", minimum=20),
)


def _problem_states() -> list[LedgerState]:
    return [
        LedgerState.REFUSED,
        LedgerState.NEEDS_ATTENTION,
        LedgerState.FAILED,
        LedgerState.CANCELLED,
    ]


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="rows by state, paused providers, failed and refused rows with reasons, "
        "leases; or one key",
        description="Show how many payouts are in each state, every failed, refused or "
        "needs_attention row with its reason, and the rows other workers hold; or one "
        "key's row (amount, masked recipient) and its history. Never changes the ledger.",
    )
    parser.add_argument("key", nargs="?", help="show this idempotency key")
    parser.add_argument("--provider", choices=PROVIDERS, help="only this provider")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="show the whole ledger's progress and its workers, refreshed until Ctrl-C",
    )
    parser.add_argument(
        "--interval", type=seconds, default=2.0, help="seconds between refreshes (default 2)"
    )
    add_ledger_option(parser)
    add_output_options(parser)
    parser.set_defaults(run=lambda args: run_async(lambda: _status(args)))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


async def _status(args: argparse.Namespace) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, "status")
    ledger = await open_ledger(place, read_only=True)
    try:
        providers = [args.provider] if args.provider else list(PROVIDERS)
        if args.watch:
            if args.key:
                raise CLIError("--watch shows the whole ledger: give no KEY")
            return await watch(
                ledger, place.location, providers, interval=args.interval, as_json=args.json
            )
        if args.key:
            return await _show_key(ledger, place.location, providers, args)
        tallies = {provider: await ledger.counts(provider=provider) for provider in providers}
        problems: list[PayoutRecord] = []
        for state in _problem_states():
            for provider in providers:
                problems += await ledger.records(provider=provider, state=state)
        leased = await leased_rows(ledger, providers)
        found = await backlog(ledger, providers)  # oldest unfinished, attention reasons
        holders = await lease_holders(ledger, providers)
        shared = await ledger.shared_keys()
        paused = [p for p in await ledger.pauses() if p.provider in providers]
    finally:
        await ledger.aclose()
    altered = sum(1 for r in problems if (r.reason or "").startswith(ROW_ALTERED))
    if args.json:
        table = {p: {s.value: tallies[p].get(s, 0) for s in LedgerState} for p in providers}
        show(document("status", place.location, counts=table, altered=altered,
                      payouts=[payout_from_record(r) for r in problems],
                      leased=[payout_from_record(r) for r in leased],
                      workers=worker_views(holders), shared_keys=shared,
                      paused=pause_views(paused),
                      **found.sections()))  # fmt: skip
        return EXIT_OK
    columns = (Column("state"), *(Column(p) for p in providers))
    rows = [(s.value, *(str(tallies[p].get(s, 0)) for p in providers)) for s in LedgerState]
    width = terminal_width()
    for line in render_table(columns, rows, width=width):
        show(line)
    for line in pause_lines(paused):
        show()
        show(line)
    if altered:
        show()
        show(f"{altered} rows altered outside payout-async: set aside, never sent")
    if problems:
        show()
        show(f"{len(problems)} payout(s) failed, were refused or need attention:")
        rows = [
            (r.key, r.provider, r.state.value, r.reason or r.last_error or "") for r in problems
        ]
        for line in render_table(_PROBLEM_COLUMNS, rows, width=width):
            show(line)
    print_backlog(found)
    if shared:
        show()
        show(
            f"{len(shared)} key(s) have a live row under both providers (recorded before a "
            "key was one payout, whatever the provider): each may have been paid twice; "
            f"check both providers by hand: {', '.join(repr(k) for k in shared)}"
        )
    if holders:
        show()
        print_workers(holders)
    if leased:
        show()
        print_leases(leased)
    return EXIT_OK


async def _show_key(
    ledger: Ledger, location: str, providers: list[str], args: argparse.Namespace
) -> int:
    found = []
    for provider in providers:
        record = await ledger.get(provider, args.key)
        if record is not None:
            found.append((record, await ledger.history(provider, args.key)))
    if not found:
        raise CLIError(f"no payout with key {args.key!r} in {location}")
    if args.json:
        show(document("status", location,
                      payouts=[payout_from_record(r, h) for r, h in found]))  # fmt: skip
        return EXIT_OK
    width = terminal_width()
    for record, history in found:
        view = payout_from_record(record)
        view["lease_expires_at"] = until(record.lease_expires_at) if record.lease_owner else None
        view["created_at"] = _when(record.created_at)
        view["updated_at"] = _when(record.updated_at)
        view["provider_account"] = record.provider_account
        for name, value in view.items():
            show(f"{name:>16}: {literal(value if value is not None else '')}")
        rows = [
            (_when(step.at), "" if step.from_state is None else step.from_state.value,
             step.to_state.value, step.note or "")
            for step in history
        ]  # fmt: skip
        show()
        for line in render_table(_HISTORY_COLUMNS, rows, width=width):
            show(line)
    return EXIT_OK
