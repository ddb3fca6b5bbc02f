"""``BoundedPool`` never cuts a connection attempt short: one still being made when its
caller stops waiting (the deadline, or a cancellation) goes on, and goes back to the pool
once made. asyncpg leaves an error nobody reads -- logged as "Future exception was never
retrieved ... unexpected connection_lost() call" -- behind a connect cancelled during its
TLS negotiation, which a loaded PostgreSQL ledger met many times a run. (The pool here
stands in for asyncpg's: what is checked is what the wrapper does with ``acquire``.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payout_async.ledger import LedgerNotWrittenError
from payout_async.ledger._postgres_calls import BoundedPool


class SlowPool:
    """A pool whose connections are made only once ``made`` is set."""

    def __init__(self) -> None:
        self.made = asyncio.Event()
        self.asked = asyncio.Event()
        self.cut_short = 0
        self.released: list[Any] = []

    async def acquire(self) -> Any:
        self.asked.set()
        try:
            await self.made.wait()
        except asyncio.CancelledError:
            self.cut_short += 1
            raise
        return "connection"

    def get_idle_size(self) -> int:
        return 0  # every acquire connects

    async def release(self, conn: Any, timeout: float | None = None) -> None:  # noqa: ASYNC109 (asyncpg's)
        self.released.append(conn)


async def released(pool: SlowPool) -> None:
    for _ in range(500):
        if pool.released:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the connection never went back to the pool")


async def test_a_connection_made_after_the_deadline_goes_back_to_the_pool() -> None:
    pool = SlowPool()
    bounded = BoundedPool(pool, timeout=0.05)
    with pytest.raises(LedgerNotWrittenError, match="no PostgreSQL connection within"):
        await bounded.fetch("SELECT 1")
    assert pool.cut_short == 0  # the attempt goes on
    pool.made.set()
    await released(pool)
    assert pool.released == ["connection"]


async def test_a_connection_made_after_its_caller_was_cancelled_goes_back_to_the_pool() -> None:
    pool = SlowPool()
    bounded = BoundedPool(pool, timeout=30.0)
    call = asyncio.ensure_future(bounded.fetch("SELECT 1"))
    await asyncio.wait_for(pool.asked.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert pool.cut_short == 0
    pool.made.set()
    await released(pool)
    assert pool.released == ["connection"]
