"""Random fault schedules and concurrency, with the sandbox accepting duplicate
order_ids (the dangerous case): every payout is paid exactly once in the sandbox's
books, and the ledger agrees with them."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payout_async import PayoutStatus
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import DEFAULT_KINDS, ROUTES, FaultKind, Sandbox

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

PAYOUTS = 16
#: The kinds drawn here: every one but those that refuse a processed call in words.
KINDS = sorted(DEFAULT_KINDS, key=lambda kind: kind.value)

scripted_fault = st.tuples(
    st.sampled_from(ROUTES), st.integers(min_value=1, max_value=12), st.sampled_from(KINDS)
)


async def scenario(
    directory: Path,
    seed: int,
    fault_rate: float,
    kinds: frozenset[FaultKind],
    script: list[tuple[str, int, FaultKind]],
    concurrency: int,
) -> None:
    config = fast_config(
        seed=seed, fault_rate=fault_rate, fault_kinds=kinds, duplicate_order_id="accept"
    )
    async with (
        Sandbox(config=config) as sandbox,
        SQLiteLedger(directory / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS) as im,
        enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        for route, nth, kind in script:
            sandbox.faults.script(route, nth=nth, kind=kind)
        im_items = [(f"im-{n}", im_request(f"im-{n}")) for n in range(PAYOUTS // 2)]
        enot_items = [(f"en-{n}", enot_request()) for n in range(PAYOUTS // 2)]
        im_flow = payouts(im, ledger, lease_seconds=SHORT_LEASE)
        enot_flow = payouts(enot, ledger, lease_seconds=SHORT_LEASE)

        async def run(flow: Any, items: list[tuple[str, Any]]) -> list[Any]:
            results = [result async for result in flow.pay_many(items, concurrency=concurrency)]
            return results + await flow.resume()

        await asyncio.gather(run(im_flow, im_items), run(enot_flow, enot_items))
        # The faults stop; whatever they parked is settled by reconcile(), and every
        # payout ends paid exactly once -- needs_attention is no way out.
        sandbox.faults.rate = 0.0
        sandbox.faults.clear()
        await asyncio.gather(im_flow.reconcile(), enot_flow.reconcile())

        executed, created = books(sandbox.state)
        assert sandbox.duplicates() == []
        paid_ids = {op.id for op in sandbox.state.intellectmoney if op.executed_at is not None}
        paid_ids |= {payoff.id for payoff in sandbox.state.enot}
        for provider, items, paid in (
            ("intellectmoney", im_items, executed),
            ("enot", enot_items, created),
        ):
            for key, _ in items:
                record = await ledger.get(provider, key)
                assert record is not None
                assert paid[key] <= 1, f"{key} paid {paid[key]} times"
                assert record.state is LedgerState.SUCCEEDED, (key, record.state, record.reason)
                assert paid[key] == 1
                assert record.operation_id in paid_ids
        result = await im_flow.get("im-0")
        assert result is not None and result.status is PayoutStatus.SUCCEEDED


#: One drawn world: the sandbox's seed, fault rate and kinds, scripted faults, and how
#: many payouts each ``pay_many`` runs at once.
worlds = st.fixed_dictionaries(
    {
        "seed": st.integers(min_value=0, max_value=2**16),
        "fault_rate": st.sampled_from([0.0, 0.1, 0.25]),
        "kinds": st.frozensets(st.sampled_from(KINDS), min_size=1),
        "script": st.lists(scripted_fault, max_size=6),
        "concurrency": st.integers(min_value=1, max_value=16),
    }
)
#: Worlds run side by side in one example, each with its own sandbox and ledger: a world
#: spends most of its time waiting out timeouts and graces, so four share the wait.
SIDE_BY_SIDE = 4


@settings(max_examples=7, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=st.lists(worlds, min_size=SIDE_BY_SIDE, max_size=SIDE_BY_SIDE))
def test_random_faults_never_pay_twice(drawn: list[dict[str, Any]]) -> None:
    async def worlds_at_once(directory: Path) -> None:
        for n in range(len(drawn)):
            (directory / str(n)).mkdir()
        await side_by_side(
            {f"world {n}": scenario(directory / str(n), **world) for n, world in enumerate(drawn)}
        )

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(worlds_at_once(Path(directory)))
