"""``payout-async worker``: pay what the ledger holds until stopped; run as many as needed.

A worker pays the pending rows ``enqueue`` recorded and finishes stranded ones
(``Payouts.run_worker``, one per provider, under one owner name), sleeping on
``LISTEN/NOTIFY`` (PostgreSQL) when there is nothing to do. The first SIGTERM or
Ctrl-C stops it cleanly: it claims nothing more, lets requests in flight record their
outcome (``--shutdown-grace``), gives every row back for other workers, says what it
did and exits 0. A second one stops it at once (exit 130; rows are still given back).

When a provider refuses a payout for want of money, the worker pauses that provider
for every worker of the ledger and says so at ERROR: none sends it anything more until
a balance read (Enot, every ``--balance-poll`` seconds) shows money, or the operator
runs ``payout-async funds resume PROVIDER``; the payouts so refused are then paid,
once each (``payouts._pause_gate``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import time
from collections import Counter
from typing import Any

from ..enot import EnotClient
from ..intellectmoney import IntellectMoneyClient
from ..ledger import LedgerError
from ..payouts import PayoutResult, Payouts, PayoutStatus, WorkerSummary
from ..payouts._owner import WORKER, new_owner
from ._args import CLIError, seconds
from ._batch_file import PROVIDERS
from ._console import say, show
from ._escape import json_text
from ._history import (
    ACCEPT_FLAG,
    History,
    add_accept_option,
    check_history,
    note_ledger,
    unknowable_ledger_rows,
)
from ._location import locate, open_ledger, require_existing
from ._preflight import check_reachable
from ._registry import default_registry
from ._report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ORDER
from ._setup import Settings, add_provider_options, build_client, check_credentials, make_payouts
from ._setup import settings as read_settings
from ._views import SCHEMA, payout_from_result
from ._waits import WaitBoard

__all__ = ["register"]

_log = logging.getLogger("payout_async.cli")
_PROGRESS_EVERY = 10.0  # seconds between progress lines, when something happened


def _grace(text: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, not {text!r}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``worker`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="pay the payouts the ledger holds until stopped (run as many as you like)",
        description="Pay the payouts `enqueue` recorded, and finish stranded ones, until "
        "SIGTERM or Ctrl-C; sleep while there is nothing to do. Any number of workers may "
        "share a PostgreSQL ledger (several processes on one host for SQLite). Stopping "
        "gives every payout back to the others at once; nothing is paid twice.",
    )
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        help="pay only this provider's payouts (default: each provider with credentials)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=_grace,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may take to record their outcome "
        "(default 10)",
    )
    parser.add_argument(
        "--idle-poll",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="with nothing to do, look for rows whose lease ran out this often; new work "
        "wakes the worker at once (default 5)",
    )
    parser.add_argument(
        "--balance-poll",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="while enot is paused for want of money, read its balance this often and "
        "resume once it covers a refused payout (default 60); intellectmoney has no "
        "balance call: `payout-async funds resume intellectmoney` after a top-up",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--json",
        action="store_true",
        help='JSON lines on stdout: one object when it starts (event "started"), one '
        'per payout driven ("payout"), one when it stops ("stopped", the summary)',
    )
    add_accept_option(parser)
    add_provider_options(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_work(args))
    except KeyboardInterrupt:  # before the handlers were in place
        return EXIT_INTERRUPTED


def _providers(args: argparse.Namespace, config: Settings) -> list[str]:
    if args.provider:
        check_credentials(config, args.provider)
        return [args.provider]
    found = []
    for provider in PROVIDERS:
        with contextlib.suppress(CLIError):
            check_credentials(config, provider)
            found.append(provider)
    if not found:
        raise CLIError(
            "no provider has credentials (set PAYOUT_ASYNC_IM_* or PAYOUT_ASYNC_ENOT_*, a "
            "--*-file flag, or --config)"
        )
    return found


class _Stopper:
    """SIGTERM and SIGINT: the first stops the worker cleanly, the second at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signalled_at: float | None = None
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(number, self._signalled, number)

    def _signalled(self, number: int) -> None:
        if not self.event.is_set():
            self.signalled_at = time.monotonic()
            self.event.set()
            say(
                f"{signal.Signals(number).name}: stopping -- no new payouts; giving every "
                "payout back to other workers (again to stop at once)"
            )
        elif self._task is not None:
            self._task.cancel()


def _event(event: str, **fields: Any) -> None:
    """One ``--json`` line on stdout."""
    show(json_text({"schema": SCHEMA, "command": "worker", "event": event, **fields}))


