"""``payout-async resume`` and ``reconcile``: finish what the ledger holds."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from ..intellectmoney import IntellectMoneyClient
from ..ledger import ACTIVE_STATES, PARKED_STATES, Ledger, LedgerState
from ..payouts import PayoutResult, Payouts
from ._args import CLIError
from ._batch_file import PROVIDERS
from ._console import say, show
from ._funds import funds_notice
from ._history import History, add_accept_option, check_history, note_ledger, unknowable_ledger_rows
from ._leases import describe_wait, leased_rows, print_leases
from ._location import locate, open_ledger, require_existing
from ._registry import default_registry
from ._report import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROCESSING,
    counts,
    exit_code,
    print_results,
)
from ._runner import run_async
from ._setup import (
    Settings,
    add_output_options,
    add_provider_options,
    build_client,
    build_payouts,
    check_credentials,
    settings,
)
from ._views import document, payout_from_record, payout_from_result
from ._waits import WaitBoard

__all__ = ["register"]

_PROGRESS_EVERY = 10.0


def register(subparsers: Any) -> None:
    """Add the ``resume`` and ``reconcile`` subcommands."""
    resume = subparsers.add_parser(
        "resume",
        help="finish payouts stranded by a crash, Ctrl-C or a poll deadline",
        description="Drive every unfinished payout whose lease has ended to its end. Rows "
        "other workers still hold are listed with their owner and when the lease ends.",
    )
    reconcile = subparsers.add_parser(
        "reconcile",
        help="resume, then try again the payouts that need attention or were refused",
        description="Resume, then re-drive needs_attention payouts from the step where "
        "they stopped and send again the ones a provider refused (after fixing "
        "credentials, or once the provider is back).",
    )
    for parser, settle in ((resume, False), (reconcile, True)):
        parser.add_argument(
            "--wait",
            action="store_true",
            help="wait for leases other workers hold to end, then finish those rows too",
        )
        add_accept_option(parser)
        add_provider_options(parser)
        add_output_options(parser)
        parser.set_defaults(
            run=lambda args, settle=settle: run_async(lambda: _finish(args, settle))
        )


def _waiting_states(settle: bool) -> frozenset[LedgerState]:
    return ACTIVE_STATES | PARKED_STATES if settle else ACTIVE_STATES


class _Finisher:
    """One ``Payouts`` per provider, made when a provider has rows to finish."""

    def __init__(self, args: argparse.Namespace, config: Settings, ledger: Ledger) -> None:
        self.args = args
        self.config = config
        self.ledger = ledger
        self.payouts: dict[str, Payouts[Any]] = {}
        #: What the payouts wait out (Enot's grace, IntellectMoney's settle window),
        #: said on stderr unless --no-progress.
        self.waits = WaitBoard(None if args.no_progress else say)
        self._announced: dict[str, int] = {}

    async def run(self, settle: bool) -> list[PayoutResult]:
        results: list[PayoutResult] = []
        for provider in PROVIDERS:
            tally = await self.ledger.counts(provider=provider)
            waiting = sum(tally.get(state, 0) for state in _waiting_states(settle))
            if not waiting:
                continue
            if self.waits.sink is not None and self._announced.get(provider) != waiting:
                self._announced[provider] = waiting  # (--wait comes back here each second)
                say(f"{provider}: finishing up to {waiting} payout(s)...")
            payouts = self.payouts.get(provider)
            if payouts is None:
                on_wait = None if self.waits.sink is None else self.waits.on_wait
                payouts = build_payouts(
                    self.args, self.config, provider, self.ledger, on_wait=on_wait
                )
                self.payouts[provider] = payouts
            results += await payouts.resume(concurrency=self.args.concurrency)
            if settle:
                results += await payouts.reconcile(concurrency=self.args.concurrency)
        return results

    async def aclose(self) -> None:
        self.waits.close()
        for payouts in self.payouts.values():
            await payouts.client.aclose()


async def _restored_rows(
    history: History, args: argparse.Namespace, config: Settings, ledger: Ledger
) -> None:
    """For an accepted restored ledger: refuse IntellectMoney rows that may have been
    paid since the backup (looking ``created`` ones up, with credentials)."""
    if not history.restored:
        return
    client = None
    with contextlib.suppress(CLIError):  # no credentials: its created rows are refused
        check_credentials(config, "intellectmoney")
        built = build_client(args, config, "intellectmoney")
        client = built if isinstance(built, IntellectMoneyClient) else None
    try:
        await unknowable_ledger_rows(history, ledger, client)
    finally:
        if client is not None:
            await client.aclose()


def _progress(line: str, *, last: float, shown: str, quiet: bool) -> tuple[float, str]:
    """Print a progress line when it changes or every few seconds (on a terminal, in
    place)."""
    now = time.monotonic()
    if quiet or (line == shown and now - last < _PROGRESS_EVERY):
        return last, shown
    if sys.stderr.isatty():
        print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
    else:
        say(line)
    return now, line


async def _finish(args: argparse.Namespace, settle: bool) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, args.command)
    ledger = await open_ledger(place)
    finisher = _Finisher(args, config, ledger)
    by_key: dict[tuple[str, str], PayoutResult] = {}
    try:
        history = await check_history(
            default_registry(), place.location, ledger, accept=args.accept_restored_ledger
        )
        await _restored_rows(history, args, config, ledger)
    except BaseException:
        await ledger.aclose()
        raise
    try:
        last, shown = 0.0, ""
        while True:
            for result in await finisher.run(settle):
                by_key[(result.provider, result.key)] = result
            leased = await leased_rows(ledger, PROVIDERS)
            if not leased or not args.wait:
                break
            last, shown = _progress(
                describe_wait(leased), last=last, shown=shown, quiet=args.no_progress
            )
            ends = [r.lease_expires_at or 0 for r in leased]
            await asyncio.sleep(min(1.0, max(0.05, min(ends) - time.time() + 0.05)))
        if shown and sys.stderr.isatty() and not args.no_progress:
            print(file=sys.stderr)
    except asyncio.CancelledError:
        say("Interrupted; run the same command again to finish.")
        return EXIT_INTERRUPTED
    finally:
        await finisher.aclose()
        await note_ledger(history, ledger)
        await ledger.aclose()
    results = list(by_key.values())
    if args.json:
        show(document(args.command, place.location,
                      payouts=[payout_from_result(r) for r in results], counts=counts(results),
                      leased=[payout_from_record(r) for r in leased]))  # fmt: skip
    else:
        print_results(results)
        print_leases(leased)
    notice = funds_notice(results)
    if notice is not None:
        say(notice)
    code = exit_code(results) if results else EXIT_OK
    if leased and code == EXIT_OK:
        code = EXIT_PROCESSING
        say("Some payouts are still leased to other workers: run again later, or with --wait.")
    return code
