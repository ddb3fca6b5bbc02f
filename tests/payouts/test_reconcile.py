"""Rows parked on a spent attempt budget, a lost execute answer during an outage of
GetOperationState, and a lease kept through a long poll: settled, never paid twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from payout_async import PayoutStatus
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import FaultKind, Sandbox

from .support import (
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    books,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
)


async def test_reconcile_grants_a_fresh_budget_to_an_execute_that_never_took(
    tmp_path: Path,
) -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client,
    ):
        for nth in (1, 2, 3):  # a gateway error that the provider never acted on
            sandbox.faults.script("im.execute", kind=FaultKind.HTTP_504, nth=nth)
        parked = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
            "im-1", im_request("im-1")
        )
        assert parked.status is PayoutStatus.NEEDS_ATTENTION
        assert parked.reason == "execute did not take after 3 attempts"
        assert books(sandbox.state)[0]["im-1"] == 0

        settled = await payouts(client, ledger, lease_seconds=SHORT_LEASE).reconcile()

        assert [(r.key, r.status, r.attempts) for r in settled] == [
            ("im-1", PayoutStatus.SUCCEEDED, 4)
        ]
        assert books(sandbox.state)[0]["im-1"] == 1
        assert sandbox.duplicates() == []


@pytest.mark.parametrize("paid_while_parked", [False, True], ids=["absent", "paid-by-hand"])
async def test_reconcile_looks_an_enot_payoff_up_before_creating_it_again(
    tmp_path: Path, paid_while_parked: bool
) -> None:
    async with (
        Sandbox(config=fast_config(duplicate_order_id="accept")) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client,
    ):
        for nth in (1, 2, 3):
            sandbox.faults.script("enot.create", kind=FaultKind.HTTP_504, nth=nth)
        parked = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
            "enot-1", enot_request()
        )
        assert parked.status is PayoutStatus.NEEDS_ATTENTION
        assert parked.reason == "payoff not confirmed after 3 create attempts"
        assert books(sandbox.state)[1] == {}
        if paid_while_parked:  # by hand, with the same order_id
            await client.create_payoff_from(enot_request(), order_id=parked.order_id)

        settled = await payouts(client, ledger, lease_seconds=SHORT_LEASE).reconcile()

        sent = 3 if paid_while_parked else 4
        assert [(r.key, r.status, r.attempts) for r in settled] == [
            ("enot-1", PayoutStatus.SUCCEEDED, sent)
        ]
        steps = [step.to_state for step in await ledger.history("enot", "enot-1")]
        reopened = steps.index(LedgerState.NEEDS_ATTENTION) + 1
        # Reopened at "sending": the order_id is looked up before anything is created.
        assert steps[reopened] is LedgerState.SENDING
        if paid_while_parked:  # found and adopted: not created again
            assert steps[reopened + 1] in (LedgerState.PROCESSING, LedgerState.SUCCEEDED)
        else:
            assert steps[reopened + 1] is LedgerState.PENDING
        assert books(sandbox.state)[1]["enot-1"] == 1
        assert sandbox.duplicates() == []


async def test_lost_execute_answer_is_settled_through_a_state_outage(tmp_path: Path) -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        sandbox.faults.script("im.execute", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        for nth in range(1, 7):  # more than the client's own four tries
            sandbox.faults.script("im.state", kind=FaultKind.HTTP_503, nth=nth)

        result = await payouts(client, ledger).pay("im-1", im_request("im-1"))

        assert result.status is PayoutStatus.SUCCEEDED, result
        assert result.attempts == 1
        assert books(sandbox.state)[0]["im-1"] == 1
        assert sandbox.faults.injected.get("http_503") == 6


async def test_heartbeat_keeps_the_lease_through_a_long_poll(tmp_path: Path) -> None:
    import asyncio

    from payout_async import PollPolicy

    async with (
        Sandbox(config=fast_config(im_in_process_after=0.5, im_final_after=3.0)) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client,
    ):
        slow = PollPolicy(initial=0.05, maximum=0.1, deadline=10.0)
        first = payouts(client, ledger, poll=slow, lease_seconds=1.0, owner="first")
        paying = asyncio.create_task(first.pay("im-1", im_request("im-1")))
        other = payouts(client, ledger, poll=slow, lease_seconds=1.0, owner="other")
        taken = []
        for _ in range(10):  # 2.5 s, well past the 1 s lease: only renewals keep it
            await asyncio.sleep(0.25)
            taken += await other.resume()
        result = await paying

    assert taken == []
    assert result.status is PayoutStatus.SUCCEEDED
    assert books(sandbox.state)[0]["im-1"] == 1
