"""MkDocs hook: the command line reference, generated from ``payout-async``'s own
argparse parser when the site is built (``<!-- cli-reference -->`` in cli.md), so that
it follows every command, option, default and help text as they change."""

from __future__ import annotations

import argparse
import re
from typing import Any

from payout_async.cli import build_parser

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the reference."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference(build_parser()))


def reference(parser: argparse.ArgumentParser) -> str:
    """Markdown for every subcommand of ``parser``: usage, description, options."""
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sections = []
    for name, command in subparsers.choices.items():
        command.formatter_class = _Wide
        summary = next((a.help for a in subparsers._choices_actions if a.dest == name), "")
        sections.append(_command(name, command, (summary or "").replace("%%", "%")))
    return "\n".join(sections)


class _Wide(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=100, max_help_position=40)


def _command(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    lines = [f"### `{name}`", ""]
    if summary:
        lines += [_plain(summary), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    for paragraph in re.split(r"\n\s*\n", parser.description or ""):
        if paragraph.strip():
            lines += [_plain(paragraph), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        column = "option" if any(a.option_strings for a in actions) else "argument"
        lines += [f"**{title}**", "", f"| {column} | what it does |", "|---|---|"]
        for action in actions:
            lines.append(f"| {_names(action)} | {_help(parser, action)} |")
        lines.append("")
    return "\n".join(lines)


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        if action.choices and not action.metavar:
            return "`{" + ",".join(map(str, action.choices)) + "}`"
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        metavar = " " + str(action.metavar or action.dest.upper())
        if action.choices and not action.metavar:
            metavar = " {" + ",".join(map(str, action.choices)) + "}"
    return ", ".join(f"`{option}{metavar}`" for option in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    return _plain(text).replace("|", "\\|").replace("\n", " ")


def _plain(text: str) -> str:
    """Help text as Markdown: RST's double backquotes become code spans, whitespace
    runs one space, angle brackets escaped."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.replace("<", "&lt;").replace(">", "&gt;")
