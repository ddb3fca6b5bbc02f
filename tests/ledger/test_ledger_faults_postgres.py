"""PostgresLedger when the network or the server misbehaves (through a TCP proxy in
front of the real server): every call ends within ``command_timeout``, and its error
says whether anything may have been written."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payout_async import ConfigurationError
from payout_async.ledger import (
    LedgerNotWrittenError,
    LedgerOutcomeUnknownError,
    LedgerOutdatedError,
    LedgerState,
    PostgresLedger,
    ledger_from_url,
)
from payout_async.ledger._patience import one_payout

from .proxy import FaultyProxy
from .support import PG_DSN, drop_schema, require_postgres

pytestmark = pytest.mark.postgres

TIMEOUT = 0.4
SLACK = 0.6  # a loaded machine's scheduling, on top of the configured bound


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"ledger_fault_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await drop_schema(name)


@pytest.fixture
async def proxy() -> AsyncIterator[FaultyProxy]:
    async with FaultyProxy(PG_DSN) as running:
        yield running


@pytest.fixture
async def ledger(proxy: FaultyProxy, schema: str) -> AsyncIterator[PostgresLedger]:
    # The tables first, directly and without hurry: setting up is not what is tested,
    # and on a loaded machine creating them (or a first connection) can take longer
    # than the 0.4 s the ledger under test may wait.
    async with PostgresLedger(PG_DSN, schema=schema):
        pass
    opened = PostgresLedger(proxy.dsn, schema=schema, command_timeout=TIMEOUT, max_connections=4)
    for attempt in range(5):
        try:
            await opened.open()
            break
        except LedgerNotWrittenError:
            if attempt == 4:
                raise
    try:
        yield opened
    finally:
        await opened.aclose()


async def begin(ledger: PostgresLedger, key: str) -> int:
    """Record ``key``'s intent; its lease token."""
    claim = await ledger.begin("enot", key, "h", {"amount": "1.00"}, owner="w", lease_seconds=30)
    return claim.record.lease_token


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def test_a_stalled_server_bounds_reads_and_writes(
    ledger: PostgresLedger, proxy: FaultyProxy
) -> None:
    await begin(ledger, "before")  # leaves one idle connection in the pool
    proxy.stall()
    clock = Clock()
    with pytest.raises(LedgerOutcomeUnknownError):  # sent, unanswered: it may commit
        await begin(ledger, "during")
    assert clock.elapsed < TIMEOUT + SLACK
    clock = Clock()
    with pytest.raises(LedgerNotWrittenError):  # a read; and a new connection hangs
        await ledger.get("enot", "before")
    assert clock.elapsed < TIMEOUT + SLACK
    proxy.unstall()
    row = await ledger.get("enot", "before")
    assert row is not None and row.state is LedgerState.PENDING


async def test_cancelling_a_call_during_a_stall_returns_at_once(
    ledger: PostgresLedger, proxy: FaultyProxy
) -> None:
    token = await begin(ledger, "k")
    proxy.stall()
    calls = [
        asyncio.create_task(ledger.get("enot", "k")),
        asyncio.create_task(
            ledger.transition(
                "enot", "k", owner="w", token=token, state=LedgerState.SENDING, lease_seconds=30
            )
        ),
        asyncio.create_task(ledger.release("enot", "k", owner="w", token=token)),
    ]
    await asyncio.sleep(0.1)
    clock = Clock()
    for call in calls:
        call.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert clock.elapsed < 0.1 + SLACK / 2
    assert all(isinstance(result, asyncio.CancelledError) for result in results)
    # The shielded transition goes on alone, and ends within its own bound.
    await asyncio.sleep(TIMEOUT + 0.1)
    left = [task for task in asyncio.all_tasks() if "_fetchrow" in repr(task)]
    assert left + [task for task in asyncio.all_tasks() if "_drain" in repr(task)] == []
    proxy.unstall()


async def test_refused_connections_write_nothing(proxy: FaultyProxy, schema: str) -> None:
    ledger = PostgresLedger(proxy.dsn, schema=schema, command_timeout=TIMEOUT)
    try:
        await ledger.open()
        await proxy.refuse()
        proxy.cut()
        await asyncio.sleep(0.05)  # the pool sees its connection closed
        clock = Clock()
        with pytest.raises(LedgerNotWrittenError) as refused:
            await begin(ledger, "k")
        assert clock.elapsed < TIMEOUT + SLACK
        assert "connect" in str(refused.value)
        await proxy.accept()
        assert await ledger.get("enot", "k") is None
    finally:
        await ledger.aclose()


async def test_a_short_refusal_is_waited_out_within_the_budget(
    proxy: FaultyProxy, schema: str
) -> None:
    ledger = PostgresLedger(proxy.dsn, schema=schema, command_timeout=2.0)
    try:
        await ledger.open()
        await proxy.refuse()
        proxy.cut()
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(proxy.accept()))
        await begin(ledger, "k")  # connection refused, then retried until it works
        row = await ledger.get("enot", "k")
        assert row is not None and row.state is LedgerState.PENDING
    finally:
        await ledger.aclose()


async def test_a_connection_cut_under_a_write_is_unknown(
    ledger: PostgresLedger, proxy: FaultyProxy, schema: str
) -> None:
    token = await begin(ledger, "k")
    blocker = await asyncpg.connect(PG_DSN)
    try:
        async with blocker.transaction():
            await blocker.execute(f'SELECT 1 FROM "{schema}".payouts FOR UPDATE')
            move = asyncio.create_task(
                ledger.transition(
                    "enot", "k", owner="w", token=token, state=LedgerState.SENDING, lease_seconds=30
                )
            )
            await asyncio.sleep(0.1)  # the UPDATE waits for the row lock
            proxy.cut()
            with pytest.raises(LedgerOutcomeUnknownError):
                await move
    finally:
        await blocker.close()


