"""Prints what the unit tests measured (the fuzz's HTTP call count) after the run."""

from __future__ import annotations

import pytest

from .answers import REPORT


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for line in config.stash.get(REPORT, []):
        terminalreporter.write_line(line)
