"""Which ledger a command uses, said out loud, and never created by surprise.

Every command prints the ledger's absolute location first. ``memory://`` is refused
(nothing would be kept); ``status``, ``resume`` and ``reconcile`` refuse a ledger that
does not exist instead of creating an empty one; ``batch`` creates a missing SQLite
file itself, readable by its owner only (0600), before the ledger opens it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from typing import Literal

import attrs

from .._errors import ConfigurationError
from ..ledger import Ledger, LedgerOutdatedError
from ..ledger._url import LedgerURL, parse_ledger_url
from ._args import CLIError
from ._console import say
from ._files import create_new

__all__ = ["LedgerPlace", "locate", "open_ledger", "require_existing"]

Existence = Literal["exists", "missing"]
_HINT = "give --ledger sqlite:///path.db or postgresql://..."


@attrs.frozen
class LedgerPlace:
    """A ledger URL checked against what is there, and the encryption key to open it
    with (if the URL names none)."""

    url: LedgerURL
    exists: bool
    key: str | None = attrs.field(default=None, repr=False)

    @property
    def location(self) -> str:
        """Where the ledger is (absolute path, or the server without password)."""
        return self.url.location


def _parse(text: str) -> LedgerURL:
    try:
        url = parse_ledger_url(text)
    except ConfigurationError as error:
        raise CLIError(str(error)) from None
    if url.scheme == "memory":
        raise CLIError(f"memory:// keeps nothing after the command ends: {_HINT}")
    return url


def _sqlite_state(path: str) -> bool:
    """True when ``path`` is a payout-async ledger, False when there is none yet (no
    file, or an empty one); a ``CLIError`` for anything else."""
    directory = os.path.dirname(path) or "."
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if not os.path.isdir(directory):
            raise CLIError(
                f"cannot use ledger {path}: directory {directory} does not exist"
            ) from None
        return False
    except OSError as error:
        raise CLIError(f"cannot use ledger {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CLIError(f"cannot use ledger {path}: not a regular file")
    if info.st_size == 0:
        return False
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'payouts'"
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise CLIError(
            f"cannot use ledger {path}: not a readable SQLite database ({error})"
        ) from None
    if not found:
        raise CLIError(
            f"cannot use ledger {path}: an SQLite database, but not a payout-async ledger"
        )
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        say(
            f"warning: ledger {path} is readable by other users (mode {mode:04o}); it may "
            f"hold card numbers: chmod 600 {path}"
        )
    return True


async def _postgres_state(url: LedgerURL) -> bool:
    """True when the ledger's table exists in that database."""
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        raise CLIError(
            "a PostgreSQL ledger needs asyncpg: pip install 'payout-async[postgres]'"
        ) from None
    prefix = url.options.get("table_prefix", "")
    schema = url.options.get("schema")
    table = f"{schema}.{prefix}payouts" if schema else f"{prefix}payouts"
    try:
        connection = await asyncpg.connect(url.dsn, timeout=10)
        try:
            found = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        finally:
            await connection.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise CLIError(
            f"cannot reach the PostgreSQL ledger at {url.location}: {type(error).__name__}: {error}"
        ) from None
    return bool(found)


async def locate(text: str, *, key: str | None = None) -> LedgerPlace:
    """Parse ``--ledger``, say where it is, and whether it exists yet; ``key`` is the
    ledger's encryption key from the command's settings."""
    url = _parse(text)
    if url.scheme == "sqlite":
        assert url.path is not None
        exists = _sqlite_state(url.location)
        kind = "SQLite"
    else:
        exists = await _postgres_state(url)
        kind = "PostgreSQL"
    say(f"ledger: {url.location} ({kind}{'' if exists else ', does not exist yet'})")
    return LedgerPlace(url, exists, key)


def require_existing(place: LedgerPlace, command: str) -> None:
    """Refuse a ledger that does not exist: ``command`` never creates one."""
    if not place.exists:
        raise CLIError(
            f"no ledger at {place.location}: nothing was paid through it ({command} never "
            f"creates a ledger; {_HINT})"
        )


def _create_private(path: str) -> None:
    """An empty file only its owner may read or write, for SQLite to fill."""
    try:
        descriptor = create_new(path)
    except FileExistsError:
        return
    except OSError as error:
        raise CLIError(f"cannot create ledger {path}: {error.strerror}") from None
    os.close(descriptor)


async def open_ledger(
    place: LedgerPlace, *, create: bool = False, read_only: bool = False
) -> Ledger:
    """Open the ledger (creating it only when ``create``; ``read_only`` for a command
    that only looks, which then writes nothing, not even a schema upgrade); any failure
    is a ``CLIError`` (nothing has been sent yet)."""
    if not place.exists:
        if not create:
            raise CLIError(f"no ledger at {place.location}")
        if place.url.scheme == "sqlite":
            _create_private(place.location)
        say(f"creating a new ledger at {place.location}")
    ledger = place.url.ledger(encryption_key=place.key, read_only=read_only)
    try:
        await ledger.open()
    except Exception as error:
        with contextlib.suppress(Exception):
            await ledger.aclose()
        if isinstance(error, LedgerOutdatedError):
            raise CLIError(
                f"ledger {place.location} was written by an older payout-async, and this "
                "command only reads: it upgrades nothing. The first batch, enqueue, resume, "
                "reconcile or worker of this version upgrades it as it opens it (stop the "
                "older version's workers first)"
            ) from None
        raise CLIError(
            f"cannot open ledger {place.location}: {type(error).__name__}: {error}"
        ) from None
    return ledger
