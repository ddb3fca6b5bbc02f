"""Money checks of ``batch``.

- Before anything is sent: Enot's balance (the one read that proves Enot is there)
  against the file's Enot rows that still need money -- rows the ledger does not
  hold, or holds ``pending`` or ``refused``. When it does not cover them, the run ends
  (exit 2, both sums, nothing sent) unless ``--allow-partial``.
- While paying: a provider's refusal for want of money (IntellectMoney's
  ``NotEnoughMoney`` state, Enot's "insufficient funds" refusal) ends the row
  ``refused``, payable again, and stops new payouts to that provider (``_report``);
  the batch exits ``EXIT_FUNDS`` saying "top up and re-run".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from ..enot import Balance, PayoffRequest
from ..ledger import Ledger, LedgerState
from ..payouts import PayoutResult
from ..payouts._funds import available_balance, count_refused_for_funds, refused_for_funds
from ._args import CLIError
from ._batch_file import BatchRow
from ._console import say
from ._preflight import Known

__all__ = ["check_enot_balance", "funds_notice", "out_of_funds", "warn_of_pauses"]

#: Ledger states of an Enot row whose money has surely not left the balance.
_UNPAID = frozenset({LedgerState.PENDING, LedgerState.REFUSED})


def out_of_funds(result: PayoutResult) -> bool:
    """True when the provider refused the payout for want of money (the row is
    ``refused``: a re-run pays it once the balance is topped up); the rule the workers
    pause a provider by (``payouts._funds``)."""
    return refused_for_funds(result)


def _still_to_pay(rows: Sequence[BatchRow], known: Known) -> list[BatchRow]:
    unpaid = []
    for row in rows:
        record = known.records.get((row.provider, row.key))
        if row.provider == "enot" and (record is None or record.state in _UNPAID):
            unpaid.append(row)
    return unpaid


def check_enot_balance(
    balance: Balance | None, rows: Sequence[BatchRow], known: Known, *, allow_partial: bool
) -> None:
    """Refuse the run (``CLIError``: exit 2, nothing sent) when Enot's available
    balance does not cover the Enot rows still to pay, unless ``allow_partial``."""
    unpaid = _still_to_pay(rows, known)
    if not unpaid:
        return
    available = available_balance(balance)
    if available is None:
        say("warning: could not read the Enot balance; the file's total was not checked")
        return
    total = sum((_amount(row) for row in unpaid), Decimal(0))
    if total <= available:
        return
    sums = (
        f"the Enot balance available, {available:.2f}, does not cover the file's "
        f"{len(unpaid)} Enot payout(s) still to pay, {total:.2f} in all (fees not counted)"
    )
    if allow_partial:
        say(f"warning: {sums}; paying what it covers (--allow-partial)")
        return
    raise CLIError(
        f"{sums}; nothing was sent: top up the balance, or pass --allow-partial to pay "
        "what it covers"
    )


def _amount(row: BatchRow) -> Decimal:
    request = row.request
    assert isinstance(request, PayoffRequest)
    return Decimal(request.amount)


def funds_notice(results: Iterable[PayoutResult]) -> str | None:
    """What to tell the operator when a provider ran out of money, else None."""
    short = count_refused_for_funds(results)
    if not short:
        return None
    which = ", ".join(f"{provider} ({n} refused)" for provider, n in sorted(short.items()))
    return (
        f"Not enough money at {which}: no new payout was started there after the first "
        "refusal. Top up and re-run the same command: it pays the refused and unsent "
        "payouts, and nothing twice."
    )


async def warn_of_pauses(ledger: Ledger, providers: Sequence[str]) -> None:
    """Say which of ``providers`` the workers have paused for want of money: this batch
    pays them all the same (its own money check ran), but the workers stay paused until
    ``payout-async funds resume``."""
    for pause in await ledger.pauses():
        if pause.provider in providers:
            say(
                f"warning: workers have paused {pause.provider} for want of money "
                f"({pause.reason}); this batch pays it all the same. After a top-up, "
                f"`payout-async funds resume {pause.provider}` lets the workers go on"
            )
