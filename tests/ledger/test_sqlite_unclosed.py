"""A script that forgets to close its ``SQLiteLedger`` still exits at once, quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, sys
from payout_async.ledger import SQLiteLedger

KEEP = []

async def main() -> None:
    ledger = SQLiteLedger(sys.argv[1])
    claim = await ledger.begin("enot", "k", "h", {}, owner="w", lease_seconds=60)
    print(claim.record.state.value, flush=True)
    if sys.argv[2] == "global":
        KEEP.append(ledger)  # alive until the interpreter exits

asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["local", "global"])
def test_an_unclosed_sqlite_ledger_lets_the_process_exit(tmp_path: Path, where: str) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ledger.db"), where],
        capture_output=True,
        text=True,
        timeout=60,  # 0.1 hung here for minutes
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pending"
    assert done.stderr == ""  # no "Event loop is closed" traceback from aiosqlite's thread
