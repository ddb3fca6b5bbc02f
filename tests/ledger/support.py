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
#: Every ledger backend, by name; as pytest parameters (PostgreSQL's marked).
KINDS = ("memory", "sqlite", "postgres")
BACKENDS = [
    pytest.param(kind, marks=pytest.mark.postgres) if kind == "postgres" else kind for kind in KINDS
]
DURABLE = BACKENDS[1:]


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


async def token_of(ledger: Ledger, provider: str, key: str) -> int:
    """The row's current fencing token (0 for a row that does not exist): for tests
    that act as the drive holding the row's latest claim."""
    record = await ledger.get(provider, key)
    return 0 if record is None else record.lease_token


@attrs.define
class Backend:
    """One test's ledger store -- one ``MemoryLedger``, a SQLite file in ``folder`` or
    a PostgreSQL schema of its own -- and the ledgers opened over it: each ``new()`` is
    another instance (another connection, as another process would have) over the same
    rows. Test modules subclass it with their own ways of looking at the store."""

    kind: str
    folder: Path
    schema: str = attrs.field(factory=lambda: f"ledger_test_{uuid.uuid4().hex[:12]}")
    _made: list[Ledger] = attrs.field(factory=list, init=False)
    _memory: MemoryLedger | None = attrs.field(default=None, init=False)

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self.folder / "ledger.db"

    @property
    def shared(self) -> bool:
        """True when ``new()`` gives separate instances (not one in-process dict)."""
        return self.kind != "memory"

    @property
    def url(self) -> str:
        """The durable store as the command line's ``--ledger`` names it."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        return f"{PG_DSN}?schema={self.schema}"

    def ledger(self, **options: Any) -> SQLiteLedger | PostgresLedger:
        """A durable ledger over the store, not yet opened (nor closed by ``close``)."""
        if self.kind == "sqlite":
            return SQLiteLedger(self.path, **options)
        options.pop("checkpoint_interval", None)  # SQLite's alone
        options.setdefault("max_connections", 4)
        return PostgresLedger(PG_DSN, schema=self.schema, **options)

    async def new(self, **options: Any) -> Ledger:
        """Another opened instance over the store (memory: the one ledger, made with
        ``options`` the first time), closed by ``close``."""
        ledger: Ledger
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryLedger(**options)
            ledger = self._memory
        else:
            ledger = self.ledger(**options)
        await ledger.open()
        self._made.append(ledger)
        return ledger

    async def close(self) -> None:
        """Close what ``new()`` opened, and drop the PostgreSQL schema."""
        for ledger in self._made:
            await ledger.aclose()
        if self.kind == "postgres":
            await drop_schema(self.schema)


B = TypeVar("B", bound=Backend)


async def backend_of(kind: str, folder: Path, made: type[B]) -> AsyncIterator[B]:
    """A fixture's body: a ``made`` store of ``kind`` for one test (PostgreSQL
    required when asked for), closed afterwards -- ``async for store in ...: yield``."""
    if kind == "postgres":
        require_postgres()
    store = made(kind, folder)
    try:
        yield store
    finally:
        await store.close()
