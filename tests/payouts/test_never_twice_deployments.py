""" "Never twice" in the deployments people run: each finding of the exactly-once issue
(a live worker taken for dead, a stepped ledger clock, slow answers, a signed webhook of
another system's payoff, resume() racing pay()), attacked directly on every ledger.

Each test ends with the sandbox's books: nobody paid twice, and every payout that can be
settled is settled -- ``needs_attention`` is not a pass.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from payout_async import PayoutStatus, RetryPolicy, Timeouts
from payout_async.enot import PayoffRequest, PayoffWebhook
from payout_async.ledger import Ledger, LedgerState, MemoryLedger
from payout_async.payouts import _orchestrator
from payout_async.payouts._owner import new_owner
from payout_async.sandbox import FaultKind, Sandbox
from payout_async.testing import pause_before_send
from tests.ledger.support import PG_DSN, Backend

from .support import (
    CARD,
    POLL,
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    on_every_ledger_at_once,
    payouts,
    side_by_side,
)

#: A 429 whose Retry-After (1 s) A honours: the takeover happens during that wait.
RETRY_AFTER = 1.0
PATIENT = RetryPolicy(attempts=3, initial=0.01, maximum=0.05, max_retry_after=RETRY_AFTER)


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 20) -> None:
    """Wait until ``check()`` holds (polled every 10 ms)."""
    for _ in range(int(seconds * 100)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def has_state(ledger: Ledger, key: str, state: LedgerState) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        record = await ledger.get("enot", key)
        return record is not None and record.state is state

    return check


async def step_ledger_clock(backend: Backend, ledger: Ledger, seconds: float) -> None:
    """What a forward step of the ledger's clock does to the leases it holds: every
    expiry is ``seconds`` nearer (shifted back on the store, which is what comparing
    it with a clock that jumped ahead amounts to)."""
    if isinstance(ledger, MemoryLedger):
        for row in ledger._rows.values():
            if row.lease_expires_at is not None:
                row.lease_expires_at -= seconds
        return
    update = "UPDATE {table} SET lease_expires_at = lease_expires_at - {seconds}"
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.path) as conn:
            conn.execute(update.format(table="payouts", seconds=seconds))
        conn.close()
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(update.format(table=f'"{backend.schema}".payouts', seconds=seconds))
    finally:
        await conn.close()


def assert_paid_once(sandbox: Sandbox, key: str) -> None:
    assert sandbox.duplicates() == []
    assert sandbox.paid_per_payout()[("enot", key)] == 1


# -- 1. a live worker taken for dead --------------------------------------------------


#: Per provider: the money-moving route, what the sandbox does with a second such request,
#: a client, and the key and request of one payout.
MONEY_MOVES: dict[str, tuple[str, dict[str, str], Any, str, Any]] = {
    "enot": ("enot.create", {"duplicate_order_id": "accept"}, enot_client, "k", enot_request()),
    "intellectmoney": (
        "im.execute",
        {"im_second_execute": "pay_again"},
        im_client,
        "im-k",
        im_request("im-k"),
    ),
}


@pytest.mark.parametrize("provider", sorted(MONEY_MOVES))
async def test_a_live_worker_taken_for_dead_sends_nothing_after_the_takeover(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    """A's create (Enot) or execute (IntellectMoney) meets a 429 and waits out its
    Retry-After; meanwhile B, sharing the ledger, wrongly takes A for dead (same host
    name, another PID namespace, read as "ended"), takes the row over at once and, after
    its waits, creates / executes. A's retry must not leave: its fence write finds the
    row taken. (Before, the fence trusted A's own memory of its lease, and a provider
    that takes a repeated order_id or performs a second execute paid twice.)"""
    route, worst, client_for, key, request = MONEY_MOVES[provider]
    config = fast_config(retry_after=RETRY_AFTER, **worst)
    async with Sandbox(config=config) as sandbox:
        sandbox.faults.script(route, kind=FaultKind.RATE_LIMIT, nth=1)
        url = sandbox.enot_url if provider == "enot" else sandbox.intellectmoney_url
        async with (
            client_for(url, timeouts=SHORT_TIMEOUTS) as client_a,
            client_for(url, timeouts=SHORT_TIMEOUTS) as client_b,
        ):
            client_a.retry = PATIENT
            a = payouts(client_a, await backend.new(), lease_seconds=SHORT_LEASE)
            b = payouts(client_b, await backend.new(), lease_seconds=SHORT_LEASE)
            monkeypatch.setattr(_orchestrator, "owner_is_dead", lambda owner: owner == a.owner)
            paying_a = asyncio.create_task(a.pay(key, request))
            await eventually(lambda: _one_call(sandbox, route))
            result_b = await b.pay(key, request)
            result_a = await paying_a
        assert result_b.status is PayoutStatus.SUCCEEDED
        assert result_a.key == key
        assert sandbox.duplicates() == []
        assert sandbox.paid_per_payout()[(provider, key)] == 1


async def _one_call(sandbox: Sandbox, route: str) -> bool:
    return sandbox.faults.calls(route) >= 1


# -- 2. a forward step of the ledger's clock -------------------------------------------


@on_every_ledger_at_once
async def test_a_stepped_ledger_clock_lets_no_retry_of_the_old_holder_leave(
    backend: Backend,
) -> None:
    """The ledger's clock jumps an hour ahead while A waits out a 429: A's lease reads
    expired, B's resume() claims the row and creates after its waits. A's retry must
    not leave (its fence write finds another claim), and B must wait for A's request
    that might still be under way, not for what A's lease "had left"."""
    config = fast_config(duplicate_order_id="accept", retry_after=RETRY_AFTER)
    async with Sandbox(config=config) as sandbox:
        sandbox.faults.script("enot.create", kind=FaultKind.RATE_LIMIT, nth=1)
        async with (
            enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client_a,
            enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client_b,
        ):
            ledger_a, ledger_b = await backend.new(), await backend.new()
            client_a.retry = PATIENT
            a = payouts(client_a, ledger_a, lease_seconds=SHORT_LEASE)
            b = payouts(client_b, ledger_b, lease_seconds=SHORT_LEASE)
            paying_a = asyncio.create_task(a.pay("k", enot_request()))
            await eventually(lambda: _one_call(sandbox, "enot.create"))
            await step_ledger_clock(backend, ledger_b, 3600)
            resumed = await b.resume()
            result_a = await paying_a
            if not resumed or resumed[0].status is not PayoutStatus.SUCCEEDED:
                await b.resume()
        record = await ledger_b.get("enot", "k")
        assert record is not None and record.state is LedgerState.SUCCEEDED
        assert result_a.key == "k"
        assert_paid_once(sandbox, "k")


