"""``SQLiteLedger``: the default durable ledger, one SQLite file in WAL mode.

Several processes on one host may share the file: every write runs in a
``BEGIN IMMEDIATE`` transaction, so SQLite's write lock serialises them and
``claim_stranded`` never hands one row to two callers. (Several hosts need
``PostgresLedger``: SQLite's locking is not safe over network file systems.)

Writes are group-committed: the ones that arrive while a transaction is being written
go into the next transaction together, each atomic on its own (``ledger._sqlite_batch``),
and its caller hears back only once that transaction has committed. The hot writes are
one statement each -- a payout's insert, each fenced transition (matching the row as
this ledger last left it: ``ledger._sqlite_held``), each renewal -- and the history
rows of a batch are one ``executemany``.

The connection runs with ``secure_delete`` on, and the WAL is checkpointed and emptied
after a write drops a recipient kept in clear (``ledger._sqlite_scrub``), so that no
old copy of a finished payout's card number stays in the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast

import aiosqlite
import aiosqlite.core
import attrs

from .._errors import ConfigurationError, IdempotencyConflictError, PayoutError
from .._loops import LoopBinding, Moved, keep
from ._base import (
    ACTIVE_STATES,
    MUTABLE_FIELDS,
    Claim,
    Enqueued,
    EnqueueOutcome,
    Intent,
    LeaseHolder,
    LeaseLostError,
    Ledger,
    LedgerIdentity,
    LedgerState,
    PayoutRecord,
    Settlement,
    Transition,
    WorkListener,
)
from ._errors import (
    LedgerError,
    LedgerNotWrittenError,
    OperationTakenError,
    outdated,
    too_new,
)
from ._keys import DEAD_STATES, Other, live_elsewhere, moved_note, rows_to_cancel
from ._listen import ListenerHub
from ._patience import Patience, Strain
from ._pause_tables import SQLitePauseSQL
from ._pauses import ProviderPause, pause_from_row
from ._recipient import MASKED_HASH, EncryptionKey, Recipients, Stored, is_clear
from ._rotate import KEY_USE, RESEAL, TO_ROTATE, KeyUse, RotationBatch, plan
from ._rows import (
    AT,
    COLUMNS,
    FINAL_VALUES,
    FORMAT,
    TRANSITION_COLUMNS,
    Records,
    check_changes,
    dump_params,
    sign_changes,
    transition_from_row,
)
from ._sqlite_batch import (
    BatchOutcome,
    HistoryRow,
    Op,
    commit_batch,
    is_locked,
    not_written,
    open_error,
    savepoint,
)
from ._sqlite_fs import check_local_disk
from ._sqlite_held import HeldRows, matching
from ._sqlite_none import bind_none_directly
from ._sqlite_schema import create_schema, newer_schema, schema_current
from ._sqlite_scrub import Scrubber
from ._sqlite_thread import fetch_all, on_thread, run_sql
from ._texts import kept_text, scrub

__all__ = ["SQLiteLedger"]

logger = logging.getLogger("payout_async")

T = TypeVar("T")

_COLS = ", ".join(COLUMNS)
_COLUMN_SET = frozenset(COLUMNS)
_DEAD = ", ".join(f"'{state.value}'" for state in sorted(DEAD_STATES))
# Not final. (Not ``state NOT IN (...)``: for a list of three or more values SQLite
# builds a temporary b-tree each time the statement runs -- ~2.4 us, and an
# allocation whose release can send memory back to the kernel and fault it in again.)
_LIVE = " AND ".join(f"state != '{state}'" for state in FINAL_VALUES)
# Held: the drive's claim is still the row's latest (an expired lease nobody has
# claimed since is still its holder's: any other claim would have raised the token).
_HELD = f"lease_owner = ? AND lease_token = ? AND {_LIVE}"
_MAX_BATCH = 256
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds
DEFAULT_CHECKPOINT_INTERVAL = 1.0  # seconds
_LOCKED_PAUSE = 0.005  # after a BEGIN that found the file locked, before trying again

# A new row's values by position (``?N``: SQLite binds a sequence with no name lookup,
# which costs a third of an insert when bound by name).
_VALUES = ", ".join(f"?{position + 1}" for position in range(len(COLUMNS)))
_INSERT = (
    f"INSERT INTO payouts ({_COLS}) VALUES ({_VALUES}) "
    f"ON CONFLICT (provider, key) DO NOTHING RETURNING {_COLS}"
)
# ``begin``'s first try: a key with no row under any provider is recorded at once
# (anything else -- a row there already, its order_id another key's -- is decided by
# the rules in full). Its row is the values given (``rowcount`` says whether it was).
_INSERT_NEW = (
    f"INSERT INTO payouts ({_COLS}) SELECT {_VALUES} WHERE NOT EXISTS "
    f"(SELECT 1 FROM payouts WHERE key = ?{AT['key'] + 1} AND provider != ?{AT['provider'] + 1}) "
    "ON CONFLICT (provider, key) DO NOTHING"
)
_SELECT = f"SELECT {_COLS} FROM payouts WHERE provider = ? AND key = ?"
# ``transition``: the row, if the lease is held (its state goes in the history).
_HELD_ROW = f"SELECT {_COLS} FROM payouts WHERE provider = ? AND key = ? AND {_HELD}"
_LEASE = (
    "UPDATE payouts SET lease_owner = ?, lease_expires_at = ?, lease_token = lease_token + 1 "
    f"WHERE provider = ? AND key = ? RETURNING {_COLS}"
)
_RENEW = f"UPDATE payouts SET lease_expires_at = ? WHERE provider = ? AND key = ? AND {_HELD}"
_RELEASE = (
    "UPDATE payouts SET lease_owner = NULL, lease_expires_at = NULL "
    "WHERE provider = ? AND key = ? AND lease_owner = ? AND lease_token = ?"
)
_REBEGIN = (
    "UPDATE payouts SET state = ?, params_hash = ?, params = ?, recipient = ?, order_id = ?, "
    "signature = ?, provider_account = ?, account_signature = ?, reason = NULL, updated_at = ? "
    "WHERE provider = ? AND key = ?"
)
_RECIPIENT = "SELECT recipient FROM payouts WHERE provider = ? AND key = ?"
# What a final write also sets: the recipient goes, the fingerprint and signature of
# the full parameters too (``ledger._recipient``).
_DROP_RECIPIENT = f", recipient = NULL, params_hash = '{MASKED_HASH}', signature = NULL"
_ORDER_ID_HOLDER = "SELECT key FROM payouts WHERE provider = ? AND order_id = ?"
_OPERATION_HOLDER = "SELECT key FROM payouts WHERE provider = ? AND operation_id = ?"
_LEASE_HOLDERS = (
    "SELECT lease_owner, count(*), max(lease_expires_at) FROM payouts "
    f"WHERE lease_owner IS NOT NULL AND lease_expires_at > ? AND {_LIVE}"
    "{by_provider} GROUP BY lease_owner ORDER BY lease_owner"
)
_NOTE = (
    "INSERT INTO payout_transitions (provider, key, from_state, to_state, at, owner, note) "
    "SELECT provider, key, state, state, ?, NULL, ? FROM payouts WHERE provider = ? AND key = ?"
)
_BY_ORDER_ID = (
    f"SELECT {_COLS} FROM payouts WHERE provider = ? AND order_id = ? "
    "ORDER BY created_at DESC, rowid DESC LIMIT 1"
)
_SETTLE = (
    "UPDATE payouts SET state = ?, provider_status = ?, reason = coalesce(?, reason), "
    "updated_at = ?, lease_owner = NULL, lease_expires_at = NULL{drop} "
    f"WHERE provider = ? AND key = ? RETURNING {_COLS}"
)
_HISTORY = (
    f"SELECT {', '.join(TRANSITION_COLUMNS)} FROM payout_transitions "
    "WHERE provider = ? AND key = ? ORDER BY id"
)
# ``enqueue``: a row's state, and a refused row recorded again, unleased.
_STATE = "SELECT state FROM payouts WHERE provider = ? AND key = ?"
_REQUEUE = (
    "UPDATE payouts SET state = 'pending', params_hash = ?, params = ?, recipient = ?, "
    "order_id = ?, signature = ?, reason = NULL, updated_at = ?, lease_owner = NULL, "
    "lease_expires_at = NULL, lease_token = lease_token + 1 "
    "WHERE provider = ? AND key = ? AND state = 'refused'"
)
# A key's rows under other providers (``ledger._keys``), and a refused one cancelled
# because its key moved (its recipient goes, as with any final write).
_OTHERS = (
    "SELECT provider, state, lease_owner, lease_expires_at FROM payouts "
    "WHERE key = ? AND provider != ?"
)
_MOVED = (
    "UPDATE payouts SET state = 'cancelled', reason = ?, updated_at = ?, lease_owner = NULL, "
    f"lease_expires_at = NULL, lease_token = lease_token + 1{_DROP_RECIPIENT} "
    "WHERE provider = ? AND key = ? AND state = 'refused'"
)
_SHARED_KEYS = (
    f"SELECT DISTINCT key FROM payouts WHERE shared_key AND state NOT IN ({_DEAD}) "
    "ORDER BY key LIMIT ?"
)
_ENQUEUE_CHUNK = 500  # intents per transaction
_BEGUN = "intent recorded"  # the note of a row's first history row
#: How often an idle listener looks for other processes' commits (``data_version``).
LISTEN_EVERY = 0.5  # seconds


def _lease_free(record: PayoutRecord, now: float) -> bool:
    return record.lease_owner is None or (record.lease_expires_at or 0.0) <= now


def _new_row(**values: Any) -> list[Any]:
    """A new ``payouts`` row for ``_INSERT``, its values in ``COLUMNS`` order (the
    columns not named NULL)."""
    row: list[Any] = [None] * len(COLUMNS)
    for name, value in values.items():
        row[AT[name]] = value  # (a KeyError names a column that does not exist)
    return row


@attrs.frozen
class _Take:
    """How ``begin`` and ``enqueue`` take a key another provider's row has
    (``_take_key``)."""

    switch_provider: bool
    note_drop: Callable[[sqlite3.Connection, str, str], None]
    history: list[HistoryRow]


def _others(conn: sqlite3.Connection, provider: str, key: str, now: float) -> list[Other]:
    """The key's rows under other providers, and whether a drive holds each."""
    return [
        Other(other, LedgerState(state), owner is not None and (expires or 0.0) > now)
        for other, state, owner, expires in conn.execute(_OTHERS, (key, provider)).fetchall()
    ]


