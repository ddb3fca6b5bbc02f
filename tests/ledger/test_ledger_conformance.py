"""One suite, three backends: every ``Ledger`` behaves like ``MemoryLedger``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from payout_async import IdempotencyConflictError
from payout_async.ledger import (
    ACTIVE_STATES,
    PARKED_STATES,
    Claim,
    Intent,
    LeaseLostError,
    Ledger,
    LedgerState,
    OperationTakenError,
    PayoutRecord,
    new_encryption_key,
    params_hash,
)

from .support import DURABLE, Backend, token_of

P = "enot"
PARAMS = {"amount": "10.00", "service": "card", "wallet_to": "4111111111111111"}
HASH = params_hash(PARAMS)
LEASE = 60.0
KEY = new_encryption_key()
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


async def stranded(ledger: Ledger, **kwargs: Any) -> list[PayoutRecord]:
    """``claim_stranded``'s rows."""
    return [claim.record for claim in await ledger.claim_stranded(**kwargs)]


async def move(
    ledger: Ledger, key: str, state: LedgerState, *, owner: str = "w1", **changes: Any
) -> None:
    await ledger.transition(
        P,
        key,
        owner=owner,
        token=await token_of(ledger, P, key),
        state=state,
        lease_seconds=LEASE,
        **changes,
    )


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


async def test_begin_sending_records_the_intent_and_the_first_attempt_at_once(
    ledger: Ledger,
) -> None:
    claim = await ledger.begin(
        P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE, order_id="o-k1", sending=True
    )
    assert claim.created and claim.claimed
    record = claim.record
    assert (record.state, record.attempts, record.lease_owner) == (LedgerState.SENDING, 1, "w1")
    assert await ledger.get(P, "k1") == record
    [step] = await ledger.history(P, "k1")
    assert (step.from_state, step.to_state, step.note) == (
        None,
        LedgerState.SENDING,
        "intent recorded",
    )
    # An existing row is never moved by it: a refused row is begun again ``pending``.
    await ledger.transition(
        P, "k1", owner="w1", token=record.lease_token, state=LedgerState.REFUSED, lease_seconds=1
    )
    again = await ledger.begin(
        P, "k1", HASH, PARAMS, owner="w2", lease_seconds=LEASE, order_id="o-k1", sending=True
    )
    assert again.claimed and not again.created
    assert (again.record.state, again.record.attempts) == (LedgerState.PENDING, 1)


async def test_begin_again_by_its_owner_leaves_a_live_lease_alone(ledger: Ledger) -> None:
    # Rule 7: a lease belongs to one drive. The same owner asking again (a second
    # pay() of the key in one process) is a second claimant and gets nothing.
    await start(ledger, "k1")
    first = await ledger.get(P, "k1")
    claim = await ledger.begin(P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE)
    assert not claim.claimed and not claim.created
    assert claim.record == first
    assert await ledger.get(P, "k1") == first


async def test_every_claim_gets_a_new_token_and_fences_the_old_one(ledger: Ledger) -> None:
    await start(ledger, "k1", lease=EXPIRED)
    first = await ledger.get(P, "k1")
    assert first is not None and first.lease_token >= 1
    again = await ledger.begin(P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE)
    assert again.claimed and not again.created
    assert again.record.lease_owner == "w1"
    assert again.record.lease_token > first.lease_token
    assert again.record.updated_at == first.updated_at
    assert len(await ledger.history(P, "k1")) == 1  # a claim is not a transition
    stale, fresh = first.lease_token, again.record.lease_token
    # The earlier claim of the same owner can no longer move, renew or release the row.
    with pytest.raises(LeaseLostError):
        await ledger.transition(
            P, "k1", owner="w1", token=stale, state=LedgerState.SENDING, lease_seconds=LEASE
        )
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "k1", owner="w1", token=stale, lease_seconds=LEASE)
    await ledger.release(P, "k1", owner="w1", token=stale)
    assert await ledger.get(P, "k1") == again.record
    moved = await ledger.transition(
        P, "k1", owner="w1", token=fresh, state=LedgerState.SENDING, lease_seconds=LEASE
    )
    assert moved.lease_token == fresh  # transitions keep the claim's token
    [claim] = await ledger.claim_stranded(
        owner="w2", lease_seconds=LEASE, limit=5, dead_owners=["w1"]
    )
    assert claim.record.lease_token > fresh
    with pytest.raises(LeaseLostError):
        await ledger.transition(
            P, "k1", owner="w1", token=fresh, state=LedgerState.PROCESSING, lease_seconds=LEASE
        )


