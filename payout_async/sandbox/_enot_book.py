"""The emulated Enot books: payoffs, their statuses, the balance and the webhook outbox.

A payoff's status is computed from the clock when read (``wait`` until its due time,
then the outcome decided at create), so waiting payoffs cost nothing. The money
follows in ``settle``, run on balance reads, on inspection and by the webhook
dispatcher at each due time: create moves the withdrawal from the active balance to
the frozen one; at the due time it leaves the frozen balance, and a failed payoff's
withdrawal returns to the active balance.

Payoffs of another system on the same account (``create(..., foreign=True)``) are kept
apart: ``payoff/info`` finds them by id and by order_id, their webhooks go out, they
draw on the same balance -- but iterating the book (what ``stats``, ``duplicates`` and
``paid_per_payout`` count) yields ours only; ``foreign()`` yields theirs.

Fees follow ``subtract``: 1 takes the fee from the balance (the withdrawal is amount
plus fee, the recipient gets the amount), 2 (the default) takes it from the amount (the
withdrawal is the amount, the recipient gets amount minus fee).
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal

import attrs

from ._config import SandboxConfig
from ._rng import seeded_random

__all__ = ["EnotBook", "EnotPayoff", "PayoffDetails", "PayoffRefused"]

_CENT = Decimal("0.01")
WAIT = "wait"
SUCCESS = "success"
FAIL = "fail"


class PayoffRefused(Exception):
    """A create the books refuse: ``status`` is the HTTP status, the message Enot's text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen
class PayoffDetails:
    """What a create asked for."""

    service: str
    wallet: str | None
    amount: Decimal
    order_id: str | None = None
    subtract: int = 2
    comment: str | None = None
    hook_url: str | None = None
    sbp_bank_id: str | None = None


@attrs.define(slots=True, eq=False)
class EnotPayoff:
    """One payoff as the sandbox keeps it."""

    id: str
    details: PayoffDetails
    commission: Decimal
    withdraw: Decimal
    created_at: float
    created_wall: float
    due_at: float
    outcome: str
    foreign: bool = False  # created by another system on the same account, not by us

    @property
    def receive(self) -> Decimal:
        """What the recipient gets."""
        details = self.details
        return details.amount if details.subtract == 1 else details.amount - self.commission


class EnotBook:
    """Payoffs by id and by order_id, balances, and the outbox of due webhooks."""

    def __init__(
        self,
        config: SandboxConfig,
        clock: Callable[[], float],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = seeded_random(config.seed, "enot")
        self.on_change = on_change
        self.active = config.enot_balance
        self.frozen = Decimal("0")
        self._payoffs: dict[str, EnotPayoff] = {}
        self._by_order: dict[str, list[EnotPayoff]] = {}
        self._pending: list[tuple[float, int, EnotPayoff]] = []
        self._seq = 0
        self._foreign = 0  # how many of ``_payoffs`` are another system's
        self.outbox: list[EnotPayoff] = []

    def __iter__(self) -> Iterator[EnotPayoff]:
        """Our payoffs (not another system's: see ``foreign``)."""
        return (payoff for payoff in self._payoffs.values() if not payoff.foreign)

    def __len__(self) -> int:
        return len(self._payoffs) - self._foreign

    def foreign(self) -> Iterator[EnotPayoff]:
        """The payoffs another system created on the same account."""
        return (payoff for payoff in self._payoffs.values() if payoff.foreign)

    def fee(self, amount: Decimal) -> Decimal:
        """The commission on ``amount``."""
        fee = amount * self._config.enot_fee_percent / 100 + self._config.enot_fee_fixed
        return fee.quantize(_CENT, ROUND_HALF_UP)

    def create(
        self,
        details: PayoffDetails,
        *,
        foreign: bool = False,
        outcome: str | None = None,
        final_after: float | None = None,
    ) -> EnotPayoff:
        """Check the tariff, the balance and the order_id, then record a payoff.

        ``foreign``: another system's payoff (no order_id check: Enot accepted it from
        them), ending with ``outcome`` (``success``/``fail``; drawn as usual when None)
        after ``final_after`` seconds (``enot_final_after`` when None)."""
        config = self._config
        amount, order_id = details.amount, details.order_id
        duplicate = order_id in self._by_order
        if config.duplicate_order_id == "reject" and duplicate and not foreign:
            raise PayoffRefused(422, "Вывод с таким order_id уже существует.")
        if not config.enot_min_amount <= amount <= config.enot_max_amount:
            raise PayoffRefused(403, "Сумма вывода меньше или больше доступной по тарифу.")
        commission = self.fee(amount)
        withdraw = amount + commission if details.subtract == 1 else amount
        if details.subtract != 1 and commission >= amount:
            raise PayoffRefused(403, "Сумма вывода меньше или больше доступной по тарифу.")
        self.settle()
        if withdraw > self.active:
            raise PayoffRefused(403, "Недостаточно средств на балансе.")
        if outcome is None:
            failed = config.failure_ratio > 0 and self._rng.random() < config.failure_ratio
            outcome = FAIL if failed else SUCCESS
        now = self._clock()
        payoff = EnotPayoff(
            id=str(uuid.uuid4()),
            details=details,
            commission=commission,
            withdraw=withdraw,
            created_at=now,
            created_wall=time.time(),
            due_at=now + (config.enot_final_after if final_after is None else final_after),
            outcome=outcome,
            foreign=foreign,
        )
        self.active -= withdraw
        self.frozen += withdraw
        self._payoffs[payoff.id] = payoff
        self._foreign += foreign
        if order_id is not None:
            self._by_order.setdefault(order_id, []).append(payoff)
        self._seq += 1
        heapq.heappush(self._pending, (payoff.due_at, self._seq, payoff))
        if self.on_change is not None:
            self.on_change()
        return payoff

    def get(self, payoff_id: str) -> EnotPayoff | None:
        """The payoff with this id."""
        return self._payoffs.get(payoff_id)

    def by_order_id(self, order_id: str) -> EnotPayoff | None:
        """The first payoff created with this order_id."""
        found = self._by_order.get(order_id)
        return found[0] if found else None

    def visible(self, payoff: EnotPayoff, now: float | None = None) -> bool:
        """True once ``payoff/info`` may show the payoff (``enot_info_lag`` after create)."""
        lag = self._config.enot_info_lag
        return lag <= 0 or (self._clock() if now is None else now) - payoff.created_at >= lag

    def status(self, payoff: EnotPayoff, now: float | None = None) -> str:
        """The payoff's status at ``now`` (the clock's time by default)."""
        return payoff.outcome if (self._clock() if now is None else now) >= payoff.due_at else WAIT

    def settle(self) -> None:
        """Move the money of every payoff that has reached its due time, and put the
        ones with a ``hook_url`` in ``outbox``."""
        pending = self._pending
        if not pending:
            return
        now = self._clock()
        hooked = False
        while pending and pending[0][0] <= now:
            payoff = heapq.heappop(pending)[2]
            self.frozen -= payoff.withdraw
            if payoff.outcome == FAIL:
                self.active += payoff.withdraw
            if payoff.details.hook_url:
                self.outbox.append(payoff)
                hooked = True
        if hooked and self.on_change is not None:
            self.on_change()

    def next_due(self) -> float | None:
        """The clock time at which ``settle`` next has work, if any."""
        return self._pending[0][0] if self._pending else None

    def take_outbox(self) -> list[EnotPayoff]:
        """The payoffs whose webhooks are due, emptying the outbox."""
        due, self.outbox = self.outbox, []
        return due
