"""``payout-async export``: ledger rows for accounting and reconciliation, as CSV or
JSON Lines, without changing the ledger.

Every row has the fields of ``EXPORT_FIELDS``, in that order, in both formats (the
table "export" of docs/batches.md lists them with their types): the recipient masked, amounts
as strings (never floats), times in ISO 8601 UTC. Text is escaped as ``_escape``
says: a CSV cell that a spreadsheet would run as a formula starts with ``'``.
``schema`` changes only when a field changes meaning or goes away; new fields may be
added at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .._redact import scrub
from ..ledger import Ledger, LedgerState, PayoutRecord
from ..payouts import PayoutResult
from ._args import CLIError
from ._batch_file import PROVIDERS
from ._console import literal, show
from ._escape import csv_line, json_text
from ._files import write_private
from ._location import LedgerPlace, locate, open_ledger, require_existing
from ._report import EXIT_OK
from ._runner import run_async
from ._setup import add_ledger_option, settings
from ._views import document, request_summary

__all__ = ["EXPORT_FIELDS", "EXPORT_SCHEMA", "export_row", "iso_utc", "parse_since", "register"]

EXPORT_SCHEMA = 1
#: The fields of an exported row, in column order.
EXPORT_FIELDS = (
    "schema",
    "key",
    "provider",
    "state",
    "status",
    "amount",
    "currency",
    "recipient",
    "provider_id",
    "provider_status",
    "order_id",
    "attempts",
    "reason",
    "last_error",
    "created_at",
    "updated_at",
    "provider_account",
)
FORMATS = ("csv", "jsonl")


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write ledger rows as CSV or JSON Lines (masked recipients)",
        description="Write the ledger's rows, oldest first, for accounting and for "
        "reconciling against the providers' reports: masked recipients, amounts as "
        "strings, provider ids and statuses, times in ISO 8601 UTC. Never changes the "
        "ledger.",
    )
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="ISO",
        help="only rows changed at or after this time (ISO 8601, e.g. 2026-11-30 or "
        "2026-11-30T09:00:00+03:00; without an offset: UTC)",
    )
    parser.add_argument(
        "--state",
        action="append",
        choices=[state.value for state in LedgerState],
        help="only rows in this state (repeat for several)",
    )
    parser.add_argument("--provider", choices=PROVIDERS, help="only this provider")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="csv",
        help="csv: a header and a line per row; jsonl: a JSON object per line (default: csv)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON document instead: the ledger, the field names and every row as a "
        '"payouts" list (overrides --format)',
    )
    parser.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    add_ledger_option(parser)
    parser.set_defaults(run=lambda args: run_async(lambda: _export(args)))


def parse_since(text: str) -> datetime.datetime:
    """``--since``: an ISO 8601 date or time, UTC unless it names an offset."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def iso_utc(timestamp: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC with milliseconds: ``2026-11-30T09:41:07.125Z``."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export_row(record: PayoutRecord) -> dict[str, Any]:
    """One exported row (``EXPORT_FIELDS``, ``None`` where unknown)."""
    amount, recipient = request_summary(record.params)
    currency = record.params.get("currency")
    return {
        "schema": EXPORT_SCHEMA,
        "key": record.key,
        "provider": record.provider,
        "state": record.state.value,
        "status": PayoutResult.from_record(record).status.value,
        "amount": amount,
        "currency": currency if isinstance(currency, str) else None,
        "recipient": recipient,
        "provider_id": record.operation_id,
        "provider_status": record.provider_status,
        "order_id": record.order_id,
        "attempts": record.attempts,
        "reason": scrub(record.reason),
        "last_error": scrub(record.last_error),
        "created_at": iso_utc(record.created_at),
        "updated_at": iso_utc(record.updated_at),
        "provider_account": record.provider_account,
    }


async def _rows(
    ledger: Ledger,
    providers: Iterable[str],
    states: Iterable[LedgerState],
    since: datetime.datetime | None,
) -> list[PayoutRecord]:
    cutoff = None if since is None else since.timestamp()
    found: list[PayoutRecord] = []
    for provider in providers:
        for state in states:
            for record in await ledger.records(provider=provider, state=state):
                if cutoff is None or record.updated_at >= cutoff:
                    found.append(record)
    return sorted(found, key=lambda r: (r.created_at, r.provider, r.key))


def _lines(records: Iterable[PayoutRecord], form: str) -> Iterator[str]:
    """The export's text, line by line (each ending in a newline); every text from
    outside escaped (``_escape``: no control character, no live spreadsheet formula)."""
    if form == "jsonl":
        for record in records:
            yield json_text(export_row(record)) + "\n"
        return
    yield csv_line(EXPORT_FIELDS)
    for record in records:
        yield csv_line(export_row(record).values())


def _document(location: str, records: list[PayoutRecord]) -> Iterator[str]:
    """The ``--json`` document, as one line."""
    rows = [export_row(record) for record in records]
    yield document("export", location, fields=list(EXPORT_FIELDS), payouts=rows) + "\n"


def _write(lines: Iterable[str], handle: TextIO) -> None:
    for line in lines:
        handle.write(line)


def _refuse_own_files(output: Path, place: LedgerPlace, args: argparse.Namespace) -> None:
    """``--output`` naming a file the command reads -- one of the ledger's own (its
    shared-memory index has no header ``write_private`` would know it by), its key
    file, the config -- is refused: replaced, the payouts could no longer be read."""
    own = {os.path.abspath(path) for path in (args.config, args.ledger_key_file) if path}
    if place.url.scheme == "sqlite":
        ledger = os.path.abspath(place.location)
        own.update(ledger + suffix for suffix in ("", "-wal", "-shm", "-journal"))
    if os.path.abspath(output) in own:
        raise CLIError(
            f"cannot write {output}: the command reads it (the ledger, its key or the "
            "config); name another file"
        )


async def _export(args: argparse.Namespace) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, "export")
    if args.output is not None:
        _refuse_own_files(args.output, place, args)
    ledger = await open_ledger(place, read_only=True)
    providers = [args.provider] if args.provider else list(PROVIDERS)
    states = [LedgerState(s) for s in dict.fromkeys(args.state)] if args.state else LedgerState
    try:
        records = await _rows(ledger, providers, states, args.since)
    finally:
        await ledger.aclose()
    lines = _document(place.location, records) if args.json else _lines(records, args.format)
    if args.output is None:
        _write(lines, sys.stdout)
        sys.stdout.flush()
    else:
        write_private(args.output, lines)
        show(literal(f"exported {len(records)} payout(s) to {args.output}"))
    return EXIT_OK
