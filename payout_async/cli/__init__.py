"""The ``payout-async`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import _batch, _demo, _ledger_commands, _sandbox

__all__ = ["build_parser", "main"]

#: Each module adds its subcommand with ``register(subparsers)``.
_COMMANDS = (_demo, _batch, _ledger_commands, _sandbox)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="payout-async",
        description="IntellectMoney and Enot payouts that never pay twice.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status
