"""How long a ledger call may wait: its full bound, or less while the ledger is out.

When a call has run out of time (PostgreSQL did not answer, another process held the
SQLite lock throughout), the calls that follow -- a transition read back, a lease given
back, a row read for the caller -- would each wait the full bound again, and a payout
would wait several bounds in a row. So until a call succeeds again, each call waits at
most ``STRAINED`` seconds (or the full bound, if that is shorter).
"""

from __future__ import annotations

__all__ = ["STRAINED", "Patience"]

STRAINED = 1.0


class Patience:
    """The wait allowed for the next call: ``full``, or ``STRAINED`` after a call ran
    out of time and until one succeeds."""

    def __init__(self, full: float) -> None:
        self.full = full
        self.strained = False

    def budget(self) -> float:
        """Seconds the next call may wait in all."""
        return min(self.full, STRAINED) if self.strained else self.full

    def ran_out(self) -> None:
        """A call waited its whole budget in vain."""
        self.strained = True

    def succeeded(self) -> None:
        """A call got through: the ledger answers again."""
        self.strained = False
