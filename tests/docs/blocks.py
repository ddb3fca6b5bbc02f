"""The fenced code blocks of README.md and docs/: where each is, its language, its
title (``` ```toml title="payouts.toml" ```) and its skip marker, if any.

A block is skipped only with ``<!-- docs-test: skip REASON -->`` on the line right
above its fence, and the reason must be given: a block nobody runs goes stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>.*)$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
_SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"$', re.MULTILINE)
_SKIP = re.compile(r"^\s*<!-- docs-test: skip(?P<reason>.*?)-->\s*$")


@attrs.frozen
class Block:
    """One fenced block of a page."""

    page: Path
    line: int  # of the opening fence, from 1
    language: str
    title: str | None
    code: str
    skip: str | None  # the reason given with the skip marker

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order (indented ones too, as in a list item)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end][indent:] if lines[end][:indent].isspace() else lines[end])
            end += 1
        assert end < len(lines), f"{page}:{index + 1}: a fence that is never closed"
        language = info.split()[0] if info else ""
        title = _TITLE.search(info)
        skip = _SKIP.match(lines[index - 1]) if index else None
        found.append(
            Block(
                page=page,
                line=index + 1,
                language=language,
                title=title["title"] if title else None,
                code=_include("\n".join(body) + "\n"),
                skip=skip["reason"].strip() if skip else None,
            )
        )
        index = end + 1
    return found


def _include(code: str) -> str:
    """``code`` with each ``--8<-- "path"`` line replaced by that file of the repository,
    as the docs site's snippets extension does."""
    return _SNIPPET.sub(lambda m: (ROOT / m["path"]).read_text(encoding="utf-8").rstrip("\n"), code)
