"""The six ways "never twice" broke in 0.1, each attacked directly, on every ledger.

1. the same key twice at once in one process;
2. an IntellectMoney execute accepted while the operation still reads ``Created``;
3. the Enot grace period measured on a skewed wall clock;
4. a worker paused between recording ``sending`` and sending;
5. one explicit ``order_id`` under two keys, and a payoff found by order_id that is not ours;
6. ``resume()`` that never ends.

Every test ends with the sandbox's books: nobody paid twice, and every payout that
can be settled is settled -- ``needs_attention`` is not a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from payout_async import IdempotencyConflictError, PayoutStatus, PollPolicy, Timeouts
from payout_async.enot import PayoffRequest
from payout_async.ledger import (
    Ledger,
    LedgerOutcomeUnknownError,
    LedgerState,
    MemoryLedger,
    PayoutRecord,
    params_hash,
)
from payout_async.payouts import order_id_for
from payout_async.payouts._orchestrator import _request_params
from payout_async.sandbox import FaultKind, Sandbox
from payout_async.testing import pause_before_send
from tests.ledger.support import Backend

from .support import (
    CARD,
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    on_every_ledger_at_once,
    payouts,
)


def assert_paid_at_most_once(sandbox: Sandbox) -> None:
    assert sandbox.duplicates() == []
    assert max(sandbox.paid_per_payout().values(), default=0) <= 1


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 10) -> None:
    """Wait until ``check()`` holds (polled every 10 ms)."""
    for _ in range(int(seconds * 100)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def state_of(ledger: Ledger, key: str) -> LedgerState | None:
    record = await ledger.get("enot", key)
    return None if record is None else record.state


async def paid(sandbox: Sandbox, provider: str, name: str) -> int:
    return sandbox.paid_per_payout()[(provider, name)]


# -- 1. the same key twice at once -------------------------------------------------------


@on_every_ledger_at_once
async def test_the_same_key_paid_concurrently_in_one_process_pays_once(backend: Backend) -> None:
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        im_flow, enot_flow = payouts(im, ledger), payouts(enot, ledger)
        results = await asyncio.gather(
            *(im_flow.pay("im-42", im_request("im-42")) for _ in range(5)),
            *(enot_flow.pay("en-42", enot_request()) for _ in range(5)),
        )
        assert {r.status for r in results} == {PayoutStatus.SUCCEEDED}
        assert len({(r.key, r.provider_id) for r in results}) == 2  # everybody saw one payout
        # The same key with other parameters, while in flight, is still a conflict.
        first = asyncio.create_task(enot_flow.pay("en-43", enot_request()))
        await asyncio.sleep(0)
        with pytest.raises(IdempotencyConflictError):
            await enot_flow.pay("en-43", enot_request(amount="99.00"))
        assert (await first).status is PayoutStatus.SUCCEEDED
        assert_paid_at_most_once(sandbox)
        assert await paid(sandbox, "intellectmoney", "im-42") == 1
        assert await paid(sandbox, "enot", "en-42") == 1


@on_every_ledger_at_once
async def test_a_repeated_key_in_pay_many_is_paid_once_and_reported_twice(
    backend: Backend,
) -> None:
    ledger = await backend.new()
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        items = [(f"k{n % 3}", enot_request()) for n in range(9)]
        results = [r async for r in payouts(enot, ledger).pay_many(items, concurrency=9)]
        assert sorted(r.key for r in results) == sorted(key for key, _ in items)
        assert {r.status for r in results} == {PayoutStatus.SUCCEEDED}
        assert sandbox.paid_per_payout() == {("enot", f"k{n}"): 1 for n in range(3)}


@on_every_ledger_at_once
async def test_two_payouts_objects_and_resume_racing_one_key_pay_once(backend: Backend) -> None:
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        # Strand a row mid-create: its create was recorded, then the drive was cancelled
        # before the request left.
        stranded = payouts(enot, ledger, lease_seconds=SHORT_LEASE)
        with pause_before_send(stranded, 30):
            task = asyncio.create_task(stranded.pay("k", enot_request()))
            await eventually(lambda: _is(state_of(ledger, "k"), LedgerState.SENDING))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await stranded.aclose()  # its lease is given back
        one = payouts(enot, ledger, lease_seconds=SHORT_LEASE)
        other = payouts(enot, ledger, lease_seconds=SHORT_LEASE)
        results = await asyncio.gather(
            one.pay("k", enot_request()),
            one.resume(),
            other.pay("k", enot_request()),
            other.resume(),
        )
        await one.resume()  # whichever lost the race reported "in progress"; settle it
        assert (await one.get("k")) is not None
        assert (await ledger.get("enot", "k")).state is LedgerState.SUCCEEDED  # type: ignore[union-attr]
        assert results[0].status in (PayoutStatus.SUCCEEDED, PayoutStatus.PROCESSING)
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}


# -- 2. an accepted execute that still reads Created -------------------------------------


@pytest.mark.parametrize("second_execute", ["refuse", "pay_again", "accept"])
@on_every_ledger_at_once
async def test_a_lost_execute_answer_while_created_lags_is_never_repeated(
    backend: Backend, second_execute: str
) -> None:
    ledger = await backend.new()
    config = fast_config(im_execute_lag=0.5, im_second_execute=second_execute)
    async with (
        Sandbox(config=config) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
    ):
        sandbox.faults.script("im.execute", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        flow = payouts(im, ledger, execute_settle=1.0)  # longer than the provider's lag
        result = await flow.pay("im-1", im_request("im-1"))
        assert result.status is PayoutStatus.SUCCEEDED, result.reason
        assert [op.executions for op in sandbox.state.intellectmoney] == [1]
        assert not any(op.deleted for op in sandbox.state.intellectmoney)
        assert sandbox.paid_per_payout() == {("intellectmoney", "im-1"): 1}


@on_every_ledger_at_once
async def test_a_refused_execute_is_not_failed_on_one_created_read(backend: Backend) -> None:
    # The first execute is accepted but its answer lost; while the operation still
    # reads Created, a second drive's execute is refused. 0.1 deleted the operation and
    # recorded FAILED here -- and then the first execute paid.
    ledger = await backend.new()
    config = fast_config(im_execute_lag=0.6, im_second_execute="refuse")
    async with (
        Sandbox(config=config) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
    ):
        sandbox.faults.script("im.execute", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        flow = payouts(im, ledger, execute_settle=1.0, max_send_attempts=5)
        result = await flow.pay("im-1", im_request("im-1"))
        assert result.status is PayoutStatus.SUCCEEDED, result.reason
        assert sandbox.paid_per_payout() == {("intellectmoney", "im-1"): 1}
        assert not any(op.deleted for op in sandbox.state.intellectmoney)


@on_every_ledger_at_once
async def test_created_that_holds_over_the_settle_window_is_executed_again(
    backend: Backend,
) -> None:
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
    ):
        # The first execute never reached the books (dropped before it was read).
        sandbox.faults.script("im.execute", kind=FaultKind.CLOSE_BEFORE_READ, nth=1)
        result = await payouts(im, ledger).pay("im-1", im_request("im-1"))
        assert result.status is PayoutStatus.SUCCEEDED and result.attempts == 2
        notes = [step.note for step in await ledger.history("intellectmoney", "im-1")]
        assert any(note and "settle window" in note for note in notes)
        assert sandbox.paid_per_payout() == {("intellectmoney", "im-1"): 1}


@on_every_ledger_at_once
async def test_a_refused_execute_is_deleted_only_by_the_drive_holding_the_row(
    backend: Backend,
) -> None:
    # Simulation seed 10227: drive A's execute is refused (nothing happened) and A
    # waits out the settle window before deleting the operation. Meanwhile its lease
    # ends and B takes the row over, executes the operation -- accepted, still
    # reading Created in the provider's lag -- and A's delete, unfenced, landed in that
    # lag: the execute paid and the row ended cancelled. The delete leaves through the
    # fence now: A, no longer holding the row, sends nothing.
    ledger = await backend.new()
    config = fast_config(im_execute_lag=3.0)
    async with (
        Sandbox(config=config) as sandbox,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as im,
    ):
        sandbox.script_error("im.execute", 400, "refused before anything happened")
        a = payouts(im, ledger, lease_seconds=SHORT_LEASE, execute_settle=2.0)
        paying = asyncio.create_task(a.pay("im-1", im_request("im-1")))
        await eventually(lambda: _true(len(sandbox.request_times("im.execute")) == 1))
        await end_lease(ledger, "intellectmoney", "im-1")
        b = payouts(im, ledger, lease_seconds=SHORT_LEASE, execute_settle=0.3)
        [taken_over] = await b.resume()
        await paying
        assert taken_over.status is PayoutStatus.SUCCEEDED, taken_over.reason
        assert sandbox.request_times("im.delete") == []
        assert not any(op.deleted for op in sandbox.state.intellectmoney)
        assert sandbox.paid_per_payout() == {("intellectmoney", "im-1"): 1}
        record = await ledger.get("intellectmoney", "im-1")
        assert record is not None and record.state is LedgerState.SUCCEEDED


class LandsThenTakenOver:
    """A ledger whose first move to ``executing`` commits, then -- before its caller
    hears of it -- the lease runs out and another worker claims the row; the caller is
    told the outcome is unknown."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.claims: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def transition(self, provider: str, key: str, **kwargs: Any) -> Any:
        record = await self._ledger.transition(provider, key, **kwargs)
        if kwargs["state"] is LedgerState.EXECUTING and not self.claims:
            await end_lease(self._ledger, provider, key)
            self.claims = await self._ledger.claim_stranded(
                owner="another-worker", lease_seconds=60.0, limit=1
            )
            raise LedgerOutcomeUnknownError("the commit was not confirmed")
        return record


