"""``Payouts.enqueue`` and ``Payouts.run_worker`` in one process, on every ledger:
workers share the queue, wake on an enqueue, stay quiet when idle, and give every row
back when stopped without letting anything be paid twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from payout_async import PayoutStatus, PollPolicy, ValidationError
from payout_async.ledger import (
    EnqueueOutcome,
    Ledger,
    LedgerState,
    MemoryLedger,
    PayoutRecord,
)
from payout_async.payouts import Payouts, WorkerSummary
from payout_async.payouts._owner import owner_for
from payout_async.payouts._worker import _StoppingLedger
from payout_async.sandbox import Sandbox
from tests.ledger.support import Backend

from .support import enot_client, enot_request, fast_config, im_client, im_request, payouts

SLOW_POLL = PollPolicy(initial=0.05, multiplier=1.5, maximum=0.1, deadline=30.0)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 30) -> None:
    """Wait until ``check()`` holds (polled every 20 ms)."""
    for _ in range(int(seconds * 50)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition never held")


async def all_final(ledger: Ledger, count: int) -> bool:
    counts = await ledger.counts()
    return sum(n for state, n in counts.items() if state.is_final) == count


def assert_paid_once(sandbox: Sandbox, keys: list[str]) -> None:
    assert sandbox.duplicates() == []
    paid = sandbox.paid_per_payout()
    assert max(paid.values(), default=0) <= 1
    assert {key for _, key in paid} == set(keys)


class Workers:
    """``run_worker`` tasks, stopped together."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[WorkerSummary]] = []

    def start(self, flow: Payouts[Any], **options: Any) -> None:
        options.setdefault("concurrency", 8)
        self.tasks.append(asyncio.create_task(flow.run_worker(stop=self.stop, **options)))

    async def finish(self, *, stop: bool = True) -> list[WorkerSummary]:
        if stop:
            self.stop.set()
        return list(await asyncio.wait_for(asyncio.gather(*self.tasks), 30))


