"""``ledger_from_url``: a ledger named by one string (for the CLI and configuration)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._errors import ConfigurationError
from ._base import Ledger
from ._memory import MemoryLedger
from ._postgres import PostgresLedger
from ._sqlite import SQLiteLedger

__all__ = ["ledger_from_url"]

_SQLITE_OPTIONS = frozenset({"synchronous", "busy_timeout"})
_POSTGRES_OPTIONS = frozenset({"schema", "table_prefix", "max_connections"})


def ledger_from_url(url: str) -> Ledger:
    """The ledger ``url`` names.

    - ``memory://`` -- a ``MemoryLedger`` (nothing survives the process);
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (as SQLAlchemy
      spells them) or a bare file path -- a ``SQLiteLedger``; options
      ``?synchronous=NORMAL`` and ``?busy_timeout=SECONDS``;
    - ``postgresql://...`` or ``postgres://...`` -- a ``PostgresLedger``; options
      ``?schema=...``, ``?table_prefix=...`` and ``?max_connections=N`` are the
      ledger's, any other query parameter goes to asyncpg.

    Anything else raises ``ConfigurationError``.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("ledger URL must be a non-empty string")
    if "://" not in url:
        return SQLiteLedger(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryLedger()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise ConfigurationError(
        f"unsupported ledger URL scheme {scheme!r}: use memory://, sqlite:///path.db "
        "or postgresql://..."
    )


def _options(url: str, allowed: frozenset[str]) -> tuple[str, dict[str, str]]:
    """Split the ledger's own query parameters from the rest of ``url``."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in allowed:
            ours[name] = value
        else:
            theirs.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def _sqlite(url: str) -> SQLiteLedger:
    parts = urlsplit(url)
    if parts.netloc or len(parts.path) < 2:
        raise ConfigurationError(
            f"bad SQLite ledger URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db"
        )
    _, options = _options(url, _SQLITE_OPTIONS)
    unknown = {name for name, _ in parse_qsl(parts.query)} - _SQLITE_OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown SQLite ledger options {sorted(unknown)}")
    synchronous = options.get("synchronous", "FULL").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise ConfigurationError("synchronous must be FULL or NORMAL")
    try:
        busy_timeout = float(options.get("busy_timeout", "30"))
    except ValueError:
        raise ConfigurationError("busy_timeout must be a number of seconds") from None
    return SQLiteLedger(
        parts.path[1:],
        synchronous="FULL" if synchronous == "FULL" else "NORMAL",
        busy_timeout=busy_timeout,
    )


def _postgres(url: str) -> PostgresLedger:
    dsn, options = _options(url, _POSTGRES_OPTIONS)
    try:
        max_connections = int(options.get("max_connections", "10"))
    except ValueError:
        raise ConfigurationError("max_connections must be a whole number") from None
    return PostgresLedger(
        dsn,
        schema=options.get("schema") or None,
        table_prefix=options.get("table_prefix", ""),
        max_connections=max_connections,
    )
