"""Provider pauses: "send nothing more to this provider", shared through the ledger.

A worker whose payout a provider refused for want of money records a pause of that
provider (``Ledger.pause_provider``), so that every worker sharing the ledger stops
claiming its rows -- but those whose money has moved (``processing``), which are polled
to their end -- and starts no money-moving request for it until the pause is lifted
(``Ledger.lift_pause``) -- by a worker whose balance check shows money again, or by the
operator (``payout-async funds resume``). One record per provider: who paused it
(``by``: a lease owner, or ``operator``), when (``since``, UNIX seconds) and why
(``reason``). A pause moves no row: rows stay ``pending`` or ``refused``, payable once
it is lifted.

The record lives beside the rows: a ``payout_pauses`` table in a SQLite file (schema
version 7) or in PostgreSQL (``{prefix}payout_pauses``, created with the other tables),
or a dict of a ``MemoryLedger``. Each backend's methods are one atomic statement each.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["ProviderPause", "pause_from_row"]


@attrs.frozen
class ProviderPause:
    """One provider's pause: since when (UNIX seconds), why, and by whom."""

    provider: str
    since: float
    reason: str
    by: str


def pause_from_row(row: Any) -> ProviderPause:
    """A pause from a ``(provider, since, reason, paused_by)`` row."""
    return ProviderPause(provider=row[0], since=float(row[1]), reason=row[2], by=row[3])
