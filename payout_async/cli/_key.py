"""``payout-async ledger-key``: a new encryption key for a ledger."""

from __future__ import annotations

import argparse
from typing import Any

from ..ledger import new_encryption_key
from ._console import say, show
from ._report import EXIT_OK
from ._setup import LEDGER_KEY_ENV

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``ledger-key`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ledger-key",
        help="print a new encryption key for a ledger",
        description="Print a new ledger encryption key (32 random bytes, URL-safe base64) "
        f"on stdout. Give it to the commands as {LEDGER_KEY_ENV}, --ledger-key-file or "
        "ledger_key in the config file: each payout's recipient is then stored "
        "encrypted. Keep it like a password: rows written with it cannot be read "
        "without it.",
    )
    parser.set_defaults(run=_ledger_key)


def _ledger_key(args: argparse.Namespace) -> int:
    show(new_encryption_key())
    say(
        f"a new ledger key: give it as {LEDGER_KEY_ENV} (or --ledger-key-file, or "
        "ledger_key in a 0600 config file) to every command using the ledger, and keep "
        "a copy: rows written with it cannot be read without it"
    )
    return EXIT_OK
