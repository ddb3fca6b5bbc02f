"""The emulated IntellectMoney books: payout operations, their states and the balance.

States are not ticked: an operation keeps the time it was executed and the outcome
decided then, and its state is computed from the clock when it is read, so that
thousands of operations cost nothing while they wait.

Rules (choices where the documents are silent):

* Execute is accepted only from ``Created``. Executing an operation a second time (or
  a deleted one) is answered with an error and moves no money again.
* The outcome is decided at execute: ``NotEnoughMoney`` at once when the balance
  cannot cover the amount (nothing is debited); otherwise ``Failed`` with probability
  ``failure_ratio`` (nothing is debited) or ``Completed`` (the amount is debited at
  execute). Until ``im_final_after`` has passed the state shows ``SentToBank`` and,
  from ``im_in_process_after``, ``InProcess``.
* Delete is accepted only from ``Created``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import attrs

from ..intellectmoney import MassPaymentOperationState as State
from ._config import SandboxConfig
from ._rng import seeded_random

__all__ = ["BookError", "ImOperation", "IntellectMoneyBook", "OperationDetails"]

CREATED = State.CREATED
SENT_TO_BANK = State.SENT_TO_BANK
IN_PROCESS = State.IN_PROCESS
COMPLETED = State.COMPLETED
FAILED = State.FAILED
NOT_ENOUGH_MONEY = State.NOT_ENOUGH_MONEY
DELETED = State.DELETED


class BookError(Exception):
    """A request the books refuse; the message is the provider's text for it."""


@attrs.frozen
class OperationDetails:
    """What a create asked for: where the money goes and how much."""

    channel: str  # "card", "sbp" or "qiwi"
    recipient: str  # the Pan or the Account
    amount: Decimal
    currency: str
    bank_id: str | None = None
    recipient_name: str | None = None
    eshop_id: str | None = None
    description: str | None = None


@attrs.define(slots=True, eq=False)
class ImOperation:
    """One payout operation as the sandbox keeps it."""

    id: str
    details: OperationDetails
    created_at: float
    executed_at: float | None = None
    outcome: str | None = None
    deleted: bool = False


class IntellectMoneyBook:
    """Operations by id, the balance, and the rules above."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._rng = seeded_random(config.seed, "intellectmoney")
        self.balance = config.im_balance
        self._operations: dict[str, ImOperation] = {}

    def __iter__(self) -> Iterator[ImOperation]:
        return iter(self._operations.values())

    def __len__(self) -> int:
        return len(self._operations)

    def create(self, details: OperationDetails) -> ImOperation:
        """Record a new operation in ``Created``."""
        operation = ImOperation(id=str(uuid.uuid4()), details=details, created_at=self._clock())
        self._operations[operation.id] = operation
        return operation

    def find(self, operation_id: str) -> ImOperation:
        """The operation with this id; ``BookError`` when there is none."""
        operation = self._operations.get(operation_id)
        if operation is None:
            raise BookError("Операция не найдена")
        return operation

    def execute(self, operation: ImOperation) -> None:
        """Execute a ``Created`` operation, deciding its outcome now."""
        state = self.state(operation)
        if state != CREATED:
            raise BookError(f"Операция не может быть проведена: статус {state}")
        operation.executed_at = self._clock()
        amount = operation.details.amount
        if amount > self.balance:
            operation.outcome = NOT_ENOUGH_MONEY
        elif self._config.failure_ratio and self._rng.random() < self._config.failure_ratio:
            operation.outcome = FAILED
        else:
            operation.outcome = COMPLETED
            self.balance -= amount

    def delete(self, operation: ImOperation) -> None:
        """Delete a ``Created`` operation."""
        state = self.state(operation)
        if state != CREATED:
            raise BookError(f"Удалить можно только операцию в статусе Created (сейчас {state})")
        operation.deleted = True

    def state(self, operation: ImOperation, now: float | None = None) -> str:
        """The operation's state at ``now`` (the clock's time by default)."""
        if operation.deleted:
            return DELETED
        executed_at = operation.executed_at
        if executed_at is None:
            return CREATED
        outcome = operation.outcome
        assert outcome is not None
        if outcome == NOT_ENOUGH_MONEY:
            return outcome
        elapsed = (self._clock() if now is None else now) - executed_at
        if elapsed >= self._config.im_final_after:
            return outcome
        return IN_PROCESS if elapsed >= self._config.im_in_process_after else SENT_TO_BANK

    @staticmethod
    def error_message(state: str) -> str | None:
        """``ErrorMessage`` for a state, when it is a failure."""
        if state == FAILED:
            return "Отказ банка-получателя"
        if state == NOT_ENOUGH_MONEY:
            return "Недостаточно средств на балансе"
        return None
