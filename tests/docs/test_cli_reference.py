"""The command line reference is generated from the parser when the site is built
(docs/_hooks/cli_reference.py): every command and option is in it, as Markdown."""

from __future__ import annotations

import argparse
import importlib.util

from payout_async.cli import build_parser

from .blocks import ROOT


def _hook():  # type: ignore[no-untyped-def]
    path = ROOT / "docs" / "_hooks" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_and_option_is_in_the_reference() -> None:
    hook = _hook()
    parser = build_parser()
    text = hook.on_page_markdown(f"# CLI\n\n{hook.MARKER}\n")
    assert hook.MARKER not in text
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        assert f"### `{name}`" in text
        for action in command._actions:
            for option in action.option_strings:
                assert f"`{option}" in text, (name, option)
    assert "``" not in text.replace("```", "")  # no reStructuredText left


def test_the_cli_page_has_the_marker() -> None:
    assert _hook().MARKER in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
