"""The ``payout-async`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from .._errors import ConfigurationError
from .._redact import scrub
from . import (
    _batch,
    _demo,
    _enqueue,
    _export,
    _funds_commands,
    _key,
    _ledger_commands,
    _sandbox,
    _status,
    _worker,
)
from ._args import EXIT_USAGE, CLIError, Parser
from ._console import say
from ._core import LONG_RUNNING, no_core_dumps
from ._help import show_defaults
from ._logging import add_logging_options, logging_configured

__all__ = ["build_parser", "main"]

#: Each module adds its subcommand with ``register(subparsers)``.
_COMMANDS = (
    _demo, _batch, _enqueue, _worker, _ledger_commands, _status, _funds_commands, _export, _key,
    _sandbox,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = Parser(
        prog="payout-async",
        description="IntellectMoney and Enot payouts that never pay twice.",
    )
    parser.add_argument("--version", action="version", version=f"payout-async {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(subparsers)
    for command_parser in subparsers.choices.values():
        add_logging_options(command_parser)
    show_defaults(parser)
    return parser


#: The exit status of a command whose output was cut off (``| head``): as a Unix tool
#: killed by SIGPIPE.
EXIT_PIPE_CLOSED = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status. A configuration or input error is
    one ``error:`` line on stderr and exit status 2, never a traceback; a reader that
    closes the output early (``| head``) ends the command quietly."""
    args = build_parser().parse_args(argv)
    if args.command in LONG_RUNNING:
        no_core_dumps()  # a core file would hold card numbers, secrets and the ledger key
    try:
        with logging_configured(args):
            status: int = args.run(args)
            sys.stdout.flush()
    except (CLIError, ConfigurationError) as error:
        say(f"error: {scrub(str(error))}")  # it may echo a file's cell or header
        return EXIT_USAGE
    except BrokenPipeError:
        # Nothing more can be written there; keep the interpreter from trying again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    return status
