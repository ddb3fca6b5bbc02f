"""The emulated IntellectMoney books: payout operations, their states and the balance.

States are not ticked: an operation keeps the time it was executed and the outcome
decided then, and its state is computed from the clock when it is read, so that
thousands of operations cost nothing while they wait.

Rules (choices where the documents are silent):

* Execute is accepted only from ``Created``. The outcome is decided at execute:
  ``NotEnoughMoney`` when the balance cannot cover the amount (nothing is debited);
  otherwise ``Failed`` with probability ``failure_ratio`` (nothing is debited) or
  ``Completed`` (the amount is debited at execute).
* For ``im_execute_lag`` seconds after an accepted execute the operation still reads
  ``Created`` (the answer to the execute says "accepted, still processing"). Then it
  shows ``SentToBank``, from ``im_in_process_after`` ``InProcess``, and from
  ``im_final_after`` its outcome; ``NotEnoughMoney`` shows at once. All three delays
  count from the end of the lag.
* An execute of an operation already executed (in the lag or after it) follows
  ``im_second_execute``: ``"refuse"`` answers an error, ``"accept"`` answers as the
  first did and changes nothing, ``"pay_again"`` performs it again with the first
  outcome: a ``Completed`` one debits the amount again (refused when the balance cannot
  cover it), the others move nothing. ``ImOperation.executions`` counts performances.
  An execute of a deleted, never executed operation is always refused.
* Delete is accepted while the operation reads ``Created``, in the lag too: then the
  execute already accepted still completes: the operation reads ``Deleted`` until the
  lag ends and follows its execution's timeline after it.
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
NO_MONEY = "Недостаточно средств на балансе"


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
    """One payout operation as the sandbox keeps it.

    ``executed_at`` is when the first execute was accepted, ``outcome`` what it
    decided, ``executions`` how many times the operation was performed (more than one
    only with ``im_second_execute="pay_again"``).
    """

    id: str
    details: OperationDetails
    created_at: float
    executed_at: float | None = None
    outcome: str | None = None
    deleted: bool = False
    executions: int = 0

    @property
    def payments(self) -> int:
        """How many times the recipient was paid: every performance of a ``Completed``
        outcome (the money leaves at execute, before the state reads final)."""
        return self.executions if self.outcome == COMPLETED else 0


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
        """Execute an operation: the first time from ``Created``, deciding its outcome
        now; again as ``im_second_execute`` says."""
        if operation.executed_at is not None:
            self._execute_again(operation)
            return
        state = self.state(operation)
        if state != CREATED:
            raise BookError(f"Операция не может быть проведена: статус {state}")
        operation.executed_at = self._clock()
        operation.executions = 1
        amount = operation.details.amount
        if amount > self.balance:
            operation.outcome = NOT_ENOUGH_MONEY
        elif self._config.failure_ratio and self._rng.random() < self._config.failure_ratio:
            operation.outcome = FAILED
        else:
            operation.outcome = COMPLETED
            self.balance -= amount

    def _execute_again(self, operation: ImOperation) -> None:
        mode = self._config.im_second_execute
        if mode == "refuse":
            if self.processing(operation):
                raise BookError("Операция уже принята в обработку")
            raise BookError(f"Операция не может быть проведена: статус {self.state(operation)}")
        if mode == "accept":
            return
        if operation.outcome == COMPLETED:
            if operation.details.amount > self.balance:
                raise BookError(NO_MONEY)
            self.balance -= operation.details.amount
        operation.executions += 1

    def processing(self, operation: ImOperation, now: float | None = None) -> bool:
        """True while an accepted execute is inside ``im_execute_lag``."""
        executed_at = operation.executed_at
        if executed_at is None:
            return False
        return (self._clock() if now is None else now) - executed_at < self._config.im_execute_lag

    def delete(self, operation: ImOperation) -> None:
        """Delete an operation that reads ``Created`` (an execute in its lag goes on)."""
        state = self.state(operation)
        if state != CREATED:
            raise BookError(f"Удалить можно только операцию в статусе Created (сейчас {state})")
        operation.deleted = True

    def state(self, operation: ImOperation, now: float | None = None) -> str:
        """The operation's state at ``now`` (the clock's time by default)."""
        executed_at = operation.executed_at
        if executed_at is None:
            return DELETED if operation.deleted else CREATED
        elapsed = (self._clock() if now is None else now) - executed_at
        lag = self._config.im_execute_lag
        if elapsed < lag:
            return DELETED if operation.deleted else CREATED
        elapsed -= lag
        outcome = operation.outcome
        assert outcome is not None
        if outcome == NOT_ENOUGH_MONEY:
            return outcome
        if elapsed >= self._config.im_final_after:
            return outcome
        return IN_PROCESS if elapsed >= self._config.im_in_process_after else SENT_TO_BANK

    @staticmethod
    def error_message(state: str) -> str | None:
        """``ErrorMessage`` for a state, when it is a failure."""
        if state == FAILED:
            return "Отказ банка-получателя"
        if state == NOT_ENOUGH_MONEY:
            return NO_MONEY
        return None
