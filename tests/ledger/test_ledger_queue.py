"""One suite, three backends: ``enqueue``, ``listen_for_work`` and ``announce_work``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payout_async.ledger import (
    EnqueueOutcome,
    Intent,
    Ledger,
    LedgerKeyError,
    LedgerState,
    new_encryption_key,
    params_hash,
)

from .support import DURABLE, Backend, token_of

P = "enot"
PARAMS = {"amount": "10.00", "service": "card", "wallet_to": "4111111111111111"}
OTHER = {**PARAMS, "amount": "11.00"}
LEASE = 60.0
NEW, AGAIN, EXISTING, CONFLICT = (
    EnqueueOutcome.NEW,
    EnqueueOutcome.AGAIN,
    EnqueueOutcome.EXISTING,
    EnqueueOutcome.CONFLICT,
)


def intent(key: str, params: dict[str, Any] = PARAMS, order_id: str | None = None) -> Intent:
    return Intent(key=key, params=params, order_id=order_id)


async def test_enqueue_records_pending_rows_leased_to_nobody(ledger: Ledger) -> None:
    results = await ledger.enqueue(P, [intent("k1", order_id="o-1"), intent("k2")])
    assert [(r.key, r.outcome, r.state) for r in results] == [
        ("k1", NEW, LedgerState.PENDING),
        ("k2", NEW, LedgerState.PENDING),
    ]
    record = await ledger.get(P, "k1")
    assert record is not None
    assert record.state is LedgerState.PENDING
    assert dict(record.params) == PARAMS
    assert record.params_hash == ledger.params_hash(PARAMS) == params_hash(PARAMS)
    assert record.order_id == "o-1"
    assert (record.lease_owner, record.lease_expires_at, record.attempts) == (None, None, 0)
    [step] = await ledger.history(P, "k1")
    assert (step.from_state, step.to_state, step.owner) == (None, LedgerState.PENDING, None)
    assert step.note == "intent recorded (enqueued)"
    assert await ledger.lease_holders() == []


async def test_enqueue_again_changes_nothing(ledger: Ledger) -> None:
    await ledger.enqueue(P, [intent("k1", order_id="o-1"), intent("k2")])
    before = [await ledger.get(P, key) for key in ("k1", "k2")]
    results = await ledger.enqueue(P, [intent("k1", order_id="o-1"), intent("k2")])
    assert [(r.outcome, r.state) for r in results] == [(EXISTING, LedgerState.PENDING)] * 2
    assert [await ledger.get(P, key) for key in ("k1", "k2")] == before
    assert len(await ledger.history(P, "k1")) == 1


async def test_enqueue_reports_a_key_with_other_parameters_and_records_nothing(
    ledger: Ledger,
) -> None:
    await ledger.begin(P, "k1", ledger.params_hash(PARAMS), PARAMS, owner="w1", lease_seconds=LEASE)
    await ledger.transition(
        P, "k1", owner="w1", token=await token_of(ledger, P, "k1"),
        state=LedgerState.PROCESSING, lease_seconds=LEASE,
    )  # fmt: skip
    before = await ledger.get(P, "k1")
    [result] = await ledger.enqueue(P, [intent("k1", OTHER)])
    assert (result.outcome, result.state) == (CONFLICT, LedgerState.PROCESSING)
    assert await ledger.get(P, "k1") == before
    [same] = await ledger.enqueue(P, [intent("k1")])  # a row being paid is just there
    assert (same.outcome, same.state) == (EXISTING, LedgerState.PROCESSING)


async def test_enqueue_refuses_an_order_id_of_another_key(ledger: Ledger) -> None:
    await ledger.enqueue(P, [intent("k1", order_id="o-1")])
    results = await ledger.enqueue(P, [intent("k2", order_id="o-1"), intent("k3")])
    assert [(r.key, r.outcome, r.state) for r in results] == [
        ("k2", CONFLICT, None),
        ("k3", NEW, LedgerState.PENDING),
    ]
    assert await ledger.get(P, "k2") is None


async def test_enqueue_records_a_refused_row_again_and_fences_its_old_claim(
    ledger: Ledger,
) -> None:
    await ledger.begin(P, "k1", ledger.params_hash(PARAMS), PARAMS, owner="w1", lease_seconds=LEASE)
    token = await token_of(ledger, P, "k1")
    await ledger.transition(
        P, "k1", owner="w1", token=token, state=LedgerState.REFUSED, lease_seconds=LEASE
    )
    [result] = await ledger.enqueue(P, [intent("k1", OTHER)])
    assert (result.outcome, result.state) == (AGAIN, LedgerState.PENDING)
    record = await ledger.get(P, "k1")
    assert record is not None
    assert (record.state, dict(record.params)) == (LedgerState.PENDING, OTHER)
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert record.lease_token > token
    await ledger.release(P, "k1", owner="w1", token=token)  # the old drive's: a no-op
    assert await ledger.get(P, "k1") == record
    history = await ledger.history(P, "k1")
    assert (history[-1].from_state, history[-1].to_state) == (
        LedgerState.REFUSED,
        LedgerState.PENDING,
    )
    [claim] = await ledger.claim_stranded(owner="w2", lease_seconds=LEASE, limit=10)
    assert claim.record.key == "k1" and dict(claim.record.params) == OTHER


async def test_enqueue_refuses_a_key_another_provider_holds(ledger: Ledger) -> None:
    im = "intellectmoney"
    await ledger.enqueue(im, [intent("live"), intent("refused"), intent("failed")])
    for key, state in (("refused", LedgerState.REFUSED), ("failed", LedgerState.FAILED)):
        await ledger.begin(im, key, ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=1)
        await ledger.transition(
            im, key, owner="w", token=await token_of(ledger, im, key), state=state,
            lease_seconds=1, release=True,
        )  # fmt: skip
    keys = [intent("live"), intent("refused"), intent("failed")]
    results = await ledger.enqueue(P, keys)
    assert [(r.outcome, r.state, r.provider) for r in results] == [
        (CONFLICT, LedgerState.PENDING, im),
        (CONFLICT, LedgerState.REFUSED, im),
        (CONFLICT, LedgerState.FAILED, im),
    ]
    assert await ledger.records(provider=P) == []
    results = await ledger.enqueue(P, keys, switch_provider=True)  # the operator says so
    assert [(r.outcome, r.provider) for r in results] == [(CONFLICT, im), (NEW, None), (NEW, None)]
    moved = await ledger.get(im, "refused")
    assert moved is not None and moved.state is LedgerState.CANCELLED
    assert sorted(r.key for r in await ledger.records(provider=P)) == ["failed", "refused"]


async def test_a_key_given_twice_counts_twice_in_order(ledger: Ledger) -> None:
    results = await ledger.enqueue(P, [intent("k1"), intent("k1"), intent("k1", OTHER)])
    assert [r.outcome for r in results] == [NEW, EXISTING, CONFLICT]
    record = await ledger.get(P, "k1")
    assert record is not None and dict(record.params) == PARAMS


async def test_many_intents_span_several_transactions(ledger: Ledger) -> None:
    intents = [intent(f"k{n:04d}", order_id=f"o-{n}") for n in range(1205)]
    results = await ledger.enqueue(P, intents)
    assert [r.key for r in results] == [i.key for i in intents]
    assert {r.outcome for r in results} == {NEW}
    assert await ledger.counts() == {LedgerState.PENDING: 1205}
    again = await ledger.enqueue(P, intents[::-1])
    assert {r.outcome for r in again} == {EXISTING}


async def test_enqueued_rows_are_claimed_once_each(backend: Backend) -> None:
    first = await backend.new()
    second = await backend.new()
    await first.enqueue(P, [intent(f"k{n:03d}") for n in range(60)])
    await first.enqueue("intellectmoney", [intent("im-1")])

    async def claim_all(ledger: Ledger, owner: str) -> list[str]:
        keys: list[str] = []
        while batch := await ledger.claim_stranded(
            owner=owner, lease_seconds=LEASE, limit=7, provider=P
        ):
            keys += [claim.record.key for claim in batch]
        return keys

    a, b = await asyncio.gather(claim_all(first, "w1"), claim_all(second, "w2"))
    assert sorted(a + b) == [f"k{n:03d}" for n in range(60)]
    holders = {h.owner: h.rows for h in await first.lease_holders(provider=P)}
    assert holders == {owner: len(keys) for owner, keys in (("w1", a), ("w2", b)) if keys}


async def test_a_listener_hears_an_enqueue_of_its_provider(backend: Backend) -> None:
    worker = await backend.new()
    producer = await backend.new()  # another process, where the backend has them
    listener = await worker.listen_for_work(P)
    try:
        assert not await listener.wait(0.2)  # nothing announced yet
        waiting = asyncio.ensure_future(listener.wait(30))
        await asyncio.sleep(0.05)
        await producer.enqueue(P, [intent("k1")])
        assert await asyncio.wait_for(waiting, 30)  # woken long before the timeout
    finally:
        await listener.aclose()


async def test_an_announcement_wakes_a_listener(backend: Backend) -> None:
    worker = await backend.new()
    listener = await worker.listen_for_work()  # every provider
    try:
        await worker.announce_work(P)  # before the wait: kept for it
        assert await listener.wait(30)
        if backend.kind == "postgres":  # another process's announcement, too
            other = await backend.new()
            waiting = asyncio.ensure_future(listener.wait(30))
            await asyncio.sleep(0.05)
            await other.announce_work(P)
            assert await asyncio.wait_for(waiting, 30)
    finally:
        await listener.aclose()


async def test_an_enqueue_that_records_nothing_wakes_nobody(ledger: Ledger) -> None:
    await ledger.enqueue(P, [intent("k1")])
    listener = await ledger.listen_for_work(P)
    try:
        await ledger.enqueue(P, [intent("k1")])
        assert not await listener.wait(0.3)
    finally:
        await listener.aclose()


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_listeners_of_another_provider_are_left_asleep(ledger: Ledger) -> None:
    listener = await ledger.listen_for_work("intellectmoney")
    try:
        await ledger.enqueue(P, [intent("k1")])
        await ledger.announce_work(P)
        assert not await listener.wait(0.1)
        await ledger.announce_work("intellectmoney")
        assert await listener.wait(0.1)
    finally:
        await listener.aclose()


# -- with an encryption key ----------------------------------------------------------

CARD_PARAMS = {"amount": "10.00", "currency": "RUB", "pan": "4276000012345673"}


async def test_enqueue_keeps_the_recipient_as_begin_does(backend: Backend) -> None:
    key = new_encryption_key()
    ledger = await backend.new(encryption_key=key)
    im = "intellectmoney"
    [new] = await ledger.enqueue(im, [Intent("c1", CARD_PARAMS)])
    assert new.outcome is NEW
    record = await ledger.get(im, "c1")
    assert record is not None
    assert dict(record.params) == CARD_PARAMS  # the recipient put back for a live row
    assert record.params_hash == ledger.params_hash(CARD_PARAMS)
    assert record.params_hash.startswith("hmac-sha256:")
    [same] = await ledger.enqueue(im, [Intent("c1", CARD_PARAMS)])
    assert same.outcome is EXISTING
    [other] = await ledger.enqueue(im, [Intent("c1", {**CARD_PARAMS, "amount": "11.00"})])
    assert other.outcome is CONFLICT
    # What begin() finds is the same row, with the same fingerprint.
    claim = await ledger.begin(
        im, "c1", ledger.params_hash(CARD_PARAMS), CARD_PARAMS, owner="w1", lease_seconds=LEASE
    )
    assert claim.claimed and not claim.created
    final = await ledger.transition(
        im, "c1", owner="w1", token=claim.record.lease_token,
        state=LedgerState.SUCCEEDED, lease_seconds=LEASE,
    )  # fmt: skip
    assert final.params_hash == "masked"
    # A final row is compared by its masked parameters.
    [done] = await ledger.enqueue(im, [Intent("c1", CARD_PARAMS)])
    assert (done.outcome, done.state) == (EXISTING, LedgerState.SUCCEEDED)
    [changed] = await ledger.enqueue(im, [Intent("c1", {**CARD_PARAMS, "amount": "11.00"})])
    assert changed.outcome is CONFLICT


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
async def test_enqueue_without_the_key_says_so(backend: Backend) -> None:
    keyed = await backend.new(encryption_key=new_encryption_key())
    await keyed.enqueue("intellectmoney", [Intent("c1", CARD_PARAMS)])
    plain = await backend.new()
    with pytest.raises(LedgerKeyError):
        await plain.enqueue("intellectmoney", [Intent("c1", CARD_PARAMS)])