def _take_key(
    conn: sqlite3.Connection,
    provider: str,
    key: str,
    now: float,
    owner: str | None,
    take: _Take,
) -> None:
    """Before ``key`` is first recorded under ``provider`` (``ledger._keys``): cancel
    the refused rows it moves from, or raise ``IdempotencyConflictError``."""
    others = _others(conn, provider, key, now)
    for other in rows_to_cancel(key, others, switch_provider=take.switch_provider):
        take.note_drop(conn, other, key)
        note = moved_note(provider)
        conn.execute(_MOVED, (note, now, other, key))
        cancelled = LedgerState.CANCELLED.value
        refused = LedgerState.REFUSED.value
        take.history.append(HistoryRow(other, key, refused, cancelled, now, owner, note))


def _abandon(db: aiosqlite.Connection) -> None:
    """Close a connection whose ledger was dropped unclosed, without its event loop
    (which may be closed by now: aiosqlite would report to it and print a traceback).
    Relies on aiosqlite 0.22's worker queue (pinned in pyproject.toml)."""
    conn = db._connection
    if conn is None:
        return
    db._connection = None  # so that aiosqlite's own __del__ leaves it to us
    db._running = False

    def close_and_stop() -> object:
        conn.close()
        return aiosqlite.core._STOP_RUNNING_SENTINEL

    db._tx.put_nowait((None, close_and_stop))


def _placeholders(count: int) -> str:
    return ", ".join("?" for _ in range(count))


@attrs.define
class _Pending:
    """A write waiting for its transaction (times on ``time.monotonic()``); ``tried``
    once a transaction holding it found the file locked."""

    op: Op
    future: asyncio.Future[Any]
    started: float
    deadline: float
    scope: Strain | None = None
    tried: bool = False


