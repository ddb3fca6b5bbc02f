"""What a run may draw: the settings, the fault families, the processes, the outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from payout_async import Timeouts
from payout_async.payouts import Payouts
from payout_async.payouts._run import fence_margin

from .invariants import Violation
from .network import MONEY_FAULTS, Faults

__all__ = ["FAMILIES", "FOCUS", "TUNINGS", "Family", "Outcome", "SimProcess", "Tuning", "pan"]


@attrs.frozen
class Tuning:
    """The settings every ``Payouts`` of a run uses."""

    name: str
    lease_seconds: float
    timeouts: Timeouts
    grace: float
    execute_settle: float

    @property
    def margin(self) -> float:
        return fence_margin(self.lease_seconds)

    @property
    def timeout(self) -> float:
        assert self.timeouts.total is not None
        return self.timeouts.total


TUNINGS = (
    Tuning("defaults", 120.0, Timeouts(total=30.0, connect=10.0, read=30.0), 60.0, 60.0),
    # issue 23: "lease 60 / timeout 5 / grace 6"
    Tuning("tight", 60.0, Timeouts(total=5.0, connect=2.0, read=5.0), 6.0, 6.0),
)


@attrs.frozen
class Family:
    """Which faults a run may draw, and how often."""

    name: str
    faults: Faults = attrs.field(factory=lambda: Faults(money=MONEY_FAULTS))
    providers: tuple[str, ...] = ("enot", "intellectmoney")
    tunings: tuple[str, ...] = ("defaults", "tight")
    deployments: tuple[str, ...] = ("one-host", "containers", "hosts")
    modes: tuple[str, ...] = ("pay", "worker", "both")
    #: Per key: a foreign system's webhook (Enot) arrives.
    webhooks: float = 0.2
    #: Per money-moving step: the process freezes before its fence.
    pause_before_fence: float = 0.2
    #: Per money-moving fault: the ledger's clock steps forward soon after.
    worsen: float = 0.3
    #: Per money-moving request that met no fault: the same.
    worsen_on_send: float = 0.0
    #: At most this many clock steps per run (each takeover restarts the taker's wait),
    #: of which up to ``plan_steps`` at random moments, the others where money moves.
    max_steps: int = 3
    plan_steps: int = 2
    #: At least this many processes run workers (when the mode has workers).
    min_workers: int = 1
    #: What the provider does with a second create of an order_id / execute of an
    #: operation (the worst: a second payoff, a second payment).
    enot_duplicates: tuple[str, ...] = ("accept", "accept", "reject")
    im_second_executes: tuple[str, ...] = ("pay_again", "pay_again", "accept", "refuse")
    #: Chance that a payoff / execute is hidden / reads ``Created`` for a while.
    lag_chance: float = 0.5
    #: How often workers look for stranded rows (``run_worker(idle_poll=...)``).
    idle_polls: tuple[float, ...] = (5.0,)
    prune_history: bool = False
    restore: bool = False


# Slow answers after a create or execute that reached the provider late (a slow
# uplink): its payoff shows up, or its execute leaves ``Created``, only near the end
# of the window, which is when a "not found" dated by its arrival lies.
_SLOW_READS = Faults(slow=0.6, money=attrs.evolve(MONEY_FAULTS, lost_answer=0.6, slow_uplink=0.7))

FAMILIES = {
    # issue 23: workers, clocks, namespaces, pauses, slow answers, foreign webhooks
    "core": Family("core"),
    # issue 27: refusals (some of them processed) and pruned history, on top
    "history": Family(
        "history",
        Faults(money=attrs.evolve(MONEY_FAULTS, refused=0.05, refused_processed=0.2)),
        providers=("enot", "enot", "intellectmoney"),
        prune_history=True,
    ),
    # issue 27: a ledger restored from an older copy, on top
    "restore": Family("restore", restore=True),
    # One per old rule: the core faults, with what that rule mishandles made common.
    # A fence that trusts the remembered lease fails only when a drive is held up
    # between two ledger writes for longer than the taker waits: possible with the
    # tight settings (lease 60 > 2 * (timeout 5 + margin 6) + grace 6), not the defaults.
    "fence": Family(
        "fence",
        Faults(money=attrs.evolve(MONEY_FAULTS, throttled=0.5, retry_after=(30,))),
        tunings=("tight",),
        modes=("worker", "both"),
        pause_before_fence=0.5,
        worsen=0.9,
        max_steps=1,
        plan_steps=0,
        min_workers=2,
        enot_duplicates=("accept",),
        im_second_executes=("pay_again",),
    ),
    "takeover": Family(
        "takeover",
        Faults(money=attrs.evolve(MONEY_FAULTS, post_fence_pause=0.3, slow_uplink=0.4)),
        modes=("worker", "both"),
        worsen=0.9,
        worsen_on_send=0.5,
        max_steps=6,
        tunings=("tight",),
        enot_duplicates=("accept",),
        im_second_executes=("pay_again",),
        lag_chance=1.0,
        idle_polls=(1.0,),
    ),
    # The defaults: there a slow answer (up to 95% of the 30 s timeout) can outlast the
    # 12 s margin a lost answer is waited out with; with the tight settings (timeout
    # 5 s, margin 6 s) it cannot, and arrival-dated evidence happens to be safe.
    "evidence": Family(
        "evidence",
        _SLOW_READS,
        tunings=("defaults",),
        webhooks=0.0,
        lag_chance=1.0,
        enot_duplicates=("accept",),
        im_second_executes=("pay_again",),
    ),
    "liveness": Family("liveness", deployments=("containers",), modes=("worker", "both")),
    # Reads answered about another payoff or operation (a cache keyed on the path alone),
    # IntellectMoney creates answered as another's was (a gateway replaying POST answers)
    "answers": Family("answers", Faults(foreign=0.2)),
    "webhook": Family("webhook", providers=("enot",), webhooks=1.0),
}

#: The family that makes each mutation's mistake likely.
FOCUS = {
    "old-fence": "fence",
    "old-takeover": "takeover",
    "old-evidence": "evidence",
    "old-liveness": "liveness",
    "old-webhook": "webhook",
    "old-answers": "answers",
    "old-operations": "answers",
}


@attrs.define(eq=False)
class SimProcess:
    """One simulated OS process running one ``Payouts``."""

    name: str
    host: str
    pidns: str
    boot: str
    pid: int
    start: int
    mono_offset: float
    killed: bool = False
    frozen_until: float = 0.0
    parked: list[asyncio.Handle] = attrs.field(factory=list)
    payouts: Payouts[Any] | None = None

    @property
    def owner(self) -> str:
        """Today's owner format, ``host:pid:start:nonce``."""
        return f"{self.host}:{self.pid}:{self.start}:{self.name}"


@attrs.define
class Outcome:
    """What one run did and found."""

    seed: int
    family: str
    ledger: str
    mutations: tuple[str, ...]
    violations: list[Violation]
    log: list[str]
    stats: dict[str, Any]

    @property
    def failures(self) -> list[Violation]:
        return [violation for violation in self.violations if violation.excused is None]

    @property
    def replay(self) -> str:
        """The one-line command that replays this run."""
        command = (
            f"python benchmarks/simulate.py --replay {self.seed} --family {self.family} "
            f"--ledger {self.ledger}"
        )
        return command + "".join(f" --mutation {name}" for name in self.mutations)


def pan(index: int) -> str:
    """A Luhn-valid card number, one per key (the IntellectMoney books tell keys apart
    by it)."""
    body = f"4000001234{index:05d}"
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return body + str((10 - total % 10) % 10)
