"""``SQLiteLedger``'s tables, and bringing a file written by an older version up to date.

Version 2 gave every claim a fencing token and each Enot order_id one key. Version 3
keeps the recipient apart from the parameters (``ledger._recipient``): the upgrade
moves each live row's recipient into the ``recipient`` column (sealed, when the ledger
opening the file has a key), masks it in ``params``, and drops it from final rows.
Version 4 gives a key one live row whatever the provider (``ledger._keys``): a unique
index over the rows that are not failed or cancelled. Rows an older version recorded
under two providers for one key are marked ``shared_key`` (the index leaves them out;
``Ledger.shared_keys`` lists them) instead of failing the upgrade. Version 5 gives the
ledger an identity (``LedgerIdentity``): a random ``ledger_id`` and a count of the rows
ever begun, kept by a trigger in the same transaction as each insert, in the
``payout_ledger`` table. Version 6 signs rows (``signature``, ``operation_signature``):
opened with a key, the upgrade signs each live row whose fingerprint matches its
parameters (and seals its recipient); opened without, rows stay unsigned until
``ledger-key rotate``. Version 7 adds the ``payout_pauses`` table (``ledger._pauses``):
a provider paused for want of money, shared by every worker of the file. Version 8
signs each row's provider account (``account_signature``): opened with a key, the
upgrade signs the account of each live signed row whose signatures hold; opened
without, ``ledger-key rotate`` signs them.
"""

from __future__ import annotations

import sqlite3
import uuid

from .._errors import ConfigurationError
from ._ddl import schema_objects
from ._errors import operations_shared
from ._keys import DEAD_STATES
from ._pause_tables import SQLITE_PAUSES
from ._recipient import Recipients, Resealed, is_clear
from ._rows import AT, COLUMNS, FINAL_VALUES, FORMAT, move_recipient, reseal_row

__all__ = ["create_schema", "newer_schema", "schema_current"]