def _create_private(path: str) -> None:
    """Create an empty database file readable by its owner only (SQLite gives the
    ``-wal`` and ``-shm`` files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the SQLite ledger {path!r}: {error.strerror}"
        ) from error
    os.close(fd)


@functools.lru_cache(maxsize=256)
def _transition_sql(fields: tuple[str, ...], final: bool) -> str:
    """``transition``'s UPDATE for these extra ``fields`` (``MUTABLE_FIELDS`` names and
    ``operation_signature``, never a value), built once per shape: it binds ``_Transition.run``'s
    values by position, and sets exactly what that sets in the row read before it."""
    assert set(fields) <= _MOVED_FIELDS, f"not a transition's field: {fields}"
    sets = "".join(f", {name} = ?" for name in fields)
    return (
        "UPDATE payouts SET state = ?, attempts = attempts + ?, lease_owner = ?, "
        f"lease_expires_at = ?, updated_at = ?{sets}{_DROP_RECIPIENT if final else ''} "
        "WHERE provider = ? AND key = ?"
    )


#: The extra fields a transition may set (``check_changes``, ``sign_changes``).
_MOVED_FIELDS = (MUTABLE_FIELDS | {"operation_signature", "account_signature"}) & _COLUMN_SET


def _renew(
    provider: str,
    key: str,
    owner: str,
    token: int,
    lease_seconds: float,
    conn: sqlite3.Connection,
    history: list[HistoryRow],
) -> None:
    """``renew``'s write (an ``Op``, its inputs bound by ``functools.partial``)."""
    renewed = conn.execute(_RENEW, (time.time() + lease_seconds, provider, key, owner, token))
    if renewed.rowcount != 1:
        raise LeaseLostError.not_held(provider, key, owner, token)


def _release(
    held_rows: HeldRows,
    held: tuple[str, str, str, int],
    conn: sqlite3.Connection,
    history: list[HistoryRow],
) -> None:
    """``release``'s write (an ``Op``): ``held`` is (provider, key, owner, token)."""
    held_rows.forget(held[0], held[1])
    conn.execute(_RELEASE, held)


# No repr of their fields (aiosqlite logs its calls at DEBUG): they hold a recipient.
@attrs.define(repr=False)
class _Begin:
    """One ``begin``: its ``run`` is the write's ``Op`` (an object with its inputs
    named, rather than a closure per call over a dozen of them: one object for the
    collector to follow while the write waits for its transaction, not fifteen)."""

    ledger: SQLiteLedger
    provider: str
    key: str
    params_hash: str
    params: Mapping[str, Any]
    stored: Stored
    params_text: str
    sending: bool  # the row is recorded ``sending``, its first attempt counted
    owner: str
    lease_seconds: float
    order_id: str | None
    take_over: Collection[str]
    switch_provider: bool
    provider_account: str | None

    def run(self, conn: sqlite3.Connection, history: list[HistoryRow]) -> Claim:
        now = time.time()
        stored, provider, key = self.stored, self.provider, self.key
        row = _new_row(
            provider=provider,
            key=key,
            params_hash=self.params_hash,
            params=self.params_text,
            state=self._first(),
            order_id=self.order_id,
            attempts=int(self.sending),
            lease_owner=self.owner,
            lease_expires_at=now + self.lease_seconds,
            lease_token=1,
            created_at=now,
            updated_at=now,
            recipient=stored.recipient,
            signature=stored.signature,
            provider_account=self.provider_account,
            account_signature=stored.account_signature,
        )
        # One statement for a key seen nowhere yet; its order_id another key's
        # fails it (and leaves no trace): the rules in full then say so.
        with contextlib.suppress(sqlite3.IntegrityError):
            if conn.execute(_INSERT_NEW, row).rowcount == 1:
                return self._created(row, history, now)
        with savepoint(conn):
            return self._decide(conn, history, now, row)

    def _first(self) -> str:
        return (LedgerState.SENDING if self.sending else LedgerState.PENDING).value

    def _created(self, row: Sequence[Any], history: list[HistoryRow], now: float) -> Claim:
        history.append(
            HistoryRow(self.provider, self.key, None, self._first(), now, self.owner, _BEGUN)
        )
        self.ledger._held_rows.remember(row)
        record = self.ledger._records.begun(row, self.params, self.stored.params)
        return Claim(record=record, claimed=True, created=True)

    def _decide(
        self, conn: sqlite3.Connection, history: list[HistoryRow], now: float, row: list[Any]
    ) -> Claim:
        provider, key, order_id, owner = self.provider, self.key, self.order_id, self.owner
        ledger, stored = self.ledger, self.stored
        if order_id is not None:
            holder = conn.execute(_ORDER_ID_HOLDER, (provider, order_id)).fetchone()
            if holder is not None and holder[0] != key:
                raise IdempotencyConflictError(key, order_id=order_id)
        pending = LedgerState.PENDING.value
        if conn.execute(_STATE, (provider, key)).fetchone() is None:
            take = _Take(self.switch_provider, ledger._note_drop, history)
            _take_key(conn, provider, key, now, owner, take)
        inserted = conn.execute(_INSERT, row).fetchall()
        if inserted:
            return self._created(inserted[0], history, now)
        record = ledger._records.read(conn.execute(_SELECT, (provider, key)).fetchone())
        if record.state is LedgerState.REFUSED:
            live_elsewhere(key, _others(conn, provider, key, now))
            again = (pending, self.params_hash, self.params_text, stored.recipient, order_id)
            signed = (stored.signature, self.provider_account, stored.account_signature)
            conn.execute(_REBEGIN, (*again, *signed, now, provider, key))
            note = "intent recorded again after a refusal"
            history.append(HistoryRow(provider, key, record.state.value, pending, now, owner, note))
        elif not ledger._recipients.matches(
            record.params_hash,
            record.params,
            self.params,
            row=f"{provider}/{key}",
            digest=self.params_hash,
        ):
            raise IdempotencyConflictError(key)
        elif record.state not in ACTIVE_STATES or not (
            _lease_free(record, now) or record.lease_owner in self.take_over
        ):
            return Claim(record=record, claimed=False)
        leased = conn.execute(_LEASE, (owner, now + self.lease_seconds, provider, key)).fetchone()
        ledger._held_rows.remember(leased)
        return Claim(record=ledger._records.read(leased), claimed=True)


_STATE_AT, _ATTEMPTS_AT, _OWNER_AT = AT["state"], AT["attempts"], AT["lease_owner"]
_EXPIRES_AT, _UPDATED_AT = AT["lease_expires_at"], AT["updated_at"]
_RECIPIENT_AT, _SIGNATURE_AT, _HASH_AT = AT["recipient"], AT["signature"], AT["params_hash"]