@on_every_ledger_at_once
async def test_an_operation_the_row_names_is_not_deleted_as_an_orphan(backend: Backend) -> None:
    # The write naming a new operation landed, but its drive heard "unknown" and then
    # found the row claimed by another worker -- which may execute that operation. The
    # drive must not delete it as an orphan of its own.
    ledger = LandsThenTakenOver(await backend.new())
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
    ):
        flow = payouts(im, ledger)  # type: ignore[arg-type]
        result = await flow.pay("im-1", im_request("im-1"))
        [claim] = ledger.claims
        assert claim.record.operation_id is not None
        assert result.state is LedgerState.EXECUTING
        assert result.provider_id == claim.record.operation_id
        assert sandbox.request_times("im.delete") == []
        assert sandbox.request_times("im.execute") == []


# -- 3. the grace period on a skewed clock ------------------------------------------------


async def test_a_worker_with_a_skewed_wall_clock_waits_the_whole_grace(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Enot shows a new payoff only after 0.6 s, within the 1 s grace. Worker A loses the
    # create answer and stops; worker B, whose wall clock runs an hour ahead, takes the
    # row over. 0.1 saw the grace as long spent and created the payoff again at once.
    ledger_a, ledger_b = await backend.new(), await backend.new()
    config = fast_config(enot_info_lag=0.6, duplicate_order_id="accept")
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as enot:
        sandbox.faults.script("enot.create", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        worker_a = payouts(enot, ledger_a, grace=1.0)
        task = asyncio.create_task(worker_a.pay("k", enot_request()))

        async def answer_lost() -> bool:
            record = await ledger_a.get("enot", "k")
            return record is not None and record.last_error is not None

        await eventually(answer_lost)
        task.cancel()  # A stops while it reconciles: its lease is given back
        with pytest.raises(asyncio.CancelledError):
            await task
        await worker_a.aclose()

        skewed = time.time
        monkeypatch.setattr(time, "time", lambda: skewed() + 3600)
        worker_b = payouts(enot, ledger_b, grace=1.0)
        [result] = await worker_b.resume()
        monkeypatch.undo()
        assert result.status is PayoutStatus.SUCCEEDED, result.reason
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}
        assert len(sandbox.state.enot) == 1


# -- 4. a paused worker ------------------------------------------------------------------


@on_every_ledger_at_once
async def test_a_worker_paused_past_its_lease_does_not_send_after_a_takeover(
    backend: Backend,
) -> None:
    ledger_a, ledger_b = await backend.new(), await backend.new()
    config = fast_config(duplicate_order_id="accept", im_second_execute="pay_again")
    async with (
        Sandbox(config=config) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as im,
    ):
        for client, provider, key, request in (
            (enot, "enot", "en-1", enot_request()),
            (im, "intellectmoney", "im-1", im_request("im-1")),
        ):
            worker_a = payouts(client, ledger_a, lease_seconds=1.0)
            # A freezes (a GC pause, SIGSTOP...) until B has taken the row over and
            # finished it, however long that takes on a loaded machine.
            with pause_until(worker_a) as (paused, thaw):
                frozen = asyncio.create_task(worker_a.pay(key, request))
                await eventually(lambda: _true(bool(paused)))
                # A's lease runs out -- ended on the ledger rather than waited out, so
                # only the ledger knows: A's own memory still gives it most of a second.
                await end_lease(ledger_a, provider, key)
                [taken] = await payouts(client, ledger_b, lease_seconds=1.0).resume()
                thaw.set()
                thawed = await frozen  # A wakes up, and its fence stops the request
            assert taken.status is PayoutStatus.SUCCEEDED, taken.reason
            assert thawed.status is PayoutStatus.SUCCEEDED  # A reports the row as it is
        assert sandbox.paid_per_payout() == {("enot", "en-1"): 1, ("intellectmoney", "im-1"): 1}
        assert_paid_at_most_once(sandbox)


#: Request timeouts a loaded machine does not reach: a create that times out is looked
#: up and may be sent again (a second attempt, still one payment), which is not what
#: the paused-worker test is about.
PATIENT = Timeouts(total=2.5, connect=2.5, read=2.5)


@on_every_ledger_at_once
async def test_a_paused_worker_whose_lease_nobody_took_renews_and_sends(
    backend: Backend,
) -> None:
    # The worker pauses between recording its create and sending it; meanwhile its
    # lease runs out on the ledger (ended there at once rather than waited out) and
    # nobody takes the row. The fence renews the lease -- the token still holds it --
    # and the create leaves, once. The pause also outlasts what the worker's memory of
    # its lease allows (0.9 * 5 s lease - 2.5 s timeout = 2 s), so a fence that trusts
    # that memory renews too; those 2 s are the renewal's room on a loaded machine.
    ledger = await backend.new()
    ended: list[float] = []

    async def lease_runs_out(record: PayoutRecord) -> None:
        assert record.lease_owner is not None
        await ledger.renew(
            "enot", record.key, owner=record.lease_owner, token=record.lease_token,
            lease_seconds=0.0,
        )  # fmt: skip
        expired = await ledger.get("enot", record.key)
        assert expired is not None and expired.lease_expires_at is not None
        ended.append(expired.lease_expires_at)
        await asyncio.sleep(2.1)

    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=PATIENT) as enot,
    ):
        worker = payouts(enot, ledger, lease_seconds=5.0)
        worker._before_send = lease_runs_out
        result = await worker.pay("k", enot_request())
        assert len(ended) == 1  # paused once, with its lease over
        assert result.status is PayoutStatus.SUCCEEDED and result.attempts == 1
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}
        row = await ledger.get("enot", "k")
        assert row is not None and row.lease_token == 1  # nobody else ever claimed it


