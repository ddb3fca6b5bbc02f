"""What ``status`` says about the backlog: how old the oldest unfinished row is, and
why rows need attention (reasons grouped, with counts).

A row is *unfinished* while something must still happen to it: it is in a state
``resume`` drives on (``pending`` ... ``processing``) or waits in ``needs_attention``.
A reason is grouped by its text before the first ``": "`` -- what the drive was doing --
so that "could not follow the payoff: <error of row 1>" and "...: <error of row 2>"
count together.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from ..ledger import ACTIVE_STATES, Ledger, LedgerState, PayoutRecord
from ._console import Column, literal, render_table, show, terminal_width

__all__ = ["UNFINISHED_STATES", "Backlog", "backlog", "print_backlog", "reason_group"]

#: States of rows that still need something to happen to them.
UNFINISHED_STATES = frozenset(ACTIVE_STATES | {LedgerState.NEEDS_ATTENTION})

_COLUMNS = (Column("count"), Column("reason", "wrap", minimum=30))


def reason_group(reason: str | None) -> str:
    """The group a ``needs_attention`` reason counts under: its text before ``": "``."""
    if not reason:
        return "(no reason recorded)"
    return reason.split(": ", 1)[0]


@attrs.frozen
class Backlog:
    """The oldest unfinished row (None: there is none) and the ``needs_attention``
    reason groups with their counts, most frequent first."""

    oldest: PayoutRecord | None
    reasons: list[tuple[str, int]]
    now: float

    @property
    def oldest_age(self) -> float | None:
        """Seconds since the oldest unfinished row was created."""
        return None if self.oldest is None else max(0.0, self.now - self.oldest.created_at)

    def sections(self) -> dict[str, Any]:
        """The ``status --json`` sections: ``oldest_unfinished`` and ``attention``."""
        oldest = None
        if self.oldest is not None:
            oldest = {
                "key": self.oldest.key,
                "provider": self.oldest.provider,
                "state": self.oldest.state.value,
                "created_at": self.oldest.created_at,
                "age_seconds": round(self.oldest_age or 0.0, 3),
            }
        attention = [{"reason": reason, "count": count} for reason, count in self.reasons]
        return {"oldest_unfinished": oldest, "attention": attention}


async def backlog(ledger: Ledger, providers: Iterable[str]) -> Backlog:
    """Read the backlog of ``providers``' rows (the oldest row of each unfinished state,
    and every ``needs_attention`` row's reason)."""
    oldest: list[PayoutRecord] = []
    reasons: Counter[str] = Counter()
    for provider in providers:
        for state in UNFINISHED_STATES:
            oldest += await ledger.records(provider=provider, state=state, limit=1)
        for record in await ledger.records(provider=provider, state=LedgerState.NEEDS_ATTENTION):
            reasons[reason_group(record.reason)] += 1
    first = min(oldest, key=lambda r: (r.created_at, r.provider, r.key), default=None)
    grouped = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return Backlog(oldest=first, reasons=grouped, now=time.time())


def _age(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.1 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def print_backlog(found: Backlog) -> None:
    """The backlog as text on stdout (nothing when there is no unfinished row)."""
    if found.oldest is not None:
        row = found.oldest
        show()
        show(
            f"oldest unfinished payout: {literal(row.key)} ({row.provider}, {row.state.value}), "
            f"created {_age(found.oldest_age or 0.0)} ago"
        )
    if found.reasons:
        show()
        show("needs_attention by reason:")
        rows = [(str(count), reason) for reason, count in found.reasons]
        for line in render_table(_COLUMNS, rows, width=terminal_width()):
            show(line)