_DEAD = ", ".join(f"'{state.value}'" for state in sorted(DEAD_STATES))
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS payouts (
    provider TEXT NOT NULL,
    key TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    operation_id TEXT,
    order_id TEXT,
    provider_status TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at REAL,
    lease_token INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_error TEXT,
    reason TEXT,
    unknown_since REAL,
    recipient TEXT,
    provider_api TEXT,
    provider_account TEXT,
    shared_key INTEGER NOT NULL DEFAULT 0,
    signature TEXT,
    operation_signature TEXT,
    account_signature TEXT,
    PRIMARY KEY (provider, key)
);
CREATE INDEX IF NOT EXISTS payouts_state_lease ON payouts (state, lease_expires_at);
CREATE INDEX IF NOT EXISTS payouts_created_at ON payouts (created_at);
CREATE TABLE IF NOT EXISTS payout_transitions (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    key TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at REAL NOT NULL,
    owner TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS payout_transitions_key ON payout_transitions (provider, key, id);
CREATE TABLE IF NOT EXISTS payout_ledger (
    name TEXT PRIMARY KEY,
    value NOT NULL
);
"""
    + SQLITE_PAUSES
)  # version 7
# Version 2: a fencing token per claim, and an order_id belongs to one key.
_UNIQUE_ORDER_IDS = """
CREATE UNIQUE INDEX IF NOT EXISTS payouts_order_id_unique ON payouts (provider, order_id)
    WHERE order_id IS NOT NULL"""
# An operation or payoff is one payout's (``OperationTakenError``): added to files of
# any version, like the index above (an older payout-async writes on beside it).
_UNIQUE_OPERATION_IDS = """
CREATE UNIQUE INDEX IF NOT EXISTS payouts_operation_id_unique ON payouts (provider, operation_id)
    WHERE operation_id IS NOT NULL"""
# Version 3: the recipient in a column of its own (``_move_recipients``).
# Version 4: one live row per key, whatever the provider; a key's rows found by key.
_UPGRADE_TO_4 = f"""
UPDATE payouts SET shared_key = 1 WHERE state NOT IN ({_DEAD}) AND key IN (
    SELECT key FROM payouts WHERE state NOT IN ({_DEAD}) GROUP BY key HAVING count(*) > 1);
CREATE UNIQUE INDEX IF NOT EXISTS payouts_one_live_key ON payouts (key)
    WHERE state NOT IN ({_DEAD}) AND shared_key = 0;
CREATE INDEX IF NOT EXISTS payouts_key ON payouts (key);
"""
# Version 5: the ledger's identity (``_identify``).
_COUNT_BEGUN = """
CREATE TRIGGER IF NOT EXISTS payouts_begun AFTER INSERT ON payouts BEGIN
    UPDATE payout_ledger SET value = value + 1 WHERE name = 'rows_begun';
END"""
# ... and every change of a row's state counts too (the mark sees a backup that lacks
# only some rows' later steps).
_COUNT_MOVED = """
CREATE TRIGGER IF NOT EXISTS payouts_moved AFTER UPDATE OF state ON payouts
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE payout_ledger SET value = value + 1 WHERE name = 'rows_begun';
END"""
# Version 6: signed rows (``_sign_rows``). Version 7: provider pauses (``_SCHEMA``).
# Version 8: signed provider accounts (``_sign_rows`` of the rows signed already).
# The version is the ledger's ``FORMAT``.
_ADDED_COLUMNS = (
    ("lease_token", "INTEGER NOT NULL DEFAULT 0"),
    ("recipient", "TEXT"),
    ("provider_api", "TEXT"),
    ("shared_key", "INTEGER NOT NULL DEFAULT 0"),
    ("signature", "TEXT"),
    ("operation_signature", "TEXT"),
    ("provider_account", "TEXT"),
    ("account_signature", "TEXT"),
)

# What a current file holds: ``open()`` runs ``create_schema`` only when it lacks some.
_SCHEMA_OBJECTS = schema_objects(
    _SCHEMA + _UNIQUE_ORDER_IDS + ";" + _UNIQUE_OPERATION_IDS + ";" + _UPGRADE_TO_4
)


def create_schema(conn: sqlite3.Connection, recipients: Recipients) -> int:
    """Create the tables, or bring an older file up to this version (worker thread).
    Returns how many rows held a recipient in clear that is now sealed or gone."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(payouts)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in columns:
                conn.execute(f"ALTER TABLE payouts ADD COLUMN {name} {kind}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < 2:
            conn.execute("DROP INDEX IF EXISTS payouts_order_id")  # version 1's
        try:
            # (whatever the version: so that, once this has run, the file is current)
            conn.execute(_UNIQUE_ORDER_IDS)
        except sqlite3.IntegrityError as error:
            raise ConfigurationError(
                "this ledger holds one Enot order_id under several keys; "
                "settle those rows by hand before upgrading"
            ) from error
        try:
            conn.execute(_UNIQUE_OPERATION_IDS)
        except sqlite3.IntegrityError as error:
            shared = conn.execute(_SHARED_OPERATIONS).fetchall()
            which = "; ".join(f"{provider}: {keys}" for provider, keys in shared)
            raise operations_shared(which) from error
        moved = 0
        if version < 3:
            moved = _move_recipients(conn, recipients)
        for statement in _UPGRADE_TO_4.split(";"):
            if statement.strip():
                conn.execute(statement)
        _identify(conn)
        if version < FORMAT:
            if recipients.key_id is not None:
                moved += _sign_rows(conn, recipients, signed_only=version >= 6)
            conn.execute(f"PRAGMA user_version = {FORMAT}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return moved


#: The keys of the rows that name one operation (what fails that index), by provider.
_SHARED_OPERATIONS = """
SELECT provider, group_concat(key, ', ') FROM payouts WHERE operation_id IS NOT NULL
GROUP BY provider, operation_id HAVING count(*) > 1 LIMIT 10"""


def _identify(conn: sqlite3.Connection) -> None:
    """Version 5: a random ledger id, and the mark: the count of rows begun (those
    already there, then one more with each insert) and of changes of state since."""
    conn.execute(
        "INSERT OR IGNORE INTO payout_ledger (name, value) VALUES ('ledger_id', ?)",
        (uuid.uuid4().hex,),
    )
    conn.execute(
        "INSERT OR IGNORE INTO payout_ledger (name, value) "
        "VALUES ('rows_begun', (SELECT count(*) FROM payouts))"
    )
    conn.execute(_COUNT_BEGUN)
    conn.execute(_COUNT_MOVED)


def _move_recipients(conn: sqlite3.Connection, recipients: Recipients) -> int:
    """Version 3: rows whose ``params`` hold a recipient in clear keep it in the
    ``recipient`` column instead (sealed, with a key), or not at all once final; a live
    row's plain fingerprint becomes a keyed one when there is a key."""
    rows = conn.execute(
        "SELECT rowid, provider, key, params, state, params_hash FROM payouts "
        "WHERE recipient IS NULL"
    ).fetchall()
    moved = 0
    for rowid, provider, key, text, state, digest in rows:
        new = move_recipient(recipients, provider, key, text, state, digest)
        if new is not None:
            conn.execute(
                "UPDATE payouts SET params = ?, recipient = ?, params_hash = ? WHERE rowid = ?",
                (*new, rowid),
            )
            moved += 1
    return moved


def _sign_rows(conn: sqlite3.Connection, recipients: Recipients, *, signed_only: bool) -> int:
    """Version 6, with a key: sign every live row whose fingerprint matches its
    parameters (sealing a clear recipient). Version 8 (``signed_only``): sign the
    account of every live row signed already whose signatures hold -- a row an older
    version would have set aside stays so. Returns how many were clear."""
    final = ", ".join(f"'{state}'" for state in FINAL_VALUES)
    signed = " AND signature IS NOT NULL" if signed_only else ""
    rows = conn.execute(
        f"SELECT rowid, {', '.join(COLUMNS)} FROM payouts "
        f"WHERE state NOT IN ({final}) AND account_signature IS NULL{signed}"
    ).fetchall()
    sealed = 0
    for rowid, *row in rows:
        new = reseal_row(recipients, row)
        if isinstance(new, Resealed):
            sealed += is_clear(row[AT["recipient"]])
            conn.execute(
                "UPDATE payouts SET params_hash = ?, recipient = ?, signature = ?, "
                "operation_signature = ?, account_signature = ? WHERE rowid = ?",
                (*new.values(), rowid),
            )
    return sealed


def newer_schema(conn: sqlite3.Connection) -> int | None:
    """The file's schema version when a newer payout-async wrote it, else None."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version if version > FORMAT else None


def schema_current(conn: sqlite3.Connection, indexes: bool = True) -> bool:
    """True when the file is at this version and every table, column and -- unless
    not ``indexes`` (a reader needs none of them) -- index the schema scripts create is
    there (on the connection's thread: ``on_thread``)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
        return False
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
    names = {row[0] for row in rows}
    if indexes and not _SCHEMA_OBJECTS.indexes <= names:
        return False
    for table, columns in _SCHEMA_OBJECTS.tables.items():
        if table not in names:
            return False
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        if not columns <= {row[1] for row in info}:
            return False
    return True
