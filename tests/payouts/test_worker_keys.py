"""A worker started with another ledger key (issue 23, finding 7): it refuses to start
before it claims anything -- it used to claim rows, die on ``LedgerKeyError`` and leave
them leased for their whole lease -- and a row no key of its ring can read is set aside
with the reason, its lease given back, while the others are paid."""

from __future__ import annotations

import asyncio

import pytest

from payout_async.ledger import (
    LedgerKeyError,
    LedgerState,
    new_encryption_key,
)
from payout_async.sandbox import Sandbox
from tests.ledger.support import Backend

from .support import enot_client, enot_request, fast_config, payouts


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_worker_with_another_key_claims_nothing(backend: Backend) -> None:
    ours, theirs = new_encryption_key(), new_encryption_key()
    async with Sandbox(config=fast_config()) as sandbox, enot_client(sandbox.enot_url) as client:
        async with backend.ledger(encryption_key=ours) as ledger:
            await payouts(client, ledger).enqueue([(f"k{n}", enot_request()) for n in range(3)])
        async with backend.ledger(encryption_key=theirs) as wrong:
            with pytest.raises(LedgerKeyError, match="key id"):
                await payouts(client, wrong).run_worker(stop=asyncio.Event())
        async with backend.ledger(encryption_key=ours) as ledger:
            rows = await ledger.records()
            assert {r.state for r in rows} == {LedgerState.PENDING}
            assert {r.lease_owner for r in rows} == {None}  # nothing was claimed
        # The ring that holds the key the rows were written with pays them.
        async with backend.ledger(encryption_key=[theirs, ours]) as ring:
            stop = asyncio.Event()
            worker = asyncio.create_task(payouts(client, ring).run_worker(stop=stop, idle_poll=0.1))
            for _ in range(500):
                done = [r.state for r in await ring.records()]
                if done and all(state is LedgerState.SUCCEEDED for state in done):
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await worker
            assert [r.state for r in await ring.records()] == [LedgerState.SUCCEEDED] * 3
        assert sandbox.duplicates() == []
