"""An exhaustive explicit-state model check of the abstract Enot payout protocol.

Run it: ``python -m tests.protocol.model [--rules new|old-fence|...] [--bound N]``.
``docs/protocol.md`` states the protocol; this module checks its abstract form.

What is modelled, for ONE payout key (Enot flow: create by ``order_id``, then poll):

* two drives, A and B (processes with a worker or ``pay()``/``resume()``), interleaved
  in every order; a drive may pause at any step for any time -- except between a
  confirmed fence write and its create leaving: at most ``margin`` ticks (the admitted
  assumption A2). A drive may crash (it restarts with a new owner identity; its lease
  stays until it expires) or be cancelled (it gives its lease back);
* the ledger row: state, holder (stands for owner + fencing token: a drive's token is
  current iff it is the holder), lease time left on the LEDGER's clock, attempts;
  every write is conditional on the token (``transition``/``renew``); the ledger's
  clock may step forward (every lease then reads expired);
* Enot: a create is processed at most ``timeout`` ticks after it left, or never (A1);
  a second create with the same ``order_id`` is accepted (a second payoff = paid
  twice); a payoff may stay hidden from ``payoff/info`` for up to ``grace`` ticks (A3);
  the answer of a create may be lost, late, an early disconnect (the request still in
  flight) or a 408/422 "refusal" (with the payoff created, or the request still in
  flight: issue 27 item 3); a lookup reads the provider's state when Enot processes
  it, and its answer reaches the drive later;
* webhooks: our payoff's, and a FOREIGN one (another system's payoff with our
  ``order_id`` and another amount), any number of times, at any time;
* a liveness oracle (``owner_is_dead``): right about crashed holders; with the
  ``wrong-oracle`` / ``old-liveness`` rules it also calls a live holder dead.

Time: discrete ticks. Every duration is a countdown (lease left, evidence window left,
pause left, request time left, payoff hidden for), so the state space is finite and the
search is exhaustive without a tick bound; each drive's monotonic clock runs at real
rate (only its own differences count, so its offset is irrelevant). The bound is
structural: at most ``max_attempts`` creates, ``clock_steps`` clock steps, ``crashes``
crashes and ``cancels`` cancellations (``--bound N`` also cuts paths at N steps).

Checked: S1 (at most one payoff of ours exists) and S2 (a row marked succeeded has a
payoff of ours behind it) in every state. L (liveness) in two parts, both over the
full graph: (a) from every reachable state a state is reachable where the row is final
or parked with a reason (``needs_attention``, ``refused``), and (b) no reachable cycle
of non-final states contains both a tick and a takeover of a live lease (drives taking
each other's row forever, issue 23 finding 3). A cycle in which a lease merely expires
is not counted: that needs a live holder to skip its heartbeat for a whole lease
(assumption A6), and a cycle that does nothing is not weakly fair to the drives.

States are stored up to exchanging A and B (the model is symmetric in them); a
counterexample is replayed on concrete states before it is printed. With the defaults
(timeout 2, margin 1, grace 2, lease 4 ticks) the new rules' search visits about
2 x 10^5 states. Each mutation alone yields a counterexample without crash or
cancellation; ``old-fence`` and ``old-takeover`` need the ledger clock step (an
environment fault, not another old rule).

Abstracted away: amounts/recipients (a payoff is ours or foreign), payoff failure
(every payoff of ours succeeds at once: the worst case for S1), 429 retries (a retry is
the same fence + send as the first create), "not sent" errors (nothing reached Enot),
``lookup_before_create`` on a brand-new row, the IntellectMoney flow, ``reconcile()``
of ``needs_attention`` rows, and the ``pay()``/``resume()`` race inside one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MUTATIONS",
    "Config",
    "Result",
    "Violation",
    "check",
    "main",
]

#: Rule mutations: each substitutes an old rule (or an environment fault) for a new one.
MUTATIONS: dict[str, str] = {
    "old-fence": "fence from the drive's remembered lease end; a lost heartbeat is ignored",
    "old-evidence": "'not found' counts from when its answer arrived, not when it was asked",
    "old-webhook": "a webhook settles any non-final row by order_id alone",
    "old-liveness": "the oracle calls a live holder dead, and its taker skips the wait",
    "old-takeover": "a taker waits only the previous lease's remainder (ledger clock)",
    "old-refusal": "one immediate lookup after a refusal, then create without a lookup",
    "error-dated": "a lost answer's window counts from the error, not the request deadline",
    "wrong-oracle": "the oracle calls a live holder dead (the taker still waits)",
}

# Row states (``failed``/``cancelled`` are not reached: every payoff of ours succeeds).
PENDING, SENDING, PROCESSING, SUCCEEDED, NEEDS_ATTENTION, REFUSED = range(6)
ROW_NAMES = ("pending", "sending", "processing", "succeeded", "needs_attention", "refused")
#: Final, or parked with a reason: L asks that every row reaches one of these.
SETTLED = frozenset({SUCCEEDED, NEEDS_ATTENTION, REFUSED})
CLAIMABLE = frozenset({PENDING, SENDING, PROCESSING, REFUSED})

# A drive's program counter.
IDLE, CREATE, FENCE, PAUSE, WAIT, RECONCILE, LOOKUP, POLL, POLL_LOOKUP, REFUSAL_LOOKUP = range(10)

# A create in flight (``WAIT``): not processed yet / payoff created / never processed.
INFLIGHT, CREATED, DROPPED = 1, 2, 3
# A lookup's answer: none yet / found / not found / no answer (error, retried).
FOUND, NOT_FOUND, LOOKUP_ERROR = 1, 2, 3

# State layout: a flat tuple.
ROW, HOLDER, LEASE, ATTEMPTS, UNKNOWN, PAYOFFS, ORPHANS, STEPS, CRASHES, CANCELS = range(10)
DRIVES = 10  # drive i's tuple is at DRIVES + i
# A drive: owner incarnation, pc, remembered lease left, evidence window left, pause
# left, create time left, create status, lookup time left, lookup answer, lookup sent
# after the window had passed.
INC, PC, LOCAL, WAIT_LEFT, PAUSE_LEFT, REQ_T, REQ_P, LK_T, LK_R, LK_READY = range(10)
IDLE_DRIVE = (0, IDLE, 0, 0, 0, 0, 0, 0, 0, 0)

# Edge kinds, for the liveness analysis.
PLAIN, TICK, LIVE_TAKEOVER = 0, 1, 2

State = tuple[Any, ...]  # the flat layout above: ints, and tuples of ints
Drive = tuple[int, ...]
Label = tuple[str, int, int]  # (what happened, who: drive index or -1, an argument)
Edge = tuple[Label, State, int]
Step = tuple[Label, State, State]  # what happened, the state before, the state after


@dataclass(frozen=True)
class Config:
    """The rules in force (``MUTATIONS`` substituted) and the durations, in ticks."""

    rules: frozenset[str] = frozenset()
    timeout: int = 2  # Timeouts.total: the longest a request is in flight once sent
    margin: int = 1  # fence_margin: the longest pause from fence write to request leaving
    grace: int = 2  # Enot: the longest a created payoff stays hidden from lookups
    lease: int = 4  # lease_seconds (the fence extends it to max(lease, timeout + margin))
    lookup_time: int = 1  # the longest a lookup waits to be processed (then: no answer)
    #: The world's real bounds, to break an assumption on purpose: the longest pause
    #: after a fence write (A2; None: ``margin``) and the longest a payoff stays hidden
    #: (A3; None: ``grace``).
    pause: int | None = None
    lag: int | None = None
    max_attempts: int = 2
    clock_steps: int = 1
    crashes: int = 1
    cancels: int = 1
    bound: int | None = None  # cut paths at this many steps (None: exhaustive)

    def has(self, rule: str) -> bool:
        return rule in self.rules

    @property
    def max_pause(self) -> int:
        return self.margin if self.pause is None else self.pause

    @property
    def max_lag(self) -> int:
        return self.grace if self.lag is None else self.lag


@dataclass
class Violation:
    """A broken invariant and the steps that reach it (and, for L, how it loops)."""

    invariant: str
    message: str
    steps: list[str]
    loop: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.invariant} violated: {self.message}"]
        lines += [f"  {n}. {step}" for n, step in enumerate(self.steps, 1)]
        if self.loop:
            lines.append("  then forever:")
            lines += [f"  {n}. {step}" for n, step in enumerate(self.loop, len(self.steps) + 1)]
        return "\n".join(lines)


@dataclass
class Result:
    config: Config
    states: int
    edges: int
    seconds: float
    violations: list[Violation]
    liveness_checked: bool

    def summary(self) -> str:
        rules = ",".join(sorted(self.config.rules)) or "new"
        verdict = "no violation" if not self.violations else "VIOLATION"
        live = "" if self.liveness_checked else " (liveness not checked)"
        return (
            f"rules={rules}: {self.states} states, {self.edges} transitions explored in "
            f"{self.seconds:.1f}s: {verdict}{live}"
        )


def initial(cfg: Config) -> State:
    """An enqueued row (pending, nothing sent, no lease) and two idle drives."""
    row = (PENDING, 0, 0, 0, 0, (), (), cfg.clock_steps, cfg.crashes, cfg.cancels)
    return (*row, IDLE_DRIVE, IDLE_DRIVE)


def owner(i: int, d: Drive) -> int:
    """The holder value that means "drive i, this incarnation" (0 is nobody)."""
    return 1 + 2 * i + d[INC]


def _with(s: State, i: int, d: Drive) -> State:
    return (*s[: DRIVES + i], d, *s[DRIVES + i + 1 :])


def _norm(cfg: Config, d: list[int]) -> Drive:
    """Zero the fields that mean nothing at this pc, so equal situations hash equal."""
    pc = d[PC]
    if not cfg.has("old-fence") or pc == IDLE:
        d[LOCAL] = 0
    if pc not in (RECONCILE, LOOKUP):
        d[WAIT_LEFT] = 0
    if pc != PAUSE:
        d[PAUSE_LEFT] = 0
    if pc != WAIT:
        d[REQ_T] = d[REQ_P] = 0
    if pc not in (LOOKUP, POLL_LOOKUP, REFUSAL_LOOKUP):
        d[LK_T] = d[LK_R] = d[LK_READY] = 0
    elif d[LK_R]:
        d[LK_T] = 0
    if pc != LOOKUP:
        d[LK_READY] = 0
    return tuple(d)


def _drive(cfg: Config, d: Drive, **changes: int) -> Drive:
    fields = list(d)
    for name, value in changes.items():
        fields[_FIELD[name]] = value
    return _norm(cfg, fields)


_FIELD = {
    "inc": INC,
    "pc": PC,
    "local": LOCAL,
    "wait": WAIT_LEFT,
    "pause": PAUSE_LEFT,
    "req_t": REQ_T,
    "req_p": REQ_P,
    "lk_t": LK_T,
    "lk_r": LK_R,
    "lk_ready": LK_READY,
}


def _orphan(s: list[Any], d: Drive) -> None:
    """A create still in flight whose sender stopped waiting for it stays in flight."""
    if d[PC] == WAIT and d[REQ_P] == INFLIGHT:
        s[ORPHANS] = tuple(sorted((*s[ORPHANS], d[REQ_T])))


def _write(
    cfg: Config,
    s: State,
    i: int,
    row: int | None = None,
    *,
    attempt: bool = False,
    unknown: bool = False,
    release: bool = False,
    **then: int,
) -> State:
    """A ledger write by drive i, conditional on its token; it renews the lease (or
    ends it: ``release`` or a settled state). A refused write ends the drive."""
    d = s[DRIVES + i]
    if s[HOLDER] != owner(i, d):
        return _with(s, i, _drive(cfg, d, pc=IDLE))
    new = list(s)
    if row is not None:
        new[ROW] = row
    if attempt:
        new[ATTEMPTS] += 1
    if unknown and cfg.has("old-refusal"):
        new[UNKNOWN] = 1
    if release or new[ROW] in SETTLED:
        new[HOLDER], new[LEASE] = 0, 0
        then = {"pc": IDLE}
    else:
        new[LEASE] = max(cfg.lease, cfg.timeout + cfg.margin)
        then = {"local": cfg.lease, **then}
    return _with(tuple(new), i, _drive(cfg, d, **then))


def _unknown(cfg: Config, s: State, i: int) -> State:
    """Drive i's create has an unknown outcome: the row says so, and the drive looks
    the order_id up once the window has passed: ``grace`` after the request's deadline
    (``error-dated``: after the error)."""
    d = s[DRIVES + i]
    left = 0 if cfg.has("error-dated") else d[REQ_T]
    new = list(s)
    _orphan(new, d)
    return _write(cfg, tuple(new), i, SENDING, unknown=True, pc=RECONCILE, wait=left + cfg.grace)


def _visible(s: State) -> bool:
    return any(h == 0 for h in s[PAYOFFS])


def successors(cfg: Config, s: State) -> Iterator[Edge]:
    """Every step possible from ``s``: the environment's, then each drive's."""
    yield from _environment(cfg, s)
    for i in (0, 1):
        yield from _drive_steps(cfg, s, i)


def _environment(cfg: Config, s: State) -> Iterator[Edge]:
    drives = (s[DRIVES], s[DRIVES + 1])
    if all(not (d[PC] == PAUSE and d[PAUSE_LEFT] == 0) for d in drives):
        yield ("tick", -1, 0), _tick(cfg, s), TICK
    if s[STEPS] and s[LEASE]:
        new = list(s)
        new[STEPS] -= 1
        new[LEASE] = 0
        yield ("step", -1, 0), tuple(new), PLAIN
    for i, d in enumerate(drives):
        if d[PC] == WAIT and d[REQ_P] == INFLIGHT:
            for hidden in range(cfg.max_lag + 1):
                new = list(s)
                new[PAYOFFS] = tuple(sorted((*s[PAYOFFS], hidden)))
                new[DRIVES + i] = _drive(cfg, d, req_p=CREATED)
                yield ("process", i, hidden), tuple(new), PLAIN
        if d[PC] in (LOOKUP, POLL_LOOKUP, REFUSAL_LOOKUP) and not d[LK_R]:
            answer = FOUND if _visible(s) else NOT_FOUND
            yield ("answer", i, answer), _with(s, i, _drive(cfg, d, lk_r=answer)), PLAIN
    for j, left in enumerate(s[ORPHANS]):
        if j and s[ORPHANS][j - 1] == left:
            continue  # the same orphan twice: one step suffices
        for hidden in range(cfg.max_lag + 1):
            new = list(s)
            new[ORPHANS] = s[ORPHANS][:j] + s[ORPHANS][j + 1 :]
            new[PAYOFFS] = tuple(sorted((*s[PAYOFFS], hidden)))
            yield ("orphan", -1, hidden), tuple(new), PLAIN
    if s[PAYOFFS] and s[ROW] != SUCCEEDED and (s[ATTEMPTS] or cfg.has("old-webhook")):
        yield ("webhook", -1, 0), _settle(s), PLAIN
    if s[ROW] != SUCCEEDED and cfg.has("old-webhook"):
        yield ("foreign", -1, 0), _settle(s), PLAIN
    # New rules: a foreign webhook never matches (another amount): recorded, no change.


def _settle(s: State) -> State:
    new = list(s)
    new[ROW], new[HOLDER], new[LEASE] = SUCCEEDED, 0, 0
    return tuple(new)


def _tick(cfg: Config, s: State) -> State:
    new = list(s)
    new[LEASE] = max(0, s[LEASE] - 1)
    new[PAYOFFS] = tuple(max(0, h - 1) for h in s[PAYOFFS])
    new[ORPHANS] = tuple(t - 1 for t in s[ORPHANS] if t)  # unprocessed by now: never
    for i in (0, 1):
        d = list(s[DRIVES + i])
        d[LOCAL] = max(0, d[LOCAL] - 1)
        d[WAIT_LEFT] = max(0, d[WAIT_LEFT] - 1)
        d[PAUSE_LEFT] = max(0, d[PAUSE_LEFT] - 1)
        if d[PC] == WAIT:
            if d[REQ_P] == INFLIGHT and d[REQ_T] == 0:
                d[REQ_P] = DROPPED
            d[REQ_T] = max(0, d[REQ_T] - 1)
        if d[PC] in (LOOKUP, POLL_LOOKUP, REFUSAL_LOOKUP) and not d[LK_R]:
            if d[LK_T] == 0:
                d[LK_R] = LOOKUP_ERROR
            d[LK_T] = max(0, d[LK_T] - 1)
        new[DRIVES + i] = _norm(cfg, d)
    return tuple(new)


def _drive_steps(cfg: Config, s: State, i: int) -> Iterator[Edge]:
    d = s[DRIVES + i]
    pc = d[PC]
    me = owner(i, d)
    if pc == IDLE:
        yield from _claims(cfg, s, i)
        return
    holds = s[HOLDER] == me
    # Heartbeat: renew the lease (a no-op write is not a step). A drive that learns
    # its lease is gone stops (old-fence: the heartbeat swallows that).
    if holds and (s[LEASE] < cfg.lease or (cfg.has("old-fence") and d[LOCAL] < cfg.lease)):
        yield ("renew", i, 0), _write(cfg, s, i), PLAIN
    elif not holds and not cfg.has("old-fence"):
        yield ("renew-lost", i, 0), _with(s, i, _drive(cfg, d, pc=IDLE)), PLAIN
    if s[CRASHES]:
        new = list(s)
        new[CRASHES] -= 1
        _orphan(new, d)
        new[DRIVES + i] = _drive(cfg, d, inc=d[INC] + 1, pc=IDLE)
        yield ("crash", i, 0), tuple(new), PLAIN
    if s[CANCELS]:
        new = list(s)
        new[CANCELS] -= 1
        _orphan(new, d)
        if holds:
            new[HOLDER], new[LEASE] = 0, 0
        new[DRIVES + i] = _drive(cfg, d, pc=IDLE)
        yield ("cancel", i, 0), tuple(new), PLAIN
    yield from _program(cfg, s, i, d)


def _claims(cfg: Config, s: State, i: int) -> Iterator[Edge]:
    """``begin``/``claim_stranded``: a free or expired lease, or one whose holder the
    oracle calls dead (a crashed incarnation; any other holder with a wrong oracle)."""
    d = s[DRIVES + i]
    if s[ROW] not in CLAIMABLE:
        return
    holder, lease = s[HOLDER], s[LEASE]
    live = holder != 0 and lease > 0
    if live:
        other = (holder - 1) // 2
        crashed = (holder - 1) % 2 < s[DRIVES + other][INC]
        wrong = cfg.has("wrong-oracle") or cfg.has("old-liveness")
        if not crashed and not wrong:
            return
    if live and cfg.has("old-liveness"):
        quiet = 0  # "the holder is dead: nothing of it can be in flight"
    elif cfg.has("old-takeover"):
        quiet = lease if holder else 0
    else:
        quiet = cfg.timeout + cfg.margin
    row = s[ROW]
    if row == PENDING:
        pc = CREATE
    elif row == SENDING:
        pc = RECONCILE
    elif row == PROCESSING:
        pc = POLL
    else:  # refused, sent again: old rule at once; new rule after the grace and lookup
        pc, row = (CREATE, PENDING) if cfg.has("old-refusal") else (RECONCILE, SENDING)
    new = list(s)
    new[ROW], new[HOLDER], new[LEASE] = row, owner(i, d), cfg.lease
    d2 = _drive(cfg, d, pc=pc, local=cfg.lease, wait=quiet + cfg.grace)
    new[DRIVES + i] = d2
    yield ("claim", i, int(live)), tuple(new), LIVE_TAKEOVER if live else PLAIN


def _program(cfg: Config, s: State, i: int, d: Drive) -> Iterator[Edge]:
    pc = d[PC]
    if pc == CREATE:
        if s[ATTEMPTS] >= cfg.max_attempts:
            yield ("give-up", i, 0), _write(cfg, s, i, NEEDS_ATTENTION, release=True), PLAIN
        else:
            yield ("attempt", i, 0), _write(cfg, s, i, SENDING, attempt=True, pc=FENCE), PLAIN
    elif pc == FENCE:
        if cfg.has("old-fence") and d[LOCAL] >= cfg.timeout + cfg.margin:
            fenced = _with(s, i, _drive(cfg, d, pc=PAUSE, pause=cfg.max_pause))
            yield ("fence-local", i, d[LOCAL]), fenced, PLAIN
        else:
            yield ("fence", i, 0), _write(cfg, s, i, pc=PAUSE, pause=cfg.max_pause), PLAIN
    elif pc == PAUSE:
        sent = _with(s, i, _drive(cfg, d, pc=WAIT, req_t=cfg.timeout, req_p=INFLIGHT))
        yield ("send", i, 0), sent, PLAIN
    elif pc == WAIT:
        yield from _create_answers(cfg, s, i, d)
    elif pc in (RECONCILE, POLL):
        target = LOOKUP if pc == RECONCILE else POLL_LOOKUP
        ready = int(d[WAIT_LEFT] == 0)
        asked = _drive(cfg, d, pc=target, lk_t=cfg.lookup_time, lk_r=0, lk_ready=ready)
        yield ("lookup", i, ready if pc == RECONCILE else -1), _with(s, i, asked), PLAIN
    elif d[LK_R]:
        yield from _lookup_answers(cfg, s, i, d)


def _create_answers(cfg: Config, s: State, i: int, d: Drive) -> Iterator[Edge]:
    if d[REQ_P] == CREATED:
        yield ("created", i, 0), _write(cfg, s, i, PROCESSING, pc=POLL), PLAIN
    if d[REQ_T] == 0:
        yield ("timeout", i, 0), _unknown(cfg, s, i), PLAIN
        return
    yield ("lost", i, d[REQ_T]), _unknown(cfg, s, i), PLAIN
    if d[REQ_P] in (INFLIGHT, CREATED):
        if not cfg.has("old-refusal") or s[UNKNOWN]:
            yield ("refusal", i, 0), _unknown(cfg, s, i), PLAIN
        else:  # old: one immediate lookup; the request may still be in flight
            new = list(s)
            _orphan(new, d)
            asked = _drive(cfg, d, pc=REFUSAL_LOOKUP, lk_t=cfg.lookup_time, lk_r=0)
            yield ("refusal-lookup", i, 0), _with(tuple(new), i, asked), PLAIN


def _lookup_answers(cfg: Config, s: State, i: int, d: Drive) -> Iterator[Edge]:
    pc, answer = d[PC], d[LK_R]
    if answer == FOUND:
        yield ("found", i, 0), _write(cfg, s, i, SUCCEEDED), PLAIN
    elif pc == POLL_LOOKUP:
        yield ("poll-again", i, answer), _with(s, i, _drive(cfg, d, pc=POLL)), PLAIN
    elif pc == REFUSAL_LOOKUP:
        if answer == NOT_FOUND:
            yield ("refused", i, 0), _write(cfg, s, i, REFUSED, release=True), PLAIN
        else:
            new = _write(cfg, s, i, SENDING, unknown=True, pc=RECONCILE, wait=cfg.grace)
            yield ("refusal-unknown", i, 0), new, PLAIN
    else:
        counts = d[WAIT_LEFT] == 0 if cfg.has("old-evidence") else bool(d[LK_READY])
        if answer == NOT_FOUND and counts:
            yield ("not-found-final", i, 0), _write(cfg, s, i, PENDING, pc=CREATE), PLAIN
        else:
            back = _drive(cfg, d, pc=RECONCILE)
            yield ("not-yet", i, answer), _with(s, i, back), PLAIN


def safety(s: State) -> tuple[str, str] | None:
    """The invariant ``s`` breaks (S1, S2), or None."""
    if len(s[PAYOFFS]) > 1:
        return "S1", f"{len(s[PAYOFFS])} payoffs exist for one order_id: paid twice"
    if s[ROW] == SUCCEEDED and not s[PAYOFFS]:
        return "S2", "the row is succeeded but no payoff of ours exists"
    return None


# --- the search ----------------------------------------------------------------------


def _swap(s: State) -> State:
    """``s`` with the names A and B exchanged (the model is symmetric in them)."""
    holder = s[HOLDER]
    if holder:
        holder = holder + 2 if holder <= 2 else holder - 2
    return (*s[:HOLDER], holder, *s[HOLDER + 1 : DRIVES], s[DRIVES + 1], s[DRIVES])


def canonical(s: State) -> State:
    """One representative of ``s`` and its mirror image (symmetry reduction)."""
    mirror = _swap(s)
    return mirror if mirror < s else s


class _Graph:
    """Every reachable state (up to exchanging A and B), numbered in BFS order, with
    its successors (flat arrays) and the state that first reached it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.states: list[State] = []
        self.index: dict[State, int] = {}
        self.parent = array("i")
        self.start = array("i")  # successors of state k: succ[start[k]:start[k+1]]
        self.succ = array("i")
        self.kind = array("b")

    def add(self, s: State, parent: int) -> tuple[int, bool]:
        known = self.index.get(s)
        if known is not None:
            return known, False
        k = len(self.states)
        self.index[s] = k
        self.states.append(s)
        self.parent.append(parent)
        return k, True

    def trail(self, k: int) -> list[int]:
        """The states from the initial one to ``k``, first-reaching edges."""
        trail = [k]
        while self.parent[k] >= 0:
            k = self.parent[k]
            trail.append(k)
        return trail[::-1]

    def edges(self, k: int) -> Iterator[tuple[int, int]]:
        for e in range(self.start[k], self.start[k + 1]):
            yield self.succ[e], self.kind[e]

    def lift(self, at: State, trail: Sequence[int]) -> tuple[list[Step], State]:
        """The concrete steps from ``at`` through the (canonical) states ``trail``."""
        steps: list[Step] = []
        for k in trail:
            target = self.states[k]
            label, after = next(
                (label, t) for label, t, _ in successors(self.cfg, at) if canonical(t) == target
            )
            steps.append((label, at, after))
            at = after
        return steps, at


