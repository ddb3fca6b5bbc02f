"""``pay_many`` never outlives its caller, and one payout's trouble -- even trouble
handling trouble -- is that payout's result, never the batch's."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from payout_async import PayoutStatus, ValidationError
from payout_async.ledger import (
    LedgerNotWrittenError,
    LedgerOutcomeUnknownError,
    LedgerState,
    SQLiteLedger,
)
from payout_async.sandbox import Sandbox

from .ledger_faults import pay_many_tasks, settle
from .support import SHORT_TIMEOUTS, books, fast_config, im_client, im_request, payouts


def requests(count: int) -> list[tuple[str, Any]]:
    return [(f"im-{n}", im_request(f"im-{n}")) for n in range(count)]


def sent(sandbox: Sandbox) -> int:
    return sum(sandbox.state.faults.call_counts.values())


async def assert_quiet(sandbox: Sandbox) -> None:
    """No worker left, and nothing more reaches the provider."""
    assert pay_many_tasks() == []
    before = sent(sandbox)
    await asyncio.sleep(0.2)
    assert sent(sandbox) == before


async def assert_paid_once(sandbox: Sandbox, flow: Any, keys: list[str]) -> None:
    await settle([flow], flow.ledger)
    executed, _ = books(sandbox.state)
    for key in keys:
        row = await flow.ledger.get("intellectmoney", key)
        assert row is not None and row.state is LedgerState.SUCCEEDED, (key, row)
        assert executed[key] == 1, key
    assert sandbox.duplicates() == []


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config(latency=(0.02, 0.06))) as running:
        yield running


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db", busy_timeout=0.2) as opened:
        yield opened


async def test_a_failing_source_stops_every_worker_first(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items = requests(12)

    async def source() -> AsyncIterator[tuple[str, Any]]:
        for item in items[:8]:
            yield item
            await asyncio.sleep(0.01)
        raise RuntimeError("the source broke")

    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger, lease_seconds=1.5)
        with pytest.raises(RuntimeError, match="the source broke"):
            async for _ in flow.pay_many(source(), concurrency=4):
                pass
        await assert_quiet(sandbox)
        await assert_paid_once(sandbox, flow, [key for key, _ in items[:8]])


async def test_a_bad_item_ends_the_batch_like_a_failing_source(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items: list[Any] = [*requests(3), "not a pair"]
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger)
        with pytest.raises(ValidationError, match="pair"):
            async for _ in flow.pay_many(items, concurrency=1):
                pass
        await assert_quiet(sandbox)


async def test_closing_after_a_break_stops_the_workers(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items = requests(20)
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger, lease_seconds=1.5)
        async with contextlib.aclosing(flow.pay_many(items, concurrency=4)) as results:
            async for _ in results:
                break
        await assert_quiet(sandbox)
        done = [key for key, _ in items if await ledger.get("intellectmoney", key)]
        assert 1 <= len(done) < len(items)
        await assert_paid_once(sandbox, flow, done)


async def test_a_bare_break_stops_the_workers_as_the_iterator_goes(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger, lease_seconds=1.5)
        async for _ in flow.pay_many(requests(20), concurrency=4):
            break
        for _ in range(100):  # the dropped generator is closed by the event loop
            if not pay_many_tasks():
                break
            await asyncio.sleep(0.01)
        await assert_quiet(sandbox)


async def test_cancelling_the_caller_stops_the_workers(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger, lease_seconds=1.5)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in flow.pay_many(requests(30), concurrency=6):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        await asyncio.wait({task}, timeout=5)  # fail, not hang, if it never returns
        assert task.cancelled()
        assert pay_many_tasks() == []
        await assert_quiet(sandbox)


class _Failing:
    """A real ledger that fails for some keys: ``begin`` (its commit unknown) with
    ``at="begin"``, else the first ``transition``; and ``get`` always (unreadable)."""

    def __init__(self, ledger: SQLiteLedger, keys: set[str], *, at: str) -> None:
        self._ledger = ledger
        self._keys = keys
        self._at = at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def begin(self, provider: str, key: str, *args: Any, **kwargs: Any) -> Any:
        if key in self._keys and self._at == "begin":
            raise LedgerOutcomeUnknownError("the commit of the intent was lost")
        return await self._ledger.begin(provider, key, *args, **kwargs)

    async def transition(self, provider: str, key: str, **kwargs: Any) -> Any:
        if key in self._keys and self._at == "transition":
            raise LedgerOutcomeUnknownError("the commit of a step was lost")
        return await self._ledger.transition(provider, key, **kwargs)

    async def get(self, provider: str, key: str) -> Any:
        if key in self._keys:
            raise LedgerNotWrittenError("the ledger cannot be read")
        return await self._ledger.get(provider, key)


async def test_an_error_while_handling_an_error_is_that_payouts_result(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items = requests(10)
    bad = {"im-2", "im-5", "im-7"}
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, _Failing(ledger, bad, at="transition"))  # type: ignore[arg-type]
        results = {r.key: r async for r in flow.pay_many(items, concurrency=4)}
    assert pay_many_tasks() == []
    assert len(results) == 10
    for key, result in results.items():
        if key in bad:
            assert result.status is PayoutStatus.NEEDS_ATTENTION
            assert result.reason is not None
            assert "step was lost" in result.reason and "cannot be read" in result.reason
        else:
            assert result.status is PayoutStatus.SUCCEEDED, result
    executed, _ = books(sandbox.state)
    assert not any(executed[key] for key in bad)  # stopped before execute


async def test_an_intent_whose_commit_is_unknown_is_not_started(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items = requests(4)
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, _Failing(ledger, {"im-1"}, at="begin"))  # type: ignore[arg-type]
        results = {r.key: r async for r in flow.pay_many(items, concurrency=2)}
    assert results["im-1"].status is PayoutStatus.NOT_STARTED
    assert results["im-1"].reason is not None and "may have been recorded" in results["im-1"].reason
    assert sent(sandbox) > 0 and books(sandbox.state)[0]["im-1"] == 0


async def test_no_intent_recorded_means_not_started_and_a_rerun_pays(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    items = requests(6)
    other = sqlite3.connect(ledger.path, isolation_level=None)
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger)
        other.execute("BEGIN IMMEDIATE")
        try:
            first = [r async for r in flow.pay_many(items, concurrency=3)]
        finally:
            other.execute("COMMIT")
            other.close()
        assert {r.status for r in first} == {PayoutStatus.NOT_STARTED}
        for result in first:
            assert result.state is None and result.provider_id is None
            assert result.reason is not None
            assert result.reason.startswith("ledger unavailable: nothing was sent")
        assert await ledger.records() == []
        assert sent(sandbox) == 0

        again = [r async for r in flow.pay_many(items, concurrency=3)]
        assert {r.status for r in again} == {PayoutStatus.SUCCEEDED}
        await assert_paid_once(sandbox, flow, [key for key, _ in items])
