"""``payout-async funds``: the providers paused for want of money, and resuming them.

A worker pauses a provider when the provider refuses a payout for want of money
(``payouts._pause_gate``): no worker sends it anything more until the pause is lifted.
``funds`` (or ``funds status``) lists the pauses and the payouts refused for want of
money; ``funds resume PROVIDER`` (after a top-up) records those payouts ``pending``
again and lifts the pause, so that the workers pay each once; ``funds pause PROVIDER``
pauses one by hand. Workers resume Enot by themselves once its balance covers a
refused payout; IntellectMoney has no balance call, so it waits for ``funds resume``.
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from ..ledger import Ledger, ProviderPause
from ..payouts._funds import funds_refused_rows
from ..payouts._pause_gate import resume_provider
from ._args import CLIError
from ._batch_file import PROVIDERS
from ._console import say, show
from ._location import locate, open_ledger, require_existing
from ._report import EXIT_OK
from ._runner import run_async
from ._setup import add_ledger_option, settings
from ._views import document

__all__ = ["pause_lines", "pause_views", "register"]

#: Who a pause made with ``funds pause`` is by.
OPERATOR = "operator"


def register(subparsers: Any) -> None:
    """Add the ``funds`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "funds",
        help="providers paused for want of money; resume one after a top-up",
        description="status (the default): the providers workers have paused because one "
        "refused a payout for want of money, and how many payouts were so refused. "
        "resume PROVIDER: after a top-up, queue those payouts again and lift the pause; "
        "the workers pay each once. pause PROVIDER: pause one by hand (workers send it "
        "nothing until it is resumed). Workers resume enot by themselves once its "
        "balance covers a refused payout; intellectmoney has no balance call and waits "
        "for resume.",
    )
    parser.add_argument("action", nargs="?", choices=("status", "resume", "pause"),
                        default="status")  # fmt: skip
    parser.add_argument("provider", nargs="?", choices=PROVIDERS, help="for resume and pause")
    parser.add_argument(
        "--reason", default="paused by the operator", help="why (pause; default: by the operator)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    add_ledger_option(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.action != "status" and args.provider is None:
        raise CLIError(f"funds {args.action} needs a PROVIDER: {' or '.join(PROVIDERS)}")
    return run_async(lambda: _funds(args))


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def pause_views(found: list[ProviderPause]) -> list[dict[str, Any]]:
    """The ``paused`` section of a JSON document."""
    return [
        {"provider": p.provider, "since": p.since, "reason": p.reason, "by": p.by} for p in found
    ]


def pause_lines(found: list[ProviderPause]) -> list[str]:
    """What ``status`` and ``funds`` say of the pauses, one line each."""
    return [
        f"{p.provider} is PAUSED since {_when(p.since)} by {p.by}: {p.reason}. Workers send "
        f"it nothing; top up, then `payout-async funds resume {p.provider}`"
        + (" (workers resume enot by themselves once its balance covers a payout)"
           if p.provider == "enot" else "")
        for p in found
    ]  # fmt: skip


async def _funds(args: argparse.Namespace) -> int:
    config = settings(args)
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, f"funds {args.action}")
    ledger = await open_ledger(place, read_only=args.action == "status")
    try:
        if args.action == "resume":
            return await _resume(ledger, place.location, args)
        if args.action == "pause":
            pause, made = await ledger.pause_provider(
                args.provider, reason=args.reason, by=OPERATOR
            )
            if args.json:
                show(document("funds", place.location, paused=pause_views([pause]), made=made))
            else:
                show(f"{args.provider} is paused" + ("" if made else " already") + ".")
            return EXIT_OK
        found = await ledger.pauses()
        refused = {p: len(await funds_refused_rows(ledger, p)) for p in PROVIDERS}
    finally:
        await ledger.aclose()
    if args.json:
        show(document("funds", place.location, paused=pause_views(found),
                      refused_for_funds=refused))  # fmt: skip
        return EXIT_OK
    for line in pause_lines(found) or ["no provider is paused."]:
        show(line)
    for provider, count in refused.items():
        if count:
            show(f"{count} {provider} payout(s) were refused for want of money.")
    return EXIT_OK


async def _resume(ledger: Ledger, location: str, args: argparse.Namespace) -> int:
    unreadable = [r for r in await funds_refused_rows(ledger, args.provider) if r.untrusted]
    if unreadable:
        raise CLIError(
            f"{len(unreadable)} {args.provider} payout(s) refused for want of money cannot "
            f"be paid again from here: {unreadable[0].untrusted}; nothing was changed"
        )
    lifted, requeued = await resume_provider(ledger, args.provider)
    if args.json:
        lifts = pause_views([lifted] if lifted else [])
        show(document("funds", location, resumed=args.provider, lifted=lifts, requeued=requeued))
        return EXIT_OK
    was = (
        f"(paused since {_when(lifted.since)} by {lifted.by})"
        if lifted is not None
        else "(it was not paused)"
    )
    show(
        f"{args.provider} resumed {was}: {requeued} payout(s) refused for want of money "
        "are queued again; the workers pay each once."
    )
    if not requeued:
        say("nothing was refused for want of money; the workers go on with what is pending.")
    return EXIT_OK