def check(cfg: Config) -> Result:
    """Explore every state reachable under ``cfg``; check S1 and S2 in each, then L."""
    began = time.perf_counter()
    g = _Graph(cfg)
    g.add(canonical(initial(cfg)), -1)
    depth = array("i", [0])
    violations: list[Violation] = []
    k = 0
    while k < len(g.states):
        g.start.append(len(g.succ))
        s = g.states[k]
        if cfg.bound is None or depth[k] < cfg.bound:
            for _, t, kind in successors(cfg, s):
                j, new = g.add(canonical(t), k)
                g.succ.append(j)
                g.kind.append(kind)
                if not new:
                    continue
                depth.append(depth[k] + 1)
                broken = safety(t)
                if broken is not None:
                    steps, _ = g.lift(initial(cfg), g.trail(j)[1:])
                    violations.append(Violation(*broken, steps=_describe(steps)))
                    break
        if violations:
            break
        k += 1
    g.start.append(len(g.succ))
    live = not violations and cfg.bound is None
    if live:
        violations += _liveness(g)
    return Result(cfg, len(g.states), len(g.succ), time.perf_counter() - began, violations, live)


def _liveness(g: _Graph) -> list[Violation]:
    """L (a): every state can reach a settled row; L (b): no fair takeover cycle."""
    n = len(g.states)
    settled = [g.states[k][ROW] in SETTLED for k in range(n)]
    counts = array("i", bytes(4 * (n + 1)))
    for j in g.succ:
        counts[j + 1] += 1
    for j in range(n):
        counts[j + 1] += counts[j]
    fill = array("i", counts)
    preds = array("i", bytes(4 * len(g.succ)))
    for k in range(n):
        for e in range(g.start[k], g.start[k + 1]):
            j = g.succ[e]
            preds[fill[j]] = k
            fill[j] += 1
    can = bytearray(n)
    todo = deque(k for k in range(n) if settled[k])
    for k in todo:
        can[k] = 1
    while todo:
        j = todo.popleft()
        for e in range(counts[j], counts[j + 1]):
            k = preds[e]
            if not can[k]:
                can[k] = 1
                todo.append(k)
    for k in range(n):
        if not can[k]:
            steps, _ = g.lift(initial(g.cfg), g.trail(k)[1:])
            message = "from here no row state is ever settled"
            return [Violation("L", message, _describe(steps))]
    cycle = _takeover_cycle(g, settled)
    if cycle is None:
        return []
    k, loop = cycle
    steps, at = g.lift(initial(g.cfg), g.trail(k)[1:])
    around, end = g.lift(at, loop)
    message = "drives take each other's row forever; it is never settled"
    lines = _describe(steps + around)[len(steps) :]
    if end != at:
        lines.append("(back where the loop began, with A and B exchanged)")
    return [Violation("L", message, _describe(steps), lines)]