async def test_workers_pay_every_enqueued_payout_once(backend: Backend, sandbox: Sandbox) -> None:
    ledgers = [await backend.new() for _ in range(2)]  # two processes, as it were
    keys = [f"w-{n}" for n in range(80)]
    async with (
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        im_items = [(key, im_request(key)) for key in keys[::2]]
        enot_items = [(key, enot_request()) for key in keys[1::2]]
        first_im = payouts(im, ledgers[0])
        results = await first_im.enqueue(im_items)
        assert {r.outcome for r in results} == {EnqueueOutcome.NEW}
        await payouts(enot, ledgers[0]).enqueue(enot_items)
        workers = Workers()
        for ledger in ledgers:
            workers.start(payouts(im, ledger))
            workers.start(payouts(enot, ledger))
        await eventually(lambda: all_final(ledgers[0], len(keys)))
        summaries = await workers.finish()
        again = await first_im.enqueue(im_items)  # enqueueing again changes nothing
    assert {r.outcome for r in again} == {EnqueueOutcome.EXISTING}
    assert await ledgers[0].counts() == {LedgerState.SUCCEEDED: len(keys)}
    assert sum(s.driven for s in summaries) == len(keys)
    assert all(s.handed_back == 0 for s in summaries)
    assert sum((Counter(s.statuses) for s in summaries), Counter()) == {
        PayoutStatus.SUCCEEDED: len(keys)
    }
    assert_paid_once(sandbox, keys)
    assert await ledgers[0].lease_holders() == []


async def test_an_enqueue_wakes_an_idle_worker(backend: Backend, sandbox: Sandbox) -> None:
    worker_ledger, producer_ledger = await backend.new(), await backend.new()
    async with enot_client(sandbox.enot_url) as enot:
        workers = Workers()
        # It would look for work on its own only once a minute: only a wake-up helps.
        workers.start(payouts(enot, worker_ledger), idle_poll=60)
        await asyncio.sleep(0.3)  # it has looked, found nothing, and sleeps
        await payouts(enot, producer_ledger).enqueue([(f"e-{n}", enot_request()) for n in range(5)])
        await eventually(lambda: all_final(producer_ledger, 5), seconds=20)
        [summary] = await workers.finish()
    assert summary.statuses == {PayoutStatus.SUCCEEDED: 5}
    assert_paid_once(sandbox, [f"e-{n}" for n in range(5)])


class CountingLedger:
    """Counts every call made to a ledger's methods."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.ledger, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


async def test_an_idle_worker_asks_the_ledger_little(backend: Backend, sandbox: Sandbox) -> None:
    counting = CountingLedger(await backend.new())
    async with enot_client(sandbox.enot_url) as enot:
        workers = Workers()
        workers.start(payouts(enot, cast(Ledger, counting)), idle_poll=0.5)
        await asyncio.sleep(2.6)
        await workers.finish()
    # About one look (a claim, the dead-owner check, and -- on a ledger other workers
    # share -- the provider's pause) per idle_poll, not a loop: six looks in 2.6 s at
    # most (the first at once), and one listener.
    calls = dict(counting.calls)
    assert calls.pop("listen_for_work") == 1
    assert 3 <= calls.pop("claim_stranded") <= 7
    assert calls.pop("lease_holders") <= 7
    assert calls.pop("pause_of", 0) <= 7
    assert calls == {}


async def test_stopping_hands_back_rows_waiting_on_the_provider_at_once(
    backend: Backend,
) -> None:
    slow = fast_config(im_in_process_after=1.0, im_final_after=2.5, enot_final_after=2.5)
    ledger = await backend.new()
    keys = [f"s-{n}" for n in range(12)]
    async with (
        Sandbox(config=slow) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        flows = [payouts(im, ledger, poll=SLOW_POLL), payouts(enot, ledger, poll=SLOW_POLL)]
        await flows[0].enqueue([(key, im_request(key)) for key in keys[::2]])
        await flows[1].enqueue([(key, enot_request()) for key in keys[1::2]])
        workers = Workers()
        for flow in flows:
            workers.start(flow, shutdown_grace=30)  # the grace is not waited out

        async def all_processing() -> bool:
            return await ledger.counts() == {LedgerState.PROCESSING: len(keys)}

        await eventually(all_processing)
        summaries = await workers.finish()
        # Every row is given back where it stood, nothing more was sent.
        assert sum(s.handed_back for s in summaries) == len(keys)
        assert sum(s.driven for s in summaries) == 0
        assert await ledger.lease_holders() == []
        for key in keys:
            record = await ledger.get("intellectmoney" if key in keys[::2] else "enot", key)
            assert record is not None
            assert (record.state, record.lease_owner, record.attempts) == (
                LedgerState.PROCESSING,
                None,
                1,
            )
        # Another worker takes them up at once and finishes them.
        others = Workers()
        for flow in (payouts(im, ledger, poll=SLOW_POLL), payouts(enot, ledger, poll=SLOW_POLL)):
            others.start(flow)
        await eventually(lambda: all_final(ledger, len(keys)))
        await others.finish()
        assert await ledger.counts() == {LedgerState.SUCCEEDED: len(keys)}
        assert_paid_once(sandbox, keys)


@pytest.mark.parametrize("provider", ["intellectmoney", "enot"])
async def test_stopping_lets_a_money_moving_request_record_its_outcome(
    backend: Backend, sandbox: Sandbox, provider: str
) -> None:
    ledger = await backend.new()
    async with im_client(sandbox.intellectmoney_url) as im, enot_client(sandbox.enot_url) as enot:
        client = im if provider == "intellectmoney" else enot
        flow = payouts(client, ledger, poll=SLOW_POLL)
        request = im_request("k") if provider == "intellectmoney" else enot_request()
        await flow.enqueue([("k", request)])
        workers = Workers()
        recorded: list[PayoutRecord] = []

        async def stop_now(record: PayoutRecord) -> None:
            # Recorded as being sent; stop arrives before the request leaves.
            recorded.append(record)
            workers.stop.set()
            await asyncio.sleep(0.2)

        flow._before_send = stop_now
        workers.start(flow, shutdown_grace=30)
        [summary] = await workers.finish(stop=False)  # the hook stops it
        assert [r.state for r in recorded] == [
            LedgerState.EXECUTING if provider == "intellectmoney" else LedgerState.SENDING
        ]
        # The request went out, its outcome was recorded, and the row was given back.
        record = await ledger.get(provider, "k")
        assert record is not None
        assert record.state in (LedgerState.PROCESSING, LedgerState.SUCCEEDED)
        assert record.operation_id is not None
        assert (record.lease_owner, record.attempts) == (None, 1)
        assert summary.handed_back + summary.driven == 1
        flow._before_send = None
        others = Workers()
        others.start(payouts(client, ledger))
        await eventually(lambda: all_final(ledger, 1))
        await others.finish()
    assert (await ledger.counts()) == {LedgerState.SUCCEEDED: 1}
    assert_paid_once(sandbox, ["k"])


async def test_once_stopping_no_money_moving_step_starts() -> None:
    ledger = MemoryLedger()
    digest = ledger.params_hash({"amount": "1.00"})
    claim = await ledger.begin("enot", "k", digest, {"amount": "1.00"}, owner="w", lease_seconds=60)
    view = _StoppingLedger(ledger)
    token = claim.record.lease_token
    view.stopping = True
    with pytest.raises(asyncio.CancelledError):  # refused: nothing written
        await view.transition(
            "enot", "k", owner="w", token=token, state=LedgerState.SENDING,
            lease_seconds=60, add_attempt=True,
        )  # fmt: skip
    assert await ledger.get("enot", "k") == claim.record
    with pytest.raises(asyncio.CancelledError):  # written, then the drive stops there
        await view.transition(
            "enot", "k", owner="w", token=token, state=LedgerState.PROCESSING, lease_seconds=60
        )
    record = await ledger.get("enot", "k")
    assert record is not None and record.state is LedgerState.PROCESSING
    final = await view.transition(  # a final state ends the drive anyway: no stop needed
        "enot", "k", owner="w", token=token, state=LedgerState.SUCCEEDED, lease_seconds=60
    )
    assert final.state is LedgerState.SUCCEEDED


async def test_cancelling_a_worker_gives_every_lease_back(backend: Backend) -> None:
    slow = fast_config(enot_final_after=30)
    ledger = await backend.new()
    async with Sandbox(config=slow) as sandbox, enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, ledger, poll=SLOW_POLL)
        await flow.enqueue([(f"c-{n}", enot_request()) for n in range(10)])
        task = asyncio.create_task(flow.run_worker(stop=asyncio.Event(), concurrency=4))

        async def four_held() -> bool:
            return [h.rows for h in await ledger.lease_holders()] == [4]

        await eventually(four_held)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await ledger.lease_holders() == []
        assert sandbox.duplicates() == []


async def test_rows_of_a_dead_process_of_this_host_are_taken_over_at_once(
    backend: Backend, sandbox: Sandbox
) -> None:
    ledger = await backend.new()
    dead = owner_for(999_999_999, "1")  # a process of this host, boot and namespace: gone
    request = enot_request()
    async with enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, ledger, lease_seconds=600)
        [intent] = [flow._intent("d-1", request)]
        await ledger.begin(
            "enot", "d-1", ledger.params_hash(intent.params), intent.params,
            owner=dead, lease_seconds=600, order_id=intent.order_id,
        )  # fmt: skip
        workers = Workers()
        workers.start(flow)
        await eventually(lambda: all_final(ledger, 1))
        await workers.finish()
    assert_paid_once(sandbox, ["d-1"])


async def test_enqueue_checks_every_item_before_recording_any(sandbox: Sandbox) -> None:
    ledger = MemoryLedger()
    async with enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, ledger)
        with pytest.raises(ValidationError):
            await flow.enqueue([("ok", enot_request()), ("bad", im_request("bad"))])
        with pytest.raises(ValidationError):
            await flow.enqueue([("ok", enot_request()), (" spaced ", enot_request())])
        with pytest.raises(ValidationError):
            await flow.run_worker(stop=asyncio.Event(), concurrency=0)
    assert await ledger.counts() == {}


class SlowToAnswerLedger:
    """A ledger whose final transitions commit, then answer ``delay`` seconds later
    (as a loaded SQLite thread or a slow network does); ``landed`` is set on commit."""

    def __init__(self, ledger: Ledger, delay: float) -> None:
        self.ledger = ledger
        self.delay = delay
        self.landed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    async def transition(self, *args: Any, **kwargs: Any) -> PayoutRecord:
        record = await self.ledger.transition(*args, **kwargs)
        if record.state.is_final:
            self.landed.set()
            await asyncio.sleep(self.delay)
        return record


async def test_a_payout_made_final_as_the_worker_stops_counts_as_driven(
    backend: Backend, sandbox: Sandbox
) -> None:
    # The row is final in the ledger before its drive hears so; stop arrives between.
    slow = SlowToAnswerLedger(await backend.new(), delay=0.3)
    async with enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, cast(Ledger, slow))
        await flow.enqueue([("k", enot_request())])
        workers = Workers()
        workers.start(flow, shutdown_grace=30)
        await asyncio.wait_for(slow.landed.wait(), 30)
        [summary] = await workers.finish()
    assert (summary.driven, summary.handed_back) == (1, 0)
    assert summary.statuses == {PayoutStatus.SUCCEEDED: 1}
    assert_paid_once(sandbox, ["k"])


async def test_a_paused_providers_paid_rows_are_still_followed_to_the_end(
    backend: Backend,
) -> None:
    """While IntellectMoney is paused for want of money a worker sends it nothing, but
    a payout whose money has moved (``processing``) is polled to its final state."""
    slow = fast_config(im_in_process_after=0.2, im_final_after=0.8)
    ledger = await backend.new()
    async with Sandbox(config=slow) as sandbox, im_client(sandbox.intellectmoney_url) as client:
        short = PollPolicy(initial=0.02, maximum=0.05, deadline=0.05)
        paid = await payouts(client, ledger, poll=short).pay("paid", im_request("paid"))
        assert paid.state is LedgerState.PROCESSING, paid
        flow = payouts(client, ledger, poll=SLOW_POLL)
        await flow.enqueue([("waiting", im_request("waiting"))])
        await ledger.pause_provider("intellectmoney", reason="NotEnoughMoney", by="test")
        workers = Workers()
        workers.start(flow, idle_poll=0.2)

        async def settled() -> bool:
            record = await ledger.get("intellectmoney", "paid")
            return record is not None and record.state is LedgerState.SUCCEEDED

        await eventually(settled, seconds=10)
        await workers.finish()
        waiting = await ledger.get("intellectmoney", "waiting")
        assert waiting is not None and waiting.state is LedgerState.PENDING
        assert len(sandbox.state.intellectmoney) == 1  # nothing made for "waiting"
        assert sandbox.paid_per_payout() == {("intellectmoney", "paid"): 1}
