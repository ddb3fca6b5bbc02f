"""The simulated providers: Enot and IntellectMoney books, answering in their wire format.

Each provider handles one request at the virtual moment it *arrives* and returns the
answer as bytes (status, headers, body); the network decides when, and whether, the
answer reaches the client. The answers follow the sandbox's shapes
(``payout_async/sandbox/_enot_routes.py``, ``_im_routes.py``).

What the documents leave open is drawn from the seed (``ProviderRules``): how long a
created Enot payoff stays hidden from ``payoff/info`` (up to ``grace``), how long an
executed IntellectMoney operation still reads ``Created`` (up to ``execute_settle``),
whether Enot accepts a second create with the same ``order_id`` (a second payoff) and
what IntellectMoney does with a second execute (``pay_again``: it pays twice).

The books count what matters to the invariants: every payoff of ours per ``order_id``
and every performed execute per key (``payments``), apart from payoffs another system
made on the same account (``foreign``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

__all__ = [
    "Answer",
    "EnotPayoff",
    "ImOperation",
    "ProviderRules",
    "SimEnot",
    "SimIntellectMoney",
]

Log = Callable[[str], None]


@attrs.frozen
class Answer:
    """One HTTP answer."""

    status: int
    body: bytes
    headers: Mapping[str, str] = attrs.field(factory=lambda: {"Content-Type": "application/json"})


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Answer(status, body, {"Content-Type": "application/json", **(headers or {})})


def _money(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


@attrs.frozen
class ProviderRules:
    """The provider's behaviour where the documents are silent, drawn per run."""

    grace: float
    execute_settle: float
    enot_duplicate: str  # "accept" (a second payoff) or "reject" (422)
    im_second_execute: str  # "pay_again", "accept" or "refuse"
    lag_chance: float = 0.5
    failure_chance: float = 0.05

    def info_lag(self, rng: random.Random) -> float:
        """How long a new payoff stays hidden from ``payoff/info``: under ``grace``."""
        return self._lag(rng, self.grace)

    def settle_lag(self, rng: random.Random) -> float:
        """How long an executed operation still reads ``Created``: under the window."""
        return self._lag(rng, self.execute_settle)

    def _lag(self, rng: random.Random, bound: float) -> float:
        """None, some, or nearly all of ``bound`` (where a wrong count shows)."""
        roll = rng.random()
        if roll >= self.lag_chance:
            return 0.0
        low = 0.0 if roll < self.lag_chance / 2 else 0.7
        return rng.uniform(low, 0.98) * bound


# -- Enot ---------------------------------------------------------------------------


@attrs.define(eq=False)
class EnotPayoff:
    id: str
    order_id: str
    amount: Decimal
    wallet: str | None
    service: str
    created_at: float
    visible_at: float
    due_at: float
    outcome: str  # "success" or "fail"
    foreign: bool = False

    def status(self, now: float) -> str:
        return self.outcome if now >= self.due_at else "wait"


def _enot_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Answer:
    payload = {"data": None, "error": message, "status": status, "status_check": False}
    return _json(payload, status, headers)


def _enot_ok(data: Any) -> Answer:
    return _json({"data": data, "status": 200, "status_check": True})


