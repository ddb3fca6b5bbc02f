"""The flows act on a failed transition's class: one whose commit is unknown is read
back (the drive goes on if it landed, stops if not), one not written stops the drive
at the last recovery point; either way each payout is paid exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from payout_async import PayoutStatus
from payout_async.ledger import (
    LedgerNotWrittenError,
    LedgerOutcomeUnknownError,
    LedgerState,
    SQLiteLedger,
)
from payout_async.sandbox import Sandbox

from .ledger_faults import pay_many_tasks, settle
from .support import (
    SHORT_TIMEOUTS,
    books,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
)


class FailingTransition:
    """A real ledger whose ``nth`` transition fails: ``landed`` (committed, then the
    answer lost), ``lost`` (not committed, answer lost) or ``refused`` (not written)."""

    def __init__(self, ledger: SQLiteLedger, nth: int, mode: str) -> None:
        self._ledger = ledger
        self._nth = nth
        self._mode = mode
        self.seen = 0
        self.failed: LedgerState | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def transition(self, provider: str, key: str, **kwargs: Any) -> Any:
        self.seen += 1
        if self.seen != self._nth:
            return await self._ledger.transition(provider, key, **kwargs)
        self.failed = kwargs["state"]
        if self._mode == "landed":
            await self._ledger.transition(provider, key, **kwargs)
            raise LedgerOutcomeUnknownError("the answer to a committed write was lost")
        if self._mode == "lost":
            raise LedgerOutcomeUnknownError("the answer to an uncommitted write was lost")
        raise LedgerNotWrittenError("the ledger refused the write")


# Each transition of a payout in turn: IntellectMoney makes three (executing with the
# operation id, processing, succeeded), Enot two (processing, succeeded: its intent is
# recorded ``sending``).
STEPS = [("intellectmoney", nth) for nth in range(1, 4)] + [("enot", nth) for nth in range(1, 3)]


@pytest.mark.parametrize("mode", ["landed", "lost", "refused"])
@pytest.mark.parametrize(("provider", "nth"), STEPS)
async def test_a_failed_transition_is_acted_on_by_its_class(
    tmp_path: Path, provider: str, nth: int, mode: str
) -> None:
    async with (
        Sandbox(config=fast_config(duplicate_order_id="accept")) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        if provider == "intellectmoney":
            client: Any = im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS)
            request: Any = im_request("k")
        else:
            client = enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS)
            request = enot_request()
        async with client:
            failing = FailingTransition(ledger, nth, mode)
            flow = payouts(client, failing, lease_seconds=1.5)  # type: ignore[arg-type]
            (result,) = [r async for r in flow.pay_many([("k", request)])]
            assert failing.failed is not None, f"fewer than {nth} transitions"
            assert pay_many_tasks() == []
            if mode == "landed":  # read back: the drive went on to the end
                assert result.status is PayoutStatus.SUCCEEDED, result
            else:  # stopped at the last recovery point, its lease given back
                assert result.status is PayoutStatus.NEEDS_ATTENTION, result
                row = await ledger.get(provider, "k")
                assert row is not None and row.state is not failing.failed
                assert row.lease_owner is None
            await settle([payouts(client, ledger, lease_seconds=1.5)], ledger)
        row = await ledger.get(provider, "k")
        assert row is not None and row.state is LedgerState.SUCCEEDED
        executed, created = books(sandbox.state)
        paid = executed["k"] if provider == "intellectmoney" else created["k"]
        assert paid == 1
        assert sandbox.duplicates() == []