def _takeover_cycle(g: _Graph, settled: Sequence[bool]) -> tuple[int, list[int]] | None:
    """A reachable cycle of unsettled states with a tick and a live takeover in it
    (iterative Tarjan over the unsettled states): its entry state and the states
    around it, back to the entry (or to its mirror image)."""
    n = len(g.states)
    index = array("i", [-1]) * n
    low = array("i", [0]) * n
    comp = array("i", [-1]) * n
    on = bytearray(n)
    stack: list[int] = []
    counter = 0
    ncomp = 0
    for root in range(n):
        if index[root] >= 0 or settled[root]:
            continue
        work = [(root, g.start[root])]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on[root] = 1
        while work:
            v, e = work[-1]
            if e < g.start[v + 1]:
                work[-1] = (v, e + 1)
                w = g.succ[e]
                if settled[w]:
                    continue
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on[w] = 1
                    work.append((w, g.start[w]))
                elif on[w]:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on[w] = 0
                    comp[w] = ncomp
                    if w == v:
                        break
                ncomp += 1
    ticks: dict[int, tuple[int, int]] = {}
    takeovers: dict[int, tuple[int, int]] = {}
    for v in range(n):
        if comp[v] < 0:
            continue
        for w, kind in g.edges(v):
            if comp[w] == comp[v] and kind != PLAIN:
                (ticks if kind == TICK else takeovers).setdefault(comp[v], (v, w))
    for c, (tv, tw) in takeovers.items():
        if c in ticks:
            kv, kw = ticks[c]
            loop = [tw, *_within(g, comp, tw, kv), kw, *_within(g, comp, kw, tv)]
            return tv, loop
    return None


