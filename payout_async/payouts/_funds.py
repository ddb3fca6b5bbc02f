"""Money that ran out: which refusals are for want of money, what a balance covers,
and paying the rows so refused once money is back.

One rule for ``batch`` and the workers: a provider refused a payout for want of money
when the row ended ``refused`` with IntellectMoney's ``NotEnoughMoney`` state, or with
Enot's "insufficient funds" refusal of its create (the provider documents no code for
it: its words are matched). Such a row is payable again -- nothing exists at the
provider that could pay it -- and ``requeue_refused_for_funds`` records it ``pending``
again for the workers (``Ledger.enqueue``: a row that moved on since is left as it is,
so each is paid once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from ..enot import Balance
from ..intellectmoney import MassPaymentOperationState
from ..ledger import EnqueueOutcome, Intent, Ledger, LedgerState, PayoutRecord

__all__ = [
    "available_balance",
    "count_refused_for_funds",
    "funds_refused_rows",
    "refused_for_funds",
    "requeue_refused_for_funds",
]

logger = logging.getLogger("payout_async")

#: Words by which Enot's refusal of a create says the balance is short (the sandbox's
#: "Недостаточно средств на балансе."; the provider documents no code for it).
_NO_MONEY_WORDS = ("недостаточно средств", "insufficient", "not enough money", "not enough funds")
_CHUNK = 200  # rows given back to the queue per ledger call


class _Outcome(Protocol):
    """What both ``PayoutResult`` and ``PayoutRecord`` say of a payout's end."""

    @property
    def provider(self) -> str: ...

    @property
    def state(self) -> LedgerState | None: ...

    @property
    def provider_status(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...


def refused_for_funds(outcome: _Outcome) -> bool:
    """True when the provider refused the payout for want of money: the row is
    ``refused`` and payable again once the balance is topped up."""
    if outcome.state is not LedgerState.REFUSED:
        return False
    if outcome.provider == "intellectmoney":
        return outcome.provider_status == MassPaymentOperationState.NOT_ENOUGH_MONEY.value
    reason = (outcome.reason or "").casefold()
    return any(word in reason for word in _NO_MONEY_WORDS)


def available_balance(balance: Balance | None) -> Decimal | None:
    """What Enot's balance has available to pay with (its active balance, else its
    balance), or None when it said neither."""
    if balance is None:
        return None
    return balance.active_balance if balance.active_balance is not None else balance.balance


async def funds_refused_rows(ledger: Ledger, provider: str) -> list[PayoutRecord]:
    """``provider``'s rows refused for want of money, oldest first."""
    rows = await ledger.records(provider=provider, state=LedgerState.REFUSED)
    return [row for row in rows if refused_for_funds(row)]


async def requeue_refused_for_funds(ledger: Ledger, provider: str) -> int:
    """Record ``provider``'s rows refused for want of money ``pending`` again, for the
    workers, and wake them; returns how many were. A row whose recipient cannot be
    read (``untrusted``) stays as it is (``reconcile`` sets it aside)."""
    found = await funds_refused_rows(ledger, provider)
    rows = [row for row in found if row.untrusted is None]
    if len(rows) < len(found):
        logger.warning(
            "%d %s payout(s) refused for want of money stay refused: %s",
            len(found) - len(rows), provider, next(r.untrusted for r in found if r.untrusted),
        )  # fmt: skip
    requeued = 0
    for start in range(0, len(rows), _CHUNK):
        intents = [
            Intent(key=row.key, params=row.params, order_id=row.order_id)
            for row in rows[start : start + _CHUNK]
        ]
        outcomes = await ledger.enqueue(provider, intents)
        requeued += sum(1 for outcome in outcomes if outcome.outcome is EnqueueOutcome.AGAIN)
    if requeued:
        await ledger.announce_work(provider)
    return requeued


def count_refused_for_funds(outcomes: Iterable[_Outcome]) -> dict[str, int]:
    """How many of ``outcomes`` each provider refused for want of money."""
    short: dict[str, int] = {}
    for outcome in outcomes:
        if refused_for_funds(outcome):
            short[outcome.provider] = short.get(outcome.provider, 0) + 1
    return short
