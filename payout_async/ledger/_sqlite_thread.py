"""Work for an aiosqlite connection's thread that never kills the thread.

aiosqlite hands each result back with ``future.get_loop().call_soon_threadsafe``. When
the event loop that asked has closed meanwhile -- ``asyncio.run()`` ended, a job's
timeout cut it short, while a commit was still under way -- that call raises in the
thread, and so does the one for the error after it: the thread dies, and every later
call on the connection waits for ever. ``on_thread`` gives the thread a function of its
own, with no future for aiosqlite to settle, and settles the caller's future itself; a
result whose loop has closed is dropped (nobody waits for it any more).

Relies on aiosqlite 0.22's worker queue and connection (``_tx``, ``_conn``), as the
ledger's other uses of it do (the version is pinned in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

import aiosqlite

__all__ = ["Job", "fetch_all", "on_thread", "run_sql"]

T = TypeVar("T")


async def on_thread(db: aiosqlite.Connection, function: Callable[..., T], *args: Any) -> T:
    """``function(connection, *args)`` on ``db``'s thread, its result or its error."""
    if not db._running or db._connection is None:
        raise ValueError("Connection closed")  # as aiosqlite says it
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    db._tx.put_nowait((None, Job(future, partial(function, db._conn, *args))))
    return await future


class Job(Generic[T]):
    """One call for the connection's thread, which settles ``future`` itself."""

    __slots__ = ("_call", "future")

    def __init__(self, future: asyncio.Future[T], call: Callable[[], T]) -> None:
        #: What the caller awaits (a simulation's loop counts it as thread work).
        self.future = future
        self._call = call

    def __call__(self) -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = self._call()
        except BaseException as failure:  # handed to the caller, as aiosqlite does
            error = failure
        with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
            self.future.get_loop().call_soon_threadsafe(_settle, self.future, value, error)


def _settle(future: asyncio.Future[T], value: T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(value)  # type: ignore[arg-type]  # the call's own result
    else:
        future.set_exception(error)


def fetch_all(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[sqlite3.Row]:
    """Every row ``sql`` gives (for ``on_thread``)."""
    return conn.execute(sql, params).fetchall()


def run_sql(conn: sqlite3.Connection, sql: str) -> None:
    """Run one statement (for ``on_thread``)."""
    conn.execute(sql)