def _within(g: _Graph, comp: Sequence[int], a: int, b: int) -> list[int]:
    """The states after ``a`` on a shortest path a -> b inside a's component."""
    if a == b:
        return []
    back = {a: -1}
    todo = deque([a])
    while todo:
        v = todo.popleft()
        for w, _ in g.edges(v):
            if comp[w] == comp[a] and w not in back:
                back[w] = v
                if w == b:
                    path = []
                    while w != a:
                        path.append(w)
                        w = back[w]
                    return path[::-1]
                todo.append(w)
    raise AssertionError("a component is strongly connected")


# --- counterexamples in words ----------------------------------------------------------


def _describe(steps: Sequence[Step]) -> list[str]:
    """One line per step; claims are numbered as the ledger's fencing tokens."""
    lines = []
    token = 0
    for label, before, after in steps:
        if label[0] == "claim":
            token += 1
        lines.append(_say(label, before, after, token))
    return lines


#: Drive steps that write to the ledger (conditional on the drive's token).
_WRITES = frozenset(
    {"attempt", "give-up", "fence", "created", "timeout", "lost", "refusal", "found"}
    | {"not-found-final", "refused", "renew", "refusal-unknown"}
)


def _say(label: Label, before: State, after: State, token: int) -> str:
    what, i, arg = label
    if i < 0 or what in ("process", "answer"):
        return _say_environment(label, after)
    x = "AB"[i]
    if what in _WRITES and before[HOLDER] != owner(i, before[DRIVES + i]):
        return f"{x} tries to write ({what}): its token no longer holds the row; {x} stops"
    d = after[DRIVES + i]
    row = ROW_NAMES[after[ROW]]
    if what == "claim":
        dead = " from a live holder it judges dead" if arg else ""
        window = f"; its evidence window ends in {d[WAIT_LEFT]}" if d[PC] == RECONCILE else ""
        return f"{x} claims the row (token {token}, {row}, lease {after[LEASE]}){dead}{window}"
    if what == "lookup":
        when = "" if arg < 0 else " (its window has passed)" if arg else " (inside its window)"
        return f"{x} sends a lookup by order_id{when}"
    if what == "not-yet":
        seen = "not found" if arg == NOT_FOUND else "no answer"
        return f"{x} reads {seen}: does not count yet, will look again"
    texts = {
        "give-up": f"{x} gives up after {before[ATTEMPTS]} creates: row needs_attention",
        "attempt": f"{x} records a create attempt: row sending, attempts {after[ATTEMPTS]}",
        "fence": f"{x}'s fence write succeeds on the ledger (lease {after[LEASE]})",
        "fence-local": f"{x}'s fence passes on its remembered lease end ({arg} left), "
        "asking the ledger nothing",
        "send": f"{x}'s create leaves",
        "created": f"{x} receives 'created': row processing",
        "timeout": f"{x}'s create times out: outcome unknown, row sending",
        "lost": f"{x}'s create answer is lost {arg} before its timeout (the request may "
        "still be in flight)",
        "refusal": f"{x}'s create is answered 408/422: an unknown outcome",
        "refusal-lookup": f"{x}'s create is answered 408/422; {x} looks the order_id up at once",
        "refusal-unknown": f"{x}'s lookup after the refusal fails: outcome unknown",
        "refused": f"{x} reads 'not found': row refused (the key may be paid again)",
        "renew": f"{x}'s heartbeat renews its lease",
        "renew-lost": f"{x}'s heartbeat learns its lease is gone: {x} stops",
        "crash": f"{x} crashes (its lease stays; it restarts under a new owner)",
        "cancel": f"{x}'s pay() is cancelled: it gives its lease back",
        "found": f"{x} reads 'found': row {row}",
        "poll-again": f"{x} reads no payoff yet; polls again",
        "not-found-final": f"{x} reads 'not found' and counts it: row pending, create again",
    }
    return texts.get(what, f"{x}: {what}")


