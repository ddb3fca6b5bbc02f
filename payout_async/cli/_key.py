"""``payout-async ledger-key``: a new encryption key, the keys rows use, and rotation.

``ledger-key`` (or ``ledger-key new``) prints a new key. ``ledger-key status`` counts
the live rows by the key they are signed with, and the clear and unsigned ones -- no
key needed. ``ledger-key rotate`` moves every live row to the current key (the first
of the ring: ``PAYOUT_ASYNC_LEDGER_KEY="NEW,OLD"``) in batches, each committed on its
own: interrupted, run it again and it goes on.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..ledger import PostgresLedger, SQLiteLedger, new_encryption_key
from ..ledger._recipient import Recipients
from ..ledger._rotate import KeyUse, Rotatable, RotationBatch, rotate
from ._args import CLIError
from ._console import say, show
from ._location import locate, open_ledger, require_existing
from ._report import EXIT_OK
from ._runner import run_async
from ._setup import LEDGER_KEY_ENV, add_ledger_option, settings
from ._views import document

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``ledger-key`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ledger-key",
        help="print a new ledger encryption key; count or rotate the keys rows use",
        description="new (the default): print a new ledger encryption key (32 random "
        f"bytes, URL-safe base64) on stdout; give it as {LEDGER_KEY_ENV}, --ledger-key-file "
        "or ledger_key in the config file. status: live rows by the key they are signed "
        "with, and how many are clear or unsigned (needs no key). rotate: re-seal and "
        "re-sign every live row with the current key -- the first of a key ring "
        f'({LEDGER_KEY_ENV}="NEW,OLD") -- in batches; interrupted, run it again.',
    )
    parser.add_argument("action", nargs="?", choices=("new", "status", "rotate"), default="new")
    parser.add_argument(
        "--batch", type=int, default=200, help="rows per transaction for rotate (default 200)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON document on stdout (new: the key and its id; status, rotate: the "
        "rows by key id -- never a configured key)",
    )
    add_ledger_option(parser)
    parser.set_defaults(run=_ledger_key)


def _ledger_key(args: argparse.Namespace) -> int:
    if args.action == "new":
        key = new_encryption_key()
        if args.json:  # the new key is this command's result; no configured key is shown
            key_id = Recipients(key).key_id
            show(document("ledger-key new", None, key=key, key_id=key_id, env=LEDGER_KEY_ENV))
        else:
            show(key)
        say(
            f"a new ledger key: give it as {LEDGER_KEY_ENV} (or --ledger-key-file, or "
            "ledger_key in a 0600 config file) to every command using the ledger, and keep "
            "a copy: rows written with it cannot be read without it. To replace a key, "
            f'give every process "NEW,OLD" first, then run `payout-async ledger-key rotate`'
        )
        return EXIT_OK
    if args.batch < 1:
        raise CLIError("--batch must be at least 1")
    return run_async(lambda: _keys(args))


async def _keys(args: argparse.Namespace) -> int:
    config = settings(args)
    if args.action == "rotate" and not config.ledger_key:
        raise CLIError(f"rotate needs the ledger's key ring: set {LEDGER_KEY_ENV}=NEW,OLD")
    place = await locate(config.ledger, key=config.ledger_key)
    require_existing(place, f"ledger-key {args.action}")
    ledger = await open_ledger(place, read_only=args.action == "status")
    try:
        if not isinstance(ledger, SQLiteLedger | PostgresLedger):  # (memory:// is refused)
            raise CLIError(f"{place.location} is not a SQLite or PostgreSQL ledger")
        keyed: Rotatable = ledger
        if args.action == "status":
            use = await keyed.key_use()
            left: list[tuple[str, str, str]] = []
            rotated = None
        else:
            report = await rotate(keyed, batch=args.batch, progress=_progress)
            use, left, rotated = report.use, report.left, report.rotated
    finally:
        await ledger.aclose()
    if args.json:
        rows_left = [{"provider": p, "key": k, "reason": r} for p, k, r in left]
        show(document(f"ledger-key {args.action}", place.location, rotated=rotated,
                      keys=use.by_key, unsigned=use.unsigned, clear=use.clear,
                      left=rows_left))  # fmt: skip
        return EXIT_OK
    if rotated is not None:
        show(f"rotated: {rotated} live rows re-sealed and re-signed with the current key")
    for provider, key, reason in left:
        show(f"left as it is: {provider}/{key}: {reason}")
    _show_use(use)
    return EXIT_OK


def _progress(batch: RotationBatch) -> None:
    if batch.last is not None:
        say(f"rotated {batch.rotated} rows, up to {batch.last[0]}/{batch.last[1]}")


def _show_use(use: KeyUse) -> None:
    for key_id, rows in use.by_key.items():
        show(f"key {key_id}: {rows} live rows")
    show(f"unsigned: {use.unsigned} live rows")
    show(f"in clear: {use.clear} live rows")
