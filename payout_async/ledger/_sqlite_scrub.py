"""No old copy of a clear recipient left in an SQLite ledger's files.

A ledger without an encryption key keeps a payout's recipient in clear until the
payout is final; the final write drops it. But SQLite keeps old bytes around: the
freed space of a rewritten row in its page (unless ``secure_delete`` is on: then it
is zeroed), and in WAL mode every committed page image in the ``-wal`` file until a
checkpoint copies the newest ones into the database and a ``TRUNCATE`` checkpoint
empties it. So after a write that drops a clear recipient the WAL is checkpointed and
truncated -- at most once per ``interval`` seconds (the first such write in an
interval waits for it; later ones are covered by a checkpoint at the interval's end),
and always at ``aclose()``. A ledger with a key never writes a recipient in clear,
and never needs this.

A checkpoint cannot finish while another connection (another process) reads an
older snapshot: it waits ``WAIT`` seconds at most, and is tried again an interval
later.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time

import aiosqlite

from ._sqlite_batch import set_busy_timeout
from ._sqlite_thread import on_thread

__all__ = ["WAIT", "Scrubber", "truncate_wal"]

logger = logging.getLogger("payout_async")

WAIT = 0.05  # seconds a checkpoint waits for other connections' readers and writer


def truncate_wal(conn: sqlite3.Connection, wait: float, busy_timeout: float) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` waiting at most ``wait`` seconds (worker
    thread); True when the WAL was copied into the database file and emptied."""
    set_busy_timeout(conn, wait)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as error:
        logger.warning("could not checkpoint the SQLite ledger: %s", error)
        return False
    finally:
        set_busy_timeout(conn, busy_timeout)
    return bool(busy == 0)


class Scrubber:
    """When to checkpoint one connection: ``dropped()`` after a write that dropped a
    clear recipient, ``now()`` at close."""

    def __init__(self, interval: float, busy_timeout: float) -> None:
        self.interval = interval
        self.busy_timeout = busy_timeout
        self.checkpoints = 0  # completed (for tests and benchmarks)
        self._dropped = 0  # writes that dropped a clear recipient, ever
        self._covered = 0  # of which the last completed checkpoint covers
        self._last = -math.inf  # when the last checkpoint was tried (monotonic)
        self._later: asyncio.Task[None] | None = None

    @property
    def due(self) -> bool:
        """A dropped recipient may still have a copy in the WAL."""
        return self._covered < self._dropped

    async def dropped(self, db: aiosqlite.Connection) -> None:
        """A committed write dropped a clear recipient: checkpoint now if the interval
        allows, else make sure one runs when it ends."""
        self._dropped += 1
        if time.monotonic() - self._last >= self.interval:
            await self.now(db)
        elif self._later is None or self._later.done():
            self._later = asyncio.create_task(self._when_due(db))

    async def now(self, db: aiosqlite.Connection) -> bool:
        """Checkpoint and truncate the WAL now; True when it was done."""
        covers = self._dropped
        self._last = time.monotonic()
        done: bool = await on_thread(db, truncate_wal, WAIT, self.busy_timeout)
        if done:
            self.checkpoints += 1
            self._covered = max(self._covered, covers)
        return done

    async def _when_due(self, db: aiosqlite.Connection) -> None:
        while self.due:
            await asyncio.sleep(max(0.0, self._last + self.interval - time.monotonic()))
            if not self.due:
                return
            try:
                await self.now(db)
            except Exception as error:  # the connection was closed meanwhile
                logger.debug("SQLite ledger checkpoint skipped: %s", error)
                return

    def moved(self) -> None:
        """The event loop of the checkpoint waiting for its interval has closed: it is
        gone (the next dropped recipient schedules another; ``now()`` follows at close)."""
        self._later = None

    async def stop(self) -> None:
        """Cancel a checkpoint waiting for its interval (``now()`` follows at close)."""
        if self._later is not None and not self._later.done():
            self._later.cancel()
            await asyncio.gather(self._later, return_exceptions=True)
        self._later = None
