"""Every fault kind at every step of both flows: each payout still ends paid exactly
once, and the ledger agrees with the sandbox's books."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from payout_async import PayoutStatus
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import DEFAULT_KINDS, MISLEADING, FaultKind, Sandbox

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
    side_by_side,
)

ALL_KINDS = sorted(DEFAULT_KINDS, key=lambda kind: kind.value)
#: Processed, then refused in words: on the calls that move money they must be doubted,
#: and on a read they say nothing (the poll goes on).
REFUSED_AFTER = sorted(MISLEADING, key=lambda kind: kind.value)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db") as opened:
        yield opened


def kinds_at(route: str) -> list[FaultKind]:
    """The faults tried at ``route``: every kind, and also those that process the call
    and then refuse it in words -- except on the IntellectMoney create, whose refusal is
    taken at its word (it moves no money: the row ends refused)."""
    return ALL_KINDS + (REFUSED_AFTER if route != "im.create" else [])


# Each route's kinds run side by side, each with its own sandbox and ledger: a case
# spends most of its time waiting out a lost answer's timeout and grace.


@pytest.mark.parametrize("route", ["im.create", "im.execute", "im.state"])
async def test_intellectmoney_fault_at_each_step(tmp_path: Path, route: str) -> None:
    async def fault(kind: FaultKind) -> None:
        async with (
            Sandbox(config=fast_config()) as sandbox,
            SQLiteLedger(tmp_path / f"{kind.value}.db") as ledger,
            im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client,
        ):
            sandbox.faults.script(route, kind=kind, nth=1)
            result = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
                "im-1", im_request("im-1")
            )

            assert result.status is PayoutStatus.SUCCEEDED, result
            assert books(sandbox.state)[0]["im-1"] == 1
            assert sandbox.duplicates() == []
            record = await ledger.get("intellectmoney", "im-1")
            assert record is not None and record.state is LedgerState.SUCCEEDED
            executed = [op.id for op in sandbox.state.intellectmoney if op.executed_at is not None]
            assert executed == [record.operation_id]
            assert sandbox.faults.injected.get(kind.value) == 1

    await side_by_side({kind.value: fault(kind) for kind in kinds_at(route)})


@pytest.mark.parametrize("route", ["enot.create", "enot.info"])
@pytest.mark.parametrize("duplicates", ["accept", "reject"])
async def test_enot_fault_at_each_step(tmp_path: Path, route: str, duplicates: str) -> None:
    async def fault(kind: FaultKind) -> None:
        async with (
            Sandbox(config=fast_config(duplicate_order_id=duplicates)) as sandbox,
            SQLiteLedger(tmp_path / f"{kind.value}.db") as ledger,
            enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client,
        ):
            sandbox.faults.script(route, kind=kind, nth=1)
            result = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
                "enot-1", enot_request()
            )

            assert result.status is PayoutStatus.SUCCEEDED, result
            _, created = books(sandbox.state)
            assert created["enot-1"] == 1
            assert sandbox.duplicates() == []
            record = await ledger.get("enot", "enot-1")
            assert record is not None and record.state is LedgerState.SUCCEEDED
            assert [payoff.id for payoff in sandbox.state.enot] == [record.operation_id]
            assert sandbox.faults.injected.get(kind.value) == 1

    await side_by_side({kind.value: fault(kind) for kind in kinds_at(route)})


async def test_same_key_pays_once_and_conflicting_parameters_are_refused(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    from payout_async import IdempotencyConflictError

    async with im_client(sandbox.intellectmoney_url) as client:
        flow = payouts(client, ledger)
        first = await flow.pay("same", im_request("same"))
        again = await flow.pay("same", im_request("same"))
        with pytest.raises(IdempotencyConflictError):
            await flow.pay("same", im_request("same", amount="11.00"))

    assert first == again
    assert again.status is PayoutStatus.SUCCEEDED
    assert books(sandbox.state)[0]["same"] == 1
    assert len(sandbox.state.intellectmoney) == 1


async def test_a_refused_payout_is_rejected_and_its_key_stays_usable(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    async with enot_client(sandbox.enot_url) as client:
        flow = payouts(client, ledger)
        result = await flow.pay("too-big", enot_request(amount="999999.00"))
        assert result.status is PayoutStatus.REJECTED
        assert result.state is LedgerState.REFUSED
        assert result.reason and "refused" in result.reason and "тариф" in result.reason
        assert len(sandbox.state.enot) == 0
        # The same key, corrected, pays -- once.
        fixed = await flow.pay("too-big", enot_request(amount="100.00"))
        assert fixed.status is PayoutStatus.SUCCEEDED
        assert [p.details.amount for p in sandbox.state.enot] == [Decimal("100.00")]
        again = await flow.pay("too-big", enot_request(amount="100.00"))
        assert again.status is PayoutStatus.SUCCEEDED and len(sandbox.state.enot) == 1


async def test_provider_failure_ends_failed(ledger: SQLiteLedger) -> None:
    async with (
        Sandbox(config=fast_config(failure_ratio=1.0)) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        im_result = await payouts(im, ledger).pay("im-fail", im_request("im-fail"))
        enot_result = await payouts(enot, ledger).pay("enot-fail", enot_request())

    assert im_result.status is PayoutStatus.FAILED
    assert im_result.provider_status == "Failed"
    assert enot_result.status is PayoutStatus.FAILED
    assert enot_result.provider_status == "fail"


async def test_not_enough_money_is_refused_and_paid_after_a_top_up(ledger: SQLiteLedger) -> None:
    """NotEnoughMoney moved nothing, and that operation never will: the row ends
    ``refused`` and the same key pays, once, with a new operation after a top-up."""
    async with (
        Sandbox(config=fast_config(im_balance="5.00")) as sandbox,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        flow = payouts(client, ledger)
        result = await flow.pay("poor", im_request("poor"))
        assert result.status is PayoutStatus.REJECTED
        assert result.state is LedgerState.REFUSED
        assert result.provider_status == "NotEnoughMoney"

        sandbox.top_up("intellectmoney", Decimal("100.00"))
        again = await flow.pay("poor", im_request("poor"))
        assert again.status is PayoutStatus.SUCCEEDED
        assert again.provider_id != result.provider_id
        assert sandbox.paid_per_payout() == {("intellectmoney", "poor"): 1}
        assert sandbox.duplicates() == []


async def test_poll_deadline_returns_processing_and_resume_finishes(
    tmp_path: Path,
) -> None:
    from payout_async import PollPolicy

    short = PollPolicy(initial=0.02, maximum=0.05, deadline=0.2)
    async with (
        Sandbox(config=fast_config(im_in_process_after=0.5, im_final_after=1.0)) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        result = await payouts(client, ledger, poll=short).pay("slow", im_request("slow"))
        assert result.status is PayoutStatus.PROCESSING
        assert result.state is LedgerState.PROCESSING

        resumed = await payouts(client, ledger).resume()

    assert [r.status for r in resumed] == [PayoutStatus.SUCCEEDED]
    assert books(sandbox.state)[0]["slow"] == 1


async def test_unreachable_provider_needs_attention_then_reconcile_pays(
    tmp_path: Path,
) -> None:
    async with SQLiteLedger(tmp_path / "ledger.db") as ledger:
        # Nothing listens on the sandbox's port until it starts: every call is "not sent".
        async with Sandbox(config=fast_config()) as sandbox:
            url = sandbox.enot_url
        async with enot_client(url, timeouts=SHORT_TIMEOUTS) as client:
            result = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
                "later", enot_request()
            )
        assert result.status is PayoutStatus.NEEDS_ATTENTION
        assert result.reason

        port = int(url.rsplit(":", 1)[1])
        async with (
            Sandbox(config=fast_config(), port=port) as sandbox,
            enot_client(url, timeouts=SHORT_TIMEOUTS) as client,
        ):
            settled = await payouts(client, ledger, lease_seconds=SHORT_LEASE).reconcile()
            assert [r.status for r in settled] == [PayoutStatus.SUCCEEDED]
            assert books(sandbox.state)[1]["later"] == 1


async def test_an_intellectmoney_create_failing_through_every_retry_is_made_again(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    # Every try of the client's first round (RETRY: 4) meets a transient fault: a
    # create moves no money, so the drive makes it again instead of parking the row.
    for nth in range(1, 5):
        sandbox.faults.script("im.create", kind=FaultKind.HTTP_503, nth=nth)
    async with im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as client:
        result = await payouts(client, ledger, lease_seconds=SHORT_LEASE).pay(
            "again", im_request("again")
        )

    assert result.status is PayoutStatus.SUCCEEDED, result
    assert books(sandbox.state)[0]["again"] == 1
    assert sandbox.faults.calls("im.create") == 5
    notes = [step.note for step in await ledger.history("intellectmoney", "again")]
    assert "create failed (1 of 3); trying again" in notes


@pytest.mark.parametrize("lookup_before_create", [True, False])
async def test_an_enot_lookup_by_order_id_answered_422_is_made_again(
    sandbox: Sandbox, ledger: SQLiteLedger, lookup_before_create: bool
) -> None:
    # A 422 to a lookup says nothing about the payoff: the lookup before the first
    # create (lookup_before_create), or the lookups after a lost create answer, go on
    # instead of parking the row.
    if not lookup_before_create:
        sandbox.faults.script("enot.create", kind=FaultKind.HTTP_504, nth=1)
    sandbox.faults.script("enot.info", kind=FaultKind.COMMIT_THEN_422, nth=1)
    async with enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(
            client, ledger, lease_seconds=SHORT_LEASE, lookup_before_create=lookup_before_create
        )
        result = await flow.pay("looked", enot_request())

    assert result.status is PayoutStatus.SUCCEEDED, result
    assert books(sandbox.state)[1]["looked"] == 1
    assert sandbox.faults.injected.get("commit_then_422") == 1
    assert sandbox.faults.calls("enot.create") == (1 if lookup_before_create else 2)


async def test_an_enot_lookup_before_create_failing_through_every_retry_is_made_again(
    sandbox: Sandbox, ledger: SQLiteLedger
) -> None:
    # With lookup_before_create, every try of the client's first round of the lookup
    # meets a transient fault: a lookup moves nothing, so the drive looks again
    # instead of parking the row, then creates once.
    for nth in range(1, 5):
        sandbox.faults.script("enot.info", kind=FaultKind.HTTP_503, nth=nth)
    async with enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as client:
        flow = payouts(client, ledger, lease_seconds=SHORT_LEASE, lookup_before_create=True)
        result = await flow.pay("looked", enot_request())

    assert result.status is PayoutStatus.SUCCEEDED, result
    assert books(sandbox.state)[1]["looked"] == 1
    assert sandbox.faults.calls("enot.create") == 1
    notes = [step.note for step in await ledger.history("enot", "looked")]
    assert "order_id lookup before creating failed (1 of 3); trying again" in notes