# -- 5. order_id belongs to one key ------------------------------------------------------


@on_every_ledger_at_once
async def test_one_explicit_order_id_under_two_keys_is_a_conflict(backend: Backend) -> None:
    ledger = await backend.new()
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, ledger)
        shared = PayoffRequest(service="card", wallet_to=CARD, amount=Decimal("10"), order_id="o")
        assert (await flow.pay("first", shared)).status is PayoutStatus.SUCCEEDED
        with pytest.raises(IdempotencyConflictError, match="order_id 'o'"):
            await flow.pay("second", shared)
        assert await ledger.get("enot", "second") is None
        # pay_many reports it as a rejected row and pays the others.
        results = [r async for r in flow.pay_many([("second", shared), ("third", enot_request())])]
        assert {(r.key, r.status) for r in results} == {
            ("second", PayoutStatus.REJECTED),
            ("third", PayoutStatus.SUCCEEDED),
        }
        assert sandbox.paid_per_payout() == {("enot", "o"): 1, ("enot", "third"): 1}


@pytest.mark.parametrize("lookup_before_create", [False, True])
@on_every_ledger_at_once
async def test_a_payoff_found_by_order_id_that_is_not_this_payout_is_not_adopted(
    backend: Backend, lookup_before_create: bool
) -> None:
    ledger = await backend.new()
    config = fast_config(duplicate_order_id="accept")
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as enot:
        # Somebody else's payoff already carries our order_id, for another amount.
        await enot.create_payoff(
            service="card", wallet_to=CARD, amount=Decimal("50.00"), order_id="o-7"
        )
        if not lookup_before_create:  # our create's outcome is unknown: look it up
            sandbox.faults.script("enot.create", kind=FaultKind.HTTP_504, nth=2)
        flow = payouts(enot, ledger, lookup_before_create=lookup_before_create)
        request = PayoffRequest(
            service="card", wallet_to=CARD, amount=Decimal("10"), order_id="o-7"
        )
        result = await flow.pay("mine", request)
        assert result.status is PayoutStatus.NEEDS_ATTENTION
        assert result.reason is not None and "amount is 50" in result.reason
        assert CARD not in result.reason
        assert len(sandbox.state.enot) == 1  # nothing of ours was created


