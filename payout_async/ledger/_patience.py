"""How long a ledger call may wait: its full bound, or less once one payout's call has
run out of time.

When a payout's ledger call has waited its whole bound in vain (PostgreSQL did not
answer, another process held the SQLite lock throughout), the calls that payout makes
next -- its transition read back, its lease given back, its row read for the caller --
would each wait the full bound again. Within ``one_payout()`` (``pay_many`` runs each
payout in one), they wait at most ``STRAINED`` seconds instead, until one gets through.
Other payouts keep the full bound: a new payout waits for the ledger to come back
rather than giving up at once.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["STRAINED", "Patience", "Strain", "one_payout"]

STRAINED = 1.0

#: The ledgers (by ``id`` of their ``Patience``) that ran out of time for the payout
#: being handled; a mutable set, so that tasks the payout spawns (shielded writes)
#: share it.
Strain = set[int]
_STRAIN: ContextVar[Strain | None] = ContextVar("payout_async_ledger_strain", default=None)


class one_payout:  # lower case: used as ``with one_payout():``, a function before
    """Scope the shortened waits to one payout (see the module docstring). A class,
    not a generator: it is entered once per payout."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _STRAIN.set(set())

    def __exit__(self, *exc_info: object) -> None:
        _STRAIN.reset(self._token)


class Patience:
    """The wait allowed for a ledger's next call: ``full``, or ``STRAINED`` (if that is
    shorter) for a payout whose call to this ledger ran out of time."""

    def __init__(self, full: float) -> None:
        self.full = full

    @staticmethod
    def scope() -> Strain | None:
        """The payout being handled here, if any (keep it for ``ran_out`` and
        ``succeeded`` when they are called from another task)."""
        return _STRAIN.get()

    def budget(self, scope: Strain | None = None) -> float:
        """Seconds the next call may wait in all."""
        scope = self.scope() if scope is None else scope
        strained = scope is not None and id(self) in scope
        return min(self.full, STRAINED) if strained else self.full

    def ran_out(self, scope: Strain | None) -> None:
        """A call of that payout waited its whole budget in vain."""
        if scope is not None:
            scope.add(id(self))

    def succeeded(self, scope: Strain | None) -> None:
        """A call of that payout got through: the ledger answers again."""
        if scope is not None:
            scope.discard(id(self))