# -- 3. two live workers that take each other for dead ----------------------------------


def in_another_namespace(pid: int) -> str:
    """The owner a worker of this host name gets in another PID namespace, whose pid
    there is ``pid`` (here: another process, or none at all)."""
    parts = new_owner().split(":")
    if len(parts) == 6:  # host:boot:pid-namespace:pid:start:nonce
        parts[2], parts[3] = "4026530001", str(pid)
    else:  # host:pid:start:nonce (before owners named their namespace)
        parts[1] = str(pid)
    return ":".join(parts)


@on_every_ledger_at_once
async def test_two_workers_in_other_namespaces_finish_a_payout_without_taking_turns(
    backend: Backend,
) -> None:
    """Two workers with this host's name, each in a PID namespace of its own (docker
    compose ``hostname:``, Kubernetes ``hostNetwork``). Each sees the other's pid in its
    own ``/proc`` as another process, or none; neither may take the other for dead. A
    row whose create answer was lost is finished by one of them, without the two taking
    it from each other (each takeover raises the row's token)."""
    config = fast_config(duplicate_order_id="accept", enot_info_lag=0.3)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        sandbox.faults.script("enot.create", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        workers = [
            payouts(client, await backend.new(), owner=in_another_namespace(pid)) for pid in (1, 2)
        ]
        await workers[0].enqueue([("k", enot_request())])
        stop = asyncio.Event()
        running = [
            asyncio.create_task(worker.run_worker(stop=stop, idle_poll=0.1)) for worker in workers
        ]
        ledger = workers[0].ledger
        try:
            await eventually(has_state(ledger, "k", LedgerState.SUCCEEDED), seconds=30)
        finally:
            stop.set()
            await asyncio.gather(*running)
        record = await ledger.get("enot", "k")
        assert record is not None and record.lease_token <= 3, record  # taking turns: 5+
        assert_paid_once(sandbox, "k")


# -- 4. slow answers inside the timeout --------------------------------------------------

#: Answers may take 1.2 s (inside the 2 s total timeout); the provider hides what it did
#: for 0.8 s, less than the 1 s grace / settle window: within every documented bound.
SLOW = Timeouts(total=2.0, connect=1.0, read=1.8)
SLOW_ANSWER, HIDDEN, WINDOW = 1.2, 0.8, 1.0


@on_every_ledger_at_once
async def test_a_slow_not_found_does_not_shorten_the_enot_grace(backend: Backend) -> None:
    """The create's answer is lost; Enot hides the new payoff for 0.8 s and answers
    ``payoff/info`` 1.2 s after it read its books. The first "not found" arrives after
    the 1 s grace but says how things stood when it was asked: it must not count as
    "not found for the grace" (which created a second payoff)."""
    config = fast_config(
        duplicate_order_id="accept",
        enot_info_lag=HIDDEN,
        answer_delay={"enot.info": SLOW_ANSWER},
    )
    ledger = await backend.new()
    async with (
        Sandbox(config=config) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SLOW) as client,
    ):
        sandbox.faults.script("enot.create", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        result = await payouts(client, ledger, grace=WINDOW).pay("k", enot_request())
        assert result.status is PayoutStatus.SUCCEEDED
        assert_paid_once(sandbox, "k")


@on_every_ledger_at_once
async def test_a_slow_created_does_not_shorten_the_settle_window(backend: Backend) -> None:
    """The execute's answer is lost; IntellectMoney reads ``Created`` for 0.8 s after
    accepting it and answers ``GetOperationState`` 1.2 s after it read the state. That
    ``Created`` arrives after the 1 s settle window but is as old as its question: it
    must not count as "the execute did not happen" (which executed again)."""
    config = fast_config(
        im_second_execute="pay_again",
        im_execute_lag=HIDDEN,
        answer_delay={"im.state": SLOW_ANSWER},
    )
    ledger = await backend.new()
    async with (
        Sandbox(config=config) as sandbox,
        im_client(sandbox.intellectmoney_url, timeouts=SLOW) as client,
    ):
        sandbox.faults.script("im.execute", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        flow = payouts(client, ledger, execute_settle=WINDOW)
        result = await flow.pay("im-k", im_request("im-k"))
        assert result.status is PayoutStatus.SUCCEEDED
        assert sandbox.duplicates() == []
        assert sandbox.paid_per_payout()[("intellectmoney", "im-k")] == 1


# -- 5. a signed webhook of another system's payoff ------------------------------------


@on_every_ledger_at_once
async def test_a_signed_webhook_of_another_systems_payoff_settles_nothing(
    backend: Backend,
) -> None:
    """Another system on the same Enot account pays 10.00 under order ids w-1001 and
    w-1002; its success webhooks reach our endpoint. Our w-1001 (150.00, parked: the
    payoff found by its order_id is not ours) and our w-1002 (enqueued, nothing sent)
    keep their states, the webhooks are noted in their history, and neither is ever
    marked paid."""
    ledger = await backend.new()
    async with Sandbox(config=fast_config()) as sandbox:
        async with enot_client(sandbox.enot_url) as ours, enot_client(sandbox.enot_url) as theirs:
            foreign = {}
            for order_id in ("w-1001", "w-1002"):
                foreign[order_id] = await theirs.create_payoff_from(
                    PayoffRequest(
                        service="card", wallet_to="5536913000000006", amount=Decimal("10")
                    ),
                    order_id=order_id,
                )
            flow = payouts(ours, ledger, lookup_before_create=True)
            parked = await flow.pay("w-1001", enot_request(amount="150.00"))
            assert parked.status is PayoutStatus.NEEDS_ATTENTION
            await flow.enqueue([("w-1002", enot_request(amount="150.00"))])
            for order_id, created in foreign.items():
                webhook = PayoffWebhook(
                    payoff_id=created.payoff_id,
                    order_id=order_id,
                    raw_status="success",
                    amount=Decimal("10.00"),
                    service="card",
                    wallet="553691******0006",
                )
                assert await flow.apply_webhook(webhook) is None
            first, second = await ledger.get("enot", "w-1001"), await ledger.get("enot", "w-1002")
            assert first is not None and first.state is LedgerState.NEEDS_ATTENTION
            assert second is not None and second.state is LedgerState.PENDING
            for key in ("w-1001", "w-1002"):
                notes = [step.note or "" for step in await ledger.history("enot", key)]
                assert any(note.startswith("webhook ignored") for note in notes), notes
            # Our own webhook (our amount and recipient, our payoff) still settles ours.
            paid = await flow.pay("w-1003", enot_request(amount="150.00"))
            assert paid.status is PayoutStatus.SUCCEEDED
        assert sandbox.paid_per_payout().get(("enot", "w-1001"), 0) == 1  # theirs only
        assert sandbox.duplicates() == []


@on_every_ledger_at_once
async def test_a_matching_webhook_settles_a_row_whose_create_answer_was_lost(
    backend: Backend,
) -> None:
    """The other side of the rule: a row whose create answer was lost (no payoff id
    known yet) is settled by a webhook that names its amount and recipient."""
    ledger = await backend.new()
    # Enot hides the payoff from payoff/info for a while: the row stays ``sending``.
    config = fast_config(enot_final_after=30.0, enot_info_lag=2.0)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        sandbox.faults.script("enot.create", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        flow = payouts(client, ledger, grace=3.0)
        paying = asyncio.create_task(flow.pay("w-7", enot_request()))
        await eventually(has_state(ledger, "w-7", LedgerState.SENDING))
        await eventually(lambda: _one_call(sandbox, "enot.info"))
        webhook = PayoffWebhook(
            order_id="w-7",
            raw_status="success",
            amount=Decimal("10.00"),
            service="card",
            wallet=CARD[:6] + "******" + CARD[-4:],
        )
        settled = await flow.apply_webhook(webhook)
        assert settled is not None and settled.status is PayoutStatus.SUCCEEDED
        result = await paying
        assert result.status is PayoutStatus.SUCCEEDED


# -- 6. resume() racing pay() of a stranded row -----------------------------------------


@on_every_ledger_at_once
async def test_resume_racing_pay_of_a_stranded_row_drives_it_once(
    backend: Backend, tmp_path: Path
) -> None:
    """A row left ``sending`` and released (a cancelled pay()); then resume() and
    pay() of its key race in one Payouts. One of them drives it; the other waits for
    that drive: the row ends paid once, with no call after the race. Four races side by
    side, each on its own store, two with each of the two started first."""

    async def race(run: int) -> None:
        store = Backend(backend.kind, tmp_path / f"race-{run}")
        store.folder.mkdir()
        try:
            await _race_resume_and_pay(await store.new(), resume_first=bool(run % 2))
        finally:
            await store.close()

    await side_by_side({f"race {run}": race(run) for run in range(4)})


async def _race_resume_and_pay(ledger: Ledger, *, resume_first: bool) -> None:
    timeouts = Timeouts(total=0.6, connect=0.3, read=0.3)
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=timeouts) as client,
    ):
        flow = payouts(client, ledger, poll=POLL, lease_seconds=2.0)
        with pause_before_send(flow, 30):
            task = asyncio.create_task(flow.pay("k", enot_request()))
            await eventually(has_state(ledger, "k", LedgerState.SENDING))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await flow.aclose()  # its lease is given back
        if resume_first:
            resumed, paid = await asyncio.gather(flow.resume(), flow.pay("k", enot_request()))
        else:
            paid, resumed = await asyncio.gather(flow.pay("k", enot_request()), flow.resume())
        assert paid.status is PayoutStatus.SUCCEEDED, paid
        assert [r.status for r in resumed] in ([], [PayoutStatus.SUCCEEDED])
        record = await ledger.get("enot", "k")
        assert record is not None and record.state is LedgerState.SUCCEEDED
        assert record.lease_owner is None
        assert_paid_once(sandbox, "k")