@on_every_ledger_at_once
async def test_lookup_before_create_adopts_a_matching_payoff(backend: Backend) -> None:
    ledger = await backend.new()
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        await enot.create_payoff_from(enot_request(), order_id="o-8")  # paid before, by hand
        flow = payouts(enot, ledger, lookup_before_create=True)
        request = PayoffRequest(
            service="card", wallet_to=CARD, amount=Decimal("10"), order_id="o-8"
        )
        result = await flow.pay("mine", request)
        assert result.status is PayoutStatus.SUCCEEDED and result.attempts == 0
        assert len(sandbox.state.enot) == 1


# -- 6. resume() and reconcile() end -----------------------------------------------------


@on_every_ledger_at_once
async def test_resume_drives_each_row_once_however_slow(backend: Backend) -> None:
    # Payoffs that stay "wait" for minutes, a lease of one second and polls that take
    # longer than that: 0.1 claimed the same rows again and again, forever.
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config(enot_final_after=600)) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        # Each batch of three, driven one at a time, takes longer than the lease (each
        # row polls until its deadline: 1.2 s a batch at least).
        slow = PollPolicy(initial=0.05, maximum=0.1, deadline=0.4)
        flow = payouts(enot, ledger, lease_seconds=1.0, poll=slow)
        keys = [f"k{n}" for n in range(6)]
        first = [r async for r in flow.pay_many([(k, enot_request()) for k in keys])]
        assert {r.status for r in first} == {PayoutStatus.PROCESSING}
        resumed = await asyncio.wait_for(flow.resume(concurrency=1, batch=3), timeout=60)
        assert sorted(r.key for r in resumed) == sorted(keys)
        assert {r.status for r in resumed} == {PayoutStatus.PROCESSING}
        assert len(sandbox.state.enot) == len(keys)


