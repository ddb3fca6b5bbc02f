"""A pytest plugin: a running payout sandbox and clients pointed at it.

Installed with payout-async (entry point ``pytest11``); its async fixtures need
pytest-asyncio (``pip install 'payout-async[pytest]'``). In any test suite::

    import pytest

    @pytest.mark.asyncio  # or asyncio_mode = "auto" in the suite's pytest settings
    async def test_payout(payout_sandbox, payout_enot_client):
        await payout_enot_client.create_payoff(
            service="card", wallet_to="4111111111111111", amount="100.00", order_id="o-1"
        )
        assert payout_sandbox.stats().enot.created == 1

Fixtures (function scope): ``payout_sandbox_config`` (override it, in a
``conftest.py`` or the test module, to configure the sandbox), ``payout_sandbox`` (a
started ``Sandbox``), ``payout_intellectmoney_client`` (current API, JSON bodies) and
``payout_enot_client``. They are declared with ``pytest_asyncio.fixture``, so they work
in pytest-asyncio's strict mode (its default) as in auto mode; the tests using them are
coroutines, marked ``@pytest.mark.asyncio`` in strict mode. Without pytest-asyncio the
fixtures fail when used, and pytest itself keeps working.

``pause_before_send`` freezes a ``Payouts`` between recording a money-moving step and
sending it, to test what a paused worker does to a payout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Iterator
from typing import TYPE_CHECKING, Any

import pytest

__all__ = [
    "pause_before_send",
    "payout_enot_client",
    "payout_intellectmoney_client",
    "payout_sandbox",
    "payout_sandbox_config",
]

if TYPE_CHECKING:
    from pytest_asyncio import fixture as _async_fixture

    from .enot import EnotClient
    from .intellectmoney import IntellectMoneyClient
    from .ledger import PayoutRecord
    from .payouts import Payouts
    from .sandbox import Sandbox, SandboxConfig
else:
    try:
        from pytest_asyncio import fixture as _async_fixture
    except ImportError:  # the fixtures then fail at use, pytest itself keeps working
        _async_fixture = pytest.fixture


@pytest.fixture
def payout_sandbox_config() -> SandboxConfig:
    """The sandbox's configuration; override this fixture to change it."""
    from .sandbox import SandboxConfig

    return SandboxConfig()


@_async_fixture
async def payout_sandbox(payout_sandbox_config: SandboxConfig) -> AsyncIterator[Sandbox]:
    """A sandbox serving both providers on 127.0.0.1, stopped after the test."""
    from .sandbox import Sandbox

    async with Sandbox(config=payout_sandbox_config) as sandbox:
        yield sandbox


@_async_fixture
async def payout_intellectmoney_client(
    payout_sandbox: Sandbox,
) -> AsyncIterator[IntellectMoneyClient]:
    """An ``IntellectMoneyClient`` (current API) pointed at ``payout_sandbox``."""
    async with payout_sandbox.intellectmoney_client() as client:
        yield client


@_async_fixture
async def payout_enot_client(payout_sandbox: Sandbox) -> AsyncIterator[EnotClient]:
    """An ``EnotClient`` pointed at ``payout_sandbox``."""
    async with payout_sandbox.enot_client() as client:
        yield client


@contextlib.contextmanager
def pause_before_send(
    payouts: Payouts[Any],
    seconds: float,
    *,
    keys: Collection[str] | None = None,
    times: int = 1,
) -> Iterator[list[str]]:
    """Freeze ``payouts``' drives the way a GC pause, VM steal or SIGSTOP would: while
    the body runs, a money-moving step (an Enot create, an IntellectMoney execute) of
    one of ``keys`` (any key when ``None``) sleeps ``seconds`` after it is recorded
    in the ledger and before its request is fenced and sent; each key pauses at most
    ``times`` times. Yields the keys paused so far, in order. Drives that started
    before the body keep their earlier setting."""
    paused: list[str] = []

    async def pause(record: PayoutRecord) -> None:
        if (keys is None or record.key in keys) and paused.count(record.key) < times:
            paused.append(record.key)
            await asyncio.sleep(seconds)

    previous, payouts._before_send = payouts._before_send, pause
    try:
        yield paused
    finally:
        payouts._before_send = previous
