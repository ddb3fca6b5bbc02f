"""SQLiteLedger when its file is locked, write-protected, missing or new: bounded waits,
classified errors, read-only access, private files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from payout_async import ConfigurationError
from payout_async.ledger import (
    LedgerNotWrittenError,
    LedgerOutdatedError,
    LedgerState,
    SQLiteLedger,
    ledger_from_url,
)
from payout_async.ledger._patience import one_payout

BUSY = 0.4
SLACK = 0.5  # a loaded machine's scheduling, on top of the configured bound


async def begin(ledger: SQLiteLedger, key: str) -> None:
    await ledger.begin("enot", key, "h", {"amount": "1.00"}, owner="w", lease_seconds=30)


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the file's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("COMMIT")
        other.close()


@contextmanager
def write_protected(path: Path) -> Iterator[None]:
    """``path`` made unwritable: ``chmod`` for a user, the immutable flag for root
    (whom permissions do not stop)."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot write-protect a file as root here: {done.stderr!r}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)


async def test_each_call_waits_for_a_lock_once_then_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path, busy_timeout=BUSY) as ledger:
        await begin(ledger, "before")

        async def timed(key: str, delay: float) -> tuple[float, BaseException | None]:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await begin(ledger, key)
            except LedgerNotWrittenError as error:
                return time.monotonic() - started, error
            return time.monotonic() - started, None

        with write_lock(path):
            # Calls arriving while earlier ones wait form later batches: each still
            # waits its own busy_timeout, not the batches' waits added up.
            outcomes = await asyncio.gather(*(timed(f"k{n}", n * 0.04) for n in range(12)))
        for waited, error in outcomes:
            assert isinstance(error, LedgerNotWrittenError)
            assert error.code == "SQLITE_BUSY"
            # Waiting per batch instead would make those arriving early in a batch's
            # wait wait nearly twice as long.
            assert BUSY * 0.9 <= waited < BUSY * 1.45
        assert {row.key for row in await ledger.records()} == {"before"}
        await begin(ledger, "after")


async def test_calls_waiting_for_a_lock_go_through_once_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path, busy_timeout=2.0) as ledger:
        await ledger.open()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.3, lambda: other.execute("COMMIT"))
        try:
            await asyncio.gather(*(begin(ledger, f"k{n}") for n in range(20)))
        finally:
            other.close()
        assert await ledger.counts() == {LedgerState.PENDING: 20}


async def test_reads_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path, busy_timeout=BUSY) as ledger:
        await begin(ledger, "k")
        with write_lock(path):
            started = time.monotonic()
            assert await ledger.counts() == {LedgerState.PENDING: 1}
            assert (await ledger.get("enot", "k")) is not None
            assert time.monotonic() - started < BUSY


async def test_read_only_ledger_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path) as writer:
        await begin(writer, "k")
        async with SQLiteLedger(path, read_only=True) as reader:
            assert await reader.counts() == {LedgerState.PENDING: 1}
            assert [row.key for row in await reader.records()] == ["k"]
            assert len(await reader.history("enot", "k")) == 1
            with pytest.raises(LedgerNotWrittenError, match="read-only"):
                await begin(reader, "other")
            await begin(writer, "later")  # seen by the reader at once
            assert await reader.get("enot", "later") is not None
            assert "read_only=True" in repr(reader)


async def test_a_read_only_url_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path) as writer:
        await begin(writer, "k")
    reader = ledger_from_url(f"sqlite:///{path}", read_only=True)
    assert isinstance(reader, SQLiteLedger) and reader.read_only
    async with reader:
        with pytest.raises(LedgerNotWrittenError, match="read-only"):
            await begin(reader, "other")
    with pytest.raises(ConfigurationError, match="memory:// cannot be read-only"):
        ledger_from_url("memory://", read_only=True)


async def test_read_only_never_creates_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(ConfigurationError, match="no SQLite ledger"):
        await SQLiteLedger(missing, read_only=True).open()
    with pytest.raises(ConfigurationError, match="no SQLite ledger"):
        await SQLiteLedger(missing, create=False).open()
    assert not missing.exists()
    async with SQLiteLedger(missing) as created:
        await begin(created, "k")
    async with SQLiteLedger(missing, create=False) as existing:
        assert await existing.get("enot", "k") is not None


async def test_read_only_refuses_a_file_that_is_no_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).close()
    with pytest.raises(LedgerOutdatedError, match="no current payout ledger"):
        await SQLiteLedger(path, read_only=True).open()


async def test_a_write_protected_file_can_be_read(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path) as writer:
        await begin(writer, "k")
    with write_protected(path):
        for ledger in (SQLiteLedger(path), SQLiteLedger(path, read_only=True)):
            async with ledger:
                assert await ledger.counts() == {LedgerState.PENDING: 1}
                assert await ledger.get("enot", "k") is not None
                with pytest.raises(LedgerNotWrittenError):
                    await begin(ledger, "other")
    async with SQLiteLedger(path) as writer:
        await begin(writer, "other")


def modes(directory: Path) -> dict[str, int]:
    return {file.name: stat.S_IMODE(file.stat().st_mode) for file in directory.iterdir()}


async def test_a_new_ledger_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new.db"
        async with SQLiteLedger(path) as ledger:
            await begin(ledger, "k")
            assert modes(tmp_path) == {"new.db": 0o600, "new.db-shm": 0o600, "new.db-wal": 0o600}
    finally:
        os.umask(old)


async def test_opening_a_current_ledger_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path) as ledger:
        await begin(ledger, "k")
    with write_lock(path):  # a second opener needs no lock: the schema is current
        started = time.monotonic()
        async with SQLiteLedger(path, busy_timeout=BUSY) as again:
            assert await again.counts() == {LedgerState.PENDING: 1}
        assert time.monotonic() - started < BUSY


def test_busy_timeout_must_be_a_finite_number(tmp_path: Path) -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError):
            SQLiteLedger(tmp_path / "l.db", busy_timeout=bad)


async def test_no_busy_timeout_tries_each_write_once(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path, busy_timeout=0) as ledger:
        await begin(ledger, "free")  # the lock is free: it goes through
        with write_lock(path):
            started = time.monotonic()
            with pytest.raises(LedgerNotWrittenError):
                await begin(ledger, "locked")
            assert time.monotonic() - started < SLACK
        await begin(ledger, "free again")
        assert len(await ledger.records()) == 2


async def test_after_waiting_in_vain_a_payouts_next_calls_wait_less(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SQLiteLedger(path, busy_timeout=2.5) as ledger:
        await begin(ledger, "k")
        with write_lock(path), one_payout():
            started = time.monotonic()
            with pytest.raises(LedgerNotWrittenError):
                await begin(ledger, "first")  # waits its whole 2.5 s
            assert time.monotonic() - started >= 2.4
            started = time.monotonic()
            with pytest.raises(LedgerNotWrittenError):
                await begin(ledger, "second")  # this payout's ledger is out: 1 s at most
            assert time.monotonic() - started < 1.0 + SLACK
            assert ledger._patience.budget() == 1.0
            with one_payout():  # another payout waits the full bound
                assert ledger._patience.budget() == 2.5
        with one_payout():
            await begin(ledger, "through")
            assert ledger._patience.budget() == 2.5