class SimEnot:
    """Enot's payoff API: ``payoff/create``, ``payoff/info`` and the balance."""

    name = "enot"

    def __init__(self, rules: ProviderRules, rng: random.Random, log: Log) -> None:
        self.rules = rules
        self._rng = rng
        self._log = log
        self.payoffs: dict[str, EnotPayoff] = {}
        self.by_order: dict[str, list[EnotPayoff]] = {}

    # -- books --------------------------------------------------------------------

    def ours(self, order_id: str) -> list[EnotPayoff]:
        """The payoffs of ours created under ``order_id``."""
        return [p for p in self.by_order.get(order_id, []) if not p.foreign]

    def payments(self, key: str) -> int:
        """How many payoffs of ours were created for ``key`` (its order_id)."""
        return len(self.ours(key))

    def has_foreign(self, key: str) -> bool:
        return any(p.foreign for p in self.by_order.get(key, []))

    def succeeded(self, key: str, amount: Decimal, now: float) -> bool:
        """A payoff of ours for ``key``, of ``amount``, reads ``success``."""
        return any(p.amount == amount and p.status(now) == "success" for p in self.ours(key))

    def _record(self, payoff: EnotPayoff) -> None:
        self.payoffs[payoff.id] = payoff
        self.by_order.setdefault(payoff.order_id, []).append(payoff)

    def create_foreign(self, order_id: str, amount: Decimal, now: float) -> EnotPayoff:
        """Another system on the same account pays ``amount`` under ``order_id``."""
        payoff = EnotPayoff(
            id=f"enot-{len(self.payoffs) + 1}",
            order_id=order_id,
            amount=amount,
            wallet="2200000000000004",
            service="card",
            created_at=now,
            visible_at=now,
            due_at=now + 1.0,
            outcome="success",
            foreign=True,
        )
        self._record(payoff)
        self._log(f"enot foreign payoff {payoff.id} order={order_id} amount={amount}")
        return payoff

    # -- the API ----------------------------------------------------------------------

    def handle(self, method: str, url: str, body: bytes | None, now: float) -> Answer:
        path = urlsplit(url).path
        query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
        if method == "POST" and path.endswith("/payoff/create"):
            return self._create(json.loads(body or b"{}", parse_float=Decimal), now)
        if method == "GET" and path.endswith("/payoff/info"):
            return self._info(query, now)
        if method == "GET" and path.endswith("/balance"):
            return _enot_ok({"balance": 1_000_000, "active_balance": "1000000.00"})
        return _enot_error(404, "Not found")

    def _create(self, body: dict[str, Any], now: float) -> Answer:
        order_id = str(body["order_id"])
        if self.by_order.get(order_id) and self.rules.enot_duplicate == "reject":
            return _enot_error(422, "Вывод с таким order_id уже существует.")
        payoff = self.create(order_id, Decimal(str(body["amount"])), body, now)
        return _enot_ok(
            {"payoff_id": payoff.id, "amount_withdraw_rub": f"{payoff.amount:.2f}", "balance": 1}
        )

    def create(
        self, order_id: str, amount: Decimal, body: dict[str, Any], now: float
    ) -> EnotPayoff:
        """Record a payoff of ours (also for a refusal that was processed)."""
        rng = self._rng
        payoff = EnotPayoff(
            id=f"enot-{len(self.payoffs) + 1}",
            order_id=order_id,
            amount=amount,
            wallet=body.get("wallet_to"),
            service=str(body.get("service")),
            created_at=now,
            visible_at=now + self.rules.info_lag(rng),
            due_at=now + rng.uniform(1.0, 90.0),
            outcome="fail" if rng.random() < self.rules.failure_chance else "success",
        )
        self._record(payoff)
        count = self.payments(order_id)
        self._log(
            f"enot PAYOFF {payoff.id} order={order_id} #{count} visible+"
            f"{payoff.visible_at - now:.3f} due+{payoff.due_at - now:.3f} {payoff.outcome}"
        )
        return payoff

    def foreign(
        self, method: str, url: str, body: bytes | None, now: float, rng: random.Random
    ) -> Answer:
        """The answer to a read about another payoff than the one asked (whatever was
        asked), or a create answered as another payoff of ours was (a gateway replaying
        ``POST`` answers: nothing created), when the books hold another; else the
        request's own answer."""
        path = urlsplit(url).path
        if method == "POST" and path.endswith("/payoff/create"):
            order_id = str(json.loads(body or b"{}").get("order_id"))
            ours = [p for p in self.payoffs.values() if not p.foreign and p.order_id != order_id]
            if not ours:
                return self.handle(method, url, body, now)
            other = rng.choice(ours)
            self._log(f"enot create of {order_id} answered as {other.id}'s was")
            return _enot_ok(
                {"payoff_id": other.id, "amount_withdraw_rub": f"{other.amount:.2f}", "balance": 1}
            )
        if method != "GET" or not path.endswith("/payoff/info"):
            return self.handle(method, url, body, now)
        query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
        asked = self.payoffs.get(query.get("id", "")) or next(
            iter(self.by_order.get(query.get("order_id", ""), [])), None
        )
        # Another payoff the books show (a kept "not found" names nothing: A15).
        others = [p for p in self.payoffs.values() if p is not asked and now >= p.visible_at]
        if not others:
            return self.handle(method, url, body, now)
        other = rng.choice(others)
        self._log(f"enot info answered about {other.id} (order {other.order_id}) instead")
        return self._info({"id": other.id}, now)

    def _info(self, query: Mapping[str, str], now: float) -> Answer:
        payoff: EnotPayoff | None = None
        if "id" in query:
            payoff = self.payoffs.get(query["id"])
        elif "order_id" in query:
            found = self.by_order.get(query["order_id"])
            payoff = found[0] if found else None
        if payoff is None or now < payoff.visible_at:
            return _enot_error(404, "Вывод не найден.")
        status = payoff.status(now)
        return _enot_ok(
            {
                "payoff_id": payoff.id,
                "order_id": payoff.order_id,
                "service": payoff.service,
                "wallet": payoff.wallet,
                "type": "api",
                "subtract": "amount",
                "amount": _money(payoff.amount),
                "amount_withdraw_rub": f"{payoff.amount:.2f}",
                "commission_rub": 0,
                "receive_currency": "RUB",
                "amount_receive": f"{payoff.amount:.2f}",
                "comment": None,
                "created_at": "2026-01-01 00:00:00",
                "paid_at": None,
                "error_message": "Отказ платёжной системы." if status == "fail" else None,
                "status": status,
            }
        )

    def throttled(self, retry_after: int) -> Answer:
        return _enot_error(429, "Too Many Requests", {"Retry-After": str(retry_after)})

    def refusal(self, status: int) -> Answer:
        """A refusal answer (408 from an edge timeout, 422 from validation)."""
        message = "Request Timeout" if status == 408 else "Ошибка валидации."
        return _enot_error(status, message)


