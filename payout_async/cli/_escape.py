"""The one escaping rule for every text from outside (provider messages, keys,
reasons, file names) on its way to a terminal, a CSV cell or a JSON document.

A hostile value must neither repaint a terminal (ESC, CSI, OSC 8 links, OSC 52
clipboard writes, bells), reorder what is shown (bidi overrides and isolates), nor
run as a spreadsheet formula (OWASP, "CSV Injection").

- ``literal``: control and invisible format characters as Python escapes (``\\x1b``);
- ``json_text``: JSON with those characters as ``\\uXXXX`` (the parsed value is
  unchanged; the bytes on stdout hold none of them raw);
- ``csv_cell``: ``literal``, then a cell that a spreadsheet would read as a formula
  prefixed with ``'`` and quoted;
- ``csv_line``: a row of such cells.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["FORMULA_TRIGGERS", "csv_cell", "csv_line", "json_text", "literal"]

#: C0 and C1 control characters (U+009B is CSI), DEL, and the format characters that
#: reorder or hide text (zero-width, bidi embeddings, overrides and isolates, BOM).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
#: What a spreadsheet reads as the start of a formula (OWASP).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: What makes a CSV cell need quotes at all.
_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def literal(value: object) -> str:
    """``value`` as text, with control and invisible format characters escaped."""
    text = "" if value is None else str(value)
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], text)


def json_text(value: Any) -> str:
    """``value`` as one line of JSON; non-ASCII text stays readable, but no control or
    format character appears raw (``\\u009b``, ``\\u202e``)."""
    text = json.dumps(value, ensure_ascii=False)
    # JSON escapes C0 itself; what is left (DEL, C1, format characters) can only stand
    # inside a string, where \\uXXXX means the same character.
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def csv_cell(value: object) -> str:
    """One CSV cell, quoted where needed: escaped as ``literal``; a would-be formula
    (``=``, ``+``, ``-``, ``@``, tab, CR first) prefixed with ``'`` and quoted."""
    text = literal(value)
    formula = text.startswith(FORMULA_TRIGGERS)
    if formula:
        text = "'" + text
    if formula or _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values: Iterable[object]) -> str:
    """One CSV line of ``csv_cell`` cells, ending in a newline."""
    return ",".join(csv_cell(value) for value in values) + "\n"
