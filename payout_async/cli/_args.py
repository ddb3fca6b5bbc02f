"""Argument parsing that fails with one ``error:`` line and exit status 2."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from .._redact import scrub
from ._escape import literal

__all__ = [
    "EXIT_USAGE",
    "CLIError",
    "Parser",
    "at_least_one",
    "non_negative_int",
    "port",
    "seconds",
]

EXIT_USAGE = 2


class CLIError(Exception):
    """A configuration or input problem: printed as one ``error:`` line, exit 2.
    Nothing has been sent when it is raised."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``error: ...``) with exit 2."""

    def error(self, message: str) -> NoReturn:
        print(literal(f"error: {scrub(message)} (see {self.prog} --help)"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def seconds(text: str) -> float:
    """A finite, positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text!r}")
    return value


def at_least_one(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number (0 or more), not {text!r}")
    return int(text)


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text!r}")
    return int(text)


def check_finite(value: float, name: str) -> float:
    """``value`` if finite, else a ``CLIError`` naming the option."""
    if not math.isfinite(value):
        raise CLIError(f"{name} must be a finite number")
    return value