# -- IntellectMoney -------------------------------------------------------------------


@attrs.define(eq=False)
class ImOperation:
    id: str
    key: str | None
    pan: str
    amount: Decimal
    created_at: float
    executed_at: float | None = None
    settle_lag: float = 0.0
    final_after: float = 0.0
    outcome: str | None = None  # "Completed" or "Failed"
    executions: int = 0
    deleted: bool = False

    def state(self, now: float) -> str:
        if self.executed_at is None or now < self.executed_at + self.settle_lag:
            return "Deleted" if self.deleted else "Created"
        if now >= self.executed_at + self.settle_lag + self.final_after:
            assert self.outcome is not None
            return self.outcome
        return "SentToBank"


_IM_OK = {"Code": 0, "Desc": "Успешно обработана"}
_IM_ACCEPTED = {"Code": 1, "Desc": "Операция принята в обработку"}


def _im_error(message: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    return _json({"OperationState": {"Code": 2, "Desc": message}, "Result": False}, status, headers)


class SimIntellectMoney:
    """IntellectMoney's current payout API: create, execute, state, delete."""

    name = "intellectmoney"

    def __init__(
        self, rules: ProviderRules, rng: random.Random, log: Log, keys_by_pan: Mapping[str, str]
    ) -> None:
        self.rules = rules
        self._rng = rng
        self._log = log
        self._keys_by_pan = keys_by_pan
        self.operations: dict[str, ImOperation] = {}
        self._calls = 0

    def payments(self, key: str) -> int:
        """How many times an operation for ``key`` was performed."""
        return sum(op.executions for op in self.operations.values() if op.key == key)

    def has_foreign(self, key: str) -> bool:
        return False

    def succeeded(self, key: str, amount: Decimal, now: float) -> bool:
        return any(
            op.key == key and op.amount == amount and op.state(now) == "Completed"
            for op in self.operations.values()
        )

    def handle(self, method: str, url: str, body: bytes | None, now: float) -> Answer:
        fields = json.loads(body or b"{}")
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        if name == "createOperation":
            return self._create(fields, now)
        operation = self.operations.get(str(fields.get("PayoutOperationId")))
        if operation is None:
            return _im_error("Операция не найдена")
        if name == "executeOperation":
            return self._execute(operation, now)
        if name == "getOperationState":
            return self._answer(operation, now)
        if name == "deleteOperation":
            if operation.state(now) != "Created":
                return _im_error("Удалить можно только операцию в статусе Created")
            operation.deleted = True
            self._log(f"im delete {operation.id} key={operation.key}")
            return self._envelope(True)
        return _im_error("Неизвестный метод", status=404)

    def foreign(
        self, method: str, url: str, body: bytes | None, now: float, rng: random.Random
    ) -> Answer:
        """The answer to a ``getOperationState`` about another operation than the one
        asked, or a ``createOperation`` answered as another executed one's was (a
        gateway replaying ``POST`` answers: nothing created), when the books hold
        another; else the call's own answer."""
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        if name not in ("getOperationState", "createOperation"):
            return self.handle(method, url, body, now)
        asked = str(json.loads(body or b"{}").get("PayoutOperationId"))
        others = [op for op in self.operations.values() if op.id != asked]
        if name == "createOperation":
            # One a row holds (A16): every executed operation was recorded before its
            # execute; an orphan -- a create whose answer was lost -- is held by none.
            others = [op for op in others if op.executed_at is not None]
        if not others:
            return self.handle(method, url, body, now)
        other = rng.choice(others)
        if name == "createOperation":
            self._log(f"im create answered as {other.id}'s was (key={other.key})")
            return self._envelope(
                {"State": _IM_OK, "PayoutOperationId": other.id, "PayoutOperationState": "Created"}
            )
        self._log(f"im state answered about {other.id} instead of {asked}")
        return self._answer(other, now)

    def _envelope(self, result: Any, outer: Mapping[str, Any] = _IM_OK) -> Answer:
        self._calls += 1
        return _json(
            {
                "OperationState": outer,
                "OperationId": f"call-{self._calls}",
                "EshopId": 450000,
                "Result": result,
            }
        )

    def _answer(self, operation: ImOperation, now: float, *, accepted: bool = False) -> Answer:
        state = operation.state(now)
        result: dict[str, Any] = {
            "State": {"Code": 0, "Desc": "Успешно обработан"},
            "PayoutOperationId": operation.id,
            "PayoutOperationState": state,
        }
        if state == "Failed":
            result["ErrorMessage"] = "Отказ банка-получателя"
        return self._envelope(result, _IM_ACCEPTED if accepted else _IM_OK)

    def _create(self, fields: Mapping[str, Any], now: float) -> Answer:
        pan = str(fields.get("Pan"))
        operation = ImOperation(
            id=f"op-{len(self.operations) + 1}",
            key=self._keys_by_pan.get(pan),
            pan=pan,
            amount=Decimal(str(fields.get("Amount"))),
            created_at=now,
        )
        self.operations[operation.id] = operation
        self._log(f"im create {operation.id} key={operation.key}")
        return self._answer(operation, now)

    def _execute(self, operation: ImOperation, now: float) -> Answer:
        if operation.executed_at is None:
            if operation.deleted:
                return _im_error("Операция не может быть проведена: статус Deleted")
            rng = self._rng
            operation.executed_at = now
            operation.settle_lag = self.rules.settle_lag(rng)
            operation.final_after = rng.uniform(1.0, 90.0)
            failed = rng.random() < self.rules.failure_chance
            operation.outcome = "Failed" if failed else "Completed"
        else:
            mode = self.rules.im_second_execute
            if mode == "refuse":
                return _im_error("Операция уже принята в обработку")
            if mode == "pay_again":
                operation.executions += 1
                self._log(
                    f"im EXECUTE {operation.id} key={operation.key} #{self.payments_of(operation)}"
                )
            return self._answer(operation, now, accepted=operation.state(now) == "Created")
        operation.executions += 1
        self._log(
            f"im EXECUTE {operation.id} key={operation.key} #{self.payments_of(operation)} "
            f"settle+{operation.settle_lag:.3f} {operation.outcome}"
        )
        return self._answer(operation, now, accepted=operation.state(now) == "Created")

    def payments_of(self, operation: ImOperation) -> int:
        return self.payments(operation.key) if operation.key is not None else 0

    def throttled(self, retry_after: int) -> Answer:
        return _im_error("Too Many Requests", 429, {"Retry-After": str(retry_after)})

    def refusal(self, status: int) -> Answer:
        return _im_error("Операция отклонена")