async def test_an_order_id_belongs_to_one_key(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    claim = await ledger.begin(
        P, "k1", HASH, PARAMS, owner="w2", lease_seconds=LEASE, order_id="o-1"
    )
    assert not claim.claimed  # the same key again is no conflict
    with pytest.raises(IdempotencyConflictError, match="o-1") as raised:
        await ledger.begin(P, "k2", HASH, PARAMS, owner="w1", lease_seconds=LEASE, order_id="o-1")
    assert raised.value.order_id == "o-1" and raised.value.key == "k2"
    assert await ledger.get(P, "k2") is None
    # Another provider's order_ids are another namespace.
    other = await ledger.begin(
        "intellectmoney", "k2", HASH, PARAMS, owner="w1", lease_seconds=LEASE, order_id="o-1"
    )
    assert other.created


async def test_concurrent_begins_of_one_order_id_under_two_keys(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(2)]
    outcomes = await asyncio.gather(
        *(
            ledger.begin(
                P, f"k{i}", HASH, PARAMS, owner=f"w{i}", lease_seconds=LEASE, order_id="o-x"
            )
            for i, ledger in enumerate(ledgers * 3)
        ),
        return_exceptions=True,
    )
    created = [o for o in outcomes if not isinstance(o, BaseException) and o.created]
    assert len(created) == 1
    assert all(
        isinstance(o, IdempotencyConflictError) or (o.record.key == created[0].record.key)
        for o in outcomes
        if o is not created[0]
    )


async def test_a_refused_row_is_begun_again_with_any_parameters(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    await move(ledger, "k1", LedgerState.SENDING, add_attempt=True)
    await move(ledger, "k1", LedgerState.REFUSED, reason="create refused: bad signature")
    refused = await ledger.get(P, "k1")
    corrected = {**PARAMS, "amount": "12.00"}
    claim = await ledger.begin(
        P,
        "k1",
        params_hash(corrected),
        corrected,
        owner="w2",
        lease_seconds=LEASE,
        order_id="o-2",
        provider_account="acct-2",
    )
    assert claim.claimed and not claim.created
    record = claim.record
    again = await ledger.get(P, "k1")
    assert again is not None and record.provider_account == again.provider_account == "acct-2"
    assert refused is not None and record.lease_token > refused.lease_token
    assert (record.state, record.reason, record.lease_owner) == (LedgerState.PENDING, None, "w2")
    assert (dict(record.params), record.params_hash) == (corrected, params_hash(corrected))
    assert (record.order_id, record.attempts) == ("o-2", 1)
    steps = await ledger.history(P, "k1")
    assert (steps[-1].from_state, steps[-1].to_state, steps[-1].owner) == (
        LedgerState.REFUSED,
        LedgerState.PENDING,
        "w2",
    )
    # Its old order_id is free again, its new one taken.
    assert (
        await ledger.begin(P, "k3", HASH, PARAMS, owner="w", lease_seconds=1, order_id="o-1")
    ).created
    with pytest.raises(IdempotencyConflictError):
        await ledger.begin(P, "k4", HASH, PARAMS, owner="w", lease_seconds=1, order_id="o-2")


async def test_begin_with_other_parameters_is_a_conflict(ledger: Ledger) -> None:
    await start(ledger, "k1")
    other = params_hash({**PARAMS, "amount": "11.00"})
    with pytest.raises(IdempotencyConflictError):
        await ledger.begin(P, "k1", other, {}, owner="w1", lease_seconds=LEASE)
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    with pytest.raises(IdempotencyConflictError):  # final rows too
        await ledger.begin(P, "k1", other, {}, owner="w2", lease_seconds=LEASE)
    record = await ledger.get(P, "k1")
    # A final row is compared by its (masked) parameters, not by a fingerprint.
    assert record is not None and record.params_hash == "masked"
    assert ledger.params_match(record, PARAMS)
    assert not ledger.params_match(record, {**PARAMS, "amount": "11.00"})


IM = "intellectmoney"


async def begin_im(ledger: Ledger, key: str = "k1", *, switch: bool = False) -> Claim:
    return await ledger.begin(
        IM, key, HASH, PARAMS, owner="w9", lease_seconds=LEASE, switch_provider=switch
    )


async def test_a_key_is_one_payout_whatever_the_provider(ledger: Ledger) -> None:
    await start(ledger, "k1")
    for switch in (False, True):  # a live payout never moves
        with pytest.raises(IdempotencyConflictError, match="through enot") as raised:
            await begin_im(ledger, switch=switch)
        assert (raised.value.provider, raised.value.state) == (P, "pending")
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    with pytest.raises(IdempotencyConflictError, match="succeeded"):
        await begin_im(ledger, switch=True)
    assert await ledger.get(IM, "k1") is None
    assert await ledger.records(provider=IM) == []


@pytest.mark.parametrize("final", [LedgerState.FAILED, LedgerState.CANCELLED])
async def test_a_failed_key_moves_to_another_provider_only_when_asked(
    ledger: Ledger, final: LedgerState
) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", final)
    with pytest.raises(IdempotencyConflictError, match="switch_provider") as raised:
        await begin_im(ledger)
    assert (raised.value.provider, raised.value.state) == (P, final.value)
    claim = await begin_im(ledger, switch=True)
    assert claim.created and claim.record.provider == IM
    old = await ledger.get(P, "k1")
    assert old is not None and old.state is final  # left as it was
    # Back under the first provider: its row is final, nothing is recorded or sent.
    again = await ledger.begin(P, "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE)
    assert not again.claimed and again.record.state is final


async def test_a_refused_key_moves_and_its_row_is_cancelled(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    await move(ledger, "k1", LedgerState.SENDING, add_attempt=True)
    await move(ledger, "k1", LedgerState.REFUSED, reason="create refused", release=True)
    refused = await ledger.get(P, "k1")
    assert refused is not None
    with pytest.raises(IdempotencyConflictError, match="refused"):
        await begin_im(ledger)
    claim = await begin_im(ledger, switch=True)
    assert claim.created
    old = await ledger.get(P, "k1")
    assert old is not None and old.state is LedgerState.CANCELLED
    assert old.reason == "the key moved to intellectmoney (switch_provider)"
    assert old.lease_owner is None and old.lease_token > refused.lease_token
    assert old.params_hash == "masked"
    step = (await ledger.history(P, "k1"))[-1]
    assert (step.from_state, step.to_state) == (LedgerState.REFUSED, LedgerState.CANCELLED)
    # The cancelled row is nobody's to send again: not by reconcile, not by a begin.
    drivable = ACTIVE_STATES | PARKED_STATES
    assert await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=5, provider=P) == []
    assert (
        await stranded(
            ledger, owner="w2", lease_seconds=LEASE, limit=5, provider=P, states=drivable
        )
        == []
    )
    with pytest.raises(IdempotencyConflictError, match="through intellectmoney"):
        await ledger.begin(
            "other", "k1", HASH, PARAMS, owner="w1", lease_seconds=LEASE, switch_provider=True
        )


async def test_a_refused_row_being_driven_keeps_its_key(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.REFUSED, reason="create refused", release=True)
    [claim] = await ledger.claim_stranded(
        owner="reconciler", lease_seconds=LEASE, limit=1, states=frozenset({LedgerState.REFUSED})
    )
    with pytest.raises(IdempotencyConflictError, match="refused"):
        await begin_im(ledger, switch=True)
    assert (await ledger.get(P, "k1")) == claim.record
    assert await ledger.get(IM, "k1") is None


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
async def test_concurrent_begins_of_one_key_under_two_providers_record_it_once(
    backend: Backend,
) -> None:
    ledgers = [await backend.new() for _ in range(2)]
    for round_ in range(8):
        key = f"race-{round_}"
        outcomes = await asyncio.gather(
            *(
                ledger.begin(provider, key, HASH, PARAMS, owner=f"w{n}", lease_seconds=LEASE)
                for n, (ledger, provider) in enumerate(
                    [(ledgers[0], P), (ledgers[1], IM), (ledgers[1], P), (ledgers[0], IM)]
                )
            ),
            return_exceptions=True,
        )
        created = [o for o in outcomes if isinstance(o, Claim) and o.created]
        assert len(created) == 1, outcomes
        winner = created[0].record.provider
        for outcome in outcomes:
            if isinstance(outcome, Claim):
                assert outcome.record.provider == winner
            else:
                assert isinstance(outcome, IdempotencyConflictError), outcome
                assert outcome.provider == winner
        rows = [r for r in await ledgers[0].records() if r.key == key]
        assert [r.provider for r in rows] == [winner]


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
async def test_a_switch_racing_a_begin_again_leaves_one_live_row(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(2)]
    for round_ in range(6):
        key = f"switch-{round_}"
        await start(ledgers[0], key)
        await move(ledgers[0], key, LedgerState.REFUSED, reason="refused", release=True)
        corrected = {**PARAMS, "amount": "12.00"}
        outcomes = await asyncio.gather(
            ledgers[0].begin(
                P, key, params_hash(corrected), corrected, owner="w1", lease_seconds=LEASE
            ),
            ledgers[1].begin(
                IM, key, HASH, PARAMS, owner="w2", lease_seconds=LEASE, switch_provider=True
            ),
            return_exceptions=True,
        )
        claimed = [o for o in outcomes if isinstance(o, Claim) and o.claimed]
        assert len(claimed) == 1, outcomes
        rows = [r for r in await ledgers[0].records() if r.key == key]
        live = [r for r in rows if r.state not in (LedgerState.FAILED, LedgerState.CANCELLED)]
        assert [r.provider for r in live] == [claimed[0].record.provider]


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
    await ledger.release(P, "free", owner="w1", token=await token_of(ledger, P, "free"))
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
        token=await token_of(ledger, P, "k1"),
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
        token=await token_of(ledger, P, "k1"),
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


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_each_record_a_write_returns_is_the_row_as_read_afresh(
    backend: Backend, keyed: bool
) -> None:
    """``begin`` and ``transition`` hand back the row they wrote; the durable ledgers
    build it from the row read in the same transaction and the values they set, so
    every field must equal what another instance (no cache) reads back."""
    options = {"encryption_key": KEY} if keyed else {}
    ledger = await backend.new(**options)
    fresh = await backend.new(**options)
    digest = ledger.params_hash(PARAMS)
    claim = await ledger.begin(
        P, "k1", digest, PARAMS, owner="w1", lease_seconds=LEASE, order_id="o-1",
        provider_account="acct-1",
    )  # fmt: skip
    assert claim.created and claim.record == await fresh.get(P, "k1")
    assert claim.record.provider_account == "acct-1"
    steps: list[tuple[LedgerState, dict[str, Any]]] = [
        (
            LedgerState.SENDING,
            {"add_attempt": True, "last_error": "x", "unknown_since": 7, "provider_account": "a2"},
        ),
        (
            LedgerState.PROCESSING,
            {"operation_id": 42, "provider_status": "Accepted", "provider_api": "current"},
        ),
        (LedgerState.PROCESSING, {"order_id": "o-2", "unknown_since": None, "reason": "r"}),
        (LedgerState.SUCCEEDED, {"provider_status": "Completed", "reason": None}),
    ]
    for state, changes in steps:
        record = await ledger.transition(
            P, "k1", owner="w1", token=claim.record.lease_token, state=state,
            lease_seconds=LEASE, **changes,
        )  # fmt: skip
        assert record == await fresh.get(P, "k1"), (state, changes)
    assert record.params_hash == "masked" and record.lease_owner is None
    assert (record.operation_id, record.order_id, record.unknown_since) == ("42", "o-2", None)
    assert record.provider_account == "a2"

    # A row begun with a fingerprint of other parameters: the ledger checks the one
    # thing of a new row it did not make itself, as any later read does.
    other = ledger.params_hash({**PARAMS, "amount": "999.00"})
    claim = await ledger.begin(P, "k2", other, PARAMS, owner="w1", lease_seconds=LEASE)
    assert claim.record == await fresh.get(P, "k2")
    if backend.kind != "memory":  # (a MemoryLedger's rows cannot be altered outside it)
        assert claim.record.untrusted is not None
        assert "fingerprint does not match" in claim.record.untrusted


async def test_transition_may_repeat_a_state_and_leave_needs_attention(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.PROCESSING, provider_status="a")
    await move(ledger, "k1", LedgerState.PROCESSING, provider_status="b")
    await move(ledger, "k1", LedgerState.NEEDS_ATTENTION, reason="stuck")
    record = await ledger.transition(
        P,
        "k1",
        owner="w1",
        token=await token_of(ledger, P, "k1"),
        state=LedgerState.PENDING,
        lease_seconds=LEASE,
        reason=None,
    )
    assert record.state is LedgerState.PENDING and record.reason is None
    assert len(await ledger.history(P, "k1")) == 5


@pytest.mark.parametrize(
    "final", [LedgerState.SUCCEEDED, LedgerState.FAILED, LedgerState.CANCELLED]
)
async def test_a_final_transition_ends_the_lease(ledger: Ledger, final: LedgerState) -> None:
    await start(ledger, "k1", owner="w1")
    await move(ledger, "k1", LedgerState.PROCESSING)
    record = await ledger.transition(
        P, "k1", owner="w1", token=await token_of(ledger, P, "k1"), state=final, lease_seconds=LEASE
    )
    assert (record.state, record.lease_owner, record.lease_expires_at) == (final, None, None)
    assert await ledger.get(P, "k1") == record
    steps = await ledger.history(P, "k1")
    assert (steps[-1].to_state, steps[-1].owner) == (final, "w1")  # who finished it


async def test_a_releasing_transition_ends_the_lease_in_the_same_write(
    ledger: Ledger,
) -> None:
    await start(ledger, "k1")
    token = await token_of(ledger, P, "k1")
    record = await ledger.transition(
        P,
        "k1",
        owner="w1",
        token=token,
        state=LedgerState.PROCESSING,
        lease_seconds=LEASE,
        note="poll deadline",
        release=True,
        provider_status="in_progress",
    )
    assert (record.state, record.provider_status) == (LedgerState.PROCESSING, "in_progress")
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert await ledger.get(P, "k1") == record
    assert (await ledger.history(P, "k1"))[-1].to_state is LedgerState.PROCESSING
    with pytest.raises(LeaseLostError):  # given back: this drive moves it no more
        await move(ledger, "k1", LedgerState.SUCCEEDED)
    [claimed] = await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=10)
    assert (claimed.key, claimed.lease_owner) == ("k1", "w2")  # free at once


async def test_transition_counts_attempts(ledger: Ledger) -> None:
    await start(ledger, "k1")
    for _ in range(3):
        await ledger.transition(
            P,
            "k1",
            owner="w1",
            token=await token_of(ledger, P, "k1"),
            state=LedgerState.SENDING,
            lease_seconds=LEASE,
            add_attempt=True,
        )
    record = await ledger.get(P, "k1")
    assert record is not None and record.attempts == 3


async def test_transition_without_the_lease_is_refused(ledger: Ledger) -> None:
    await start(ledger, "mine", owner="w1")
    await start(ledger, "expired", owner="w1", lease=EXPIRED)
    await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=1)  # w2 took it over
    await start(ledger, "released", owner="w1")
    await ledger.release(P, "released", owner="w1", token=await token_of(ledger, P, "released"))
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
                token=await token_of(ledger, P, key),
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
                token=await token_of(ledger, P, "k1"),
                state=LedgerState.SENDING,
                lease_seconds=LEASE,
                **changes,
            )
    assert await ledger.get(P, "k1") == before
    assert len(await ledger.history(P, "k1")) == 1


