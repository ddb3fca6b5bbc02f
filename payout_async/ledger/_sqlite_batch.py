"""One group-commit transaction of ``SQLiteLedger``, and what its failures mean.

Each write of the batch (an ``Op``) stays atomic on its own: one that fails leaves no
trace and does not undo the others. A write that is one statement gets that from
SQLite (a failed statement is undone, or the whole transaction is: then the batch
fails); one that may write more runs in a savepoint of its own. The history rows the
writes append (``HistoryRow``) are inserted together, in order, before the commit.

``commit_batch`` runs on aiosqlite's thread and reports every failure as data, saying
where it happened: a ``BEGIN IMMEDIATE`` that found the file locked changed nothing
(the writes go back in the queue while their callers still have time to wait); a
failure before ``COMMIT`` was rolled back (not written); a failed ``COMMIT`` is not
written when SQLite says so for certain (``SQLITE_FULL``, ``SQLITE_BUSY``) and unknown
otherwise (an I/O error may strike after the commit frame reached the WAL).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import attrs

from .._errors import ConfigurationError
from ._errors import LedgerError, LedgerNotWrittenError, LedgerOutcomeUnknownError

__all__ = [
    "BatchOutcome",
    "HistoryRow",
    "Op",
    "commit_batch",
    "is_locked",
    "not_written",
    "open_error",
    "outcome_unknown",
    "savepoint",
    "set_busy_timeout",
]


class HistoryRow(NamedTuple):
    """One row of ``payout_transitions`` (``ledger._base.Transition``), as a write of
    the batch appends it; states as their values. (A named tuple: ``executemany``
    binds it as it is, and one is made per write.)"""

    provider: str
    key: str
    from_state: str | None
    to_state: str
    at: float
    owner: str | None
    note: str | None


_HISTORY = (
    f"INSERT INTO payout_transitions ({', '.join(HistoryRow._fields)}) "
    f"VALUES ({', '.join('?' for _ in HistoryRow._fields)})"
)


@attrs.frozen(slots=False)
class Op:
    """One write of a batch: ``run(conn, history)`` returns what its caller hears, or
    raises, and appends the history rows it writes to ``history``. ``atomic``: it
    leaves no trace when it raises -- it writes with one statement at most, or in a
    ``savepoint`` of its own; else the batch runs it in one."""

    run: Callable[[sqlite3.Connection, list[HistoryRow]], Any]
    atomic: bool = False


_BUSY, _LOCKED, _FULL = sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL
# Opening failures that no retry fixes: a wrong path, not a database, no permission.
_BAD_FILE = frozenset(
    {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_PERM}
)


def _primary(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _describe(error: BaseException) -> tuple[str, str | None]:
    name = getattr(error, "sqlite_errorname", None)
    return f"{type(error).__name__}: {error}", name


def is_locked(error: BaseException) -> bool:
    """True when another connection holds the lock (``SQLITE_BUSY``/``SQLITE_LOCKED``)."""
    return isinstance(error, sqlite3.Error) and _primary(error) in (_BUSY, _LOCKED)


def not_written(error: BaseException, context: str) -> LedgerNotWrittenError:
    """``error`` as a ``LedgerNotWrittenError``."""
    text, name = _describe(error)
    return LedgerNotWrittenError(f"{context}: {text}", code=name)


def outcome_unknown(error: BaseException, context: str) -> LedgerOutcomeUnknownError:
    """``error`` as a ``LedgerOutcomeUnknownError``."""
    text, name = _describe(error)
    return LedgerOutcomeUnknownError(f"{context}: {text}", code=name)


def open_error(error: sqlite3.Error, path: str) -> ConfigurationError | LedgerNotWrittenError:
    """An error while opening the file: a bad file is a ``ConfigurationError``, anything
    else (a lock, a full disk) a ``LedgerNotWrittenError``."""
    if _primary(error) in _BAD_FILE:
        return ConfigurationError(f"cannot open the SQLite ledger {path!r}: {error}")
    return not_written(error, f"could not open the SQLite ledger {path!r}")


@attrs.frozen
class BatchOutcome:
    """What happened to one transaction: ``locked`` (nothing ran, the lock was not
    granted in time), ``outcomes`` (per write: ``(True, value)`` or ``(False, error)``),
    and ``error`` with ``unknown`` when the transaction as a whole failed."""

    outcomes: list[tuple[bool, Any]] = attrs.Factory(list)
    locked: bool = False
    error: BaseException | None = None
    unknown: bool = False

    def results(self, count: int) -> list[tuple[bool, Any]]:
        """Per write: its value, its own error, or the transaction's classified error."""
        if self.error is None:
            return self.outcomes
        if not self.outcomes:  # failed before any write ran, or was rolled back whole
            return [(False, not_written(self.error, "the ledger write was rolled back"))] * count
        failure: LedgerError
        if self.unknown:
            failure = outcome_unknown(self.error, "the ledger commit may or may not have happened")
        else:
            failure = not_written(self.error, "the ledger commit failed")
        # A write that ran shares the commit's fate; one that failed keeps its error.
        return [(False, failure if ok else value) for ok, value in self.outcomes]


