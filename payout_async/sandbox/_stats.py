"""What the sandbox's books say happened: counts, and payouts that look paid twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from ._enot_book import FAIL, SUCCESS
from ._im_book import COMPLETED, CREATED, DELETED, FAILED, NOT_ENOUGH_MONEY
from ._state import SandboxState

__all__ = [
    "Counts",
    "Duplicate",
    "EnotStats",
    "IntellectMoneyStats",
    "SandboxStats",
    "collect_stats",
    "find_duplicates",
    "paid_per_payout",
]


@attrs.define
class Counts:
    """Payouts created, executed (money sent on its way) and paid, for one key.

    An IntellectMoney operation performed twice (``im_second_execute="pay_again"``)
    counts twice in ``executed`` and, once it reads ``Completed``, in ``paid``.
    """

    created: int = 0
    executed: int = 0
    paid: int = 0


@attrs.frozen
class IntellectMoneyStats:
    """IntellectMoney operations by state, per recipient (Pan/Account) and per amount.

    ``executed`` and ``paid`` count performances (see ``Counts``); the other totals
    count operations by the state they read now.
    """

    created: int
    executed: int
    paid: int
    failed: int
    not_enough_money: int
    deleted: int
    balance: Decimal
    by_recipient: Mapping[str, Counts]
    by_amount: Mapping[str, Counts]


@attrs.frozen
class EnotStats:
    """Enot payoffs by status and per order_id (a create is also the execute)."""

    created: int
    paid: int
    failed: int
    waiting: int
    balance: Decimal
    active_balance: Decimal
    freeze_balance: Decimal
    by_order_id: Mapping[str, Counts]


@attrs.frozen
class SandboxStats:
    """Everything counted; ``requests`` and ``faults`` are by route and by fault kind,
    ``rate_limited`` (requests refused 429 by the rate limit) by provider."""

    intellectmoney: IntellectMoneyStats
    enot: EnotStats
    requests: Mapping[str, int]
    faults: Mapping[str, int]
    rate_limited: Mapping[str, int] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (money as strings)."""
        return attrs.asdict(self, value_serializer=lambda _, __, value: _json_value(value))


def _json_value(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


@attrs.frozen
class Duplicate:
    """Several payouts for what looks like one: the same Enot ``order_id``, or one
    IntellectMoney recipient executed more than once for the same amount and
    Description (one operation performed twice counts too; one that ended
    ``NotEnoughMoney`` does not). ``ids`` are the payoff / operation ids, an
    operation's once per performance, so ``count == len(ids)``."""

    provider: str
    key: str
    count: int
    ids: tuple[str, ...]


def _intellectmoney(state: SandboxState, now: float) -> IntellectMoneyStats:
    book = state.intellectmoney
    totals: dict[str, int] = dict.fromkeys(
        (CREATED, COMPLETED, FAILED, NOT_ENOUGH_MONEY, DELETED), 0
    )
    executed = paid = 0
    by_recipient: dict[str, Counts] = {}
    by_amount: dict[str, Counts] = {}
    for operation in book:
        details = operation.details
        state_now = book.state(operation, now)
        totals[state_now] = totals.get(state_now, 0) + 1
        counts = (
            by_recipient.setdefault(details.recipient, Counts()),
            by_amount.setdefault(f"{details.amount:.2f}", Counts()),
        )
        performed = operation.executions
        finished = performed if state_now == COMPLETED else 0
        executed += performed
        paid += finished
        for count in counts:
            count.created += 1
            count.executed += performed
            count.paid += finished
    return IntellectMoneyStats(
        created=len(book),
        executed=executed,
        paid=paid,
        failed=totals[FAILED],
        not_enough_money=totals[NOT_ENOUGH_MONEY],
        deleted=totals[DELETED],
        balance=book.balance,
        by_recipient=by_recipient,
        by_amount=by_amount,
    )


def _enot(state: SandboxState, now: float) -> EnotStats:
    book = state.enot
    book.settle()
    statuses: dict[str, int] = {}
    by_order: dict[str, Counts] = {}
    for payoff in book:
        status = book.status(payoff, now)
        statuses[status] = statuses.get(status, 0) + 1
        order_id = payoff.details.order_id
        if order_id is not None:
            counts = by_order.setdefault(order_id, Counts())
            counts.created += 1
            counts.executed += 1
            counts.paid += status == SUCCESS
    return EnotStats(
        created=len(book),
        paid=statuses.get(SUCCESS, 0),
        failed=statuses.get(FAIL, 0),
        waiting=len(book) - statuses.get(SUCCESS, 0) - statuses.get(FAIL, 0),
        balance=book.active + book.frozen,
        active_balance=book.active,
        freeze_balance=book.frozen,
        by_order_id=by_order,
    )


def collect_stats(state: SandboxState) -> SandboxStats:
    """Count everything in ``state`` as of now."""
    now = state.clock()
    return SandboxStats(
        intellectmoney=_intellectmoney(state, now),
        enot=_enot(state, now),
        requests=state.faults.call_counts,
        faults=state.faults.injected,
        rate_limited=state.traffic.rate_limited,
    )


def find_duplicates(state: SandboxState) -> list[Duplicate]:
    """Enot order_ids with more than one payoff, and IntellectMoney recipients executed
    more than once for the same amount and Description (or one operation performed
    more than once); an execute that ended ``NotEnoughMoney`` moved nothing and does
    not count."""
    groups: dict[tuple[str, str], list[str]] = {}
    for payoff in state.enot:
        if payoff.details.order_id is not None:
            groups.setdefault(("enot", payoff.details.order_id), []).append(payoff.id)
    for operation in state.intellectmoney:
        if not operation.executions or operation.outcome == NOT_ENOUGH_MONEY:
            continue  # a NotEnoughMoney execute moved nothing: its payout is paid anew
        details = operation.details
        key = f"{details.recipient}|{details.amount:.2f}|{details.description or ''}"
        groups.setdefault(("intellectmoney", key), []).extend([operation.id] * operation.executions)
    return [
        Duplicate(provider=provider, key=key, count=len(ids), ids=tuple(ids))
        for (provider, key), ids in groups.items()
        if len(ids) > 1
    ]


def paid_per_payout(state: SandboxState) -> Counter[tuple[str, str]]:
    """How many times each payout's recipient was paid, keyed by
    ``("intellectmoney", Description)`` and ``("enot", order_id)`` (the operation or
    payoff id when there is no Description or order_id).

    A payment counts as soon as the provider has committed it: an IntellectMoney
    performance whose outcome is ``Completed`` and an Enot payoff whose outcome is
    ``success``, even while the state still reads ``Created``/``SentToBank``/``wait``.
    Payouts never paid are absent (their count is 0).
    """
    paid: Counter[tuple[str, str]] = Counter()
    for operation in state.intellectmoney:
        if operation.payments:
            key = operation.details.description
            paid["intellectmoney", operation.id if key is None else key] += operation.payments
    for payoff in state.enot:
        if payoff.outcome == SUCCESS:
            order_id = payoff.details.order_id
            paid["enot", payoff.id if order_id is None else order_id] += 1
    return paid