@attrs.define(repr=False)
class _Transition:
    """One ``transition``: its ``run`` is the write's ``Op``: ``update``
    (``_transition_sql``) matching the row as this ledger last left it
    (``ledger._sqlite_held``), or else one read of the held row and ``update``."""

    ledger: SQLiteLedger
    provider: str
    key: str
    owner: str
    token: int
    state: str
    final: bool
    ends: bool
    attempt: int
    lease_seconds: float
    fields: Mapping[str, Any]
    update: str
    note: str | None

    def run(self, conn: sqlite3.Connection, history: list[HistoryRow]) -> PayoutRecord:
        now = time.time()
        provider, key, owner, state = self.provider, self.key, self.owner, self.state
        lease_owner, expires = (None, None) if self.ends else (owner, now + self.lease_seconds)
        fields = self.fields
        values = (state, self.attempt, lease_owner, expires, now, *fields.values(), provider, key)
        held_rows = self.ledger._held_rows
        held = held_rows.held(provider, key, owner, self.token)
        try:
            # One statement when the row is still as this ledger last left it; else
            # read it.
            if (
                held is None
                or not conn.execute(matching(self.update), values + held_rows.values(held)).rowcount
            ):
                held = conn.execute(_HELD_ROW, (provider, key, owner, self.token)).fetchone()
                if held is None:
                    held_rows.forget(provider, key)
                    raise self._taken(conn) or LeaseLostError.not_held(
                        provider, key, owner, self.token
                    )
                conn.execute(self.update, values)
        except sqlite3.IntegrityError as error:
            taken = self._taken(conn)
            if taken is None:
                raise
            raise taken from error
        if self.final and is_clear(held[_RECIPIENT_AT]):
            self.ledger._dropped_clear = True  # the WAL is emptied once this commits
        history.append(HistoryRow(provider, key, held[_STATE_AT], state, now, owner, self.note))
        # The row as the UPDATE leaves it: the same columns, set to the same values
        # (each bound in its column's type, so read back as given).
        row = list(held)
        row[_STATE_AT], row[_OWNER_AT], row[_EXPIRES_AT], row[_UPDATED_AT] = (
            state, lease_owner, expires, now,
        )  # fmt: skip
        row[_ATTEMPTS_AT] += self.attempt
        for name, value in fields.items():
            row[AT[name]] = value
        if self.final:  # _DROP_RECIPIENT
            row[_RECIPIENT_AT] = row[_SIGNATURE_AT] = None
            row[_HASH_AT] = MASKED_HASH
        held_rows.remember(row)
        return self.ledger._records.read(row)

    def _taken(self, conn: sqlite3.Connection) -> OperationTakenError | None:
        """``OperationTakenError`` when the operation id this transition would record
        is another row's (why the UPDATE failed the unique index, or what a drive that
        lost its lease is told first); else None."""
        operation_id = self.fields.get("operation_id")
        if operation_id is None:
            return None
        holder = conn.execute(_OPERATION_HOLDER, (self.provider, operation_id)).fetchone()
        if holder is None or holder[0] == self.key:
            return None
        return OperationTakenError(self.provider, self.key, operation_id, holder[0])


