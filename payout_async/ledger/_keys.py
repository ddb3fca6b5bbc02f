"""A key is one payout, whatever the provider: ``begin``'s and ``enqueue``'s rule for a
key that has a row under another provider.

A key has at most one row that is not ``failed`` or ``cancelled`` (the durable ledgers
hold that in a unique index, so that two concurrent begins of one key under two
providers cannot both record it). A key recorded under one provider is refused under
another (``IdempotencyConflictError`` naming the provider it has), unless the caller
says so (``switch_provider``) and that payout ended without paying: ``failed``,
``cancelled``, or ``refused`` with nobody driving it -- a refused row is then cancelled
in the same write, so that nothing sends it again.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._errors import IdempotencyConflictError
from ._base import LedgerState

__all__ = [
    "DEAD_STATES",
    "SWITCHABLE_STATES",
    "Other",
    "live_elsewhere",
    "moved_note",
    "rows_to_cancel",
]

#: A row in these states no longer holds its key: another provider may take it.
DEAD_STATES = frozenset({LedgerState.FAILED, LedgerState.CANCELLED})
#: A row in these states lets its key move to another provider, when the caller says so.
SWITCHABLE_STATES = DEAD_STATES | {LedgerState.REFUSED}


@attrs.frozen
class Other:
    """A row of the same key under another provider: its state, and whether a drive
    holds its lease (a lease that ran out holds nothing)."""

    provider: str
    state: LedgerState
    leased: bool = False


def rows_to_cancel(key: str, others: Iterable[Other], *, switch_provider: bool) -> list[str]:
    """The providers whose refused row of ``key`` to cancel before it is recorded under
    another one; ``IdempotencyConflictError`` (naming the first provider in the way) when
    it may not be recorded there."""
    cancel: list[str] = []
    for other in sorted(others, key=lambda o: o.provider):
        movable = other.state in SWITCHABLE_STATES and not (
            other.state is LedgerState.REFUSED and other.leased
        )
        if not (switch_provider and movable):
            raise IdempotencyConflictError(key, provider=other.provider, state=other.state.value)
        if other.state is LedgerState.REFUSED:
            cancel.append(other.provider)
    return cancel


def live_elsewhere(key: str, others: Iterable[Other]) -> None:
    """``IdempotencyConflictError`` if another provider's row of ``key`` still holds it
    (a ledger written before this rule may hold a key under two providers)."""
    for other in sorted(others, key=lambda o: o.provider):
        if other.state not in DEAD_STATES:
            raise IdempotencyConflictError(key, provider=other.provider, state=other.state.value)


def moved_note(provider: str) -> str:
    """The note and reason of a refused row cancelled because its key moved."""
    return f"the key moved to {provider} (switch_provider)"
