"""One simulated deployment, drawn from a seed, and its run.

A run has three phases on the virtual clock:

1. **active**: several simulated processes (each its own ``Payouts``, owner and
   client; some with the same host name in another PID namespace) pay the same keys at
   once, cancel ``pay()``s, run workers, ``resume()`` and ``reconcile()``, while the
   network and providers misbehave, the ledger server's clock steps forward, processes
   freeze (at any await, before a fence, between a fence and its request) or die, a
   foreign system's webhooks arrive, and -- in the issue-27 families -- the history is
   pruned or the ledger restored from an older copy;
2. **quiet**: faults stop, workers are told to stop, every call of a live process
   returns;
3. **settle**: an operator process waits out every lease, then runs ``resume()`` and
   ``reconcile()`` and pays every key again, as a re-run batch would.

Everything random comes from one seed: the plan, the network, the providers, the
ledger's latencies and the library's own jitter each draw from a generator derived
from it (``random.Random(f"{seed}:{stream}")``), so the same seed gives the same run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import aiohttp

from payout_async import PollPolicy
from payout_async.enot import EnotClient, PayoffRequest
from payout_async.intellectmoney import IntellectMoneyClient, OperationRequest
from payout_async.ledger import Ledger, LedgerState, MemoryLedger, PayoutRecord, SQLiteLedger
from payout_async.payouts import Payouts

from .clocks import Clocks
from .invariants import Checker
from .ledgers import SimLedger
from .loop import PROCESS, VirtualLoop, neutral_context
from .mutations import old_owner_is_dead
from .network import NO_FAULTS, Network, SimSession
from .plan import Action, Planner
from .providers import ProviderRules, SimEnot, SimIntellectMoney
from .scenario import TUNINGS, Family, Outcome, SimProcess, pan

__all__ = ["World"]


class World:
    """One run: see the module docstring."""

    def __init__(
        self,
        seed: int,
        family: Family,
        ledger_kind: str,
        loop: VirtualLoop,
        directory: Path | None = None,
    ) -> None:
        self.seed = seed
        self.family = family
        self.ledger_kind = ledger_kind
        self.loop = loop
        self.directory = directory
        self.clocks = Clocks(loop)
        self.lines: list[str] = []
        self.jitter_rng = self._rng("jitter")
        self.plan_rng = self._rng("plan")
        self._runtime_rng = self._rng("runtime")
        #: Set by the ``old-liveness`` mutation: today's fail-open rule.
        self.old_liveness = False
        self.quiet = False
        self.processes: list[SimProcess] = []
        self.tasks: list[tuple[SimProcess | None, asyncio.Task[None]]] = []
        self.disrupted: dict[str, float] = {}
        self.stops: list[asyncio.Event] = []
        self.stats: dict[str, Any] = {"freezes": 0, "clock_steps": 0, "kills": 0}
        self._draw_deployment()

    def _rng(self, stream: str) -> random.Random:
        return random.Random(f"{self.seed}:{stream}")

    def log(self, text: str) -> None:
        self.lines.append(f"{self.loop.time():12.6f} {text}")

    # -- the drawn deployment ---------------------------------------------------------

    def _draw_deployment(self) -> None:
        rng = self.plan_rng
        family = self.family
        self.provider_name = rng.choice(family.providers)
        self.tuning = rng.choice([t for t in TUNINGS if t.name in family.tunings])
        self.lookup_before_create = rng.random() < 0.5
        count = rng.randint(1, 3)
        self.keys = [f"w-{1001 + index}" for index in range(count)]
        self.amounts = {key: Decimal(150 + 10 * index) for index, key in enumerate(self.keys)}
        self.pans = {key: pan(index) for index, key in enumerate(self.keys)}
        self.rules = ProviderRules(
            grace=self.tuning.grace,
            execute_settle=self.tuning.execute_settle,
            enot_duplicate=rng.choice(family.enot_duplicates),
            im_second_execute=rng.choice(family.im_second_executes),
            lag_chance=family.lag_chance,
        )
        self.deployment = rng.choice(family.deployments)
        for index in range(rng.randint(2, 4)):
            self.processes.append(self._new_process(f"p{index}", index, rng))
        self.active_for = 4 * self.tuning.lease_seconds
        self.log(
            f"seed {self.seed} family {self.family.name} ledger {self.ledger_kind}: "
            f"{self.provider_name}, {self.tuning.name}, {self.deployment}, keys {self.keys}, "
            f"lookup_before_create={self.lookup_before_create}, {self.rules}"
        )

    def _new_process(self, name: str, index: int, rng: random.Random) -> SimProcess:
        if self.deployment == "one-host":
            host, pidns, boot, pid = "h1", "ns0", "b0", 100 + index
        elif self.deployment == "containers":  # one host name, a PID namespace each
            host, pidns, boot, pid = "h1", f"ns{index}", "b0", rng.choice((1, 7, 7 + index))
        else:
            host, pidns, boot, pid = f"h{index}", "ns0", f"b{index}", 100
        return SimProcess(
            name=name,
            host=host,
            pidns=pidns,
            boot=boot,
            pid=pid,
            start=rng.randint(1000, 9999),
            mono_offset=rng.uniform(0, 1e6),
        )

    def request(self, key: str) -> PayoffRequest | OperationRequest:
        if self.provider_name == "enot":
            return PayoffRequest(service="card", wallet_to=self.pans[key], amount=self.amounts[key])
        return OperationRequest(amount=self.amounts[key], pan=self.pans[key])

    # -- liveness -------------------------------------------------------------------

    def owner_is_dead(self, owner: str) -> bool:
        """What ``owner_is_dead`` answers in the calling process: the new rule (dead
        only when provably this boot and PID namespace, and gone), or today's."""
        caller = PROCESS.get()
        if not isinstance(caller, SimProcess):
            return False
        if self.old_liveness:
            view = {
                p.pid: str(p.start)
                for p in self.all_processes()
                if p.pidns == caller.pidns and p.boot == caller.boot and not p.killed
            }
            return old_owner_is_dead(owner, caller.host, view.get)
        held_by = next((p for p in self.all_processes() if p.owner == owner), None)
        if held_by is None:
            return False
        same = (held_by.host, held_by.boot, held_by.pidns) == (
            caller.host,
            caller.boot,
            caller.pidns,
        )
        return same and held_by.killed

    def all_processes(self) -> list[SimProcess]:
        return self.processes + ([self.operator] if hasattr(self, "operator") else [])

    # -- building -------------------------------------------------------------------

    async def _open(self) -> None:
        inner: Ledger
        if self.ledger_kind == "sqlite":
            assert self.directory is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            inner = SQLiteLedger(self.directory / f"sim-{self.seed}.db", checkpoint_interval=0)
            await inner.open()
        else:
            inner = MemoryLedger()
        self.inner = inner
        provider_rng = self._rng("provider")
        self.provider: SimEnot | SimIntellectMoney
        if self.provider_name == "enot":
            self.provider = SimEnot(self.rules, provider_rng, self.log)
        else:
            by_pan = {pan: key for key, pan in self.pans.items()}
            self.provider = SimIntellectMoney(self.rules, provider_rng, self.log, by_pan)
        self.network = Network(
            self.provider,
            self._rng("network"),
            self.family.faults,
            self.log,
            pause=self._pause_running,
            margin=self.tuning.margin,
            after_handle=lambda: self.checker.after_provider(),
            on_money_fault=self._worsen,
        )
        self.checker = Checker(
            self.provider,
            self.amounts,
            self.network.departures,
            self.tuning.margin,
            self.loop.time,
            self.log,
        )
        self.ledger = SimLedger(
            inner,
            self._rng("ledger"),
            self._ledger_answer,
            self._took_over,
            self.clocks.server_wall,
        )
        for process in self.processes:
            self._give_payouts(process)

    def _give_payouts(self, process: SimProcess) -> None:
        session = cast(aiohttp.ClientSession, SimSession(self.network))
        tuning = self.tuning
        client: EnotClient | IntellectMoneyClient
        if self.provider_name == "enot":
            client = EnotClient("sim-user", "sim-secret", session=session, timeouts=tuning.timeouts)
        else:
            client = IntellectMoneyClient(
                "sim-token",
                "sim-sign",
                bearer_token="sim-bearer",
                session=session,
                timeouts=tuning.timeouts,
            )
        payouts = Payouts(
            client,
            cast(Ledger, self.ledger),
            poll=PollPolicy(deadline=2 * tuning.lease_seconds),
            grace=tuning.grace,
            lease_seconds=tuning.lease_seconds,
            execute_settle=tuning.execute_settle,
            owner=process.owner,
            lookup_before_create=self.lookup_before_create,
        )
        payouts._before_send = self._before_send(process)
        process.payouts = payouts

    def _ledger_answer(
        self, caller: str, name: str, args: tuple[Any, ...], kwargs: Any, answer: Any
    ) -> None:
        key = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        if isinstance(answer, PayoutRecord):
            lease = f"{answer.lease_owner}/{answer.lease_token}"
            said = f"{answer.state} a={answer.attempts} lease={lease}"
        elif isinstance(answer, BaseException):
            said = f"raised {type(answer).__name__}"
        elif isinstance(answer, list):
            said = f"{len(answer)} items"
        else:
            said = type(answer).__name__
        if name not in ("get", "history", "records", "lease_holders"):
            self.log(f"{caller} ledger.{name} {key} {kwargs.get('state', '')} -> {said}")
        self.checker.after_ledger(caller, name, answer)

    def _took_over(self, caller: str, key: str, holder: str) -> None:
        """``caller`` took ``key`` from ``holder``, whose lease had not run out,
        declaring it dead: that must be true (liveness fails closed)."""
        held_by = next((p for p in self.all_processes() if p.owner == holder), None)
        if held_by is None or not held_by.killed:
            self.checker.add("L", key, f"{caller} took over the running lease of live {holder}")

    # -- pauses -------------------------------------------------------------------

    def freeze(self, process: SimProcess, seconds: float, why: str) -> None:
        process.frozen_until = max(process.frozen_until, self.loop.time() + seconds)
        self.stats["freezes"] += 1
        self.log(f"{process.name} frozen {seconds:.3f}s ({why})")

    def pause_length(self, rng: random.Random) -> float:
        margin, lease = self.tuning.margin, self.tuning.lease_seconds
        if rng.random() < 0.6:
            return rng.uniform(0.0, 0.8 * margin)
        return rng.uniform(1.2 * margin, 1.5 * lease)

    def _pause_running(self, why: str) -> None:
        """Freeze the running process (the network's pause after a fence), and now
        and then step the ledger's clock meanwhile, so that another drive may take
        the row while the request is about to leave."""
        process = PROCESS.get()
        assert isinstance(process, SimProcess)
        self.freeze(process, self.pause_length(self._runtime_rng), why)
        self._worsen("pause")

    def _worsen(self, fault: str) -> None:
        """A money-moving request met ``fault``: sometimes step the ledger's clock
        soon (adversarial timing, as FoundationDB's BUGGIFY: rare faults made likely
        where they matter)."""
        rng = self._runtime_rng
        chance = self.family.worsen_on_send if fault == "ok" else self.family.worsen
        if (
            self.quiet
            or self.stats["clock_steps"] >= self.family.max_steps
            or rng.random() >= chance
        ):
            return
        lease = self.tuning.lease_seconds
        self.at_time(
            self.loop.time() + rng.uniform(0, 1), self.step_clock(rng.uniform(lease, 3 * lease))
        )

    def _before_send(self, process: SimProcess) -> Callable[[PayoutRecord], Awaitable[None]]:
        async def pause(record: PayoutRecord) -> None:
            if self.quiet or self._runtime_rng.random() >= self.family.pause_before_fence:
                return
            self.freeze(process, self.pause_length(self._runtime_rng), "before its fence")
            self._worsen("pause")
            await asyncio.sleep(0)  # resumes when the process thaws

        return pause

    # -- scheduling ---------------------------------------------------------------

    def spawn(
        self, process: SimProcess | None, at: float, label: str, action: Action
    ) -> asyncio.Task[None]:
        context = neutral_context()
        if process is not None:
            context.run(PROCESS.set, process)
        task = self.loop.create_task(self._at(at, label, action), context=context)
        self.tasks.append((process, task))
        return task

    async def _at(self, at: float, label: str, action: Action) -> None:
        await asyncio.sleep(max(0.0, at - self.loop.time()))
        try:
            await action()
        except asyncio.CancelledError:
            self.log(f"{label}: cancelled")
        except Exception as error:  # a call raised what it should not
            self.checker.add("error", label, f"{type(error).__name__}: {error}")

    def at_time(self, at: float, callback: Callable[[], None]) -> None:
        self.loop.call_at(max(at, self.loop.time()), callback, context=neutral_context())

    def payouts_of(self, process: SimProcess) -> Payouts[Any]:
        assert process.payouts is not None
        return process.payouts

    def step_clock(self, seconds: float) -> Callable[[], None]:
        def step() -> None:
            self.clocks.step_server(seconds)
            self.stats["clock_steps"] += 1
            self.log(f"ledger server clock stepped forward {seconds:.3f}s")

        return step

    # -- the run --------------------------------------------------------------------

    async def main(self) -> None:
        await self._open()
        Planner(self).draw()
        await asyncio.sleep(self.active_for)
        await self._quiet_down()
        operator = SimProcess("operator", "ops", "opsns", "opsboot", 1, 1, 0.0)
        self.operator = operator
        self._give_payouts(operator)
        context = neutral_context()
        context.run(PROCESS.set, operator)
        await self.loop.create_task(self._settle(operator), context=context)
        await self.checker.at_end(self.inner)
        await self._tear_down()

    async def _quiet_down(self) -> None:
        self.quiet = True
        self.network.faults = NO_FAULTS
        self.disrupted["*"] = self.loop.time()  # stopping workers give their rows back
        self.log("faults stop")
        for stop in self.stops:
            stop.set()
        live = [task for process, task in self.tasks if process is None or not process.killed]
        if live:
            _, pending = await asyncio.wait(live, timeout=6 * 3600.0)
            for task in pending:
                self.checker.add("L", task.get_name(), "a call did not return within 6 hours")
                task.cancel()

    async def _settle(self, operator: SimProcess) -> None:
        tuning = self.tuning
        payouts = self.payouts_of(operator)
        wait = max(tuning.grace, tuning.execute_settle) + tuning.timeout + tuning.margin
        await asyncio.sleep(tuning.lease_seconds + tuning.timeout + tuning.margin + 1.0)
        for round_ in range(8):
            for result in await payouts.resume():
                self.log(f"operator resume {result.key} -> {result.status} ({result.reason})")
            for result in await payouts.reconcile():
                self.log(f"operator reconcile {result.key} -> {result.status} ({result.reason})")
            if round_ == 2:
                for key in self.keys:
                    result = await payouts.pay(key, self.request(key))
                    self.log(f"operator pay {key} -> {result.status} ({result.reason})")
            if round_ >= 2 and await self._settled():
                return
            await asyncio.sleep(wait)

    async def _settled(self) -> bool:
        for record in await self.inner.records():
            final = record.state.is_final or record.state is LedgerState.REFUSED
            if not final and not (
                record.state is LedgerState.NEEDS_ATTENTION
                and self.provider.has_foreign(record.key)
            ):
                return False
        return True

    async def _tear_down(self) -> None:
        """Revive the killed processes and stop whatever they left running, so that
        nothing is left pending when the loop closes (their clean-up writes land after
        the checks, and change nothing that was checked)."""
        for process in self.processes:
            if process.killed:
                self.loop.revive(process)
        pending = [task for _, task in self.tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=3600.0)
        await self.inner.aclose()
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=3600.0)
        for task in rest:
            if not task.done():  # waits on a callback of a process still frozen: let it go
                task._log_destroy_pending = False  # type: ignore[attr-defined]

    def outcome(self, mutations: tuple[str, ...]) -> Outcome:
        stats = dict(self.stats)
        departures = self.network.departures
        stats.update(
            virtual_seconds=round(self.loop.time(), 3),
            requests=self.network.requests,
            money_requests=len(departures),
            late_departures=sum(
                1
                for d in departures
                if d.after_fence is not None and d.after_fence > self.tuning.margin
            ),
            ledger_calls=self.ledger.calls,
            provider=self.provider_name,
            tuning=self.tuning.name,
            deployment=self.deployment,
        )
        return Outcome(
            seed=self.seed,
            family=self.family.name,
            ledger=self.ledger_kind,
            mutations=mutations,
            violations=list(self.checker.violations),
            log=self.lines,
            stats=stats,
        )
