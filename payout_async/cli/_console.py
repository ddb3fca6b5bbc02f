"""Printing for people: every piece of user text literally, tables that fit the terminal.

Nothing here interprets markup: keys, reasons and file names are printed as they are,
with control characters shown as escapes (``\\x1b``, see ``_escape``) so that a hostile
value can neither crash a report nor repaint the terminal.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Literal

import attrs
from rich.cells import cell_len

from ._escape import literal

__all__ = ["Column", "literal", "render_table", "say", "show", "terminal_width"]

Fit = Literal["keep", "shrink", "wrap"]
#: The narrowest a column of each kind gets before a table overflows the screen.
_FLOORS: dict[str, int] = {"shrink": 4, "wrap": 16, "keep": 6}


def say(message: str) -> None:
    """A line of progress, advice or an error on stderr (printed literally)."""
    print(literal(message), file=sys.stderr, flush=True)


def show(text: str = "") -> None:
    """A line of results on stdout (``text`` must already be literal)."""
    print(text, flush=True)


def terminal_width() -> int | None:
    """How wide stdout is: ``COLUMNS`` if set, the terminal's width on a terminal,
    else ``None`` (no limit: a pipe or a file gets every line whole)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


@attrs.frozen
class Column:
    """One column: ``keep`` is never cut (a value wider than a third of the screen
    wraps), ``shrink`` is cut with an ellipsis when space runs out, ``wrap`` (the last
    column) wraps onto further lines and never gets narrower than ``minimum``."""

    header: str
    fit: Fit = "keep"
    minimum: int = 8


def _wrap(text: str, width: int, *, words: bool) -> list[str]:
    if cell_len(text) <= width:
        return [text]
    if words:
        lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)
        if all(cell_len(line) <= width for line in lines):
            return lines or [""]
    lines, line = [], ""
    for char in text:
        if cell_len(line + char) > width:
            lines.append(line)
            line = ""
        line += char
    return [*lines, line]


def _cut(text: str, width: int) -> str:
    if cell_len(text) <= width:
        return text
    while text and cell_len(text) > width - 1:
        text = text[:-1]
    return text + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_len(text))


def _widths(columns: Sequence[Column], natural: list[int], limit: int | None) -> list[int]:
    widths = list(natural)
    if limit is None:
        return widths
    gaps = 2 * (len(columns) - 1)

    def excess() -> int:
        return sum(widths) + gaps - limit

    # 1. Cut the columns that may be cut, down to their minimum.
    for index, column in enumerate(columns):
        if column.fit == "shrink" and excess() > 0:
            widths[index] = max(min(column.minimum, natural[index]), widths[index] - excess())
    # 2. Wrap kept columns wider than a third of the screen.
    for index, column in enumerate(columns):
        if column.fit == "keep" and excess() > 0:
            widths[index] = max(min(natural[index], limit // 3), widths[index] - excess())
    # 3. The wrapping column takes what is left, but never less than its minimum.
    for index, column in enumerate(columns):
        if column.fit == "wrap":
            room = widths[index] - excess()
            widths[index] = max(min(column.minimum, natural[index]), room)
    # 4. Still too wide (a narrow screen): cut further, narrow the wrapping column a
    #    little more, and only then wrap the widest kept column.
    floors = [_FLOORS[column.fit] for column in columns]
    for fit in ("shrink", "wrap", "keep"):
        while excess() > 0:
            candidates = [
                i for i, c in enumerate(columns) if c.fit == fit and widths[i] > floors[i]
            ]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] = max(floors[widest], widths[widest] - excess())
    return widths


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[object]], *, width: int | None = None
) -> list[str]:
    """The lines of a borderless table: a header, a rule, then the rows. Every cell is
    printed literally; columns are sized to fit ``width`` (see ``Column``)."""
    cells = [[literal(value) for value in row] for row in rows]
    headers = [column.header for column in columns]
    natural = [
        max([cell_len(headers[i]), *(cell_len(row[i]) for row in cells)])
        for i in range(len(columns))
    ]
    widths = _widths(columns, natural, width)
    lines = ["  ".join(_pad(_cut(h, w), w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("─" * w for w in widths))
    for row in cells:
        parts: list[list[str]] = []
        for column, value, cell_width in zip(columns, row, widths, strict=True):
            if column.fit == "shrink":
                parts.append([_cut(value, cell_width)])
            else:
                parts.append(_wrap(value, cell_width, words=column.fit == "wrap"))
        for depth in range(max(len(part) for part in parts)):
            line = "  ".join(
                _pad(part[depth] if depth < len(part) else "", w)
                for part, w in zip(parts, widths, strict=True)
            )
            lines.append(line.rstrip())
    return [line.rstrip() for line in lines]
