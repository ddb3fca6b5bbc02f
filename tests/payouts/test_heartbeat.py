"""``Heartbeats``: one timer renews the leases of every drive of a ``Payouts``."""

from __future__ import annotations

import asyncio
import time

from payout_async.ledger import MemoryLedger
from payout_async.payouts._heartbeat import Heartbeats
from payout_async.payouts._run import Run

LEASE = 0.6  # seconds: renewed every 0.2 s


async def _run(ledger: MemoryLedger, heartbeats: Heartbeats, key: str) -> Run:
    params = {"amount": "1.00", "key": key}
    claim = await ledger.begin(
        "enot", key, ledger.params_hash(params), params, owner=f"owner-{key}", lease_seconds=LEASE
    )
    return Run(
        ledger,
        claim,
        lease_seconds=LEASE,
        request_timeout=1.0,
        claimed_after=time.monotonic(),
        heartbeats=heartbeats,
    )


async def _lease_left(ledger: MemoryLedger, key: str) -> float:
    record = await ledger.get("enot", key)
    assert record is not None and record.lease_expires_at is not None
    return record.lease_expires_at - time.time()


async def test_every_drive_is_renewed_on_one_timer_and_none_after_it_ends() -> None:
    ledger, heartbeats = MemoryLedger(), Heartbeats(LEASE / 3)
    runs = [await _run(ledger, heartbeats, f"k{n}") for n in range(3)]
    beats = [run.heartbeat() for run in runs]
    for beat in beats:
        await beat.__aenter__()
        await asyncio.sleep(0.03)  # entered at different times: due at different times
    await asyncio.sleep(3 * LEASE)  # three leases long: only renewals keep them
    for n in range(3):
        assert await _lease_left(ledger, f"k{n}") > LEASE / 4
    assert not any(run.lost for run in runs)
    for beat in beats:
        await beat.__aexit__(None, None, None)
    assert heartbeats._timer is None  # nothing left on the event loop
    await asyncio.sleep(LEASE + 0.05)
    assert await _lease_left(ledger, "k0") < 0  # no renewal after the drive ended


async def test_a_frozen_drive_is_not_renewed_and_the_others_are() -> None:
    ledger, heartbeats = MemoryLedger(), Heartbeats(LEASE / 3)
    frozen, live = await _run(ledger, heartbeats, "frozen"), await _run(ledger, heartbeats, "live")
    async with frozen.heartbeat(), live.heartbeat():
        frozen.frozen = True  # as inside ``before_send``: a paused process renews nothing
        await asyncio.sleep(LEASE + 0.1)
        assert await _lease_left(ledger, "frozen") < 0
        assert await _lease_left(ledger, "live") > LEASE / 4


async def test_a_renewal_that_finds_the_lease_gone_marks_the_drive_lost() -> None:
    ledger, heartbeats = MemoryLedger(), Heartbeats(LEASE / 3)
    run = await _run(ledger, heartbeats, "k")
    async with run.heartbeat():
        await ledger.release("enot", "k", owner=run.owner, token=run.token)
        await asyncio.sleep(LEASE / 3 + 0.05)
        assert run.lost
