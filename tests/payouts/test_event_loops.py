"""Clients, ledgers and ``Payouts`` made once and used from one event loop after
another -- a sync application that runs each job in ``asyncio.run()`` (a Django or
Flask view, a Celery task) -- or from two loops at once (threads).

Before, every payout after the first one of such an application failed: an Enot payout
ended ``needs_attention`` ("Event loop is closed") although nothing had been sent, and a
PostgreSQL ledger stayed unusable for good. Now what a closed loop leaves behind is made
anew in the next one, and a second loop running at once is refused before anything is
recorded or sent.

And a pre-forking server (``gunicorn --preload``, Celery's prefork pool) whose parent
used them before forking: each child hung on its first SQLite write (the connection's
thread stayed in the parent) or shared the parent's sockets and owner. Now a child
makes its own, and leaves the parent's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest

from payout_async import (
    ConfigurationError,
    EnotClient,
    IntellectMoneyClient,
    Payouts,
    PayoutStatus,
)
from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import Ledger, MemoryLedger, PostgresLedger, SQLiteLedger
from payout_async.sandbox import Sandbox
from tests.ledger.support import BACKENDS, DURABLE, PG_DSN, drop_schema, require_postgres
from tests.payouts.support import CARD, POLL
from tests.sandbox.support import fast_config


@contextlib.contextmanager
def sandbox_in_a_thread() -> Iterator[Sandbox]:
    """A sandbox served by an event loop of its own, on a thread: the test's own
    ``asyncio.run()`` calls come and go beside it."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with Sandbox(config=fast_config(failure_ratio=0.0)) as sandbox:
            box["sandbox"], box["loop"], box["stop"] = (
                sandbox, asyncio.get_running_loop(), asyncio.Event(),
            )  # fmt: skip
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the sandbox did not start"
    try:
        yield box["sandbox"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


@contextlib.contextmanager
def ledger_of(kind: str, folder: Path) -> Iterator[Ledger]:
    """A ledger made outside any event loop, as an application makes it at import."""
    if kind == "memory":
        yield MemoryLedger()
        return
    if kind == "sqlite":
        yield SQLiteLedger(folder / "ledger.db")
        return
    require_postgres()
    schema = f"loops_{uuid.uuid4().hex[:12]}"
    try:
        yield PostgresLedger(PG_DSN, schema=schema, max_connections=4)
    finally:
        asyncio.run(drop_schema(schema))


class _Holder:
    """Another thread whose event loop has used ``use`` and stays open (running) until
    ``release``: what a threaded application's other request looks like."""

    def __init__(self, use: Callable[[], Awaitable[object]]) -> None:
        self._used = threading.Event()
        self._release = threading.Event()

        async def hold() -> None:
            await use()
            self._used.set()
            await asyncio.to_thread(self._release.wait)

        self._thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)

    def __enter__(self) -> _Holder:
        self._thread.start()
        assert self._used.wait(10), "the other loop did not use it"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release.set()
        self._thread.join(10)


def _payoff() -> PayoffRequest:
    return PayoffRequest(service="card", wallet_to=CARD, amount="10.00")


def _request(provider: str, key: str) -> OperationRequest | PayoffRequest:
    if provider == "enot":
        return _payoff()
    return OperationRequest(pan=CARD, amount="10.00", description=key)


def _client(sandbox: Sandbox, provider: str) -> IntellectMoneyClient | EnotClient:
    return sandbox.enot_client() if provider == "enot" else sandbox.intellectmoney_client()


def _paid(sandbox: Sandbox, provider: str) -> int:
    stats = sandbox.stats()
    return stats.enot.created if provider == "enot" else stats.intellectmoney.executed