class _Progress:
    """Counts of the payouts driven, said every few seconds when they change; with
    ``--json``, each payout as a line on stdout too."""

    def __init__(self, quiet: bool, json_lines: bool = False) -> None:
        self.quiet = quiet
        self.json_lines = json_lines
        self.counts: Counter[str] = Counter()
        self._said = time.monotonic()

    def add(self, result: PayoutResult) -> None:
        self.counts[result.status.value] += 1
        if self.json_lines:
            _event("payout", payout=payout_from_result(result))
        now = time.monotonic()
        if not self.quiet and now - self._said >= _PROGRESS_EVERY:
            self._said = now
            say(f"drove {_tally(self.counts)}")


def _tally(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = [f"{name} {counts[name]}" for name in ORDER if counts.get(name)]
    return f"{total} payout(s)" + (f": {', '.join(parts)}" if parts else "")


async def _work(args: argparse.Namespace) -> int:
    stopper = _Stopper()
    config = read_settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, "worker")
    providers = _providers(args, config)
    ledger = await open_ledger(place)
    clients: dict[str, IntellectMoneyClient | EnotClient] = {}
    checked: History | None = None
    try:
        accept = args.accept_restored_ledger
        history = await check_history(default_registry(), place.location, ledger, accept=accept)
        if history.restored and not args.lookup_before_create:
            raise CLIError(f"{ACCEPT_FLAG} needs Enot's lookup before create: drop "
                           "--no-lookup-before-create")  # fmt: skip
        for provider in providers:
            clients[provider] = build_client(args, config, provider)
            await check_reachable(clients[provider], provider)
        im = clients.get("intellectmoney")
        im_client = im if isinstance(im, IntellectMoneyClient) else None
        await unknowable_ledger_rows(history, ledger, im_client)
        checked = history  # the ledger is noted only once it passed the checks
        owner = new_owner(WORKER)
        flows: list[Payouts[Any]] = []
        waits = WaitBoard(_log.info)  # at INFO, the worker's default level
        on_wait = waits.on_wait if _log.isEnabledFor(logging.INFO) else None
        for client in clients.values():
            flows.append(make_payouts(args, client, ledger, owner=owner, on_wait=on_wait))
        say(
            f"worker {owner}: paying {' and '.join(providers)} payouts, up to "
            f"{args.concurrency} at a time each; SIGTERM or Ctrl-C stops it cleanly"
        )
        if args.json:
            _event("started", ledger=place.location, owner=owner, providers=providers,
                   concurrency=args.concurrency)  # fmt: skip
        progress = _Progress(args.no_progress, args.json)
        try:
            summaries = await _run_all(flows, stopper.event, args, progress)
        except asyncio.CancelledError:
            say("stopped at once; the payouts in flight were given back, unfinished.")
            return EXIT_INTERRUPTED
        except LedgerError as error:
            say(f"error: the ledger failed: {error}")
            return EXIT_FAILED
        finally:
            waits.close()
    finally:
        for client in clients.values():
            await client.aclose()
        if checked is not None:
            await note_ledger(checked, ledger)
        await ledger.aclose()
    _summarise(summaries, stopper, json_lines=args.json)
    return EXIT_OK


async def _run_all(
    flows: list[Payouts[Any]], stop: asyncio.Event, args: argparse.Namespace, progress: _Progress
) -> list[WorkerSummary]:
    """One ``run_worker`` per provider; if one fails, the others are stopped and its
    error is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    flow.run_worker(
                        stop=stop,
                        concurrency=args.concurrency,
                        shutdown_grace=args.shutdown_grace,
                        idle_poll=args.idle_poll,
                        on_result=progress.add,
                        balance_poll=args.balance_poll,
                    )
                )
                for flow in flows
            ]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _summarise(summaries: list[WorkerSummary], stopper: _Stopper, *, json_lines: bool) -> None:
    counts: Counter[str] = Counter()
    for summary in summaries:
        for status, count in summary.statuses.items():
            counts[PayoutStatus(status).value] += count
    handed_back = sum(summary.handed_back for summary in summaries)
    took = ""
    if stopper.signalled_at is not None:
        took = f" {time.monotonic() - stopper.signalled_at:.2f} s after the signal"
    if json_lines:
        counted = {name: counts[name] for name in ORDER if counts.get(name)}
        _event("stopped", counts=counted, handed_back=handed_back)
        return
    show(
        f"stopped{took}: drove {_tally(counts)}; gave {handed_back} unfinished payout(s) back "
        "to the other workers."
    )