@on_every_ledger_at_once
async def test_reconcile_reports_a_row_a_webhook_settled_meanwhile(backend: Backend) -> None:
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        sandbox.faults.script("enot.create", kind=FaultKind.HTTP_500, nth=1)
        flow = payouts(enot, ledger, max_send_attempts=1, lease_seconds=SHORT_LEASE)
        parked = await flow.pay("k", enot_request())
        assert parked.status is PayoutStatus.NEEDS_ATTENTION
        settle = SettleOnHistory(ledger)
        results = await payouts(  # type: ignore[arg-type]
            enot, settle, lease_seconds=SHORT_LEASE
        ).reconcile()
        assert [(r.key, r.status) for r in results] == [("k", PayoutStatus.SUCCEEDED)]


@contextlib.contextmanager
def pause_until(flow: Any) -> Iterator[tuple[list[str], asyncio.Event]]:
    """``pause_before_send`` (the same hook) with no fixed length: the paused step
    sleeps until the yielded event is set."""
    paused: list[str] = []
    thaw = asyncio.Event()

    async def pause(record: Any) -> None:
        paused.append(record.key)
        await thaw.wait()

    previous, flow._before_send = flow._before_send, pause
    try:
        yield paused, thaw
    finally:
        flow._before_send = previous


async def end_lease(ledger: Ledger, provider: str, key: str) -> None:
    """End the lease of the row's holder now, on the ledger's clock."""
    record = await ledger.get(provider, key)
    assert record is not None and record.lease_owner is not None
    await ledger.renew(
        provider, key, owner=record.lease_owner, token=record.lease_token, lease_seconds=0.0
    )


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value is expected


