"""The invariants, checked while a run goes on and at its end.

* **S1** at most one money-moving request per payout has an effect: the provider's
  books never hold two payoffs of ours for one order_id, nor two performed executes
  for one key. Checked after every request the provider handles.
* **S2** a row marked ``succeeded`` was paid: a payoff / operation of ours for that key
  and amount reads success. Checked on every ledger answer that says ``succeeded``.
* **L** every non-final row has a driver: a call that returned "in progress" (it
  deferred to another drive) must leave the row leased, final, or driven in some
  process -- unless a drive of that key was cancelled or killed meanwhile (then the row
  is stranded by design, and ``resume()`` finishes it). At the end every call returned.
* **End**: once faults stop and ``resume()``/``reconcile()`` have run, every key is
  final or refused, agrees with the books, and no row is leased. ``needs_attention``
  counts as a failure unless the seed drew what makes it unavoidable: a payoff of
  another system under the key's order_id (found by order_id, it is "not this payout").

A violation whose cause is the admitted assumption -- a pause longer than the fence
margin between a confirmed fence and the request leaving -- is kept, but marked
``excused`` (and counted: ``Departure.after_fence``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import attrs

from payout_async.ledger import Ledger, LedgerState, PayoutRecord, Settlement
from payout_async.payouts import PayoutResult

from .network import Departure
from .providers import SimEnot, SimIntellectMoney

__all__ = ["Checker", "Violation"]

UNDRIVEN = frozenset(
    {LedgerState.PENDING, LedgerState.SENDING, LedgerState.CREATED, LedgerState.EXECUTING}
)


@attrs.frozen
class Violation:
    """One broken invariant."""

    rule: str  # "S1", "S2", "L", "end", "error"
    key: str
    at: float
    detail: str
    #: The admitted assumption that explains it, when one does.
    excused: str | None = None

    def __str__(self) -> str:
        excuse = f" [excused: {self.excused}]" if self.excused else ""
        return f"{self.rule} {self.key} at {self.at:.3f}: {self.detail}{excuse}"


class Checker:
    """Collects the violations of one run."""

    def __init__(
        self,
        provider: SimEnot | SimIntellectMoney,
        amounts: Mapping[str, Decimal],
        departures: Sequence[Departure],
        margin: float,
        clock: Callable[[], float],
        log: Callable[[str], None],
    ) -> None:
        self.provider = provider
        self.amounts = amounts
        self.departures = departures
        self.margin = margin
        self.clock = clock
        self.log = log
        self.violations: list[Violation] = []
        self._s1_seen: set[str] = set()
        self._s2_seen: set[str] = set()

    def add(self, rule: str, key: str, detail: str, excused: str | None = None) -> None:
        violation = Violation(rule, key, self.clock(), detail, excused)
        self.violations.append(violation)
        self.log(f"VIOLATION {violation}")

    # -- S1 -------------------------------------------------------------------------

    def after_provider(self) -> None:
        for key in self.amounts:
            paid = self.provider.payments(key)
            if paid > 1 and key not in self._s1_seen:
                self._s1_seen.add(key)
                self.add("S1", key, f"paid {paid} times", self._late_departure(key))

    def _late_departure(self, key: str) -> str | None:
        for departure in self.departures:
            late = departure.after_fence is not None and departure.after_fence > self.margin
            if late and self._key_of(departure.subject) == key:
                return (
                    f"{departure.process} paused {departure.after_fence:.1f}s between its "
                    f"fence and the request (margin {self.margin:g}s)"
                )
        return None

    def _key_of(self, subject: str) -> str | None:
        name, _, value = subject.partition("=")
        if name == "order_id":
            return value
        if isinstance(self.provider, SimIntellectMoney) and name == "PayoutOperationId":
            operation = self.provider.operations.get(value)
            return None if operation is None else operation.key
        return None

    # -- S2 -------------------------------------------------------------------------

    def after_ledger(self, caller: str, name: str, answer: Any) -> None:
        record: PayoutRecord | None = None
        if isinstance(answer, PayoutRecord):
            record = answer
        elif isinstance(answer, Settlement) and answer.moved_from is not None:
            record = answer.record
        if name not in ("transition", "settle_order") or record is None:
            return
        if record.state is not LedgerState.SUCCEEDED or record.key in self._s2_seen:
            return
        amount = self.amounts.get(record.key)
        if amount is None or not self.provider.succeeded(record.key, amount, self.clock()):
            self._s2_seen.add(record.key)
            self.add("S2", record.key, f"{caller} {name}: succeeded with no payment of ours")

    # -- L --------------------------------------------------------------------------

    async def after_deferral(
        self,
        ledger: Ledger,
        result: PayoutResult,
        started: float,
        driven_somewhere: Callable[[str], bool],
        disrupted_since: Callable[[str, float], bool],
    ) -> None:
        """``result`` came back saying another drive has the row: check that one does."""
        if not (result.reason or "").startswith("in progress"):
            return
        key = result.key
        row = await ledger.get(self.provider.name, key)
        if row is None or row.state not in UNDRIVEN or row.lease_owner is not None:
            return
        if driven_somewhere(key) or disrupted_since(key, started):
            return
        self.add(
            "L", key, f"deferred ({result.reason}); the row is {row.state} and nobody drives it"
        )

    # -- the end --------------------------------------------------------------------

    async def at_end(self, ledger: Ledger) -> None:
        now = self.clock()
        for key, amount in self.amounts.items():
            row = await ledger.get(self.provider.name, key)
            paid = self.provider.payments(key)
            succeeded = self.provider.succeeded(key, amount, now)
            if row is None:
                if paid:
                    self.add("end", key, f"no row, yet paid {paid} times")
                continue
            state = row.state
            if row.lease_owner is not None:
                self.add("end", key, f"still leased to {row.lease_owner} ({state})")
            if state is LedgerState.SUCCEEDED:
                continue  # S1 and S2 cover it
            if state in (LedgerState.FAILED, LedgerState.CANCELLED, LedgerState.REFUSED):
                if succeeded:
                    # A request that left after the fence margin (the admitted
                    # assumption broken) may have paid beside the one the row follows.
                    excuse = self._late_departure(key)
                    self.add("end", key, f"{state} although a payment of ours succeeded", excuse)
                continue
            if state is LedgerState.NEEDS_ATTENTION:
                excuse = None
                if self.provider.has_foreign(key):
                    excuse = "another system's payoff holds this order_id"
                self.add("end", key, f"needs_attention: {row.reason}", excuse)
                continue
            self.add("end", key, f"left {state} (attempts {row.attempts}): nobody drove it")
