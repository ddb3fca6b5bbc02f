"""What every command logs, and how: ``--log-level``, ``-v``/``-q`` and ``--log-format``.

Log lines go to stderr (results stay on stdout). ``text`` is one readable line each;
``json`` is one JSON object per line, for services -- a payout's transition carries its
``key``, ``provider``, ``from``, ``to``, ``attempt`` and ``provider_id`` as fields. The
``worker`` command logs at INFO by default (a service should leave a record of what it
paid); the others at WARNING. Every message has been scrubbed of card numbers and
phones where it is made, and is escaped like any other text from outside.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._escape import json_text, literal

__all__ = ["add_logging_options", "logging_configured"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Commands that log at INFO unless told otherwise.
_CHATTY = frozenset({"worker"})


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """Add the logging options to one command's parser."""
    group = parser.add_argument_group("logging (stderr)")
    group.add_argument(
        "--log-level",
        choices=_LEVELS,
        type=str.upper,
        help="the least severe level logged (default: INFO for worker, WARNING otherwise)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: once for INFO, twice for DEBUG",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="log errors only (overrides -v)")
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line for services (default: text)",
    )


def _level(args: argparse.Namespace) -> int:
    if getattr(args, "quiet", False):
        return logging.ERROR
    explicit = getattr(args, "log_level", None)
    if explicit:
        return int(getattr(logging, explicit))
    base = logging.INFO if getattr(args, "command", None) in _CHATTY else logging.WARNING
    return max(logging.DEBUG, base - 10 * int(getattr(args, "verbose", 0) or 0))


@contextmanager
def logging_configured(args: argparse.Namespace) -> Iterator[None]:
    """Send the library's log to stderr at the level and in the format asked for, for
    as long as the command runs; then give the ``payout_async`` logger back as it was
    (``main()`` may be called inside a host program or a test session)."""
    handler = logging.StreamHandler(sys.stderr)
    json_lines = getattr(args, "log_format", "text") == "json"
    handler.setFormatter(_JSONLines() if json_lines else _TextLines())
    logger = logging.getLogger("payout_async")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(_level(args))
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


class _TextLines(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return literal(super().format(record))


class _JSONLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
        }
        transition = getattr(record, "transition", None)
        if isinstance(transition, dict):
            line.update(transition)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json_text({name: _plain(value) for name, value in line.items()})
