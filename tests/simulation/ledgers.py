"""The ledger as a server the simulated processes share.

``SimLedger`` wraps one real ledger (``MemoryLedger``, or ``SQLiteLedger`` on a real
file): each call runs on the "server side" -- a task of its own, outside every
simulated process, so that a frozen or killed caller does not freeze the ledger (a
statement sent is carried out) -- after a latency drawn from the seed, and its answer
reaches the caller after another. A caller cancelled meanwhile does not stop the call
(as with a statement already on its way to PostgreSQL). ``on_answer`` sees every
answer, for the invariants and the event log.

``snapshot``/``restore`` copy the rows out and put an old copy back (an operator
restoring a backup); ``prune_history`` deletes every history row (a retention job).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, cast

from payout_async.ledger import Claim, Ledger, MemoryLedger, SQLiteLedger

from .loop import PROCESS, neutral_context

__all__ = ["SimLedger", "prune_history", "restore", "snapshot"]

OnAnswer = Callable[[str, str, tuple[Any, ...], dict[str, Any], Any], None]
#: Told of each row a call took over from a holder it declared dead, while that
#: holder's lease was still running: (caller, key, holder).
OnTakeover = Callable[[str, str, str], None]


class SimLedger:
    """See the module docstring."""

    def __init__(
        self,
        inner: Ledger,
        rng: random.Random,
        on_answer: OnAnswer,
        on_takeover: OnTakeover,
        clock: Callable[[], float],
    ) -> None:
        self.inner = inner
        self._rng = rng
        self._on_answer = on_answer
        self._on_takeover = on_takeover
        self._clock = clock  # the ledger server's
        self.calls = 0

    def __repr__(self) -> str:
        return f"SimLedger({self.inner!r})"

    def params_hash(self, params: Any) -> str:
        return self.inner.params_hash(params)

    def params_match(self, record: Any, params: Any) -> bool:
        return self.inner.params_match(record, params)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, method, args, kwargs)

        return call

    def _latency(self) -> float:
        rng = self._rng
        return rng.uniform(0.0, 0.02) if rng.random() < 0.95 else rng.uniform(0.05, 1.5)

    async def _call(
        self, name: str, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self.calls += 1
        caller = getattr(PROCESS.get(), "name", "-")
        there, back = self._latency(), self._latency()
        loop = asyncio.get_running_loop()
        served = loop.create_task(
            self._serve(caller, name, method, args, kwargs, there), context=neutral_context()
        )
        served.add_done_callback(_retrieve)
        result = await asyncio.shield(served)
        await asyncio.sleep(back)  # the answer on its way back: a cancelled caller loses it
        return result

    async def _serve(
        self,
        caller: str,
        name: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        there: float,
    ) -> Any:
        await asyncio.sleep(there)
        dead = tuple(kwargs.get("take_over", ())) + tuple(kwargs.get("dead_owners", ()))
        leases = await self._leases() if dead else {}
        try:
            result = await method(*args, **kwargs)
        except Exception as error:
            self._on_answer(caller, name, args, kwargs, error)
            raise
        self._on_answer(caller, name, args, kwargs, result)
        if dead:
            self._taken_over(caller, result, leases, dead)
        return result

    async def _leases(self) -> dict[str, tuple[str | None, float | None]]:
        records = await self.inner.records()
        return {r.key: (r.lease_owner, r.lease_expires_at) for r in records}

    def _taken_over(
        self,
        caller: str,
        result: Any,
        leases: dict[str, tuple[str | None, float | None]],
        dead: tuple[str, ...],
    ) -> None:
        now = self._clock()
        for claim in result if isinstance(result, list) else [result]:
            if not isinstance(claim, Claim) or not claim.claimed:
                continue
            holder, expires = leases.get(claim.record.key, (None, None))
            if holder in dead and expires is not None and expires > now:
                self._on_takeover(caller, claim.record.key, holder)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


# -- restore and prune ---------------------------------------------------------------


async def snapshot(ledger: Ledger) -> Any:
    """A copy of every row and history entry, and of the ledger's identity (a backup
    of the file or the database carries them all)."""
    if isinstance(ledger, MemoryLedger):
        return (
            {where: row.copy() for where, row in ledger._rows.items()},
            {key: list(steps) for key, steps in ledger._history.items()},
            dict(ledger._by_order_id),
            dict(ledger._by_operation),
            {key: set(providers) for key, providers in ledger._providers.items()},
            ledger._begun,
        )
    assert isinstance(ledger, SQLiteLedger)
    return await _on_thread(ledger, _copy_tables)


async def restore(ledger: Ledger, copy: Any) -> None:
    """Put ``copy`` (``snapshot``) back in place of everything the ledger holds."""
    if isinstance(ledger, MemoryLedger):
        rows, history, by_order, by_operation, providers, begun = copy
        ledger._rows = {where: row.copy() for where, row in rows.items()}
        ledger._history = {key: list(steps) for key, steps in history.items()}
        ledger._by_order_id = dict(by_order)
        ledger._by_operation = dict(by_operation)
        ledger._providers = {key: set(each) for key, each in providers.items()}
        ledger._begun = begun
        return
    assert isinstance(ledger, SQLiteLedger)
    await _on_thread(ledger, _put_tables, copy)


async def prune_history(ledger: Ledger) -> None:
    """Delete every history entry (what a retention job does to old ones)."""
    if isinstance(ledger, MemoryLedger):
        ledger._history = {key: [] for key in ledger._history}
        return
    assert isinstance(ledger, SQLiteLedger)
    await _on_thread(ledger, _delete_history)


async def _on_thread(ledger: SQLiteLedger, job: Callable[..., Any], *args: Any) -> Any:
    """Run ``job(connection, *args)`` on the ledger's own thread, between its writes."""
    db = await ledger._connection()
    execute = cast(Callable[..., Awaitable[Any]], db._execute)
    return await execute(job, db._conn, *args)


#: The identity last: restoring ``payouts`` fires its row counter.
_TABLES = ("payouts", "payout_transitions", "payout_ledger")


def _copy_tables(conn: sqlite3.Connection) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    copy = {}
    for table in _TABLES:
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [column[0] for column in cursor.description]
        copy[table] = (names, [tuple(row) for row in cursor.fetchall()])
    return copy


def _put_tables(
    conn: sqlite3.Connection, copy: dict[str, tuple[list[str], list[tuple[Any, ...]]]]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for table in _TABLES:
        names, rows = copy[table]
        conn.execute(f"DELETE FROM {table}")
        marks = ", ".join("?" for _ in names)
        conn.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows)
    conn.execute("COMMIT")


def _delete_history(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM payout_transitions")
    conn.execute("COMMIT")