#: A wait of at least this share of the connection's own busy timeout is left to it.
_CLOSE_ENOUGH = 0.98


def set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """Let ``conn``'s statements wait up to ``seconds`` for a lock (a millisecond at
    least: zero would mean not at all)."""
    conn.execute(f"PRAGMA busy_timeout = {max(1, round(seconds * 1000))}")


def commit_batch(
    conn: sqlite3.Connection, ops: list[Op], wait: float, busy_timeout: float
) -> BatchOutcome:
    """Run ``ops`` in one ``BEGIN IMMEDIATE`` transaction, waiting at most ``wait``
    seconds for the write lock, each atomic on its own (see the module docstring), and
    their history rows before the commit (on aiosqlite's thread)."""
    # The connection waits ``busy_timeout`` for the lock: shorten that only when the
    # callers may wait noticeably less (two statements per batch otherwise spent).
    shorter = wait < busy_timeout * _CLOSE_ENOUGH
    if shorter:
        set_busy_timeout(conn, wait)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            return BatchOutcome(locked=is_locked(error), error=error)
        outcomes: list[tuple[bool, Any]] = []
        try:
            history = _run_ops(conn, ops, outcomes)
            if history:
                conn.executemany(_HISTORY, history)
        except sqlite3.Error as error:
            _rollback(conn)
            # Every write ran (the history failed): each keeps its own outcome's fate.
            ran = outcomes if len(outcomes) == len(ops) else []
            return BatchOutcome(ran, error=error)
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            _rollback(conn)
            unknown = _primary(error) not in (_FULL, _BUSY)
            return BatchOutcome(outcomes, error=error, unknown=unknown)
        return BatchOutcome(outcomes)
    finally:
        if shorter:
            set_busy_timeout(conn, busy_timeout)


def _run_ops(
    conn: sqlite3.Connection, ops: list[Op], outcomes: list[tuple[bool, Any]]
) -> list[HistoryRow]:
    """Run each write, its outcome appended to ``outcomes``; the history rows of those
    that succeeded. Raises when a failure took the whole transaction down."""
    history: list[HistoryRow] = []
    for op in ops:
        written = len(history)
        try:
            if op.atomic:
                value = op.run(conn, history)
            else:
                with savepoint(conn):
                    value = op.run(conn, history)
        except Exception as error:
            del history[written:]
            if not conn.in_transaction:  # SQLite rolled the whole transaction back
                raise
            if isinstance(error, sqlite3.Error) and not isinstance(error, sqlite3.IntegrityError):
                error = not_written(error, "the ledger write was rolled back")
            outcomes.append((False, error))
        else:
            outcomes.append((True, value))
    return history


@contextlib.contextmanager
def savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the body's statements so that they are undone together if it raises."""
    conn.execute("SAVEPOINT op")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # (else SQLite rolled the whole transaction back)
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        raise
    conn.execute("RELEASE op")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the transaction is gone either way
            conn.execute("ROLLBACK")