@pytest.mark.parametrize("provider", ["enot", "intellectmoney"])
@pytest.mark.parametrize("kind", BACKENDS)
def test_made_once_they_serve_one_asyncio_run_after_another(
    kind: str, provider: str, tmp_path: Path
) -> None:
    with sandbox_in_a_thread() as sandbox, ledger_of(kind, tmp_path) as ledger:
        client = _client(sandbox, provider)
        payouts: Payouts[Any] = Payouts(client, ledger, poll=POLL)  # made at import
        keys = [f"job-{n}" for n in range(3)]
        for key in keys:  # one job per asyncio.run(), as a sync view or a task runs it
            result = asyncio.run(asyncio.wait_for(payouts.pay(key, _request(provider, key)), 20))
            assert result.status is PayoutStatus.SUCCEEDED, result.reason
        # pay_many, and a Payouts made in the job around the shared client and ledger.
        items = [(f"batch-{n}", _request(provider, f"batch-{n}")) for n in range(3)]

        async def batch() -> list[PayoutStatus]:
            return [r.status async for r in Payouts(client, ledger, poll=POLL).pay_many(items)]

        assert asyncio.run(batch()) == [PayoutStatus.SUCCEEDED] * 3
        assert _paid(sandbox, provider) == 6
        asyncio.run(payouts.aclose())
        asyncio.run(client.aclose())
        asyncio.run(ledger.aclose())


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_client_another_running_loop_uses_is_refused_before_anything_is_recorded(
    kind: str, tmp_path: Path
) -> None:
    with sandbox_in_a_thread() as sandbox, ledger_of(kind, tmp_path) as ledger:
        client = sandbox.enot_client()
        payouts: Payouts[PayoffRequest] = Payouts(client, ledger, poll=POLL)

        async def pay(key: str) -> PayoutStatus:
            return (await payouts.pay(key, _payoff())).status

        async def pay_many(key: str) -> list[Any]:
            return [r async for r in payouts.pay_many([(key, _payoff())])]

        with _Holder(client.get_balance):
            with pytest.raises(ConfigurationError, match="another event loop, which is still open"):
                asyncio.run(pay("refused"))
            (result,) = asyncio.run(pay_many("refused-too"))
            assert result.status is PayoutStatus.NOT_STARTED
            assert "another event loop" in (result.reason or "")
            assert asyncio.run(ledger.get("enot", "refused")) is None
            assert asyncio.run(ledger.get("enot", "refused-too")) is None
            assert sandbox.stats().enot.created == 0
        # That loop has closed: the client is this loop's now.
        assert asyncio.run(pay("refused")) is PayoutStatus.SUCCEEDED
        assert sandbox.stats().enot.created == 1
        asyncio.run(client.aclose())
        asyncio.run(ledger.aclose())


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_ledger_another_running_loop_uses_is_refused_and_writes_nothing(
    kind: str, tmp_path: Path
) -> None:
    with sandbox_in_a_thread() as sandbox, ledger_of(kind, tmp_path) as ledger:
        # (MemoryLedger: threads racing between its check and its claim could both win.)
        with _Holder(lambda: ledger.claim_stranded(owner="other", lease_seconds=60, limit=1)):
            payouts = Payouts(sandbox.enot_client(), ledger)
            with pytest.raises(ConfigurationError, match="another event loop, which is still open"):
                asyncio.run(payouts.pay("k", _payoff()))
            assert sandbox.stats().enot.created == 0
        assert asyncio.run(ledger.get("enot", "k")) is None  # this loop's now
        asyncio.run(ledger.aclose())


def test_a_session_given_is_not_replaced_once_its_loop_has_closed() -> None:
    with sandbox_in_a_thread() as sandbox:
        clients: list[EnotClient] = []

        async def first_job() -> None:  # the session is the caller's: left to its loop
            clients.append(sandbox.enot_client(session=aiohttp.ClientSession()))
            await clients[0].get_balance()

        asyncio.run(first_job())
        with pytest.raises(ConfigurationError, match="the session given to EnotClient"):
            asyncio.run(clients[0].get_balance())


def _in_a_child(job: Callable[[], str]) -> str:
    """What ``job()`` returns in a forked child process (30 s at most)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            answer = job()
        except BaseException as error:
            answer = f"raised {type(error).__name__}: {error}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return "hung"
        with os.fdopen(read, closefd=False) as pipe:
            return pipe.read()
    finally:
        os.close(read)
        os.waitpid(pid, 0)


# The sandbox's thread is running as the test forks (Python 3.12+ warns of it): the
# child uses nothing of that thread's, only the sandbox's socket, over loopback.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("kind", DURABLE)
def test_a_forked_child_makes_its_own_connections_and_owner(kind: str, tmp_path: Path) -> None:
    with sandbox_in_a_thread() as sandbox, ledger_of(kind, tmp_path) as ledger:
        payouts = Payouts(sandbox.enot_client(), ledger, poll=POLL)

        def pay(key: str) -> str:
            result = asyncio.run(asyncio.wait_for(payouts.pay(key, _payoff()), 15))
            return f"{result.status.value} {payouts.owner}"

        parent = pay("parent")  # the parent's session, connection and owner, then forks
        children = [_in_a_child(lambda n=n: pay(f"child-{n}")) for n in range(2)]
        statuses = [answer.split()[0] for answer in (parent, *children)]
        owners = {answer.split()[-1] for answer in (parent, *children)}
        assert statuses == ["succeeded"] * 3, children
        assert len(owners) == 3  # each child leases rows in its own name
        assert pay("parent-again") == parent  # its connections and owner, untouched
        assert sandbox.stats().enot.created == 4
        asyncio.run(ledger.aclose())


@pytest.mark.parametrize("call", ["read", "write"])
def test_a_loop_closed_while_the_sqlite_thread_works_leaves_the_ledger_working(
    call: str, tmp_path: Path
) -> None:
    """A job cut short (``asyncio.run()`` ended, a timeout) while the ledger's thread was
    still at its call: the answer went back to a closed loop, which killed aiosqlite's
    thread, and every later call on the ledger waited for ever."""
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    asyncio.run(ledger.open())
    asked = {
        "read": lambda: ledger.get("enot", "k"),
        "write": lambda: ledger.claim_stranded(owner="o", lease_seconds=60, limit=1),
    }[call]

    async def cut_short() -> None:
        assert isinstance(ledger._db, aiosqlite.Connection)
        ledger._db._tx.put_nowait((None, lambda: time.sleep(0.3)))  # the thread is busy
        left = asyncio.ensure_future(asked())  # queued behind that, then the job ends
        await asyncio.sleep(0.01)
        assert not left.done()

    asyncio.run(cut_short())
    time.sleep(0.5)  # the thread answers the closed loop
    assert asyncio.run(asyncio.wait_for(ledger.get("enot", "k"), 5)) is None
    asyncio.run(ledger.aclose())
