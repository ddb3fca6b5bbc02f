"""One suite, three backends: every ``Ledger`` behaves like ``MemoryLedger``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from payout_async import IdempotencyConflictError
from payout_async.ledger import (
    ACTIVE_STATES,
    LeaseLostError,
    Ledger,
    LedgerState,
    params_hash,
)

from .support import DURABLE, Backend

P = "enot"
PARAMS = {"amount": "10.00", "service": "card", "wallet_to": "4111111111111111"}
HASH = params_hash(PARAMS)
LEASE = 60.0
EXPIRED = -1.0  # a lease that has already run out when it is written


async def start(
    ledger: Ledger,
    key: str,
    *,
    owner: str = "w1",
    lease: float = LEASE,
    provider: str = P,
    order_id: str | None = None,
) -> None:
    claim = await ledger.begin(
        provider, key, HASH, PARAMS, owner=owner, lease_seconds=lease, order_id=order_id
    )
    assert claim.created


async def move(
    ledger: Ledger, key: str, state: LedgerState, *, owner: str = "w1", **changes: Any
) -> None:
    await ledger.transition(P, key, owner=owner, state=state, lease_seconds=LEASE, **changes)


# -- begin ------------------------------------------------------------------------------


async def test_begin_records_a_new_row_leased_to_its_owner(ledger: Ledger) -> None:
    before = time.time()
    claim = await ledger.begin(
        P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE, order_id="o-k1"
    )
    assert claim.created and claim.claimed
    record = claim.record
    assert (record.provider, record.key, record.params_hash) == (P, "k1", HASH)
    assert dict(record.params) == PARAMS
    assert record.state is LedgerState.PENDING
    assert record.order_id == "o-k1"
    assert record.attempts == 0
    assert record.lease_owner == "w1"
    assert record.lease_expires_at is not None
    assert record.lease_expires_at == pytest.approx(record.created_at + LEASE)
    assert record.created_at == record.updated_at
    assert before - 5 < record.created_at < time.time() + 5
    assert await ledger.get(P, "k1") == record
    [step] = await ledger.history(P, "k1")
    assert (step.from_state, step.to_state, step.owner) == (None, LedgerState.PENDING, "w1")
    assert step.note == "intent recorded"
    assert step.at == record.created_at


async def test_begin_again_by_its_owner_claims_and_extends(ledger: Ledger) -> None:
    await start(ledger, "k1", lease=1.0)
    first = await ledger.get(P, "k1")
    claim = await ledger.begin(P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE)
    assert claim.claimed and not claim.created
    assert first is not None and claim.record.lease_expires_at is not None
    assert claim.record.lease_expires_at > (first.lease_expires_at or 0)
    assert claim.record.updated_at == first.updated_at
    assert await ledger.get(P, "k1") == claim.record
    assert len(await ledger.history(P, "k1")) == 1  # a claim is not a transition


async def test_begin_with_other_parameters_is_a_conflict(ledger: Ledger) -> None:
    await start(ledger, "k1")
    other = params_hash({**PARAMS, "amount": "11.00"})
    with pytest.raises(IdempotencyConflictError):
        await ledger.begin(P, "k1", other, {}, owner="w1", lease_seconds=LEASE)
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    with pytest.raises(IdempotencyConflictError):  # final rows too
        await ledger.begin(P, "k1", other, {}, owner="w2", lease_seconds=LEASE)
    record = await ledger.get(P, "k1")
    assert record is not None and record.params_hash == HASH


async def test_the_same_key_under_another_provider_is_another_row(ledger: Ledger) -> None:
    await start(ledger, "k1", provider="enot")
    await start(ledger, "k1", provider="intellectmoney")
    assert len(await ledger.records()) == 2


async def test_begin_leaves_a_live_lease_of_another_worker_alone(ledger: Ledger) -> None:
    await start(ledger, "k1", owner="w1")
    claim = await ledger.begin(P, "k1", HASH, PARAMS, owner="w2", lease_seconds=LEASE)
    assert not claim.claimed and not claim.created
    assert claim.record.lease_owner == "w1"
    record = await ledger.get(P, "k1")
    assert record is not None and record.lease_owner == "w1"


async def test_begin_takes_over_an_expired_or_released_lease(ledger: Ledger) -> None:
    await start(ledger, "expired", owner="w1", lease=EXPIRED)
    claim = await ledger.begin(P, "expired", HASH, PARAMS, owner="w2", lease_seconds=LEASE)
    assert claim.claimed and claim.record.lease_owner == "w2"
    assert claim.record.lease_expires_at is not None and claim.record.lease_expires_at > time.time()

    await start(ledger, "free", owner="w1")
    await ledger.release(P, "free", owner="w1")
    claim = await ledger.begin(P, "free", HASH, PARAMS, owner="w2", lease_seconds=LEASE)
    assert claim.claimed and claim.record.lease_owner == "w2"
    assert await ledger.get(P, "free") == claim.record


@pytest.mark.parametrize("state", [LedgerState.SUCCEEDED, LedgerState.NEEDS_ATTENTION])
async def test_begin_never_claims_final_or_needs_attention_rows(
    ledger: Ledger, state: LedgerState
) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", state, reason="why")
    for owner in ("w1", "w2"):
        claim = await ledger.begin(P, "k1", HASH, PARAMS, owner=owner, lease_seconds=LEASE)
        assert not claim.claimed and not claim.created
        assert claim.record.state is state and claim.record.reason == "why"


async def test_concurrent_begins_of_one_key_create_and_claim_it_once(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(4)]
    claims = await asyncio.gather(
        *(
            ledger.begin(P, "k1", HASH, PARAMS, owner=f"w{i}", lease_seconds=LEASE)
            for i, ledger in enumerate(ledgers * 3)
        )
    )
    assert sum(claim.created for claim in claims) == 1
    assert sum(claim.claimed for claim in claims) == 1
    assert len(await ledgers[0].history(P, "k1")) == 1


# -- transition, renew, release ------------------------------------------------------


async def test_transition_sets_fields_extends_the_lease_and_logs(ledger: Ledger) -> None:
    await start(ledger, "k1", lease=5.0)
    first = await ledger.get(P, "k1")
    assert first is not None
    record = await ledger.transition(
        P,
        "k1",
        owner="w1",
        state=LedgerState.SENDING,
        lease_seconds=LEASE,
        note="creating",
        add_attempt=True,
        last_error="boom",
        unknown_since=123.5,
    )
    assert record.state is LedgerState.SENDING
    assert record.attempts == 1
    assert (record.last_error, record.unknown_since) == ("boom", 123.5)
    assert record.lease_owner == "w1"
    assert record.lease_expires_at == pytest.approx(record.updated_at + LEASE)
    assert record.updated_at >= first.updated_at
    assert record.created_at == first.created_at
    assert dict(record.params) == PARAMS
    assert await ledger.get(P, "k1") == record

    record = await ledger.transition(
        P,
        "k1",
        owner="w1",
        state=LedgerState.PROCESSING,
        lease_seconds=LEASE,
        operation_id="op-7",
        order_id="o-7",
        provider_status="wait",
        last_error=None,
        unknown_since=None,
        reason="r",
    )
    assert record.attempts == 1  # no add_attempt
    assert (record.operation_id, record.order_id, record.provider_status) == (
        "op-7",
        "o-7",
        "wait",
    )
    assert (record.last_error, record.unknown_since, record.reason) == (None, None, "r")

    steps = await ledger.history(P, "k1")
    assert [(s.from_state, s.to_state) for s in steps] == [
        (None, LedgerState.PENDING),
        (LedgerState.PENDING, LedgerState.SENDING),
        (LedgerState.SENDING, LedgerState.PROCESSING),
    ]
    assert [s.note for s in steps[1:]] == ["creating", None]
    assert [s.owner for s in steps] == ["w1", "w1", "w1"]
    assert steps[-1].at == record.updated_at


async def test_transition_may_repeat_a_state_and_leave_needs_attention(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.PROCESSING, provider_status="a")
    await move(ledger, "k1", LedgerState.PROCESSING, provider_status="b")
    await move(ledger, "k1", LedgerState.NEEDS_ATTENTION, reason="stuck")
    record = await ledger.transition(
        P, "k1", owner="w1", state=LedgerState.PENDING, lease_seconds=LEASE, reason=None
    )
    assert record.state is LedgerState.PENDING and record.reason is None
    assert len(await ledger.history(P, "k1")) == 5


@pytest.mark.parametrize(
    "final", [LedgerState.SUCCEEDED, LedgerState.FAILED, LedgerState.CANCELLED]
)
async def test_a_final_transition_ends_the_lease(ledger: Ledger, final: LedgerState) -> None:
    await start(ledger, "k1", owner="w1")
    await move(ledger, "k1", LedgerState.PROCESSING)
    record = await ledger.transition(P, "k1", owner="w1", state=final, lease_seconds=LEASE)
    assert (record.state, record.lease_owner, record.lease_expires_at) == (final, None, None)
    assert await ledger.get(P, "k1") == record
    steps = await ledger.history(P, "k1")
    assert (steps[-1].to_state, steps[-1].owner) == (final, "w1")  # who finished it


async def test_transition_counts_attempts(ledger: Ledger) -> None:
    await start(ledger, "k1")
    for _ in range(3):
        await ledger.transition(
            P, "k1", owner="w1", state=LedgerState.SENDING, lease_seconds=LEASE, add_attempt=True
        )
    record = await ledger.get(P, "k1")
    assert record is not None and record.attempts == 3


async def test_transition_without_the_lease_is_refused(ledger: Ledger) -> None:
    await start(ledger, "mine", owner="w1")
    await start(ledger, "expired", owner="w1", lease=EXPIRED)
    await start(ledger, "released", owner="w1")
    await ledger.release(P, "released", owner="w1")
    await start(ledger, "final", owner="w1")
    await move(ledger, "final", LedgerState.FAILED)
    cases = [("mine", "w2"), ("expired", "w1"), ("released", "w1"), ("final", "w1")]
    cases.append(("unknown", "w1"))
    for key, owner in cases:
        before = await ledger.get(P, key)
        with pytest.raises(LeaseLostError):
            await ledger.transition(
                P,
                key,
                owner=owner,
                state=LedgerState.SENDING,
                lease_seconds=LEASE,
                add_attempt=True,
                operation_id="x",
            )
        assert await ledger.get(P, key) == before, key
    assert len(await ledger.history(P, "mine")) == 1
    assert len(await ledger.history(P, "final")) == 2


async def test_transition_rejects_unknown_fields(ledger: Ledger) -> None:
    await start(ledger, "k1")
    before = await ledger.get(P, "k1")
    for field in ("attempts", "lease_owner", "params_hash", "bogus"):
        changes: dict[str, Any] = {field: "x"}
        with pytest.raises(TypeError):
            await ledger.transition(
                P,
                "k1",
                owner="w1",
                state=LedgerState.SENDING,
                lease_seconds=LEASE,
                **changes,
            )
    assert await ledger.get(P, "k1") == before
    assert len(await ledger.history(P, "k1")) == 1


async def test_a_lost_transition_does_not_spoil_concurrent_ones(ledger: Ledger) -> None:
    for i in range(20):
        await start(ledger, f"k{i}")
    results = await asyncio.gather(
        *(
            ledger.transition(
                P,
                f"k{i}",
                owner="w1" if i % 3 else "w2",
                state=LedgerState.SENDING,
                lease_seconds=LEASE,
                add_attempt=True,
            )
            for i in range(20)
        ),
        return_exceptions=True,
    )
    for i, result in enumerate(results):
        record = await ledger.get(P, f"k{i}")
        assert record is not None
        if i % 3:
            assert result == record and record.state is LedgerState.SENDING
        else:
            assert isinstance(result, LeaseLostError)
            assert record.state is LedgerState.PENDING and record.attempts == 0


async def test_renew_extends_only_a_held_lease(ledger: Ledger) -> None:
    await start(ledger, "k1", lease=5.0)
    await ledger.renew(P, "k1", owner="w1", lease_seconds=LEASE)
    record = await ledger.get(P, "k1")
    assert record is not None and record.lease_expires_at is not None
    assert record.lease_expires_at > time.time() + LEASE - 10
    assert len(await ledger.history(P, "k1")) == 1
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "k1", owner="w2", lease_seconds=LEASE)
    await start(ledger, "expired", lease=EXPIRED)
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "expired", owner="w1", lease_seconds=LEASE)
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "k1", owner="w1", lease_seconds=LEASE)
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "unknown", owner="w1", lease_seconds=LEASE)


async def test_release_frees_only_its_owners_lease(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await ledger.release(P, "k1", owner="w2")  # not the owner: no-op
    record = await ledger.get(P, "k1")
    assert record is not None and record.lease_owner == "w1"
    await ledger.release(P, "k1", owner="w1")
    record = await ledger.get(P, "k1")
    assert record is not None
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert record.state is LedgerState.PENDING
    await ledger.release(P, "k1", owner="w1")  # already free: no-op
    await ledger.release(P, "unknown", owner="w1")


async def test_release_after_a_final_transition_is_harmless(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    final = await ledger.get(P, "k1")
    await ledger.release(P, "k1", owner="w1")
    assert await ledger.get(P, "k1") == final


# -- claim_stranded ------------------------------------------------------------------


async def test_claim_stranded_takes_free_and_expired_active_rows_oldest_first(
    ledger: Ledger,
) -> None:
    await start(ledger, "expired", lease=EXPIRED)
    await start(ledger, "live")
    await start(ledger, "released")
    await move(ledger, "released", LedgerState.PROCESSING)
    await ledger.release(P, "released", owner="w1")
    await start(ledger, "final", lease=LEASE)
    await move(ledger, "final", LedgerState.SUCCEEDED)
    await ledger.release(P, "final", owner="w1")
    await start(ledger, "attention")
    await move(ledger, "attention", LedgerState.NEEDS_ATTENTION, reason="why")
    await ledger.release(P, "attention", owner="w1")
    await start(ledger, "other-provider", provider="intellectmoney", lease=EXPIRED)

    claimed = await ledger.claim_stranded(owner="w9", lease_seconds=LEASE, limit=10, provider=P)
    assert [r.key for r in claimed] == ["expired", "released"]
    for record in claimed:
        assert record.lease_owner == "w9"
        assert record.lease_expires_at is not None and record.lease_expires_at > time.time()
        assert await ledger.get(P, record.key) == record
    assert claimed[1].state is LedgerState.PROCESSING
    # claimed rows are now live leases: nobody else gets them
    assert await ledger.claim_stranded(owner="w8", lease_seconds=LEASE, limit=10, provider=P) == []

    everywhere = await ledger.claim_stranded(owner="w8", lease_seconds=LEASE, limit=10)
    assert [(r.provider, r.key) for r in everywhere] == [("intellectmoney", "other-provider")]

    attention = await ledger.claim_stranded(
        owner="w7",
        lease_seconds=LEASE,
        limit=10,
        states=frozenset({LedgerState.NEEDS_ATTENTION, LedgerState.SUCCEEDED}),
    )
    assert [r.key for r in attention] == ["final", "attention"]
    assert len(await ledger.history(P, "expired")) == 1  # claiming logs no transition


async def test_claim_stranded_honours_limit_and_states(ledger: Ledger) -> None:
    for i in range(5):
        await start(ledger, f"k{i}", lease=EXPIRED if i < 4 else LEASE)
    await ledger.transition(P, "k4", owner="w1", state=LedgerState.CREATED, lease_seconds=EXPIRED)
    assert await ledger.claim_stranded(owner="w2", lease_seconds=LEASE, limit=0) == []
    first = await ledger.claim_stranded(owner="w2", lease_seconds=LEASE, limit=2)
    assert [r.key for r in first] == ["k0", "k1"]
    created = await ledger.claim_stranded(
        owner="w2", lease_seconds=LEASE, limit=10, states=frozenset({LedgerState.CREATED})
    )
    assert [r.key for r in created] == ["k4"]
    rest = await ledger.claim_stranded(owner="w3", lease_seconds=LEASE, limit=10)
    assert [r.key for r in rest] == ["k2", "k3"]
    assert {r.lease_owner for r in rest} == {"w3"}


async def test_concurrent_claimers_take_disjoint_rows(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(6)]
    total = 150
    for i in range(total):
        await start(ledgers[0], f"k{i:03d}", lease=EXPIRED)

    async def drain(ledger: Ledger, owner: str) -> list[str]:
        keys: list[str] = []
        while batch := await ledger.claim_stranded(owner=owner, lease_seconds=LEASE, limit=7):
            keys += [record.key for record in batch]
            assert {record.lease_owner for record in batch} == {owner}
        return keys

    got = await asyncio.gather(*(drain(ledger, f"w{i}") for i, ledger in enumerate(ledgers * 2)))
    flat = [key for keys in got for key in keys]
    assert len(flat) == total
    assert set(flat) == {f"k{i:03d}" for i in range(total)}
    if backend.shared:
        assert sum(1 for keys in got if keys) > 1  # the work really was shared
    records = await ledgers[0].records()
    owners = {record.key: record.lease_owner for record in records}
    for i, keys in enumerate(got):
        assert all(owners[key] == f"w{i}" for key in keys)


# -- settle_by_order_id --------------------------------------------------------------


async def test_settle_by_order_id_records_a_webhook_once(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    await move(ledger, "k1", LedgerState.PROCESSING, operation_id="p-1")
    assert (
        await ledger.settle_by_order_id(
            P, "o-unknown", state=LedgerState.SUCCEEDED, provider_status="success"
        )
        is None
    )
    assert (
        await ledger.settle_by_order_id(
            "intellectmoney", "o-1", state=LedgerState.SUCCEEDED, provider_status="success"
        )
        is None
    )
    record = await ledger.settle_by_order_id(
        P, "o-1", state=LedgerState.SUCCEEDED, provider_status="success", note="webhook"
    )
    assert record is not None
    assert (record.key, record.state, record.provider_status) == (
        "k1",
        LedgerState.SUCCEEDED,
        "success",
    )
    # whoever held the lease, a final row is nobody's
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert record.operation_id == "p-1" and record.attempts == 0
    assert await ledger.get(P, "k1") == record
    steps = await ledger.history(P, "k1")
    assert (steps[-1].from_state, steps[-1].to_state) == (
        LedgerState.PROCESSING,
        LedgerState.SUCCEEDED,
    )
    assert (steps[-1].owner, steps[-1].note, steps[-1].at) == (None, "webhook", record.updated_at)

    again = await ledger.settle_by_order_id(
        P, "o-1", state=LedgerState.FAILED, provider_status="fail", note="late"
    )
    assert again == record  # final rows are left as they are
    assert len(await ledger.history(P, "k1")) == len(steps)
    with pytest.raises(LeaseLostError):  # and the worker learns the row is settled
        await move(ledger, "k1", LedgerState.PROCESSING)


async def test_settle_by_order_id_ignores_rows_already_final(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    await move(ledger, "k1", LedgerState.FAILED, provider_status="fail")
    record = await ledger.settle_by_order_id(
        P, "o-1", state=LedgerState.SUCCEEDED, provider_status="success"
    )
    assert record is not None and record.state is LedgerState.FAILED
    assert record.provider_status == "fail"


async def test_settle_by_order_id_finds_an_order_id_set_by_transition(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.NEEDS_ATTENTION, order_id="o-late", reason="?")
    record = await ledger.settle_by_order_id(
        P, "o-late", state=LedgerState.FAILED, provider_status="fail"
    )
    assert record is not None and record.state is LedgerState.FAILED
    assert record.reason == "?"


# -- reads ---------------------------------------------------------------------------


async def test_get_records_and_counts(ledger: Ledger) -> None:
    assert await ledger.get(P, "nope") is None
    assert await ledger.history(P, "nope") == []
    assert await ledger.records() == []
    assert await ledger.counts() == {}
    for i in range(4):
        await start(ledger, f"e{i}")
    await start(ledger, "i0", provider="intellectmoney")
    await move(ledger, "e1", LedgerState.SUCCEEDED)
    await move(ledger, "e2", LedgerState.SUCCEEDED)
    await move(ledger, "e3", LedgerState.NEEDS_ATTENTION, reason="x")

    assert [r.key for r in await ledger.records()] == ["e0", "e1", "e2", "e3", "i0"]
    assert [r.key for r in await ledger.records(limit=2)] == ["e0", "e1"]
    assert await ledger.records(limit=0) == []
    assert [r.key for r in await ledger.records(provider=P)] == ["e0", "e1", "e2", "e3"]
    done = await ledger.records(state=LedgerState.SUCCEEDED)
    assert [r.key for r in done] == ["e1", "e2"]
    assert [r.key for r in await ledger.records(provider="intellectmoney")] == ["i0"]
    assert await ledger.records(provider="intellectmoney", state=LedgerState.SUCCEEDED) == []
    assert await ledger.records(provider=P, state=LedgerState.SUCCEEDED, limit=1) == done[:1]
    assert done[0] == await ledger.get(P, "e1")

    assert await ledger.counts() == {
        LedgerState.PENDING: 2,
        LedgerState.SUCCEEDED: 2,
        LedgerState.NEEDS_ATTENTION: 1,
    }
    assert await ledger.counts(provider="intellectmoney") == {LedgerState.PENDING: 1}
    assert await ledger.counts(provider="nobody") == {}


async def test_params_survive_the_round_trip(ledger: Ledger) -> None:
    params = {"amount": "1.50", "n": 3, "flag": True, "none": None, "text": 'привет "q"'}
    claim = await ledger.begin(P, "k1", params_hash(params), params, owner="w", lease_seconds=1)
    assert dict(claim.record.params) == params
    record = await ledger.get(P, "k1")
    assert record is not None and dict(record.params) == params


# -- durability ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
async def test_rows_outlive_the_instance_that_wrote_them(backend: Backend) -> None:
    first = await backend.new()
    await start(first, "k1", order_id="o-1")
    await move(first, "k1", LedgerState.PROCESSING, owner="w1", operation_id="p-1")
    record = await first.get(P, "k1")
    steps = await first.history(P, "k1")
    await first.aclose()

    second = await backend.new()
    assert await second.get(P, "k1") == record
    assert await second.history(P, "k1") == steps
    assert await second.counts() == {LedgerState.PROCESSING: 1}
    assert await second.claim_stranded(owner="w2", lease_seconds=LEASE, limit=5) == []


async def test_all_active_states_are_resumable(ledger: Ledger) -> None:
    for state in sorted(ACTIVE_STATES):
        await start(ledger, state.value)
        await ledger.transition(P, state.value, owner="w1", state=state, lease_seconds=EXPIRED)
    claimed = await ledger.claim_stranded(owner="w2", lease_seconds=LEASE, limit=100)
    assert {r.state for r in claimed} == set(ACTIVE_STATES)
