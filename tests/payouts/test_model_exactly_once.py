"""A model-based attack on "never twice", on each ledger.

Hypothesis draws a world the documents leave open -- an IntellectMoney execute that
reads ``Created`` for a while after it was accepted, a second execute that is refused,
accepted or paid again, an Enot ``payoff/info`` that lags (past the grace period only
where Enot refuses duplicate order_ids, as nothing else could protect a payout then),
random faults -- and interleaves in it: ``pay`` (the same key several times at once),
``pay_many`` with repeated keys, ``resume``, ``reconcile``, webhooks, a worker frozen
longer than its lease while another takes over, and workers whose wall clocks run
ahead. Two workers share the ledger store, each with its own connection.

After every step: nobody was paid twice, and every ledger row agrees with the
sandbox's books. At the end the faults stop, ``reconcile()`` runs, and every key
used is SUCCEEDED and paid exactly once -- ``needs_attention`` is no way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from payout_async import Payouts, Timeouts
from payout_async.enot import PayoffWebhook
from payout_async.ledger import FINAL_STATES, Ledger, LedgerState
from payout_async.sandbox import FaultKind, Sandbox
from payout_async.testing import pause_before_send
from tests.ledger.support import Backend, require_postgres

from .support import (
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
)

T = TypeVar("T")

# Everything short, so that a step takes a fraction of a second and a frozen worker
# outlives its lease within one.
TIMEOUTS = Timeouts(total=0.3, connect=0.15, read=0.15)
LEASE = 0.5
GRACE = 0.25
SETTLE = 0.25
IM_KEYS = [f"im-{n}" for n in range(3)]
ENOT_KEYS = [f"en-{n}" for n in range(3)]
KEYS = IM_KEYS + ENOT_KEYS
# Faults that can happen to any exchange, including the ones that commit and then lose
# the answer; kept moderate so that a step ends within a second or two.
FAULT_KINDS = [
    FaultKind.CLOSE_BEFORE_READ,
    FaultKind.COMMIT_THEN_CLOSE,
    FaultKind.HTTP_500,
    FaultKind.HTTP_504,
    FaultKind.TRUNCATED_JSON,
    FaultKind.RATE_LIMIT,
]

LOST_ANSWERS = [
    FaultKind.COMMIT_THEN_CLOSE,
    FaultKind.COMMIT_THEN_STALL,
    FaultKind.HTTP_504,
    FaultKind.CLOSE_BEFORE_READ,
]
MONEY_ROUTE = {"intellectmoney": "im.execute", "enot": "enot.create"}
ROUTES_TO_FAULT = ["im.execute", "enot.create", "im.state", "enot.info"]

worlds = st.fixed_dictionaries(
    {
        # The most hostile values first: Hypothesis starts from, and shrinks to, them.
        "im_execute_lag": st.sampled_from([0.2, 0.1, 0.0]),  # all below the settle window
        "im_second_execute": st.sampled_from(["pay_again", "refuse", "accept"]),
        "enot": st.sampled_from(
            [(0.6, "reject"), (0.15, "accept"), (0.0, "accept")]  # (info lag, duplicates)
        ),
        "fault_rate": st.sampled_from([0.0, 0.1, 0.2]),
        "seed": st.integers(0, 2**16),
    }
)


def provider_of(key: str) -> str:
    return "intellectmoney" if key.startswith("im-") else "enot"


def request_for(key: str) -> Any:
    return im_request(key) if provider_of(key) == "intellectmoney" else enot_request()


class ExactlyOnce(RuleBasedStateMachine):
    """Two workers, one ledger store, one sandbox; see the module docstring."""

    backend_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.TemporaryDirectory()
        self.backend = Backend(self.backend_kind, Path(self.directory.name))
        self.sandbox: Sandbox | None = None
        self.clients: list[Any] = []
        self.workers: list[dict[str, Payouts[Any]]] = []
        self.skew = [0.0, 0.0]
        self.used: set[str] = set()

    def run(self, coroutine: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @initialize(world=worlds)
    def start(self, world: dict[str, Any]) -> None:
        info_lag, duplicates = world["enot"]
        config = fast_config(
            im_execute_lag=world["im_execute_lag"],
            im_second_execute=world["im_second_execute"],
            enot_info_lag=info_lag,
            duplicate_order_id=duplicates,
            fault_rate=world["fault_rate"],
            fault_kinds=FAULT_KINDS,
            seed=world["seed"],
        )
        self.run(self._start(config))

    async def _start(self, config: Any) -> None:
        self.sandbox = Sandbox(config=config)
        await self.sandbox.start()
        for _ in range(2):
            ledger = await self.backend.new()
            im = im_client(self.sandbox.intellectmoney_url, timeouts=TIMEOUTS)
            enot = enot_client(self.sandbox.enot_url, timeouts=TIMEOUTS)
            self.clients += [im, enot]
            self.workers.append(
                {
                    provider: payouts(
                        client,
                        ledger,
                        lease_seconds=LEASE,
                        grace=GRACE,
                        execute_settle=SETTLE,
                    )
                    for provider, client in (("intellectmoney", im), ("enot", enot))
                }
            )

    @contextmanager
    def clock_of(self, worker: int) -> Iterator[None]:
        """This worker's wall clock, which may run ahead of the others'."""
        if not self.skew[worker]:
            yield
            return
        real = time.time
        time.time = lambda: real() + self.skew[worker]  # type: ignore[assignment]
        try:
            yield
        finally:
            time.time = real  # type: ignore[assignment]

    # -- rules -----------------------------------------------------------------------

    @rule(
        worker=st.integers(0, 1),
        key=st.sampled_from(KEYS),
        copies=st.integers(1, 3),
        lose=st.sampled_from([*LOST_ANSWERS, None]),
    )
    def pay(self, worker: int, key: str, copies: int, lose: FaultKind | None) -> None:
        """Pay ``key`` ``copies`` times at once; ``lose``: what happens to the answer of
        its first money-moving request (after the provider acted on it, mostly)."""
        self.used.add(key)
        if lose is not None:
            self.lose_the_next_answer(MONEY_ROUTE[provider_of(key)], lose)
        flow = self.workers[worker][provider_of(key)]

        async def pay_at_once() -> list[Any]:
            return list(
                await asyncio.gather(*(flow.pay(key, request_for(key)) for _ in range(copies)))
            )

        with self.clock_of(worker):
            results = self.run(pay_at_once())
        assert len({(r.status, r.provider_id) for r in results}) == 1, results

    @rule(key=st.sampled_from(KEYS), lose=st.sampled_from([*LOST_ANSWERS, None]))
    def race(self, key: str, lose: FaultKind | None) -> None:
        """Both workers pay ``key`` at once while one of them also resumes."""
        self.used.add(key)
        if lose is not None:
            self.lose_the_next_answer(MONEY_ROUTE[provider_of(key)], lose)
        provider = provider_of(key)

        async def at_once() -> None:
            await asyncio.gather(
                self.workers[0][provider].pay(key, request_for(key)),
                self.workers[1][provider].pay(key, request_for(key)),
                self.workers[1][provider].resume(),
            )

        self.run(at_once())

    @rule(
        worker=st.integers(0, 1),
        keys=st.lists(st.sampled_from(ENOT_KEYS), min_size=1, max_size=6),
    )
    def pay_many(self, worker: int, keys: list[str]) -> None:
        self.used.update(keys)
        flow = self.workers[worker]["enot"]

        async def pay_all() -> list[Any]:
            items = [(key, request_for(key)) for key in keys]
            return [result async for result in flow.pay_many(items, concurrency=4)]

        with self.clock_of(worker):
            results = self.run(pay_all())
        assert sorted(r.key for r in results) == sorted(keys)

    @rule(worker=st.integers(0, 1), provider=st.sampled_from(["intellectmoney", "enot"]))
    def resume(self, worker: int, provider: str) -> None:
        with self.clock_of(worker):
            self.run(self.workers[worker][provider].resume())

    @rule(worker=st.integers(0, 1), provider=st.sampled_from(["intellectmoney", "enot"]))
    def reconcile(self, worker: int, provider: str) -> None:
        with self.clock_of(worker):
            self.run(self.workers[worker][provider].reconcile())

    @rule(key=st.sampled_from(ENOT_KEYS))
    def webhook(self, key: str) -> None:
        """Enot reports the payoff's final status, as its webhook would."""

        async def deliver() -> None:
            payoffs = [p for p in self.sandbox_state().enot if p.details.order_id == key]
            if not payoffs:
                return
            payoff = await self.clients[1].get_payoff(payoff_id=payoffs[-1].id)
            if payoff.is_final:
                await self.workers[0]["enot"].apply_webhook(
                    PayoffWebhook(
                        payoff_id=payoff.payoff_id, order_id=key, raw_status=payoff.raw_status
                    )
                )

        with contextlib.suppress(Exception):  # faults hit the lookup: no webhook this time
            self.run(deliver())

    @rule(key=st.sampled_from(KEYS))
    def frozen_worker(self, key: str) -> None:
        """Worker 0 freezes after recording a money-moving step, for longer than its
        lease; worker 1 takes the row over meanwhile; then worker 0 thaws."""
        self.used.add(key)
        provider = provider_of(key)
        frozen, other = self.workers[0][provider], self.workers[1][provider]

        async def scenario() -> None:
            # Thaws after the other worker had time to take the row over and send.
            with pause_before_send(frozen, LEASE + max(GRACE, SETTLE) + 0.3, keys=[key]):
                paying = asyncio.create_task(frozen.pay(key, request_for(key)))
                await asyncio.sleep(LEASE + 0.1)
                await other.resume()
                await paying

        self.run(scenario())

    @rule(route=st.sampled_from(ROUTES_TO_FAULT), kind=st.sampled_from(LOST_ANSWERS))
    def lose_the_next_answer(self, route: str, kind: FaultKind) -> None:
        """The next call of ``route`` goes wrong (for most kinds, after the provider
        acted on it)."""
        assert self.sandbox is not None
        self.sandbox.faults.script(route, kind=kind)

    @rule(worker=st.integers(0, 1), hours=st.sampled_from([0.0, 1.0, 24.0]))
    def skew_clock(self, worker: int, hours: float) -> None:
        self.skew[worker] = hours * 3600

    # -- checks ----------------------------------------------------------------------

    def sandbox_state(self) -> Any:
        assert self.sandbox is not None
        return self.sandbox.state

    @invariant()
    def nobody_paid_twice_and_the_ledger_agrees(self) -> None:
        if self.sandbox is None:
            return
        self.run(self._check(final=False))

    async def _check(self, *, final: bool) -> None:
        assert self.sandbox is not None
        assert self.sandbox.duplicates() == []
        paid = self.sandbox.paid_per_payout()
        assert max(paid.values(), default=0) <= 1, paid
        ledger: Ledger = self.workers[0]["enot"].ledger
        for record in await ledger.records():
            times = paid[(record.provider, record.key)]
            if record.state is LedgerState.SUCCEEDED:
                assert times == 1, (record.key, "succeeded but not paid")
            elif record.state in FINAL_STATES or record.state is LedgerState.REFUSED:
                assert times == 0, (record.key, record.state, "paid")
            if final:
                assert record.state is LedgerState.SUCCEEDED, (
                    record.key,
                    record.state,
                    record.reason,
                )
                assert times == 1, record.key
        if final:
            assert {record.key for record in await ledger.records()} == self.used

    def teardown(self) -> None:
        try:
            if self.sandbox is not None and self.workers:
                self.run(self._settle_everything())
        finally:
            self.run(self._close())
            self.loop.close()
            self.directory.cleanup()

    async def _settle_everything(self) -> None:
        assert self.sandbox is not None
        self.sandbox.faults.rate = 0.0
        self.sandbox.faults.clear()
        for flow in self.workers[0].values():
            await flow.resume()
            await flow.reconcile()
            await flow.resume()  # rows reconcile() left processing at the poll deadline
        await self._check(final=True)

    async def _close(self) -> None:
        for worker in self.workers:
            for flow in worker.values():
                await flow.aclose()
        for client in self.clients:
            await client.aclose()
        if self.sandbox is not None:
            await self.sandbox.close()
        await self.backend.close()


# The in-memory ledger explores the most (it is the fastest); the durable ones check
# that their SQL keeps the same promises.
EXAMPLES = {"memory": 15, "sqlite": 5, "postgres": 5}


class MemoryMachine(ExactlyOnce):
    backend_kind = "memory"


class SQLiteMachine(ExactlyOnce):
    backend_kind = "sqlite"


class PostgresMachine(ExactlyOnce):
    backend_kind = "postgres"


@pytest.mark.parametrize("machine", [MemoryMachine, SQLiteMachine, PostgresMachine])
def test_never_twice_in_a_world_we_did_not_write(machine: type[ExactlyOnce]) -> None:
    if machine.backend_kind == "postgres":
        require_postgres()
    test_case = machine.TestCase
    test_case.settings = settings(
        max_examples=EXAMPLES[machine.backend_kind],
        stateful_step_count=8,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    test_case().runTest()
