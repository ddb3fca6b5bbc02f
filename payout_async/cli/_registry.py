"""Which ledger each idempotency key was paid through, remembered per user.

A ledger only protects the keys it holds: the same file paid through another ledger (a
run from another folder, a typo in ``--ledger``) would be paid again. So ``batch``
notes, in a small SQLite file of the user's own (``$PAYOUT_ASYNC_STATE_DIR``, else
``$XDG_STATE_HOME/payout-async``, else ``~/.local/state/payout-async``; mode 0600), a
digest of every (provider, key) it is about to pay and the ledger it used, and refuses
keys already noted for another ledger that this one does not hold. Only digests are
kept, never keys or payout details.
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

from ._files import create_new

__all__ = ["KeyRegistry", "default_registry"]

_CHUNK = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    digest BLOB NOT NULL,
    ledger TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (digest, ledger)
) WITHOUT ROWID
"""


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
        connection.execute(_SCHEMA)
        return connection

    def elsewhere(self, keys: Iterable[tuple[str, str]], ledger: str) -> dict[tuple[str, str], str]:
        """The (provider, key) pairs noted for a ledger other than ``ledger``, each with
        the most recent such ledger's location."""
        by_digest = {_digest(provider, key): (provider, key) for provider, key in keys}
        found: dict[tuple[str, str], str] = {}
        if not self.path.exists():
            return found
        with closing(self._connect()) as connection:
            for chunk in _chunks(list(by_digest)):
                marks = ", ".join("?" for _ in chunk)
                rows = connection.execute(
                    f"SELECT digest, ledger FROM seen WHERE digest IN ({marks}) AND ledger != ? "
                    "ORDER BY at",
                    (*chunk, ledger),
                )
                for digest, other in rows:
                    found[by_digest[digest]] = other
        return found

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


def default_registry() -> KeyRegistry:
    """The registry in the default directory."""
    return KeyRegistry(default_directory())
