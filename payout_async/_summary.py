"""Free text from providers, summed up in one line: an HTML page (a gateway's
``502 Bad Gateway``) as its title and size, any text with its line breaks folded and
its length bounded, so that a ledger's ``last_error`` and ``reason``, an error message
or an exported cell is always one short line."""

from __future__ import annotations

import re

from ._numbers import clip

__all__ = ["LIMIT", "html_summary", "one_line"]

#: The longest text a ledger keeps in ``reason`` or ``last_error``.
LIMIT = 500
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<h1[^>]*>(.*?)</h1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_HTML = re.compile(r"^\s*(?:<!doctype\s+html|<html|<head|<body|<\?xml)", re.IGNORECASE)


def _words(text: str) -> str:
    return " ".join(text.split())


def html_summary(body: bytes, text: str) -> str | None:
    """``<title>502 Bad Gateway</title> (HTML body, 1,234 bytes)`` for an HTML page
    (``text``: the start of ``body``, decoded); None for anything else."""
    if not _HTML.match(text):
        return None
    size = f"HTML body, {len(body):,} bytes"
    found = _TITLE.search(text) or _HEADING.search(text)
    if found is not None:
        title = _words(_TAG.sub(" ", found[1]))
        if title:
            tag = "title" if found.re is _TITLE else "h1"
            return f"<{tag}>{clip(title, 120)}</{tag}> ({size})"
    words = _words(_TAG.sub(" ", text))
    return f"{clip(words, 120)} ({size})" if words else f"({size})"


def one_line(text: str, limit: int = LIMIT) -> str:
    """``text`` on one line (an HTML page summed up, runs of white space -- line breaks
    included -- as one space), at most ``limit`` characters, never cut inside a number."""
    summary = html_summary(text.encode(), text) if "<" in text else None
    if summary is None and "<" in text:
        # An HTML page quoted inside a message ("HTTP 502: <html>..."): keep the lead-in.
        start = text.find("<")
        inner = html_summary(text[start:].encode(), text[start:])
        if inner is not None:
            summary = text[:start] + inner
    folded = _words(summary if summary is not None else text)
    if len(folded) <= limit:
        return folded
    return clip(folded, limit - 1).rstrip() + "…"