class SQLiteLedger(Ledger):
    """A ``Ledger`` in one SQLite file (WAL mode), for one host.

    ``synchronous`` is SQLite's: ``FULL`` (the default) syncs every commit to disk, so
    a committed transition survives a power cut; ``NORMAL`` survives a process crash
    only. ``busy_timeout`` bounds how long one call waits for another process's write
    lock (counted once per call, however many group commits it waits behind; 0: try
    once); then it fails with ``LedgerNotWrittenError`` (and the payout's next calls
    wait at most a second: see ``ledger._patience``).

    ``read_only`` opens the file read-only (``get``, ``history``, ``records`` and
    ``counts`` work; writes raise ``LedgerNotWrittenError``). A new file is created
    readable by its owner only (mode 0600, and its ``-wal``/``-shm`` files alike);
    ``create=False`` refuses to create one (``ConfigurationError`` if it is missing).
    ``open()`` writes nothing to a file whose schema is current, so a plain ledger on a
    write-protected file can be read too.

    ``encryption_key`` (see ``new_encryption_key``) encrypts each row's recipient and
    keys its fingerprint; without it the recipient is kept in clear until the payout
    is final. After a write drops a clear recipient, the WAL is checkpointed and
    emptied within ``checkpoint_interval`` seconds (0: before that write returns), and
    at ``aclose()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        create: bool = True,
        encryption_key: EncryptionKey | None = None,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigurationError("synchronous must be 'FULL' or 'NORMAL'")
        if not 0 <= busy_timeout < math.inf:
            raise ConfigurationError("busy_timeout must be a finite number of seconds, >= 0")
        if not 0 <= checkpoint_interval < math.inf:
            raise ConfigurationError("checkpoint_interval must be a finite number of seconds")
        self._recipients = Recipients(encryption_key)
        self._records = Records(self._recipients)
        #: Held rows as this ledger last left them (SQLite's thread only).
        self._held_rows = HeldRows()
        self._scrubber = Scrubber(float(checkpoint_interval), float(busy_timeout))
        #: Set (on the worker thread) by a write that drops a recipient kept in clear.
        self._dropped_clear = False
        self.path = os.fspath(path)
        self.read_only = read_only
        self._create = create and not read_only
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._patience = Patience(self._busy_timeout)
        self._db: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._abandon: weakref.finalize[Any, Any] | None = None
        self._listeners = ListenerHub()
        #: The event loop the writer task and the callers' futures belong to.
        self._loop = LoopBinding(repr(self))

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r}{', read_only=True' if self.read_only else ''})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- connection ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect, switch to WAL and create the schema if needed. Idempotent."""
        await self._connection()

    async def _connection(self) -> aiosqlite.Connection:
        if moved := self._loop.moved():
            self._moved(moved)
        if self._db is not None:
            return self._db
        async with self._opening:
            if self._db is None:
                if sqlite3.sqlite_version_info < (3, 35):
                    raise ConfigurationError(
                        f"SQLiteLedger needs SQLite 3.35 or newer, not {sqlite3.sqlite_version}"
                    )
                db = await self._open()
                self._db = db
                self._abandon = weakref.finalize(self, _abandon, db)
        return self._db

    def _moved(self, why: Moved) -> None:
        """The last event loop this ledger ran in has closed, or this process is a
        child of the one it ran in (``_loops``): its writer task and its waits went
        with it. The connection stays -- its thread answers whichever loop asks --
        unless this is a child: that connection is the parent's (its thread stayed
        there), kept as it is, never closed here; this process opens its own."""
        if why is Moved.FORKED and self._db is not None:
            keep(self._db)
            self._db = None
            if self._abandon is not None:
                self._abandon.detach()
        self._opening = asyncio.Lock()
        self._queue = []
        self._flusher = None
        self._scrubber.moved()

    async def _open(self) -> aiosqlite.Connection:
        if not self.read_only and self.path not in ("", ":memory:"):
            check_local_disk(self.path)  # a writer needs SQLite's locks to hold
        target, uri = self._target()
        bind_none_directly()
        connecting = aiosqlite.connect(
            target, uri=uri, isolation_level=None, timeout=self._busy_timeout
        )
        # A ledger its owner forgot to close must not keep the interpreter from
        # exiting (aiosqlite's worker thread would wait for work forever).
        connecting._thread.daemon = True
        try:
            db = await connecting
        except sqlite3.Error as error:
            raise self._open_failed(error) from error
        try:
            if self.read_only:  # (reads need the tables and columns, not the indexes)
                if not await on_thread(db, schema_current, False):
                    raise outdated(self)
            else:
                if (newer := await on_thread(db, newer_schema)) is not None:
                    raise too_new(self, newer, FORMAT)
                await self._use_wal(db)
                await on_thread(db, run_sql, f"PRAGMA synchronous = {self._synchronous}")
                # Freed space (a row's dropped recipient) is zeroed, not left behind.
                await on_thread(db, run_sql, "PRAGMA secure_delete = ON")
                if not await on_thread(db, schema_current):
                    dropped = await on_thread(db, create_schema, self._recipients)
                    if dropped:  # the upgrade dropped clear recipients
                        await self._scrubber.now(db)
        except sqlite3.Error as error:
            await db.close()
            raise self._open_failed(error) from error
        except BaseException:
            await db.close()
            raise
        return db

    def _target(self) -> tuple[str, bool]:
        """What to connect to: a ``file:`` URI whose mode never lets SQLite create the
        file (this ledger creates it, private to its owner, when ``create`` allows)."""
        if self.path in ("", ":memory:"):
            return self.path, False
        if self._create:
            _create_private(self.path)
        mode = "ro" if self.read_only else "rw"
        return f"{Path(self.path).absolute().as_uri()}?mode={mode}", True

    def _open_failed(self, error: sqlite3.Error) -> PayoutError:
        if not self._create and not os.path.exists(self.path):
            return ConfigurationError(f"no SQLite ledger at {self.path!r} (not creating one)")
        return open_error(error, self.path)

    async def _use_wal(self, db: aiosqlite.Connection) -> None:
        # Switching a new file to WAL needs it to itself, and SQLite answers "database
        # is locked" at once (no busy handler) while another connection opens it too:
        # wait for it like any other lock, up to ``busy_timeout``. A file already in
        # WAL mode is left alone (nothing is written: it may be write-protected).
        rows = await on_thread(db, fetch_all, "PRAGMA journal_mode")
        if [tuple(row) for row in rows] == [("wal",)]:
            return
        give_up_at = time.monotonic() + self._busy_timeout
        pause = 0.01
        while True:
            try:
                await on_thread(db, run_sql, "PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if not is_locked(error) or time.monotonic() >= give_up_at:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def aclose(self) -> None:
        """Finish queued writes, checkpoint and empty the WAL, and close the connection
        (``open`` or any call reopens it)."""
        if moved := self._loop.moved():
            self._moved(moved)
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        db, self._db = self._db, None
        if db is not None:
            if self._abandon is not None:
                self._abandon.detach()
            await self._scrubber.stop()
            if not self.read_only:
                with contextlib.suppress(Exception):  # closing goes on regardless
                    await self._scrubber.now(db)
            await db.close()

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database file and empty it now, so that no older
        version of any row remains in either (``aclose()`` does it too). False when
        another connection's read kept it from finishing."""
        if self.read_only:
            raise LedgerNotWrittenError(f"{self!r} is opened read-only")
        return await self._scrubber.now(await self._connection())

    def params_hash(self, params: Mapping[str, Any]) -> str:
        """See ``Ledger.params_hash``."""
        return self._recipients.params_hash(params)

    def params_match(self, record: PayoutRecord, params: Mapping[str, Any]) -> bool:
        """See ``Ledger.params_match``."""
        row = f"{record.provider}/{record.key}"
        return self._recipients.matches(record.params_hash, record.params, params, row=row)

    async def pauses(self) -> list[ProviderPause]:
        """See ``Ledger.pauses``."""
        return [pause_from_row(row) for row in await self._read(SQLitePauseSQL.every, ())]

    async def pause_provider(
        self, provider: str, *, reason: str, by: str
    ) -> tuple[ProviderPause, bool]:
        """See ``Ledger.pause_provider``."""
        wanted = (provider, time.time(), kept_text(reason), by)

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> tuple[ProviderPause, bool]:
            made = conn.execute(SQLitePauseSQL.insert, wanted).rowcount
            row = conn.execute(SQLitePauseSQL.one, (provider,)).fetchone()
            return pause_from_row(row), bool(made)

        return await self._write(op)

    async def lift_pause(self, provider: str) -> ProviderPause | None:
        """See ``Ledger.lift_pause``."""

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> ProviderPause | None:
            row = conn.execute(SQLitePauseSQL.delete, (provider,)).fetchone()
            return None if row is None else pause_from_row(row)

        return await self._write(op, atomic=True)

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        db = await self._connection()
        try:
            return await on_thread(db, fetch_all, sql, params)
        except sqlite3.Error as error:
            raise not_written(error, f"could not read the SQLite ledger {self.path!r}") from error

    async def _write(
        self,
        run: Callable[[sqlite3.Connection, list[HistoryRow]], T],
        *,
        atomic: bool = False,
    ) -> T:
        """Run ``run`` inside the next write transaction (an ``Op``: ``atomic`` when it
        writes with one statement at most, or in a savepoint of its own); return once it
        committed. The wait for the write lock counts from here, once, up to
        ``busy_timeout``."""
        if self.read_only:
            raise LedgerNotWrittenError(f"{self!r} is opened read-only")
        started = time.monotonic()
        scope = self._patience.scope()
        deadline = started + self._patience.budget(scope)
        db = await self._connection()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(Op(run, atomic), future, started, deadline, scope))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(db))
        return cast(T, await future)

    async def _flush(self, db: aiosqlite.Connection) -> None:
        # aiosqlite runs every call on the connection's own thread; handing it a whole
        # transaction at once makes a write one trip to that thread instead of four
        # (``on_thread``: one that outlives a loop closed meanwhile).
        while self._queue:
            self._expire(time.monotonic())
            if not self._queue:
                break
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            # Wait for the lock only as long as the most pressed caller may (each is
            # tried once at least, however short its wait).
            wait = max(min(pending.deadline for pending in batch) - time.monotonic(), 0.0)
            ops = [pending.op for pending in batch]
            try:
                outcome = await on_thread(db, commit_batch, ops, wait, self._busy_timeout)
            except Exception as error:  # aiosqlite could not run it (connection closed)
                outcome = BatchOutcome(error=error)
            except BaseException:  # this task was cancelled: so are its callers
                for pending in batch + self._queue:
                    pending.future.cancel()
                self._queue = []
                raise
            if outcome.locked:  # nothing ran: back to the queue, to wait on or expire
                for pending in batch:
                    pending.tried = True
                self._queue[:0] = batch
                await asyncio.sleep(_LOCKED_PAUSE)
                continue
            if outcome.error is None:
                for pending in batch:
                    self._patience.succeeded(pending.scope)
            dropped, self._dropped_clear = self._dropped_clear, False
            if dropped and outcome.error is None:
                try:
                    # Before the writers hear back: once a final write returns, its clear
                    # recipient is out of the WAL (or will be within the interval).
                    await self._scrub(db)
                except BaseException:  # this task was cancelled: the batch did commit
                    self._answer(batch, outcome)
                    for pending in self._queue:
                        pending.future.cancel()
                    self._queue = []
                    raise
            self._answer(batch, outcome)

    def _answer(self, batch: list[_Pending], outcome: BatchOutcome) -> None:
        for pending, (ok, value) in zip(batch, outcome.results(len(batch)), strict=True):
            if pending.future.done():  # the caller was cancelled; the write went on
                continue
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)

    async def _scrub(self, db: aiosqlite.Connection) -> None:
        try:
            await self._scrubber.dropped(db)
        except Exception as error:  # the writes stand; the next checkpoint covers them
            logger.warning("could not checkpoint the SQLite ledger %r: %s", self.path, error)

    def _expire(self, now: float) -> None:
        """Fail the queued writes that found the file locked and whose callers have
        waited as long as they may: nothing of them ran."""
        if all(p.deadline > now or not p.tried for p in self._queue):
            return
        waiting: list[_Pending] = []
        for pending in self._queue:
            if pending.deadline > now or not pending.tried:
                waiting.append(pending)
                continue
            self._patience.ran_out(pending.scope)
            if not pending.future.done():
                pending.future.set_exception(
                    LedgerNotWrittenError(
                        f"the SQLite ledger {self.path!r} stayed locked by another "
                        f"connection for {now - pending.started:.1f}s; nothing was written",
                        code="SQLITE_BUSY",
                    )
                )
        self._queue = waiting

    # -- the Ledger protocol ------------------------------------------------------

    async def begin(
        self,
        provider: str,
        key: str,
        params_hash: str,
        params: Mapping[str, Any],
        *,
        owner: str,
        lease_seconds: float,
        order_id: str | None = None,
        take_over: Collection[str] = (),
        sending: bool = False,
        switch_provider: bool = False,
        provider_account: str | None = None,
    ) -> Claim:
        """See ``Ledger.begin``."""
        recipients = self._recipients
        recipients.check_digest(params_hash)
        stored = recipients.store(
            provider, key, params, order_id=order_id, account=provider_account
        )
        begin = _Begin(
            ledger=self,
            provider=provider,
            key=key,
            params_hash=params_hash,
            params=params,
            stored=stored,
            params_text=dump_params(stored.params),
            sending=sending,
            owner=owner,
            lease_seconds=lease_seconds,
            order_id=order_id,
            take_over=take_over,
            switch_provider=switch_provider,
            provider_account=provider_account,
        )
        return await self._write(begin.run, atomic=True)

    async def transition(
        self,
        provider: str,
        key: str,
        *,
        owner: str,
        token: int,
        state: LedgerState,
        lease_seconds: float,
        note: str | None = None,
        add_attempt: bool = False,
        release: bool = False,
        **changes: Any,
    ) -> PayoutRecord:
        """See ``Ledger.transition``: one update (``_Transition``)."""
        fields = sign_changes(self._recipients, provider, key, check_changes(changes))
        to_state = LedgerState(state)
        final = to_state.is_final  # a final row is nobody's: its lease ends
        move = _Transition(
            ledger=self,
            provider=provider,
            key=key,
            owner=owner,
            token=token,
            state=to_state.value,
            final=final,
            ends=final or release,
            attempt=int(add_attempt),
            lease_seconds=lease_seconds,
            fields=fields,
            update=_transition_sql(tuple(fields), final),
            note=note,
        )
        return await self._write(move.run, atomic=True)

    async def renew(
        self, provider: str, key: str, *, owner: str, token: int, lease_seconds: float
    ) -> None:
        """See ``Ledger.renew``."""
        await self._write(
            functools.partial(_renew, provider, key, owner, token, lease_seconds), atomic=True
        )

    async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
        """See ``Ledger.release``."""
        held = (provider, key, owner, token)
        await self._write(functools.partial(_release, self._held_rows, held), atomic=True)

    async def claim_stranded(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        provider: str | None = None,
        states: frozenset[LedgerState] = ACTIVE_STATES,
        exclude: Collection[str] = (),
        dead_owners: Collection[str] = (),
    ) -> list[Claim]:
        """See ``Ledger.claim_stranded``."""
        if limit <= 0 or not states:
            return []
        wanted = sorted(LedgerState(state).value for state in states)
        by_provider = "" if provider is None else " AND provider = ?"
        select = (
            f"SELECT rowid FROM payouts "
            f"WHERE state IN ({_placeholders(len(wanted))}) "
            "AND (lease_owner IS NULL OR COALESCE(lease_expires_at, 0) <= ? "
            "OR lease_owner IN (SELECT value FROM json_each(?))) "
            f"AND key NOT IN (SELECT value FROM json_each(?)){by_provider} "
            "ORDER BY created_at, rowid LIMIT ?"
        )
        update = (
            "UPDATE payouts SET lease_owner = ?, lease_expires_at = ?, "
            f"lease_token = lease_token + 1 WHERE rowid = ? RETURNING {_COLS}"
        )
        dead_json, exclude_json = json.dumps(list(dead_owners)), json.dumps(list(exclude))

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> list[Claim]:
            now = time.time()
            args: list[Any] = [*wanted, now, dead_json, exclude_json]
            if provider is not None:
                args.append(provider)
            args.append(limit)
            claims = []
            for (rowid,) in conn.execute(select, args).fetchall():
                row = conn.execute(update, (owner, now + lease_seconds, rowid)).fetchone()
                self._held_rows.remember(row)
                claims.append(Claim(record=self._records.read(row), claimed=True))
            return claims

        return await self._write(op)

    async def lease_holders(self, *, provider: str | None = None) -> list[LeaseHolder]:
        """See ``Ledger.lease_holders``."""
        by_provider = "" if provider is None else " AND provider = ?"
        args: tuple[Any, ...] = (time.time(),) + (() if provider is None else (provider,))
        rows = await self._read(_LEASE_HOLDERS.format(by_provider=by_provider), args)
        return [
            LeaseHolder(owner=owner, rows=int(rows_held), expires_at=float(expires))
            for owner, rows_held, expires in rows
        ]

    async def enqueue(
        self, provider: str, intents: Sequence[Intent], *, switch_provider: bool = False
    ) -> list[Enqueued]:
        """See ``Ledger.enqueue``: up to 500 intents per transaction."""
        recipients = self._recipients
        results: list[Enqueued] = []
        for start in range(0, len(intents), _ENQUEUE_CHUNK):
            chunk = [
                _Intent(
                    i,
                    recipients.params_hash(i.params),
                    recipients.store(provider, i.key, i.params, order_id=i.order_id),
                )
                for i in intents[start : start + _ENQUEUE_CHUNK]
            ]

            def op(
                conn: sqlite3.Connection,
                history: list[HistoryRow],
                chunk: list[_Intent] = chunk,
            ) -> list[Enqueued]:
                now = time.time()
                take = _Take(switch_provider, self._note_drop, history)
                records = self._records
                return [_enqueue_one(conn, provider, one, now, records, take) for one in chunk]

            results += await self._write(op)
        if any(r.outcome in (EnqueueOutcome.NEW, EnqueueOutcome.AGAIN) for r in results):
            self._listeners.wake(provider)
        return results

    async def listen_for_work(self, provider: str | None = None) -> WorkListener:
        """See ``Ledger.listen_for_work``: this object's ``enqueue`` and
        ``announce_work``, and any commit of another connection to the file (looked
        for every half second with ``PRAGMA data_version``, which reads no table)."""
        seen = await self._data_version()

        async def changed() -> bool:
            nonlocal seen
            version = await self._data_version()
            if version is None or version == seen:
                return False
            seen = version
            return True

        return self._listeners.listener(provider, check=changed, every=LISTEN_EVERY)

    async def _data_version(self) -> int | None:
        """SQLite's count of other connections' commits to the file, as this
        connection sees it (None when the file cannot be read now)."""
        try:
            rows = await self._read("PRAGMA data_version", ())
        except LedgerError:
            return None
        return int(rows[0][0]) if rows else None

    async def announce_work(self, provider: str) -> None:
        """See ``Ledger.announce_work`` (this object's listeners: other processes see
        the hand-back's own commits)."""
        self._listeners.wake(provider)

    async def settle_order(
        self,
        provider: str,
        order_id: str,
        *,
        state: LedgerState,
        provider_status: str,
        note: str | None = None,
        reason: str | None = None,
        params_hash: str | None = None,
    ) -> Settlement | None:
        """See ``Ledger.settle_order``."""
        to_state = LedgerState(state)
        settle = _SETTLE.format(drop=_DROP_RECIPIENT if to_state.is_final else "")

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> Settlement | None:
            row = conn.execute(_BY_ORDER_ID, (provider, order_id)).fetchone()
            if row is None:
                return None
            found = dict(zip(COLUMNS, row, strict=True))
            key, from_state = found["key"], LedgerState(found["state"])
            checked = params_hash is None or (
                found["params_hash"] == params_hash and int(found["attempts"]) > 0
            )
            if from_state.is_final or not checked:
                return Settlement(self._records.read(row), None)
            if to_state.is_final and is_clear(found["recipient"]):  # (not read: no key needed)
                self._dropped_clear = True  # the WAL is emptied once this commits
            now = time.time()
            rows = conn.execute(
                settle, (to_state.value, provider_status, scrub(reason), now, provider, key)
            ).fetchall()
            moved = HistoryRow(provider, key, from_state.value, to_state.value, now, None, note)
            history.append(moved)
            return Settlement(self._records.read(rows[0]), from_state)

        return await self._write(op, atomic=True)

    async def find_order(self, provider: str, order_id: str) -> PayoutRecord | None:
        """See ``Ledger.find_order``."""
        rows = await self._read(_BY_ORDER_ID, (provider, order_id))
        return self._records.read(rows[0]) if rows else None

    async def note(self, provider: str, key: str, note: str) -> None:
        """See ``Ledger.note``."""

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> None:
            conn.execute(_NOTE, (time.time(), note, provider, key))

        await self._write(op, atomic=True)

    async def get(self, provider: str, key: str) -> PayoutRecord | None:
        """See ``Ledger.get``."""
        rows = await self._read(_SELECT, (provider, key))
        return self._records.read(rows[0]) if rows else None

    async def history(self, provider: str, key: str) -> list[Transition]:
        """See ``Ledger.history``."""
        return [transition_from_row(row) for row in await self._read(_HISTORY, (provider, key))]

    async def records(
        self,
        *,
        provider: str | None = None,
        state: LedgerState | None = None,
        limit: int | None = None,
    ) -> list[PayoutRecord]:
        """See ``Ledger.records``."""
        where, args = _filters(provider, state)
        sql = f"SELECT {_COLS} FROM payouts{where} ORDER BY created_at, rowid LIMIT ?"
        args += (-1 if limit is None else max(limit, 0),)
        return [self._records.read(row) for row in await self._read(sql, args)]

    async def counts(self, *, provider: str | None = None) -> dict[LedgerState, int]:
        """See ``Ledger.counts``."""
        where, args = _filters(provider, None)
        rows = await self._read(f"SELECT state, count(*) FROM payouts{where} GROUP BY state", args)
        return {LedgerState(state): count for state, count in rows}

    async def identity(self) -> LedgerIdentity:
        """See ``Ledger.identity``: kept in the file's ``payout_ledger`` table (a copy of
        the file carries the identity of the ledger it was copied from)."""
        rows = await self._read("SELECT name, value FROM payout_ledger", ())
        found = {name: value for name, value in rows}
        return LedgerIdentity(str(found["ledger_id"]), int(found["rows_begun"]))

    async def shared_keys(self, *, limit: int = 100) -> list[str]:
        """See ``Ledger.shared_keys``."""
        rows = await self._read(_SHARED_KEYS, (max(limit, 0),))
        return [row[0] for row in rows]

    # -- keys ---------------------------------------------------------------------

    async def key_use(self) -> KeyUse:
        """Live rows by the key they are signed with (``ledger._rotate``); no key needed."""
        return KeyUse.from_rows(await self._read(KEY_USE.format(table="payouts"), ()))

    async def rotate_batch(self, *, after: tuple[str, str], limit: int) -> RotationBatch:
        """Move up to ``limit`` live rows after ``after`` to the current key, in one
        transaction (``ledger._rotate``)."""
        current = self._recipients.key_id
        if current is None:
            raise ConfigurationError("rotating keys needs the ledger's encryption_key")
        select = TO_ROTATE.format(table="payouts", p_after="?", k_after="?", current="?", limit="?")
        update = RESEAL.format(*"???????", table="payouts")
        recipient = AT["recipient"]

        def op(conn: sqlite3.Connection, history: list[HistoryRow]) -> RotationBatch:
            rows = conn.execute(select, (*after, current, limit)).fetchall()
            rotated, left = 0, []
            for row in rows:
                new = plan(self._recipients, row)
                if isinstance(new, str):
                    left.append((row[0], row[1], new))
                    continue
                if is_clear(row[recipient]):
                    self._dropped_clear = True  # the WAL is emptied once this commits
                conn.execute(update, (*new.values(), row[0], row[1]))
                rotated += 1
            last = (rows[-1][0], rows[-1][1]) if rows else None
            return RotationBatch(rotated, left, last)

        return await self._write(op)

    def _note_drop(self, conn: sqlite3.Connection, provider: str, key: str) -> None:
        """Before a final write (worker thread): if the row keeps its recipient in
        clear, the WAL must be emptied once the write commits."""
        held = conn.execute(_RECIPIENT, (provider, key)).fetchone()
        if held is not None and is_clear(held[0]):
            self._dropped_clear = True