async def test_a_row_locked_elsewhere_is_not_written_within_the_bound(
    ledger: PostgresLedger, schema: str
) -> None:
    token = await begin(ledger, "k")
    blocker = await asyncpg.connect(PG_DSN)
    try:
        async with blocker.transaction():
            await blocker.execute(f'SELECT 1 FROM "{schema}".payouts FOR UPDATE')
            clock = Clock()
            with pytest.raises(LedgerNotWrittenError) as locked:
                await ledger.transition(
                    "enot", "k", owner="w", token=token, state=LedgerState.SENDING, lease_seconds=30
                )
            assert clock.elapsed < TIMEOUT + SLACK
            assert locked.value.code in ("55P03", "57014")  # lock or statement timeout
    finally:
        await blocker.close()
    row = await ledger.get("enot", "k")
    assert row is not None and row.state is LedgerState.PENDING


async def test_server_side_timeouts_are_set_on_the_ledgers_own_pool(schema: str) -> None:
    async with PostgresLedger(PG_DSN, schema=schema, command_timeout=5.0) as ledger:
        pool = ledger._pool
        assert await pool.fetchval("SHOW statement_timeout") == "4s"
        assert await pool.fetchval("SHOW lock_timeout") == "2500ms"
    custom = PostgresLedger(PG_DSN, schema=schema, statement_timeout=0, lock_timeout=1.5)
    async with custom as ledger:
        assert await ledger._pool.fetchval("SHOW statement_timeout") == "0"
        assert await ledger._pool.fetchval("SHOW lock_timeout") == "1500ms"


async def test_read_only_reads_and_the_server_refuses_its_writes(schema: str) -> None:
    async with PostgresLedger(PG_DSN, schema=schema) as writer:
        token = await begin(writer, "k")
        reader = ledger_from_url(f"{PG_DSN}?schema={schema}", read_only=True)
        assert isinstance(reader, PostgresLedger) and "read_only=True" in repr(reader)
        async with reader:
            assert await reader.counts() == {LedgerState.PENDING: 1}
            assert len(await reader.history("enot", "k")) == 1
            with pytest.raises(LedgerNotWrittenError) as refused:
                await begin(reader, "other")
            assert refused.value.code == "25006"  # read-only transaction
            with pytest.raises(LedgerNotWrittenError):
                await reader.pause_provider("enot", reason="r", by="t")
            await writer.transition(
                "enot", "k", owner="w", token=token, lease_seconds=30,
                state=LedgerState.SUCCEEDED,
            )  # fmt: skip
            assert (await reader.counts()) == {LedgerState.SUCCEEDED: 1}
        assert await writer.pauses() == []


async def test_read_only_neither_creates_nor_upgrades_tables(schema: str) -> None:
    with pytest.raises(LedgerOutdatedError, match="no current payout ledger"):
        await PostgresLedger(PG_DSN, schema=schema, read_only=True).open()
    conn = await asyncpg.connect(PG_DSN)
    try:
        found = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1"
        assert await conn.fetchval(found, schema) == 0
    finally:
        await conn.close()
    with pytest.raises(ConfigurationError, match="own pool"):
        PostgresLedger(pool=object(), read_only=True)


async def test_a_read_only_role_opens_and_reads_but_cannot_write(schema: str) -> None:
    async with PostgresLedger(PG_DSN, schema=schema) as writer:
        await begin(writer, "k")
    role = f"reader_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        dsn = PG_DSN.replace("postgres@", f"{role}@", 1)
        async with PostgresLedger(dsn, schema=schema) as reader:
            assert await reader.counts() == {LedgerState.PENDING: 1}
            assert [row.key for row in await reader.records()] == ["k"]
            assert await reader.get("enot", "k") is not None
            assert len(await reader.history("enot", "k")) == 1
            with pytest.raises(LedgerNotWrittenError) as refused:
                await begin(reader, "other")
            assert refused.value.code == "42501"  # insufficient privilege
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


async def test_after_waiting_in_vain_a_payouts_next_calls_wait_less(
    proxy: FaultyProxy, schema: str
) -> None:
    async with PostgresLedger(proxy.dsn, schema=schema, command_timeout=2.5) as ledger:
        await begin(ledger, "k")
        proxy.stall()
        with one_payout():
            clock = Clock()
            with pytest.raises(LedgerNotWrittenError):
                await ledger.get("enot", "k")  # waits its whole 2.5 s
            assert clock.elapsed >= 2.4
            clock = Clock()
            with pytest.raises(LedgerNotWrittenError):
                await ledger.get("enot", "k")  # this payout's server is out: 1 s at most
            assert clock.elapsed < 1.0 + SLACK
            proxy.unstall()
            assert await ledger.get("enot", "k") is not None  # full patience again
            assert ledger._calls is not None
            assert ledger._calls.patience.budget() == 2.5


def test_ledger_urls_carry_the_timeouts() -> None:
    ledger = ledger_from_url(
        "postgresql://u@127.0.0.1/db?command_timeout=4&statement_timeout=3&lock_timeout=0"
    )
    assert isinstance(ledger, PostgresLedger)
    assert (ledger.command_timeout, ledger.statement_timeout, ledger.lock_timeout) == (4, 3, 0)
    default = ledger_from_url("postgresql://u@127.0.0.1/db")
    assert isinstance(default, PostgresLedger)
    assert (default.command_timeout, default.statement_timeout) == (10, 8)
    for bad in ("command_timeout=0", "lock_timeout=-1", "statement_timeout=soon"):
        with pytest.raises(ConfigurationError):
            ledger_from_url(f"postgresql://u@127.0.0.1/db?{bad}")
