"""Help texts that show every default: one pass over a finished parser.

An option whose help does not mention its default gets ``(default: X)`` appended, so
that ``--help`` (and the CLI reference generated from the parser) never hides one.
Switches (``store_true``, ``-v``) and options with no default are left as they are.
"""

from __future__ import annotations

import argparse

__all__ = ["default_of", "show_defaults"]

#: Actions whose default says nothing (a switch off, a counter at 0, a list empty).
_SILENT = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._CountAction,
    argparse._HelpAction,
    argparse._VersionAction,
)


def default_of(action: argparse.Action) -> object | None:
    """The default ``--help`` should show for ``action``, or None when it has none
    worth showing."""
    if isinstance(action, _SILENT) or action.help == argparse.SUPPRESS:
        return None
    default: object = action.default
    if default is None or default is argparse.SUPPRESS or default in ([], ()):
        return None
    return default


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append ``(default: X)`` to the help of each option of ``parser`` -- and of its
    subcommands -- whose help does not name its default already."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                show_defaults(sub)
            continue
        default = default_of(action)
        if default is None or "default" in (action.help or ""):
            continue
        shown = f"(default: {default:g})" if isinstance(default, float) else f"(default: {default})"
        action.help = f"{action.help} {shown}" if action.help else shown