async def _true(value: bool) -> bool:
    return value


class SettleOnHistory:
    """A ledger through which a webhook settles every row just as reconcile() reads it."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def history(self, provider: str, key: str) -> Any:
        record = await self._ledger.get(provider, key)
        assert record is not None and record.order_id is not None
        await self._ledger.settle_by_order_id(
            provider, record.order_id, state=LedgerState.SUCCEEDED, provider_status="success"
        )
        return await self._ledger.history(provider, key)


async def test_a_joiner_cancelled_with_the_drive_it_joined_stops_too() -> None:
    # At shutdown every task is cancelled at once: a pay() that had joined another must
    # not take its drive's cancellation for its own cue to start a new drive.
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, MemoryLedger())
        with pause_before_send(flow, 30, times=1):
            driver = asyncio.create_task(flow.pay("k", enot_request()))
            await asyncio.sleep(0.2)
            joiner = asyncio.create_task(flow.pay("k", enot_request()))
            await asyncio.sleep(0.05)
            # The joiner is cancelled in the same instant as the drive's result.
            flow._in_flight["k"].result.add_done_callback(lambda _: joiner.cancel())
            driver.cancel()
            outcomes = await asyncio.gather(driver, joiner, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
        await flow.aclose()
        assert len(sandbox.state.enot) == 0


async def test_a_joiner_whose_drive_alone_was_cancelled_pays_it() -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        flow = payouts(enot, MemoryLedger(), lease_seconds=SHORT_LEASE)
        with pause_before_send(flow, 30, times=1):
            driver = asyncio.create_task(flow.pay("k", enot_request()))
            await asyncio.sleep(0.2)
            joiner = asyncio.create_task(flow.pay("k", enot_request()))
            await asyncio.sleep(0.05)
            driver.cancel()
            with pytest.raises(asyncio.CancelledError):
                await driver
            result = await joiner
        assert result.status in (PayoutStatus.SUCCEEDED, PayoutStatus.PROCESSING)
        await flow.resume()
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}


class AnswerBegins:
    """A ledger whose first ``begin`` answers only when ``answer`` is set: the read is
    made, its answer slow to come back."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.read = asyncio.Event()
        self.answer = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def begin(self, *args: Any, **kwargs: Any) -> Any:
        claim = await self._ledger.begin(*args, **kwargs)
        if not self.read.is_set():
            self.read.set()
            await self.answer.wait()
        return claim