async def test_a_lost_transition_does_not_spoil_concurrent_ones(ledger: Ledger) -> None:
    for i in range(20):
        await start(ledger, f"k{i}")
    tokens = [await token_of(ledger, P, f"k{i}") for i in range(20)]
    results = await asyncio.gather(
        *(
            ledger.transition(
                P,
                f"k{i}",
                owner="w1" if i % 3 else "w2",
                token=tokens[i],
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
    await ledger.renew(
        P, "k1", owner="w1", token=await token_of(ledger, P, "k1"), lease_seconds=LEASE
    )
    record = await ledger.get(P, "k1")
    assert record is not None and record.lease_expires_at is not None
    assert record.lease_expires_at > time.time() + LEASE - 10
    assert len(await ledger.history(P, "k1")) == 1
    with pytest.raises(LeaseLostError):
        await ledger.renew(
            P, "k1", owner="w2", token=await token_of(ledger, P, "k1"), lease_seconds=LEASE
        )
    await start(ledger, "expired", lease=EXPIRED)
    # An expired lease nobody claimed since is still w1's: it may renew it...
    await ledger.renew(
        P, "expired", owner="w1", token=await token_of(ledger, P, "expired"), lease_seconds=LEASE
    )
    assert await ledger.claim_stranded(owner="w2", lease_seconds=LEASE, limit=5) == []
    # ...but not once another claim took it.
    await start(ledger, "taken", lease=EXPIRED)
    stale = await token_of(ledger, P, "taken")
    assert [r.key for r in await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=5)] == [
        "taken"
    ]
    with pytest.raises(LeaseLostError):
        await ledger.renew(P, "taken", owner="w1", token=stale, lease_seconds=LEASE)
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    with pytest.raises(LeaseLostError):
        await ledger.renew(
            P, "k1", owner="w1", token=await token_of(ledger, P, "k1"), lease_seconds=LEASE
        )
    with pytest.raises(LeaseLostError):
        await ledger.renew(
            P,
            "unknown",
            owner="w1",
            token=await token_of(ledger, P, "unknown"),
            lease_seconds=LEASE,
        )


async def test_release_frees_only_its_owners_lease(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await ledger.release(
        P, "k1", owner="w2", token=await token_of(ledger, P, "k1")
    )  # not the owner: no-op
    record = await ledger.get(P, "k1")
    assert record is not None and record.lease_owner == "w1"
    await ledger.release(P, "k1", owner="w1", token=await token_of(ledger, P, "k1"))
    record = await ledger.get(P, "k1")
    assert record is not None
    assert (record.lease_owner, record.lease_expires_at) == (None, None)
    assert record.state is LedgerState.PENDING
    await ledger.release(
        P, "k1", owner="w1", token=await token_of(ledger, P, "k1")
    )  # already free: no-op
    await ledger.release(P, "unknown", owner="w1", token=await token_of(ledger, P, "unknown"))


async def test_release_after_a_final_transition_is_harmless(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    final = await ledger.get(P, "k1")
    await ledger.release(P, "k1", owner="w1", token=await token_of(ledger, P, "k1"))
    assert await ledger.get(P, "k1") == final


async def test_an_operation_belongs_to_one_row(ledger: Ledger) -> None:
    """A transition recording another row's operation id writes nothing: the row keeps
    its state and lease, and goes on without it. Another provider's ids, the row's own
    id recorded again, and an id its row gave up are free."""
    for key in ("k1", "k2"):
        await start(ledger, key)
    await move(ledger, "k1", LedgerState.PROCESSING, operation_id="op-1")
    before = await ledger.get(P, "k2")

    with pytest.raises(OperationTakenError) as raised:
        await move(ledger, "k2", LedgerState.PROCESSING, operation_id="op-1", note="adopted")

    assert (raised.value.key, raised.value.holder, raised.value.operation_id) == (
        "k2", "k1", "op-1",
    )  # fmt: skip
    assert await ledger.get(P, "k2") == before
    assert [step.note for step in await ledger.history(P, "k2")] == ["intent recorded"]
    # A drive that lost its lease is told the operation is another's first.
    with pytest.raises(OperationTakenError):
        await ledger.transition(
            P, "k2", owner="w1", token=999, state=LedgerState.PROCESSING, lease_seconds=1,
            operation_id="op-1",
        )  # fmt: skip
    with pytest.raises(LeaseLostError) as lost:
        await ledger.transition(
            P, "k2", owner="w1", token=999, state=LedgerState.PROCESSING, lease_seconds=1,
            operation_id="op-9",
        )  # fmt: skip
    assert not isinstance(lost.value, OperationTakenError)
    await move(ledger, "k2", LedgerState.PROCESSING, operation_id="op-2")  # still its lease
    await move(ledger, "k1", LedgerState.PROCESSING, operation_id="op-1")  # its own
    await start(ledger, "k3", provider="intellectmoney")
    await ledger.transition(
        "intellectmoney", "k3", owner="w1", token=await token_of(ledger, "intellectmoney", "k3"),
        state=LedgerState.EXECUTING, lease_seconds=LEASE, operation_id="op-1",
    )  # fmt: skip
    await move(ledger, "k1", LedgerState.PENDING, operation_id=None)  # given up: free again
    await start(ledger, "k4")
    await move(ledger, "k4", LedgerState.PROCESSING, operation_id="op-1")


async def test_concurrent_moves_to_one_operation_under_two_rows(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(2)]
    for i in range(6):
        await start(ledgers[0], f"k{i}")
    outcomes = await asyncio.gather(
        *(
            move(ledgers[i % 2], f"k{i}", LedgerState.PROCESSING, operation_id="op-x")
            for i in range(6)
        ),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1, outcomes
    assert all(isinstance(o, OperationTakenError) for o in outcomes if o is not None)
    rows = [await ledgers[0].get(P, f"k{i}") for i in range(6)]
    assert [r.operation_id for r in rows if r is not None].count("op-x") == 1


# -- claim_stranded ------------------------------------------------------------------


async def test_claim_stranded_takes_free_and_expired_active_rows_oldest_first(
    ledger: Ledger,
) -> None:
    await start(ledger, "expired", lease=EXPIRED)
    await start(ledger, "live")
    await start(ledger, "released")
    await move(ledger, "released", LedgerState.PROCESSING)
    await ledger.release(P, "released", owner="w1", token=await token_of(ledger, P, "released"))
    await start(ledger, "final", lease=LEASE)
    await move(ledger, "final", LedgerState.SUCCEEDED)
    await ledger.release(P, "final", owner="w1", token=await token_of(ledger, P, "final"))
    await start(ledger, "attention")
    await move(ledger, "attention", LedgerState.NEEDS_ATTENTION, reason="why")
    await ledger.release(P, "attention", owner="w1", token=await token_of(ledger, P, "attention"))
    await start(ledger, "other-provider", provider="intellectmoney", lease=EXPIRED)

    claimed = await stranded(ledger, owner="w9", lease_seconds=LEASE, limit=10, provider=P)
    assert [r.key for r in claimed] == ["expired", "released"]
    for record in claimed:
        assert record.lease_owner == "w9"
        assert record.lease_expires_at is not None and record.lease_expires_at > time.time()
        assert await ledger.get(P, record.key) == record
    assert claimed[1].state is LedgerState.PROCESSING
    # claimed rows are now live leases: nobody else gets them
    assert await stranded(ledger, owner="w8", lease_seconds=LEASE, limit=10, provider=P) == []

    everywhere = await stranded(ledger, owner="w8", lease_seconds=LEASE, limit=10)
    assert [(r.provider, r.key) for r in everywhere] == [("intellectmoney", "other-provider")]

    attention = await stranded(
        ledger,
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
    await ledger.transition(
        P,
        "k4",
        owner="w1",
        token=await token_of(ledger, P, "k4"),
        state=LedgerState.CREATED,
        lease_seconds=EXPIRED,
    )
    assert await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=0) == []
    first = await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=2)
    assert [r.key for r in first] == ["k0", "k1"]
    created = await stranded(
        ledger, owner="w2", lease_seconds=LEASE, limit=10, states=frozenset({LedgerState.CREATED})
    )
    assert [r.key for r in created] == ["k4"]
    rest = await stranded(ledger, owner="w3", lease_seconds=LEASE, limit=10)
    assert [r.key for r in rest] == ["k2", "k3"]
    assert {r.lease_owner for r in rest} == {"w3"}


async def test_claim_stranded_skips_excluded_keys_and_takes_dead_owners_rows(
    ledger: Ledger,
) -> None:
    await start(ledger, "a", lease=EXPIRED)
    await start(ledger, "b", lease=EXPIRED)
    await start(ledger, "dead", owner="gone")
    await start(ledger, "alive", owner="here")
    claims = await ledger.claim_stranded(
        owner="w2", lease_seconds=LEASE, limit=10, exclude=["a"], dead_owners=["gone", "nobody"]
    )
    assert [(c.record.key, c.record.lease_owner) for c in claims] == [("b", "w2"), ("dead", "w2")]
    assert (await stranded(ledger, owner="w3", lease_seconds=LEASE, limit=10)) == [
        await ledger.get(P, "a")
    ]


async def test_lease_holders_lists_live_leases_per_owner(ledger: Ledger) -> None:
    assert await ledger.lease_holders() == []
    await start(ledger, "a", owner="w1")
    await start(ledger, "b", owner="w1", lease=LEASE / 2)
    await start(ledger, "c", owner="w2", lease=EXPIRED)
    await start(ledger, "d", owner="w3")
    await move(ledger, "d", LedgerState.SUCCEEDED, owner="w3")
    await start(ledger, "e", owner="w4", provider="intellectmoney")
    holders = await ledger.lease_holders(provider=P)
    assert [(h.owner, h.rows) for h in holders] == [("w1", 2)]
    a = await ledger.get(P, "a")
    assert a is not None and holders[0].expires_at == pytest.approx(a.lease_expires_at)
    assert [h.owner for h in await ledger.lease_holders()] == ["w1", "w4"]


async def test_concurrent_claimers_take_disjoint_rows(backend: Backend) -> None:
    ledgers = [await backend.new() for _ in range(6)]
    total = 150
    for i in range(total):
        await start(ledgers[0], f"k{i:03d}", lease=EXPIRED)

    async def drain(ledger: Ledger, owner: str) -> list[str]:
        keys: list[str] = []
        while batch := await stranded(ledger, owner=owner, lease_seconds=LEASE, limit=7):
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


async def test_settle_order_says_which_call_settled_the_row(ledger: Ledger) -> None:
    await start(ledger, "k1", order_id="o-1")
    await move(ledger, "k1", LedgerState.PROCESSING, operation_id="p-1")
    assert (
        await ledger.settle_order(P, "o-none", state=LedgerState.FAILED, provider_status="x")
        is None
    )
    settled = await ledger.settle_order(
        P, "o-1", state=LedgerState.FAILED, provider_status="fail", reason="fail (webhook)"
    )
    assert settled is not None and settled.moved_from is LedgerState.PROCESSING
    assert (settled.record.state, settled.record.reason) == (LedgerState.FAILED, "fail (webhook)")
    assert await ledger.get(P, "k1") == settled.record
    again = await ledger.settle_order(
        P, "o-1", state=LedgerState.SUCCEEDED, provider_status="success", reason="late"
    )
    assert again is not None and again.moved_from is None  # repeated: nothing moved
    assert again.record == settled.record


async def test_settle_order_without_a_reason_keeps_the_rows(ledger: Ledger) -> None:
    await start(ledger, "k1")
    await move(ledger, "k1", LedgerState.NEEDS_ATTENTION, order_id="o-2", reason="why")
    settled = await ledger.settle_order(P, "o-2", state=LedgerState.SUCCEEDED, provider_status="ok")
    assert settled is not None and settled.moved_from is LedgerState.NEEDS_ATTENTION
    assert settled.record.reason == "why"


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
    assert await stranded(second, owner="w2", lease_seconds=LEASE, limit=5) == []


async def test_all_active_states_are_resumable(ledger: Ledger) -> None:
    for state in sorted(ACTIVE_STATES):
        await start(ledger, state.value)
        await ledger.transition(
            P,
            state.value,
            owner="w1",
            token=await token_of(ledger, P, state.value),
            state=state,
            lease_seconds=EXPIRED,
        )
    claimed = await stranded(ledger, owner="w2", lease_seconds=LEASE, limit=100)
    assert {r.state for r in claimed} == set(ACTIVE_STATES)


# -- identity ---------------------------------------------------------------------------


async def test_a_ledger_has_an_identity_and_a_mark_that_grows_with_each_row_and_step(
    backend: Backend,
) -> None:
    ledger = await backend.new()
    first = await ledger.identity()
    assert first.ledger_id and first.mark == 0
    await start(ledger, "k1")
    await ledger.enqueue(P, [Intent("k2", PARAMS), Intent("k3", PARAMS)])
    await ledger.begin(P, "k1", HASH, PARAMS, owner="w2", lease_seconds=LEASE)  # no new row
    await ledger.enqueue(P, [Intent("k2", PARAMS)])
    now = await ledger.identity()
    assert now.ledger_id == first.ledger_id and now.mark >= 3
    # A change of state counts too: a backup lacking only later steps of its rows (an
    # IntellectMoney row back at ``pending`` after it was executed) has a lower mark.
    await move(ledger, "k1", LedgerState.SUCCEEDED)
    moved = await ledger.identity()
    assert moved.ledger_id == now.ledger_id and moved.mark > now.mark
    await ledger.note(P, "k1", "a note changes no state")
    assert await ledger.identity() == moved
    await start(ledger, "k4")
    assert (await ledger.identity()).mark > moved.mark
    if backend.shared:  # another instance over the same store: the same ledger
        assert (await (await backend.new()).identity()).ledger_id == first.ledger_id