def _say_environment(label: Label, after: State) -> str:
    what, i, arg = label
    x = "AB"[i] if i >= 0 else ""
    row = ROW_NAMES[after[ROW]]
    texts = {
        "tick": "1 tick passes",
        "step": "the ledger server's clock steps forward: the lease reads expired",
        "process": f"Enot processes {x}'s create: a payoff exists, hidden from lookups for {arg}",
        "orphan": f"Enot processes a create still in flight: a payoff, hidden for {arg}",
        "answer": f"Enot reads its state for {x}'s lookup: "
        + ("found" if arg == FOUND else "not found"),
        "webhook": f"our payoff's webhook arrives: row {row}",
        "foreign": f"a FOREIGN webhook (another system's payoff, our order_id) arrives: row {row}",
    }
    return texts[what]


# --- command line ----------------------------------------------------------------------


def parse_rules(text: str) -> frozenset[str]:
    names = {part.strip() for part in text.split(",") if part.strip()} - {"new"}
    unknown = names - set(MUTATIONS)
    if unknown:
        raise SystemExit(f"unknown rules {sorted(unknown)}; known: new, {', '.join(MUTATIONS)}")
    return frozenset(names)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the rules named (default: the new ones); exit 1 on any violation."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.protocol.model",
        description="Exhaustive model check of the abstract payout protocol (issue 23).",
    )
    parser.add_argument(
        "--rules",
        action="append",
        help="'new', or mutations joined by ',' (repeat to check several): "
        + "; ".join(f"{name}: {what}" for name, what in MUTATIONS.items()),
    )
    parser.add_argument("--bound", type=int, help="cut paths at N steps (no liveness check)")
    defaults = Config()
    for name in ("timeout", "margin", "grace", "lease", "max_attempts", "lookup_time"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, name), help="ticks")
    for name in ("pause", "lag"):
        parser.add_argument(f"--{name}", type=int, help=f"break A2/A3: the real max {name}")
    for name in ("clock_steps", "crashes", "cancels"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, name), help="at most")
    args = parser.parse_args(argv)
    settings = {name: getattr(args, name) for name in _SETTINGS}
    failed = False
    for text in args.rules or ["new"]:
        result = check(Config(rules=parse_rules(text), bound=args.bound, **settings))
        print(result.summary())
        for violation in result.violations:
            print(violation.render())
        failed |= bool(result.violations)
    return 1 if failed else 0


_SETTINGS = (
    "timeout",
    "margin",
    "grace",
    "lease",
    "max_attempts",
    "lookup_time",
    "clock_steps",
    "crashes",
    "cancels",
    "pause",
    "lag",
)


if __name__ == "__main__":
    sys.exit(main())
