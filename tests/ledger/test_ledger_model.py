"""Random operation sequences give the same answers from every backend as from
``MemoryLedger``, the reference (times aside: they are compared as present/absent)."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest

from payout_async.ledger import (
    Ledger,
    LedgerState,
    MemoryLedger,
    PayoutRecord,
    Transition,
    params_hash,
)

from .support import DURABLE, Backend

PROVIDERS = ["enot", "intellectmoney"]
KEYS = ["a", "b", "c", "d"]
OWNERS = ["w1", "w2"]
LEASES = [60.0, -1.0]  # live, or already expired when written
# Real fingerprints: a row whose fingerprint does not match its parameters is untrusted.
HASHES = {params_hash(p): p for p in ({"amount": "1.00"}, {"amount": "2.00"})}
STATES = list(LedgerState)


def _plain(value: Any) -> Any:
    if isinstance(value, PayoutRecord):
        fields = attrs.asdict(value, recurse=False)
        fields["params"] = dict(value.params)
        for name in ("created_at", "updated_at", "lease_expires_at"):
            fields[name] = fields[name] is not None
        return ("record", fields)
    if isinstance(value, Transition):
        return ("step", attrs.evolve(value, at=0.0))
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if attrs.has(type(value)):  # Claim
        return ("claim", value.claimed, value.created, _plain(value.record))
    return value


def _operation(rng: random.Random) -> tuple[str, dict[str, Any]]:
    provider, key, owner = rng.choice(PROVIDERS), rng.choice(KEYS), rng.choice(OWNERS)
    kind = rng.choice(
        [
            "begin",
            "begin",
            "transition",
            "transition",
            "transition",
            "renew",
            "release",
            "claim",
            "settle",
            "get",
        ]
    )
    if kind == "begin":
        digest = rng.choice(list(HASHES))
        return kind, dict(
            provider=provider,
            key=key,
            params_hash=digest,
            params=HASHES[digest],
            owner=owner,
            lease_seconds=rng.choice(LEASES),
            order_id=rng.choice([None, f"o-{key}"]),
            switch_provider=rng.random() < 0.5,
        )
    if kind == "transition":
        changes: dict[str, Any] = {
            name: rng.choice([None, f"{name}-{rng.randint(0, 3)}"])
            for name in rng.sample(
                ["operation_id", "provider_status", "last_error", "reason"], rng.randint(0, 3)
            )
        }
        if rng.random() < 0.2:
            # MemoryLedger never forgets an order_id a row once had, so only ever give
            # a row the one order_id it can have (the orchestrator never changes it).
            changes["order_id"] = f"o-{key}"
        if rng.random() < 0.2:
            changes["unknown_since"] = rng.choice([None, 1000.5])
        return kind, dict(
            provider=provider,
            key=key,
            owner=owner,
            state=rng.choice(STATES),
            lease_seconds=rng.choice(LEASES),
            note=rng.choice([None, "n"]),
            add_attempt=rng.random() < 0.5,
            **changes,
        )
    if kind == "renew":
        return kind, dict(provider=provider, key=key, owner=owner, lease_seconds=rng.choice(LEASES))
    if kind == "release":
        return kind, dict(provider=provider, key=key, owner=owner)
    if kind == "claim":
        states = frozenset(rng.sample(STATES, rng.randint(1, 4)))
        return kind, dict(
            owner=owner,
            lease_seconds=rng.choice(LEASES),
            limit=rng.randint(1, 3),
            provider=rng.choice([None, provider]),
            states=states,
        )
    if kind == "settle":
        return kind, dict(
            provider=provider,
            order_id=rng.choice([f"o-{key}", "o-nowhere"]),
            state=rng.choice([LedgerState.SUCCEEDED, LedgerState.FAILED]),
            provider_status=rng.choice(["success", "fail"]),
            note="hook",
        )
    return kind, dict(provider=provider, key=key)


async def _apply(ledger: Ledger, kind: str, args: dict[str, Any]) -> Any:
    call: Any = {
        "begin": ledger.begin,
        "transition": ledger.transition,
        "renew": ledger.renew,
        "release": ledger.release,
        "claim": ledger.claim_stranded,
        "settle": ledger.settle_by_order_id,
        "get": ledger.get,
    }[kind]
    try:
        return _plain(await call(**args))
    except Exception as error:
        return ("error", type(error).__name__)


@pytest.mark.parametrize("backend", DURABLE, indirect=True)
@pytest.mark.parametrize("seed", range(6))
async def test_backends_agree_with_memory_ledger(backend: Backend, seed: int) -> None:
    ledger, model = await backend.new(), MemoryLedger()
    rng = random.Random(seed)
    for step in range(200):
        kind, args = _operation(rng)
        got, expected = await _apply(ledger, kind, args), await _apply(model, kind, args)
        assert got == expected, (step, kind, args)
    for provider in [None, *PROVIDERS]:
        assert _plain(await ledger.records(provider=provider)) == _plain(
            await model.records(provider=provider)
        )
        assert await ledger.counts(provider=provider) == await model.counts(provider=provider)
    for provider in PROVIDERS:
        for key in KEYS:
            assert _plain(await ledger.history(provider, key)) == _plain(
                await model.history(provider, key)
            )
