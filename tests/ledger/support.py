"""Ledger backends for the suite: memory, a SQLite file, PostgreSQL.

PostgreSQL comes from ``PAYOUT_ASYNC_PG_DSN`` (default: the local test server). When
it is unreachable its tests are skipped -- but they fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import attrs
import pytest

from payout_async.ledger import Ledger, MemoryLedger, PostgresLedger, SQLiteLedger

PG_DSN = os.environ.get("PAYOUT_ASYNC_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DURABLE = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
BACKENDS = ["memory", *DURABLE]


@functools.cache
def _postgres_problem() -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()

    try:  # on a thread of its own: callers may be inside a running event loop
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except Exception as error:  # any failure to connect means "unreachable"
        return f"{type(error).__name__}: {error}"
    return None


def require_postgres() -> str:
    """The DSN, or skip (fail under ``CI``) when the server is unreachable."""
    problem = _postgres_problem()
    if problem is not None:
        message = f"PostgreSQL at {PG_DSN} is unreachable ({problem})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PG_DSN


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Backend:
    """Makes ledgers over one store: each ``new()`` is another instance (another
    connection, as another process would have) over the same rows."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "ledger.db"
        self.schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
        self._memory = MemoryLedger()
        self._made: list[Ledger] = []

    @property
    def shared(self) -> bool:
        """True when ``new()`` gives separate instances (not one in-process dict)."""
        return self.kind != "memory"

    async def new(self) -> Ledger:
        ledger: Ledger
        if self.kind == "memory":
            ledger = self._memory
        elif self.kind == "sqlite":
            ledger = SQLiteLedger(self.path)
        else:
            ledger = PostgresLedger(PG_DSN, schema=self.schema, max_connections=4)
        await ledger.open()
        self._made.append(ledger)
        return ledger

    async def close(self) -> None:
        for ledger in self._made:
            await ledger.aclose()
        if self.kind == "postgres":
            await drop_schema(self.schema)


async def token_of(ledger: Ledger, provider: str, key: str) -> int:
    """The row's current fencing token (0 for a row that does not exist): for tests
    that act as the drive holding the row's latest claim."""
    record = await ledger.get(provider, key)
    return 0 if record is None else record.lease_token


@attrs.define
class DurablePlace:
    """Where one test's durable ledger keeps its rows -- a SQLite file or a PostgreSQL
    schema of its own -- and how to open it (``ledger``) or name it (``url``). Test
    modules subclass it with their own ways of looking at the store."""

    kind: str
    path: Path
    schema: str = attrs.field(factory=lambda: f"place_{uuid.uuid4().hex[:12]}")

    def ledger(self, **options: Any) -> SQLiteLedger | PostgresLedger:
        if self.kind == "sqlite":
            return SQLiteLedger(self.path, **options)
        options.pop("checkpoint_interval", None)  # SQLite's alone
        options.setdefault("max_connections", 4)
        return PostgresLedger(PG_DSN, schema=self.schema, **options)

    @property
    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        return f"{PG_DSN}?schema={self.schema}"

    async def close(self) -> None:
        """Close what the test opened here (before the schema is dropped)."""


P = TypeVar("P", bound=DurablePlace)


async def durable_place(kind: str, tmp_path: Path, made: type[P]) -> AsyncIterator[P]:
    """A fixture's body: a ``made`` place of ``kind`` for one test, its PostgreSQL
    schema dropped afterwards (``yield from``-style: ``async for place in ...``)."""
    if kind == "postgres":
        require_postgres()
    place = made(kind, tmp_path / "ledger.db")
    try:
        yield place
    finally:
        await place.close()
        if kind == "postgres":
            await drop_schema(place.schema)
