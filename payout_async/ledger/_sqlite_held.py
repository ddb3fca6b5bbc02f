"""The rows an ``SQLiteLedger``'s drives hold, as the ledger last wrote or read them.

A transition must know the row it moves: the state it leaves (for the history) and
every column (for the record it hands back). Reading the row first costs a statement
per transition. Instead the ledger remembers each held row as its last write left it
(or its last read found it), and the transition's UPDATE matches the row only if every
column but the lease's expiry (which renewals move) still holds the remembered value
-- the lease's owner and fencing token, its state and everything that decides money
among them. A row that anything else has written since (a webhook's settlement, a
key rotation, another process, an edit outside payout-async) or that a rolled-back
write left other than remembered is not matched, and the transition reads the row
and decides as if nothing were remembered. What is remembered is never evidence:
only the row in the file is, and the UPDATE compares with it.

Touched on SQLite's thread only (inside the writes of a batch). A row is forgotten
when its lease ends with a write (a final or releasing move, a release); at most
``SIZE`` rows are kept (the oldest forgotten first: a drive that stopped without a
word reads its row again, if it ever goes on).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any

from ._rows import AT, COLUMNS

__all__ = ["SIZE", "HeldRows", "matching"]

SIZE = 4096
#: The columns a remembered row must still hold: all but its primary key (named by the
#: UPDATE anyway) and the lease's expiry.
_MATCHED = tuple(name for name in COLUMNS if name not in ("provider", "key", "lease_expires_at"))
_matched_values = operator.itemgetter(*(AT[name] for name in _MATCHED))
_OWNER_AT, _TOKEN_AT = AT["lease_owner"], AT["lease_token"]


@functools.cache
def matching(update: str) -> str:
    """``update`` (an UPDATE of one row ending ``WHERE provider = ? AND key = ?``)
    made to match only a row that still holds the remembered values (bound after the
    key, in ``values`` order)."""
    names = ", ".join(_MATCHED)
    return f"{update} AND ({names}) IS ({', '.join('?' for _ in _MATCHED)})"


class HeldRows:
    """Each held row (``COLUMNS`` in order) as this ledger last wrote or read it."""

    def __init__(self, size: int = SIZE) -> None:
        self._rows: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._size = size

    def held(self, provider: str, key: str, owner: str, token: int) -> tuple[Any, ...] | None:
        """The row remembered for this drive's lease (``owner``, ``token``), if any."""
        row = self._rows.get((provider, key))
        if row is None or row[_OWNER_AT] != owner or row[_TOKEN_AT] != token:
            return None
        return row

    @staticmethod
    def values(row: Sequence[Any]) -> tuple[Any, ...]:
        """What ``matching`` binds after the key for ``row``."""
        values: tuple[Any, ...] = _matched_values(row)
        return values

    def remember(self, row: Sequence[Any]) -> None:
        """``row`` as a write just left it: kept while a lease holds it."""
        at = (row[0], row[1])
        self._rows.pop(at, None)  # (kept again below, as the newest)
        if row[_OWNER_AT] is not None:
            self._rows[at] = tuple(row)
            if len(self._rows) > self._size:
                del self._rows[next(iter(self._rows))]

    def forget(self, provider: str, key: str) -> None:
        """The row's lease ended (or is no longer this ledger's to know)."""
        self._rows.pop((provider, key), None)