async def test_a_joiner_does_not_take_a_deferral_read_before_it_began() -> None:
    # Seed 5533 of the simulation: a pay() here reads the row leased to a drive
    # elsewhere; that drive is cancelled and gives the row back; a second pay() here,
    # made after that, joins the first -- and must not return its stale deferral, or
    # the row stays pending with nobody driving it.
    ledger = MemoryLedger()
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        elsewhere, slow = payouts(enot, ledger), AnswerBegins(ledger)
        here = payouts(enot, slow)  # type: ignore[arg-type]
        with pause_before_send(elsewhere, 30):
            holder = asyncio.create_task(elsewhere.pay("k", enot_request()))
            await eventually(lambda: _is(state_of(ledger, "k"), LedgerState.SENDING))
            first = asyncio.create_task(here.pay("k", enot_request()))
            await slow.read.wait()
            holder.cancel()
            with pytest.raises(asyncio.CancelledError):
                await holder
            row = await ledger.get("enot", "k")
            assert row is not None and row.lease_owner is None  # given back
            second = asyncio.create_task(here.pay("k", enot_request()))
            await asyncio.sleep(0.05)
            slow.answer.set()
            deferred, result = await first, await second
        assert deferred.status is PayoutStatus.PROCESSING
        assert (deferred.reason or "").startswith("in progress in another drive")
        assert result.status is PayoutStatus.SUCCEEDED
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}
        await here.aclose()
        await elsewhere.aclose()


async def test_a_pay_after_one_cancelled_while_its_claim_was_made_drives_the_row() -> None:
    # Simulation seed 21361: a pay() cancelled while the ledger records its claim gives
    # the claim back once it is made; a pay() of the key here meanwhile found the row
    # leased to this very Payouts, deferred to "another drive" -- there was none --
    # and the row was left with nobody driving it. It waits for the claim to be given
    # back, and drives.
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        slow = AnswerBegins(MemoryLedger())
        here = payouts(enot, slow)  # type: ignore[arg-type]
        first = asyncio.create_task(here.pay("k", enot_request()))
        await slow.read.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(here.pay("k", enot_request()))
        await asyncio.sleep(0.05)
        slow.answer.set()
        result = await second
        assert result.status is PayoutStatus.SUCCEEDED, result.reason
        assert sandbox.paid_per_payout() == {("enot", "k"): 1}
        await here.aclose()


async def test_a_failing_lease_release_does_not_hide_a_cancellation() -> None:
    class NoRelease(MemoryLedger):
        async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
            raise RuntimeError("the ledger went away")

    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as enot:
        flow = payouts(enot, NoRelease())
        with pause_before_send(flow, 30):
            paying = asyncio.create_task(flow.pay("k", enot_request()))
            await asyncio.sleep(0.2)
            paying.cancel()
            with pytest.raises(asyncio.CancelledError):
                await paying
        assert len(sandbox.state.enot) == 0


@pytest.fixture(scope="module")
def dead_owner() -> str:
    """The owner name a process of this host gave itself before it ended."""
    code = "from payout_async.payouts._owner import new_owner; print(new_owner())"
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return finished.stdout.strip()


@on_every_ledger_at_once
async def test_rows_of_a_dead_local_process_are_taken_over_at_once(
    backend: Backend, dead_owner: str
) -> None:
    # A process of this host died mid-create holding two-minute leases: resume() and a
    # re-run pay() take its rows at once, and -- as it can send nothing more -- wait only
    # the grace period, not the rest of its lease.
    owner = dead_owner
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        for key in ("by-resume", "by-pay"):
            params = {**_request_params(enot_request()), "order_id": order_id_for(key)}
            claim = await ledger.begin(
                "enot", key, params_hash(params), params, owner=owner, lease_seconds=120,
                order_id=order_id_for(key),
            )  # fmt: skip
            await ledger.transition(
                "enot", key, owner=owner, token=claim.record.lease_token,
                state=LedgerState.SENDING, lease_seconds=120, add_attempt=True,
            )  # fmt: skip
        flow = payouts(enot, ledger, lease_seconds=SHORT_LEASE)
        started = time.monotonic()
        paid = await flow.pay("by-pay", enot_request())
        [resumed] = await flow.resume()
        assert (resumed.key, resumed.status) == ("by-resume", PayoutStatus.SUCCEEDED)
        assert paid.status is PayoutStatus.SUCCEEDED
        assert time.monotonic() - started < 60  # not the two minutes the leases had left
        assert sandbox.paid_per_payout() == {("enot", "by-resume"): 1, ("enot", "by-pay"): 1}
