"""Issue 27, item 3: an Enot refusal that may come after processing is an unknown
outcome, and every create after the first looks the order_id up first."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payout_async import PayoutStatus
from payout_async.enot import PayoffRequest
from payout_async.ledger import LedgerState
from payout_async.sandbox import FaultKind, Sandbox

from ..ledger.support import Backend
from .support import (
    CARD,
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    books,
    enot_client,
    enot_request,
    fast_config,
    on_every_ledger_at_once,
    payouts,
)

PHONE = "+79001234567"


def sbp(bank: str) -> PayoffRequest:
    return PayoffRequest(service="sbp", wallet_to=PHONE, amount=Decimal("10.00"), sbp_bank_id=bank)


@pytest.mark.parametrize("kind", [FaultKind.COMMIT_THEN_408, FaultKind.COMMIT_THEN_422])
@on_every_ledger_at_once
async def test_a_create_refused_after_processing_is_found_despite_the_info_lag(
    backend: Backend, kind: FaultKind
) -> None:
    ledger = await backend.new()
    async with Sandbox(config=fast_config(enot_info_lag=0.2)) as sandbox:
        sandbox.faults.script("enot.create", kind=kind, nth=1)
        async with enot_client(sandbox.enot_url) as enot:
            flow = payouts(enot, ledger, grace=1.0)
            result = await flow.pay("p3-1", enot_request())
            assert result.status is PayoutStatus.SUCCEEDED, result
            assert await flow.reconcile() == []
            again = await flow.pay("p3-1", enot_request())
        assert again.status is PayoutStatus.SUCCEEDED
        assert books(sandbox.state)[1]["p3-1"] == 1
        assert sandbox.faults.calls("enot.create") == 1
        assert sandbox.duplicates() == []


@on_every_ledger_at_once
async def test_a_refusal_that_may_come_after_processing_holds_for_the_grace(
    backend: Backend,
) -> None:
    """A 422 Enot itself gives (an unknown SBP bank: nothing was created) ends
    ``refused`` only once "not found" has held for the grace period."""
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        result = await payouts(enot, ledger, lease_seconds=SHORT_LEASE).pay(
            "p3-2", sbp("999999999999")
        )
        assert result.status is PayoutStatus.REJECTED, result
        assert "Банк СБП не найден" in (result.reason or "")
        assert "not found for 0.4s" in (result.reason or "")
        assert sandbox.faults.calls("enot.info") >= 2  # looked up, then again after the grace
        record = await ledger.get("enot", "p3-2")
        assert record is not None and record.state is LedgerState.REFUSED
        history = await ledger.history("enot", "p3-2")
        assert [t.to_state for t in history][-2:] == [LedgerState.SENDING, LedgerState.REFUSED]


@on_every_ledger_at_once
async def test_a_documented_refusal_is_taken_after_one_lookup(backend: Backend) -> None:
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url) as enot,
    ):
        over = PayoffRequest(service="card", wallet_to=CARD, amount=Decimal("700000.00"))
        result = await payouts(enot, ledger).pay("p3-3", over)
        assert result.status is PayoutStatus.REJECTED, result  # 403: off the tariff
        assert sandbox.faults.calls("enot.info") == 1


@on_every_ledger_at_once
async def test_every_create_after_the_first_looks_the_order_id_up_first(
    backend: Backend,
) -> None:
    """A refused row paid again finds the payoff its order_id already has (here made
    behind the ledger's back, as a create whose refusal was wrong would have)."""
    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        # lookup_before_create off: only a first create skips it
        flow = payouts(enot, ledger, lease_seconds=SHORT_LEASE)
        first = await flow.pay("p3-4", sbp("999999999999"))
        assert first.status is PayoutStatus.REJECTED, first
        fixed = sbp("100000000004")
        await enot.create_payoff_from(fixed, order_id="p3-4")
        again = await flow.pay("p3-4", fixed)
        assert again.status is PayoutStatus.SUCCEEDED, again
        assert books(sandbox.state)[1]["p3-4"] == 1
        assert sandbox.duplicates() == []
