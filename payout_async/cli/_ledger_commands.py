"""``payout-async resume``, ``reconcile`` and ``status``: work on what the ledger holds."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from typing import Any

from rich.console import Console

from .._errors import ConfigurationError
from ..ledger import ACTIVE_STATES, Ledger, LedgerState, PayoutRecord
from ..payouts import PayoutResult
from ._batch_file import PROVIDERS
from ._report import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    compact_table,
    exit_code,
    print_results,
    say,
)
from ._setup import add_common_options, build_payouts, open_ledger

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``resume``, ``reconcile`` and ``status`` subcommands."""
    resume = subparsers.add_parser(
        "resume",
        help="finish payouts stranded by a crash, Ctrl-C or a poll deadline",
        description="Drive every unfinished payout whose lease has expired to its end.",
    )
    reconcile = subparsers.add_parser(
        "reconcile",
        help="resume, then try again to settle payouts that need attention",
        description="Resume, then re-drive needs_attention payouts from the step where "
        "they stopped (after fixing credentials, or once the provider is back).",
    )
    for parser, settle in ((resume, False), (reconcile, True)):
        parser.add_argument("--json", action="store_true", help="results as JSON lines")
        add_common_options(parser)
        parser.set_defaults(run=lambda args, settle=settle: asyncio.run(_finish(args, settle)))

    status = subparsers.add_parser(
        "status",
        help="ledger rows by state, or one key's history",
        description="Show how many payouts are in each state (and the reasons of those "
        "that need attention), or one key's row and its history.",
    )
    status.add_argument("key", nargs="?", help="show this idempotency key")
    status.add_argument("--provider", choices=PROVIDERS, help="only this provider")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--ledger", default="sqlite:///payouts.db", help="ledger URL")
    status.set_defaults(run=lambda args: asyncio.run(_status(args)))


async def _finish(args: argparse.Namespace, settle: bool) -> int:
    ledger = await open_ledger(args.ledger)
    results: list[PayoutResult] = []
    try:
        for provider in PROVIDERS:
            counts = await ledger.counts(provider=provider)
            waiting = sum(n for state, n in counts.items() if state in ACTIVE_STATES)
            if settle:
                waiting += counts.get(LedgerState.NEEDS_ATTENTION, 0)
            if not waiting:
                continue
            try:
                payouts = build_payouts(args, provider, ledger)
            except ConfigurationError as error:
                say(f"error: {waiting} {provider} payout(s) wait, but {error}")
                return EXIT_BAD_INPUT
            async with payouts.client:
                results += await payouts.resume()
                if settle:
                    results += await payouts.reconcile()
    except asyncio.CancelledError:
        say("Interrupted; run the same command again to finish.")
        return EXIT_INTERRUPTED
    finally:
        await ledger.aclose()
    print_results(results, as_json=args.json)
    return exit_code(results) if results else EXIT_OK


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="milliseconds")


def _record_json(record: PayoutRecord) -> dict[str, Any]:
    return {
        "provider": record.provider,
        "key": record.key,
        "state": record.state.value,
        "provider_id": record.operation_id,
        "order_id": record.order_id,
        "provider_status": record.provider_status,
        "attempts": record.attempts,
        "reason": record.reason,
        "last_error": record.last_error,
        "lease_owner": record.lease_owner,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


async def _status(args: argparse.Namespace) -> int:
    ledger = await open_ledger(args.ledger)
    try:
        providers = [args.provider] if args.provider else list(PROVIDERS)
        if args.key:
            return await _show_key(ledger, providers, args.key, as_json=args.json)
        report: dict[str, Any] = {}
        for provider in providers:
            counts = await ledger.counts(provider=provider)
            attention = await ledger.records(provider=provider, state=LedgerState.NEEDS_ATTENTION)
            report[provider] = {
                "counts": {state.value: counts.get(state, 0) for state in LedgerState},
                "needs_attention": [
                    {"key": record.key, "reason": record.reason} for record in attention
                ],
            }
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
            return EXIT_OK
        out = Console()
        rows = [
            (state.value, *(str(report[p]["counts"][state.value]) for p in providers))
            for state in LedgerState
        ]
        out.print(compact_table("state", *providers, rows=rows))
        for provider in providers:
            for item in report[provider]["needs_attention"]:
                out.print(f"needs attention: {provider} {item['key']}: {item['reason']}")
        return EXIT_OK
    finally:
        await ledger.aclose()


async def _show_key(ledger: Ledger, providers: list[str], key: str, *, as_json: bool) -> int:
    found = []
    for provider in providers:
        record = await ledger.get(provider, key)
        if record is not None:
            history = await ledger.history(provider, key)
            found.append((record, history))
    if not found:
        say(f"no payout with key {key!r}")
        return EXIT_BAD_INPUT
    if as_json:
        print(json.dumps([
            {**_record_json(record), "history": [
                {"from": None if step.from_state is None else step.from_state.value,
                 "to": step.to_state.value, "at": step.at, "note": step.note}
                for step in history
            ]}
            for record, history in found
        ], ensure_ascii=False))  # fmt: skip
        return EXIT_OK
    out = Console()
    for record, history in found:
        for name, value in _record_json(record).items():
            if name.endswith("_at"):
                value = _when(value)
            out.print(f"{name:>16}: {value}")
        rows = [
            (
                _when(step.at),
                "" if step.from_state is None else step.from_state.value,
                step.to_state.value,
                step.note or "",
            )
            for step in history
        ]
        out.print(compact_table("at", "from", "to", "note", rows=rows, keep=3))
    return EXIT_OK
