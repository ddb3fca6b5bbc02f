"""``SQLiteLedger`` registers an adapter for ``None`` (``ledger._sqlite_none``): NULL is
bound as before, and an adapter registered before is left in place. Each case runs in
a fresh interpreter, whose ``sqlite3`` registry is its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_opening_a_ledger_registers_it_and_none_still_binds_null(tmp_path: Path) -> None:
    out = _run(
        f"""
        import asyncio, sqlite3
        from payout_async.ledger import SQLiteLedger
        key = (type(None), sqlite3.PrepareProtocol)
        print(key in sqlite3.adapters)
        async def main():
            async with SQLiteLedger({str(tmp_path)!r} + "/l.db"):
                pass
        asyncio.run(main())
        print(key in sqlite3.adapters, sqlite3.adapters[key](None))
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (a)")
        conn.execute("INSERT INTO t VALUES (?)", (None,))
        print(conn.execute("SELECT a IS NULL, typeof(a), ? IS NULL FROM t", (None,)).fetchone())
        """
    )
    assert out.splitlines() == ["False", "True None", "(1, 'null', 1)"]


def test_an_adapter_registered_before_is_kept() -> None:
    out = _run(
        """
        import sqlite3
        from payout_async.ledger._sqlite_none import bind_none_directly
        def mine(value):
            return "mine"
        sqlite3.register_adapter(type(None), mine)
        bind_none_directly()
        print(sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is mine)
        """
    )
    assert out == "True"
