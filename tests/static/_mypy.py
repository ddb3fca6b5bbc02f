"""One ``mypy --strict`` run, in this process, from the project's root (its
``pyproject.toml``, payout_async from source): with the project's cache, warm after
``mypy --strict payout_async``, or a cache of its own (about ten seconds, cold), so
that two runs in parallel test workers never share one."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]

#: One error line of ``--no-pretty`` output: its file, line and error code.
ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def mypy_strict(*paths: Path, cache: Path = ROOT / ".mypy_cache") -> str:
    """mypy's error lines for ``paths`` (nothing on stderr: a crash or bad usage fails)."""
    here = Path.cwd()
    os.chdir(ROOT)
    try:
        stdout, stderr, _ = api.run(
            [
                "--strict",
                "--cache-dir",
                str(cache),
                "--no-error-summary",
                "--hide-error-context",
                "--no-pretty",
                *map(str, paths),
            ]
        )
    finally:
        os.chdir(here)
    assert stderr == "", stderr
    return stdout
