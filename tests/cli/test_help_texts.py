"""Every subcommand's ``--help``: each default shown, no RST markup, no dead option."""

from __future__ import annotations

import argparse

import pytest

from payout_async.cli import build_parser
from payout_async.cli._help import default_of


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"payout-async": parser, **sub.choices}


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_default_is_shown(name: str) -> None:
    parser = COMMANDS[name]
    for action in parser._actions:
        default = default_of(action)
        if default is None:
            continue
        assert action.help and "default" in action.help, (name, action.option_strings, default)
    text = parser.format_help()
    assert "``" not in text, name  # RST literals: the CLI reference is generated from this
    assert ":class:" not in text and ":func:" not in text, name
    assert "no effect" not in text, name


@pytest.mark.parametrize(
    ("command", "option", "shown"),
    [
        ("batch", "--concurrency", "(default: 32)"),
        ("worker", "--concurrency", "(default: 32)"),
        ("sandbox", "--port", "(default: 8080)"),
        ("sandbox", "--im-final-after", "(default: 1.5)"),
        ("demo", "--seed", "(default: 2026)"),
        ("demo", "--concurrency", "(default: 50)"),
        ("export", "--format", "(default: csv)"),
        ("ledger-key", "action", "(default: new)"),
    ],
)
def test_named_defaults(command: str, option: str, shown: str) -> None:
    parser = COMMANDS[command]
    (action,) = [a for a in parser._actions if option in a.option_strings or a.dest == option]
    assert action.help is not None and shown in action.help, action.help


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"payout-async"}))
def test_every_command_takes_json(name: str) -> None:
    options = {o for action in COMMANDS[name]._actions for o in action.option_strings}
    assert "--json" in options, name
