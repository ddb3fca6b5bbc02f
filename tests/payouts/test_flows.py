"""The flows' shared skeleton: a recovery point a flow has no step for raises, and
nothing is sent for it."""

from __future__ import annotations

import pytest

from payout_async import ConfigurationError, PayoutStatus, PollPolicy
from payout_async.ledger import (
    ACTIVE_STATES,
    PARKED_STATES,
    Ledger,
    LedgerState,
    MemoryLedger,
)
from payout_async.payouts import UnknownRecoveryPointError
from payout_async.payouts._enot import EnotFlow
from payout_async.payouts._intellectmoney import IntellectMoneyFlow
from payout_async.payouts._result import Settings
from tests.ledger.support import Backend
from tests.unit.helpers import closed_port

from .support import enot_client, enot_request, im_client, payouts


async def test_an_unknown_recovery_point_raises_and_leaves_the_row_alone(
    backend: Backend,
) -> None:
    ledger = await backend.new()
    sock, port = closed_port()  # every request is refused: nothing is sent
    with sock:
        await _pay_at_an_unknown_recovery_point(ledger, f"http://127.0.0.1:{port}")


async def _pay_at_an_unknown_recovery_point(ledger: Ledger, url: str) -> None:
    async with enot_client(url) as client:
        flow = payouts(client, ledger)
        parked = await flow.pay("enot-1", enot_request())
        assert parked.status is PayoutStatus.NEEDS_ATTENTION
        # Move the row to a recovery point only IntellectMoney rows have: a bug, or a
        # row another flow wrote.
        [claim] = await ledger.claim_stranded(
            owner="test", lease_seconds=5.0, limit=1, provider="enot", states=PARKED_STATES
        )
        await ledger.transition(
            "enot",
            "enot-1",
            owner="test",
            token=claim.record.lease_token,
            state=LedgerState.CREATED,
            lease_seconds=5.0,
        )
        await ledger.release("enot", "enot-1", owner="test", token=claim.record.lease_token)

        with pytest.raises(UnknownRecoveryPointError) as raised:
            await flow.pay("enot-1", enot_request())
        assert raised.value.state is LedgerState.CREATED
        assert str(raised.value) == (
            "enot payout 'enot-1' is at recovery point 'created', which the enot flow "
            "does not know; nothing was sent"
        )

        [resumed] = await flow.resume()
        assert resumed.status is PayoutStatus.NEEDS_ATTENTION
        assert resumed.reason is not None
        assert resumed.reason.startswith("UnknownRecoveryPointError: enot payout 'enot-1'")

        record = await ledger.get("enot", "enot-1")
        assert record is not None
        assert (record.state, record.lease_owner, record.attempts) == (
            LedgerState.CREATED,
            None,
            parked.attempts,
        )


def test_intellectmoney_rows_have_a_step_at_every_active_recovery_point() -> None:
    """Every active state is one an IntellectMoney row passes; an Enot row never
    passes ``created`` or ``executing``."""
    settings, poll = Settings(), PollPolicy()
    im = IntellectMoneyFlow(im_client("http://127.0.0.1:9"), settings, poll)
    enot = EnotFlow(enot_client("http://127.0.0.1:9"), settings, poll)
    processing = {LedgerState.PROCESSING}  # every flow polls there
    assert set(im.steps()) | processing == ACTIVE_STATES
    assert set(enot.steps()) | processing == ACTIVE_STATES - {
        LedgerState.CREATED,
        LedgerState.EXECUTING,
    }


@pytest.mark.parametrize("attempts", [0, -1, True, 1.5])
def test_max_send_attempts_below_one_is_refused_before_anything_runs(attempts: object) -> None:
    """With none allowed, a flow could neither send nor park: a create of an
    IntellectMoney row would never be made, and its drive would go round forever."""
    with pytest.raises(ConfigurationError, match="max_send_attempts must be"):
        payouts(im_client("http://127.0.0.1:9"), MemoryLedger(), max_send_attempts=attempts)