@attrs.frozen
class _Intent:
    """An intent as ``begin`` would write it: its fingerprint, and its parameters as
    kept (the recipient apart)."""

    intent: Intent
    digest: str
    stored: Stored


def _elsewhere(error: IdempotencyConflictError) -> Enqueued:
    """``enqueue``'s outcome for a key that belongs to another provider."""
    state = None if error.state is None else LedgerState(error.state)
    return Enqueued(error.key, EnqueueOutcome.CONFLICT, state, provider=error.provider)


def _enqueue_one(
    conn: sqlite3.Connection,
    provider: str,
    one: _Intent,
    now: float,
    records: Records,
    take: _Take,
) -> Enqueued:
    """``enqueue`` for one intent, inside the caller's transaction (``begin``'s rules)."""
    intent, stored = one.intent, one.stored
    key = intent.key
    params_text = dump_params(stored.params)
    if intent.order_id is not None:
        holder = conn.execute(_ORDER_ID_HOLDER, (provider, intent.order_id)).fetchone()
        if holder is not None and holder[0] != key:
            row = conn.execute(_STATE, (provider, key)).fetchone()
            state = None if row is None else LedgerState(row[0])
            return Enqueued(key, EnqueueOutcome.CONFLICT, state)
    pending = LedgerState.PENDING.value
    if conn.execute(_STATE, (provider, key)).fetchone() is None:
        try:
            _take_key(conn, provider, key, now, None, take)
        except IdempotencyConflictError as error:
            return _elsewhere(error)
    new = _new_row(
        provider=provider,
        key=key,
        params_hash=one.digest,
        params=params_text,
        state=pending,
        order_id=intent.order_id,
        attempts=0,
        lease_token=0,
        created_at=now,
        updated_at=now,
        recipient=stored.recipient,
        signature=stored.signature,
        account_signature=stored.account_signature,
    )
    if conn.execute(_INSERT, new).fetchall():
        note = "intent recorded (enqueued)"
        take.history.append(HistoryRow(provider, key, None, pending, now, None, note))
        return Enqueued(key, EnqueueOutcome.NEW, LedgerState.PENDING)
    record = records.read(conn.execute(_SELECT, (provider, key)).fetchone())
    if record.state is LedgerState.REFUSED:
        try:
            live_elsewhere(key, _others(conn, provider, key, now))
        except IdempotencyConflictError as error:
            return _elsewhere(error)
        again = (one.digest, params_text, stored.recipient, intent.order_id, stored.signature)
        conn.execute(_REQUEUE, (*again, now, provider, key))
        note = "intent recorded again after a refusal (enqueued)"
        take.history.append(HistoryRow(provider, key, record.state.value, pending, now, None, note))
        return Enqueued(key, EnqueueOutcome.AGAIN, LedgerState.PENDING)
    row_name = f"{provider}/{key}"
    if records.recipients.matches(
        record.params_hash, record.params, intent.params, row=row_name, digest=one.digest
    ):
        return Enqueued(key, EnqueueOutcome.EXISTING, record.state)
    return Enqueued(key, EnqueueOutcome.CONFLICT, record.state)


def _filters(provider: str | None, state: LedgerState | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    args: list[Any] = []
    if provider is not None:
        clauses.append("provider = ?")
        args.append(provider)
    if state is not None:
        clauses.append("state = ?")
        args.append(LedgerState(state).value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)
