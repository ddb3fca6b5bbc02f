"""``PostgresLedger.listen_for_work`` when its ``LISTEN`` connection breaks: the
listener wakes (something may have been missed), listens again, and while the server
cannot be reached it wakes on its timer -- never in a loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from payout_async.ledger import Intent, PostgresLedger

from .proxy import FaultyProxy
from .support import PG_DSN, drop_schema, require_postgres

pytestmark = pytest.mark.postgres

PARAMS = {"amount": "1.00"}


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"ledger_listen_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await drop_schema(name)


async def test_a_listener_listens_again_after_its_connection_broke(schema: str) -> None:
    async with (
        FaultyProxy(PG_DSN) as proxy,
        PostgresLedger(proxy.dsn, schema=schema, command_timeout=2) as worker,
        PostgresLedger(PG_DSN, schema=schema) as producer,
    ):
        listener = await worker.listen_for_work("enot")
        try:
            proxy.cut()
            assert await listener.wait(10)  # the lost connection wakes it
            assert await listener.wait(10)  # listening again: it may have missed work

            waiting = asyncio.ensure_future(listener.wait(30))
            await asyncio.sleep(0.1)
            await producer.enqueue("enot", [Intent("k1", PARAMS)])
            assert await asyncio.wait_for(waiting, 30)  # another process's NOTIFY

            await proxy.refuse()
            proxy.cut()
            assert await listener.wait(10)  # the loss
            started = time.monotonic()
            assert await listener.wait(0.3)  # cannot listen: wakes on its timer...
            assert time.monotonic() - started >= 0.25  # ...not at once, not in a loop
            await proxy.accept()
            assert await listener.wait(10)  # listening again
            assert not await listener.wait(0.2)
        finally:
            await listener.aclose()
