"""Which ledger each idempotency key was paid through, remembered per user.

A ledger only protects the keys it holds: the same file paid through another ledger (a
run from another folder, a typo in ``--ledger``) would be paid again. So ``batch``
notes, in a small SQLite file of the user's own (``$PAYOUT_ASYNC_STATE_DIR``, else
``$XDG_STATE_HOME/payout-async``, else ``~/.local/state/payout-async``; mode 0600), a
digest of every (provider, key) it is about to pay and the ledger it used, and refuses
keys already noted for another ledger that this one does not hold -- under any
provider: a key is one payout, whatever the provider. Only digests are kept, never
keys or payout details.

It also notes, per ledger location, the identity of the ledger found there after each
run (its random id and its mark: ``LedgerIdentity``), so that a ledger recreated or
restored at that location can be told from the one this user paid through
(``cli._history``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Literal

import attrs

from ._files import create_new

__all__ = ["KeyRegistry", "Seen", "default_registry"]

_CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    digest BLOB NOT NULL,
    ledger TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (digest, ledger)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledgers (
    location TEXT PRIMARY KEY,
    ledger_id TEXT NOT NULL,
    mark INTEGER NOT NULL,
    at REAL NOT NULL
)
"""


@attrs.frozen
class Seen:
    """The ledger noted at a location after this user's last run there."""

    ledger_id: str
    mark: int


def _digest(provider: str, key: str) -> bytes:
    return hashlib.sha256(f"{provider}\0{key}".encode()).digest()[:16]


def _chunks(items: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def default_directory() -> Path:
    """Where the registry lives (see the module docstring)."""
    explicit = os.environ.get("PAYOUT_ASYNC_STATE_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "payout-async"


class KeyRegistry:
    """(provider, key) digests and the ledger locations they were paid through."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "keys.db"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(create_new(self.path))
        connection = sqlite3.connect(self.path, timeout=30)
        connection.executescript(_SCHEMA)
        return connection

    def elsewhere(
        self, keys: Iterable[tuple[str, str]], ledger: str, *, providers: Sequence[str] = ()
    ) -> dict[tuple[str, str], str]:
        """The (provider, key) pairs noted -- under their provider, or any of
        ``providers`` -- for a ledger other than ``ledger``, each with the most recent
        such ledger's location."""
        return dict(self._lookup(keys, providers, "!=", ledger))

    def remember(self, keys: Iterable[tuple[str, str]], ledger: str) -> None:
        """Note that these keys are being paid through ``ledger``."""
        now = time.time()
        rows = [(_digest(provider, key), ledger, now) for provider, key in keys]
        with closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT INTO seen (digest, ledger, at) VALUES (?, ?, ?) "
                "ON CONFLICT (digest, ledger) DO UPDATE SET at = excluded.at",
                rows,
            )

    def noted(
        self, keys: Iterable[tuple[str, str]], ledger: str, *, providers: Sequence[str] = ()
    ) -> set[tuple[str, str]]:
        """The (provider, key) pairs noted for ``ledger`` -- under their provider, or
        any of ``providers``."""
        return {pair for pair, _ in self._lookup(keys, providers, "=", ledger)}

    def _lookup(
        self,
        keys: Iterable[tuple[str, str]],
        providers: Sequence[str],
        compare: Literal["=", "!="],
        ledger: str,
    ) -> Iterator[tuple[tuple[str, str], str]]:
        """Each (provider, key) pair noted -- under its provider, or any of
        ``providers`` -- for a ledger that is (``=``) or is not (``!=``) ``ledger``,
        with that ledger's location, oldest first."""
        by_digest: dict[bytes, tuple[str, str]] = {}
        for provider, key in keys:
            for noted in {provider, *providers}:
                by_digest[_digest(noted, key)] = (provider, key)
        if not self.path.exists():
            return
        with closing(self._connect()) as connection:
            for chunk in _chunks(list(by_digest)):
                marks = ", ".join("?" for _ in chunk)
                rows = connection.execute(
                    f"SELECT digest, ledger FROM seen WHERE digest IN ({marks}) "
                    f"AND ledger {compare} ? ORDER BY at",
                    (*chunk, ledger),
                )
                for digest, noted_for in rows:
                    yield by_digest[digest], noted_for

    def count_at(self, ledger: str) -> int:
        """How many keys are noted for ``ledger``."""
        if not self.path.exists():
            return 0
        with closing(self._connect()) as connection:
            row = connection.execute("SELECT count(*) FROM seen WHERE ledger = ?", (ledger,))
            return int(row.fetchone()[0])

    def last_seen(self, location: str) -> Seen | None:
        """The ledger noted at ``location`` after the last run there, if any."""
        if not self.path.exists():
            return None
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT ledger_id, mark FROM ledgers WHERE location = ?", (location,)
            ).fetchone()
        return None if row is None else Seen(row[0], int(row[1]))

    def saw(self, location: str, ledger_id: str, mark: int, *, accepted: bool = False) -> None:
        """Note the ledger found at ``location``: the same ledger's mark never goes down
        here, unless the operator ``accepted`` this (restored) ledger."""
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "INSERT INTO ledgers (location, ledger_id, mark, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (location) DO UPDATE SET mark = CASE WHEN ? OR "
                "ledgers.ledger_id != excluded.ledger_id THEN excluded.mark "
                "ELSE max(ledgers.mark, excluded.mark) END, "
                "ledger_id = excluded.ledger_id, at = excluded.at",
                (location, ledger_id, mark, time.time(), accepted),
            )


def default_registry() -> KeyRegistry:
    """The registry in the default directory."""
    return KeyRegistry(default_directory())
