"""How many ledger writes a settled payout costs, per provider and ledger.

Counts, independent of machine load: the ``Ledger`` write calls ``Payouts`` makes
(``begin``, ``transition``, ``renew``, ``release``), history rows appended, and what
they cost the backend -- SQLite transactions committed (group commit: one per batch
of queued writes) and the statements run in them (an ``executemany`` of a batch's
history rows counts once; BEGIN and COMMIT do not), PostgreSQL statements sent. The
sandbox settles at once with faults off, so every payout takes its shortest path:
IntellectMoney create, execute, get-state; Enot create, info.

Exit status 1 when a payout does not end ``succeeded``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import SandboxProcess, clients, enot_request, im_request, machine, table

from payout_async import Payouts, PollPolicy
from payout_async.ledger import (
    Ledger,
    MemoryLedger,
    PostgresLedger,
    SQLiteLedger,
    _postgres_calls,
    _sqlite,
)
from payout_async.ledger._postgres import drop_statement

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
POLL = PollPolicy(initial=0.001, multiplier=2.0, maximum=0.01, deadline=60.0)
WRITES = ("begin", "transition", "renew", "release", "settle_by_order_id")

#: Backend-level counts, bumped by the patched functions below.
BACKEND: Counter[str] = Counter()


class CountingLedger:
    """A ``Ledger`` that counts the write calls made on it."""

    def __init__(self, inner: Ledger, counts: Counter[str]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WRITES:
            return attr
        counts = self._counts

        async def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return await attr(*args, **kwargs)

        return counted


class _CountingConnection:
    """An ``sqlite3.Connection`` that counts the statements run through it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def _counted(self, sql: str) -> None:
        if sql not in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"):
            BACKEND["sqlite statements"] += 1

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._counted(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self._counted(sql)
        return self._conn.executemany(sql, rows)


def _patch_backends() -> None:
    batch = _sqlite.commit_batch

    def commit_batch(conn: Any, ops: list[Any], wait: float, busy: float) -> Any:
        BACKEND["sqlite transactions"] += 1
        return batch(_CountingConnection(conn), ops, wait, busy)

    _sqlite.commit_batch = commit_batch  # type: ignore[assignment]
    call = _postgres_calls.BoundedPool._call

    async def _call(self: Any, method: str, sql: str, args: tuple[Any, ...], **options: Any) -> Any:
        if not sql.lstrip().upper().startswith("SELECT"):
            BACKEND["postgres statements"] += 1
        return await call(self, method, sql, args, **options)

    _postgres_calls.BoundedPool._call = _call  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def memory() -> AsyncIterator[Ledger]:
    yield MemoryLedger()


def sqlite(directory: Path) -> Callable[[], contextlib.AbstractAsyncContextManager[Ledger]]:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Ledger]:
        async with SQLiteLedger(directory / f"w-{uuid.uuid4().hex[:8]}.db") as ledger:
            yield ledger

    return make


def postgres(dsn: str) -> Callable[[], contextlib.AbstractAsyncContextManager[Ledger]]:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Ledger]:
        prefix = f"bench_{uuid.uuid4().hex[:10]}_"
        async with PostgresLedger(dsn, table_prefix=prefix) as ledger:
            try:
                yield ledger
            finally:
                pool = await ledger._connection_pool()
                await pool.execute(drop_statement(prefix))

    return make


async def count(
    sandbox: SandboxProcess,
    make: Callable[[], contextlib.AbstractAsyncContextManager[Ledger]],
    provider: str,
    n: int,
    concurrency: int,
) -> tuple[Counter[str], int]:
    im, enot = clients(sandbox.intellectmoney_url, sandbox.enot_url)
    counts: Counter[str] = Counter()
    history = 0
    async with im, enot, make() as inner:
        ledger = CountingLedger(inner, counts)
        client: Any = im if provider == "intellectmoney" else enot
        payouts: Payouts[Any] = Payouts(client, ledger, poll=POLL)  # type: ignore[arg-type]
        prefix = uuid.uuid4().hex[:8]
        keys = [f"{prefix}-{number}" for number in range(n)]
        if provider == "intellectmoney":
            items: list[tuple[str, Any]] = [(key, im_request(key)) for key in keys]
        else:
            items = [(key, enot_request()) for key in keys]
        BACKEND.clear()
        async for result in payouts.pay_many(items, concurrency=concurrency):
            if result.status.value != "succeeded":
                raise SystemExit(f"{result.key} ended {result.status.value}: {result.reason}")
        counts.update(BACKEND)
        await payouts.aclose()
        for key in keys[:20]:
            history += len(await inner.history(provider, key))
    return counts, history * n // min(n, 20)


async def main_async(args: argparse.Namespace, sandbox: SandboxProcess, directory: Path) -> None:
    ledgers = [("Memory", memory), ("SQLite", sqlite(directory))]
    if args.postgres:
        ledgers.append(("Postgres", postgres(args.postgres)))
    rows = []
    for name, make in ledgers:
        for provider in ("intellectmoney", "enot"):
            counts, history = await count(sandbox, make, provider, args.n, args.concurrency)
            per = {what: counts[what] / args.n for what in counts}
            calls = sum(per.get(what, 0.0) for what in WRITES)
            backend = per.get("sqlite transactions", per.get("postgres statements", float("nan")))
            statements = per.get("sqlite statements", float("nan"))
            rows.append(
                [
                    name,
                    provider,
                    f"{calls:.2f}",
                    " ".join(f"{what}={per[what]:.2f}" for what in WRITES if what in per),
                    f"{history / args.n:.2f}",
                    "-" if backend != backend else f"{backend:.3f}",
                    "-" if statements != statements else f"{statements:.2f}",
                ]
            )
    print(
        f"\nLedger writes per settled payout ({args.n} payouts per provider, "
        f"concurrency {args.concurrency}, faults off):"
    )
    headers = ["ledger", "provider", "writes", "by call", "history rows", "txns/stmts", "SQL"]
    print(table(headers, rows))
    print("txns/stmts: SQLite transactions committed, PostgreSQL write statements sent")
    print("SQL: statements the SQLite ledger ran in them (BEGIN and COMMIT aside)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="payouts per provider (default 500)")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight (default 64)")
    parser.add_argument("--postgres", default=POSTGRES_DSN, help="PostgreSQL DSN ('' skips)")
    args = parser.parse_args()
    print(f"payout-async ledger writes per payout on {machine()}")
    _patch_backends()
    options: dict[str, object] = {
        "seed": 1,
        "im_in_process_after": 0,
        "im_final_after": 0.0005,
        "enot_final_after": 0,
        "im_balance": Decimal(10**9),
        "enot_balance": Decimal(10**9),
    }
    with tempfile.TemporaryDirectory() as directory, SandboxProcess(**options) as sandbox:
        asyncio.run(main_async(args, sandbox, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
