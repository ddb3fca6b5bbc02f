"""``PostgresLedger``: one ledger shared by several processes on several hosts.

Every method is one SQL statement (writable CTEs append the history in the same
statement), so each is atomic without an explicit transaction; ``begin`` and
``settle_by_order_id`` add a plain read when their write matched nothing. ``begin``'s
insert, ``transition`` and ``renew`` are queued: the calls of concurrent payouts are
written together, one statement per batch (``ledger._postgres_batch``,
``ledger._postgres_writes``). Leases are
timed by the server's clock (``clock_timestamp()``), so hosts whose clocks disagree
still agree on who holds a row. ``claim_stranded`` locks its rows with
``FOR UPDATE SKIP LOCKED``: concurrent claimers take disjoint rows and never wait.

The recipient is kept apart from the parameters (``ledger._recipient``), sealed when
the ledger has an ``encryption_key``; a final write sets it to NULL in the same
statement. (The server keeps old row versions until ``VACUUM`` reuses their space,
and in its WAL and backups: without a key, a clear recipient may survive there.)
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

from .._errors import ConfigurationError, IdempotencyConflictError
from .._loops import LoopBinding, Moved, keep
from ._base import (
    ACTIVE_STATES,
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
from ._ddl import schema_objects
from ._errors import (
    LedgerNotWrittenError,
    OperationTakenError,
    operations_shared,
    outdated,
    too_new,
)
from ._keys import DEAD_STATES
from ._pause_tables import PgPauseSQL, pg_pauses_table, pg_pauses_table_sql
from ._pauses import ProviderPause, pause_from_row
from ._postgres_batch import Batcher, Pending
from ._postgres_calls import BoundedPool, is_integrity_violation
from ._postgres_keys import DEAD, LIVE_KEY_INDEX, others_sql
from ._postgres_queue import CHUNK, PostgresWakeups, QueueSQL, enqueue_chunk
from ._postgres_writes import Insert, Move, Write, WritesSQL, arguments, check
from ._recipient import MASKED_HASH, EncryptionKey, Recipients, Resealed
from ._rotate import KEY_USE, RESEAL, TO_ROTATE, KeyUse, RotationBatch, plan
from ._rows import (
    COLUMNS,
    FINAL_VALUES,
    FORMAT,
    TRANSITION_COLUMNS,
    Records,
    check_changes,
    dump_params,
    move_recipient,
    reseal_row,
    sign_changes,
    transition_from_row,
)
from ._texts import kept_text, scrub

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresLedger", "drop_statement"]

DEFAULT_COMMAND_TIMEOUT = 10.0  # seconds
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOW = "now AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)"
_FINAL = ", ".join(f"'{state}'" for state in FINAL_VALUES)
# What a final write also sets: the recipient goes, and the fingerprint and signature
# of the full parameters too (``ledger._recipient``).
_DROP_RECIPIENT = f", recipient = NULL, params_hash = '{MASKED_HASH}', signature = NULL"
_ACTIVE = sorted(state.value for state in ACTIVE_STATES)
# Each wanted relation, and its columns if it exists (NULL if it does not).
_CATALOG = """
SELECT r.name, (SELECT array_agg(a.attname::text) FROM pg_attribute a
                WHERE a.attrelid = to_regclass(r.name) AND a.attnum > 0
                  AND NOT a.attisdropped)
FROM unnest($1::text[]) AS r(name)"""


def _asyncpg() -> ModuleType:
    try:
        return importlib.import_module("asyncpg")
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "PostgresLedger needs asyncpg: pip install 'payout-async[postgres]'"
        ) from error


def _columns(alias: str = "") -> str:
    """``COLUMNS`` for a select list, with ``params`` read as text (whatever codecs
    a caller-supplied pool has)."""
    return ", ".join(
        f"{alias}params::text AS params" if name == "params" else f"{alias}{name}"
        for name in COLUMNS
    )


def drop_statement(prefix: str, schema: str | None = None) -> str:
    """The statement that drops every table, function and sequence a ``PostgresLedger``
    with ``table_prefix=prefix`` (and ``schema``) makes: what tests and benchmarks
    clean up with. Destroys the ledger's records; never run by the library itself."""
    return _SQL(schema, prefix).drop


#: The unique index of operations (after the table prefix): ``OperationTakenError``.
OPERATION_INDEX = "payouts_operation_id_unique"


def _violates(error: BaseException, index: str) -> bool:
    """Whether unique violation ``error`` is of ``index`` (any table prefix)."""
    return str(getattr(error, "constraint_name", "")).endswith(index)


class _SQL:
    """The statements, for one schema and table prefix."""

    def __init__(self, schema: str | None, prefix: str) -> None:
        qualify = "" if schema is None else f'"{schema}".'
        self.lock_key = f"payout_async.ledger:{schema or ''}:{prefix}"
        t = f'{qualify}"{prefix}payouts"'
        h = f'{qualify}"{prefix}payout_transitions"'
        cols, p_cols = _columns(), _columns("p.")
        log = f"INSERT INTO {h} (provider, key, from_state, to_state, at, owner, note)"
        # The ledger's identity (``LedgerIdentity``): ``m`` holds its id, and ``seq``
        # numbers the rows begun and, through a trigger, every change of a row's state
        # (the mark: its last value).
        m = f'{qualify}"{prefix}payout_ledger"'
        seq = f'{qualify}"{prefix}payouts_begun"'
        begun = f"begun bigint NOT NULL DEFAULT nextval('{seq}'::regclass)"
        self.schema = "" if schema is None else f'CREATE SCHEMA IF NOT EXISTS "{schema}";'
        self.schema += f"""
CREATE SEQUENCE IF NOT EXISTS {seq};
CREATE OR REPLACE FUNCTION {qualify}"{prefix}payouts_moved"() RETURNS trigger
    LANGUAGE plpgsql AS $moved$ BEGIN PERFORM nextval('{seq}'::regclass); RETURN NULL; END $moved$;
CREATE TABLE IF NOT EXISTS {t} (
    provider text NOT NULL,
    key text NOT NULL,
    params_hash text NOT NULL,
    params jsonb NOT NULL,
    state text NOT NULL,
    operation_id text,
    order_id text,
    provider_status text,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at double precision,
    lease_token bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    last_error text,
    reason text,
    unknown_since double precision,
    recipient text,
    provider_api text,
    provider_account text,
    shared_key boolean NOT NULL DEFAULT false,
    {begun},
    signature text,
    operation_signature text,
    account_signature text,
    PRIMARY KEY (provider, key)
);
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS lease_token bigint NOT NULL DEFAULT 0;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS recipient text;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS provider_api text;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS shared_key boolean NOT NULL DEFAULT false;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {begun};
LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE;
UPDATE {t} SET shared_key = true WHERE NOT shared_key AND state NOT IN ({DEAD}) AND key IN (
    SELECT key FROM {t} WHERE state NOT IN ({DEAD}) GROUP BY key HAVING count(*) > 1);
CREATE UNIQUE INDEX IF NOT EXISTS "{prefix}{LIVE_KEY_INDEX}" ON {t} (key)
    WHERE state NOT IN ({DEAD}) AND NOT shared_key;
CREATE INDEX IF NOT EXISTS "{prefix}payouts_key" ON {t} (key);
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS signature text;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS operation_signature text;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS provider_account text;
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS account_signature text;
DROP INDEX IF EXISTS {qualify}"{prefix}payouts_order_id";
CREATE UNIQUE INDEX IF NOT EXISTS "{prefix}payouts_order_id_unique" ON {t} (provider, order_id)
    WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS "{prefix}{OPERATION_INDEX}" ON {t} (provider, operation_id)
    WHERE operation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS "{prefix}payouts_state_lease" ON {t} (state, lease_expires_at);
CREATE INDEX IF NOT EXISTS "{prefix}payouts_created_at" ON {t} (created_at);
CREATE OR REPLACE TRIGGER "{prefix}payouts_moved" AFTER UPDATE OF state ON {t}
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION {qualify}"{prefix}payouts_moved"();
CREATE TABLE IF NOT EXISTS {h} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider text NOT NULL,
    key text NOT NULL,
    from_state text,
    to_state text NOT NULL,
    at double precision NOT NULL,
    owner text,
    note text
);
CREATE INDEX IF NOT EXISTS "{prefix}payout_transitions_key" ON {h} (provider, key, id);
CREATE TABLE IF NOT EXISTS {m} (
    name text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO {m} (name, value) VALUES ('format', '{FORMAT}')
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value
    WHERE {m}.value::int < EXCLUDED.value::int;
""" + pg_pauses_table_sql(schema, prefix)
        #: Drops every object ``schema`` makes (the tables first: the trigger goes
        #: with its table, then the function and the sequence the tables used).
        self.drop = (
            f"DROP TABLE IF EXISTS {t}, {h}, {m}, {pg_pauses_table(schema, prefix)} CASCADE; "
            f'DROP FUNCTION IF EXISTS {qualify}"{prefix}payouts_moved"() CASCADE; '
            f"DROP SEQUENCE IF EXISTS {seq} CASCADE;"
        )
        self.identify = (
            f"INSERT INTO {m} (name, value) VALUES ('ledger_id', $1) ON CONFLICT DO NOTHING"
        )
        #: The format of the rows the newest payout-async that wrote here writes
        #: (``FORMAT``; none before this one recorded it).
        self.format = f"SELECT value::int FROM {m} WHERE name = 'format'"
        self.identity = (
            f"SELECT (SELECT value FROM {m} WHERE name = 'ledger_id'), "
            f"(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq})"
        )
        self.writes = WritesSQL(t, h, _NOW)
        self.claim = f"""
WITH {_NOW},
c AS (
    SELECT p.provider, p.key FROM {t} p, now
    WHERE p.provider = $1 AND p.key = $2 AND p.params_hash = ANY($5::text[])
      AND p.state = ANY($6::text[])
      AND (p.lease_owner IS NULL OR COALESCE(p.lease_expires_at, 0) <= now.t
           OR p.lease_owner = ANY($7::text[]))
    FOR UPDATE OF p
)
UPDATE {t} p SET lease_owner = $3, lease_expires_at = now.t + $4, lease_token = p.lease_token + 1
FROM c, now WHERE p.provider = c.provider AND p.key = c.key
RETURNING {p_cols}"""
        self.rebegin = f"""
WITH {_NOW},
upd AS (
    UPDATE {t} p SET state = 'pending', params_hash = $5, params = $6::text::jsonb,
                     recipient = $8, order_id = $7, signature = $9, provider_account = $10,
                     account_signature = $11, reason = NULL,
                     updated_at = now.t, lease_owner = $3,
                     lease_expires_at = now.t + $4, lease_token = p.lease_token + 1
    FROM now WHERE p.provider = $1 AND p.key = $2 AND p.state = 'refused'
      AND NOT EXISTS (SELECT 1 FROM {t} o WHERE o.key = $2 AND o.provider <> $1
                      AND o.state NOT IN ({DEAD}))
    RETURNING {p_cols}
),
log AS ({log} SELECT provider, key, 'refused', state, updated_at, $3::text,
               'intent recorded again after a refusal' FROM upd)
SELECT {cols} FROM upd"""
        self.get = f"SELECT {cols} FROM {t} WHERE provider = $1 AND key = $2"
        self.others = others_sql(t)
        self.operation_holder = f"SELECT key FROM {t} WHERE provider = $1 AND operation_id = $2"
        self.shared_keys = (
            f"SELECT DISTINCT key FROM {t} WHERE shared_key AND state NOT IN ({DEAD}) "
            "ORDER BY key LIMIT $1"
        )
        self.release = (
            f"UPDATE {t} SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE provider = $1 AND key = $2 AND lease_owner = $3 AND lease_token = $4"
        )
        self.claim_stranded = f"""
WITH {_NOW},
c AS (
    SELECT p.provider, p.key FROM {t} p, now
    WHERE p.state = ANY($3::text[])
      AND (p.lease_owner IS NULL OR COALESCE(p.lease_expires_at, 0) <= now.t
           OR p.lease_owner = ANY($5::text[]))
      AND NOT (p.key = ANY($6::text[])){{by_provider}}
    ORDER BY p.created_at LIMIT $4
    FOR UPDATE OF p SKIP LOCKED
)
UPDATE {t} p SET lease_owner = $1, lease_expires_at = now.t + $2,
                 lease_token = p.lease_token + 1
FROM c, now
WHERE p.provider = c.provider AND p.key = c.key
RETURNING {p_cols}"""
        self.lease_holders = f"""
SELECT lease_owner, count(*), max(lease_expires_at) FROM {t}
WHERE lease_owner IS NOT NULL AND state NOT IN ({_FINAL})
  AND lease_expires_at > extract(epoch FROM clock_timestamp()){{by_provider}}
GROUP BY lease_owner ORDER BY lease_owner"""
        self.by_order_id = (
            f"SELECT {cols} FROM {t} WHERE provider = $1 AND order_id = $2 "
            "ORDER BY created_at DESC LIMIT 1"
        )
        self.settle = f"""
WITH {_NOW},
target AS (
    SELECT p.provider, p.key, p.state, p.params_hash, p.attempts FROM {t} p
    WHERE p.provider = $1 AND p.order_id = $2
    ORDER BY p.created_at DESC LIMIT 1
    FOR UPDATE
),
upd AS (
    UPDATE {t} p SET state = $3, provider_status = $4, updated_at = now.t,
                     reason = coalesce($6::text, p.reason),
                     lease_owner = NULL, lease_expires_at = NULL{{drop}}
    FROM target, now
    WHERE p.provider = target.provider AND p.key = target.key
      AND target.state NOT IN ({_FINAL})
      AND ($7::text IS NULL OR (target.params_hash = $7 AND target.attempts > 0))
    RETURNING {p_cols}, target.state AS from_state
),
log AS ({log} SELECT provider, key, from_state, state, updated_at, NULL, $5::text FROM upd)
SELECT {cols}, from_state FROM upd"""
        self.note = (
            f"{log} SELECT provider, key, state, state, extract(epoch FROM clock_timestamp()), "
            f"NULL, $3::text FROM {t} "
            "WHERE provider = $1 AND key = $2"
        )
        self.history = (
            f"SELECT {', '.join(TRANSITION_COLUMNS)} FROM {h} "
            "WHERE provider = $1 AND key = $2 ORDER BY id"
        )
        self.records = f"SELECT {cols} FROM {t}{{where}} ORDER BY created_at, provider, key"
        # Version 3's upgrade: rows whose recipient is still in their parameters.
        self.unmoved = (
            f"SELECT provider, key, params::text, state, params_hash FROM {t} "
            "WHERE recipient IS NULL FOR UPDATE"
        )
        self.move = (
            f"UPDATE {t} SET params = $3::text::jsonb, recipient = $4, params_hash = $5 "
            "WHERE provider = $1 AND key = $2"
        )
        self.counts = f"SELECT state, count(*) FROM {t}{{where}} GROUP BY state"
        # ``ledger._rotate``.
        self.key_use = KEY_USE.format(table=t)
        self.to_rotate = (
            TO_ROTATE.format(table=t, p_after="$1", k_after="$2", current="$3", limit="$4")
            + " FOR UPDATE"
        )
        self.rotated = RESEAL.format("$3", "$4", "$5", "$6", "$7", "$1", "$2", table=t)
        # The upgrades that sign rows (version 4) and accounts: live rows, to sign.
        self.live = (
            f"SELECT {cols} FROM {t} WHERE state NOT IN ({_FINAL}) "
            "AND account_signature IS NULL FOR UPDATE"
        )


class PostgresLedger(Ledger):
    """A ``Ledger`` in PostgreSQL, for several workers on several hosts.

    Give a ``dsn`` (the ledger makes and closes its own pool of up to
    ``max_connections``) or a ``pool`` of yours (never closed by the ledger). Tables
    are ``{table_prefix}payouts`` and ``{table_prefix}payout_transitions`` in
    ``schema`` (default: the connection's ``search_path``), created on first use --
    unless they are there already, so a read-only role can open and read them.

    Every call waits at most ``command_timeout`` seconds in all (for a connection, the
    statement, and retries of what was certainly not written), then raises
    ``LedgerNotWrittenError`` or ``LedgerOutcomeUnknownError``. On its own pool the
    ledger also sets the server's ``statement_timeout`` and ``lock_timeout`` (default:
    0.8 and 0.5 of ``command_timeout``; 0 turns one off), so that the server gives up
    first and says so: a statement it cancelled was not written.

    ``encryption_key`` (see ``new_encryption_key``) encrypts each row's recipient and
    keys its fingerprint; without it the recipient is kept in clear until the payout
    is final.

    ``read_only`` (with a ``dsn``) opens every session read-only on the server
    (``default_transaction_read_only``): reads work, writes raise
    ``LedgerNotWrittenError``, and tables that are not current are neither created nor
    upgraded (``LedgerOutdatedError``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        schema: str | None = None,
        table_prefix: str = "",
        max_connections: int = 10,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        statement_timeout: float | None = None,
        lock_timeout: float | None = None,
        encryption_key: EncryptionKey | None = None,
        read_only: bool = False,
    ) -> None:
        if dsn is not None and pool is not None:
            raise ConfigurationError("give PostgresLedger a dsn or a pool, not both")
        if read_only and pool is not None:
            raise ConfigurationError(
                "read_only needs the ledger's own pool (a dsn): the ledger cannot make "
                "a given pool's sessions read-only"
            )
        if schema is not None and not _IDENTIFIER.fullmatch(schema):
            raise ConfigurationError(f"schema {schema!r} is not a plain SQL identifier")
        if table_prefix and not _IDENTIFIER.fullmatch(table_prefix):
            raise ConfigurationError(f"table_prefix {table_prefix!r} is not a plain identifier")
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        if not command_timeout > 0:
            raise ConfigurationError("command_timeout must be a positive number of seconds")
        server_timeouts = {"statement_timeout": statement_timeout, "lock_timeout": lock_timeout}
        for name, value in server_timeouts.items():
            if value is not None and not value >= 0:
                raise ConfigurationError(f"{name} must be a number of seconds (0: off)")
        self._recipients = Recipients(encryption_key)
        self._records = Records(self._recipients)
        self._asyncpg = _asyncpg()
        self._dsn = dsn
        self._pool: Any = pool
        self._owns_pool = pool is None
        self._max_connections = max_connections
        self.command_timeout = float(command_timeout)
        self.statement_timeout = (
            0.8 * self.command_timeout if statement_timeout is None else float(statement_timeout)
        )
        self.lock_timeout = (
            0.5 * self.command_timeout if lock_timeout is None else float(lock_timeout)
        )
        self.schema = schema
        self.table_prefix = table_prefix
        self.read_only = read_only
        self._sql = _SQL(schema, table_prefix)
        self._queue = QueueSQL(schema, table_prefix)
        self._pause_sql = PgPauseSQL(schema, table_prefix)
        self._wakeups: PostgresWakeups | None = None
        self._calls: BoundedPool | None = None
        self._writes: Batcher[Write] | None = None
        self._ready = False
        self._opening = asyncio.Lock()
        #: The event loop the pool, the writer task and the listener belong to.
        given = None if self._owns_pool else f"the pool given to {self!r}"
        self._loop = LoopBinding(repr(self), given=given)

    def __repr__(self) -> str:
        where = f"{self.schema}." if self.schema else ""
        mode = ", read_only=True" if self.read_only else ""
        return f"PostgresLedger({where}{self.table_prefix}payouts{mode})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect and create the tables if needed. Idempotent; safe when several
        processes start at once (an advisory lock serialises the DDL); needs no DDL
        rights when the tables are current."""
        await self._connection_pool()

    async def _connection_pool(self) -> BoundedPool:
        """The pool, wrapped so that every call is bounded and classified (its
        ``fetch``, ``fetchrow`` and ``execute`` raise only ``LedgerError``\\ s)."""
        if moved := self._loop.moved():
            self._moved(moved)
        if self._ready and self._calls is not None:
            return self._calls
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._opening.acquire()
        except TimeoutError:
            raise LedgerNotWrittenError(
                f"{self!r} did not open within {self.command_timeout:g}s"
            ) from None
        try:
            if self._calls is None:
                if self._pool is None:
                    self._pool = await self._asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max_connections,
                        timeout=self.command_timeout,  # to connect
                        command_timeout=self.command_timeout,
                        server_settings=self._server_settings(),
                        **self._no_reset(),
                    )
                self._calls = BoundedPool(self._pool, self.command_timeout)
            if not self._ready:
                await self._calls.session(self._prepare, deadline=deadline)
                self._ready = True
        finally:
            self._opening.release()
        return self._calls

    def _server_settings(self) -> dict[str, str]:
        settings = {
            "statement_timeout": str(round(self.statement_timeout * 1000)),
            "lock_timeout": str(round(self.lock_timeout * 1000)),
        }
        if self.read_only:
            settings["default_transaction_read_only"] = "on"
        return settings

    async def _prepare(self, conn: Any) -> None:
        """Create what the schema lacks (nothing, usually: then no DDL right is needed
        and no table lock is taken); refuse to write where a newer payout-async has."""
        if await self._schema_current(conn, indexes=not self.read_only):
            if not self.read_only:
                found = await conn.fetchval(self._sql.format)
                if found is not None and found > FORMAT:
                    raise too_new(self, found, FORMAT)
            return
        if self.read_only:
            raise outdated(self)
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", self._sql.lock_key
            )
            columns = await self._columns(conn)
            try:
                await conn.execute(self._sql.schema)
            except self._asyncpg.UniqueViolationError as error:
                if not _violates(error, OPERATION_INDEX):
                    raise
                raise operations_shared() from error
            await conn.execute(self._sql.identify, uuid.uuid4().hex)
            await self._move_recipients(conn)
            if "account_signature" not in columns and self._recipients.key_id is not None:
                await self._sign_rows(conn, signed_only="signature" in columns)

    async def _move_recipients(self, conn: Any) -> None:
        """Version 3: recipients out of the parameters (see ``move_recipient``)."""
        for row in await conn.fetch(self._sql.unmoved):
            new = move_recipient(self._recipients, *row)
            if new is not None:
                await conn.execute(self._sql.move, row[0], row[1], *new)

    async def _columns(self, conn: Any) -> set[str]:
        """The columns the payouts table has (none before it is made)."""
        qualify = "" if self.schema is None else f'"{self.schema}".'
        rows = await conn.fetch(_CATALOG, [f'{qualify}"{self.table_prefix}payouts"'])
        return set(rows[0][1] or ())

    async def _sign_rows(self, conn: Any, *, signed_only: bool) -> None:
        """Upgrading to signed rows (version 4), with a key: sign every live row whose
        fingerprint matches its parameters (sealing a clear recipient); to signed
        accounts (``signed_only``): sign the account of every live row signed already
        whose signatures hold. See ``Recipients.reseal``."""
        for row in await conn.fetch(self._sql.live):
            if signed_only and row["signature"] is None:
                continue  # set aside by an older version: stays so
            new = reseal_row(self._recipients, row)
            if isinstance(new, Resealed):
                await conn.execute(self._sql.rotated, row["provider"], row["key"], *new.values())

    async def key_use(self) -> KeyUse:
        """Live rows by the key they are signed with (``ledger._rotate``); no key needed."""
        return KeyUse.from_rows(await self._fetch(self._sql.key_use))

    async def rotate_batch(self, *, after: tuple[str, str], limit: int) -> RotationBatch:
        """Move up to ``limit`` live rows after ``after`` to the current key, in one
        transaction (``ledger._rotate``)."""
        current = self._recipients.key_id
        if current is None:
            raise ConfigurationError("rotating keys needs the ledger's encryption_key")
        calls = await self._connection_pool()

        async def work(conn: Any) -> RotationBatch:
            async with conn.transaction():
                rows = await conn.fetch(self._sql.to_rotate, *after, current, limit)
                rotated, left = 0, []
                for row in rows:
                    new = plan(self._recipients, row)
                    if isinstance(new, str):
                        left.append((row["provider"], row["key"], new))
                        continue
                    await conn.execute(
                        self._sql.rotated, row["provider"], row["key"], *new.values()
                    )
                    rotated += 1
            last = (rows[-1]["provider"], rows[-1]["key"]) if rows else None
            return RotationBatch(rotated, left, last)

        deadline = asyncio.get_running_loop().time() + self.command_timeout
        return await calls.session(work, deadline=deadline)

    async def _schema_current(self, conn: Any, *, indexes: bool = True) -> bool:
        """Whether every table, column and -- unless not ``indexes`` (a reader needs
        none of them) -- index the schema creates is there."""
        wanted = schema_objects(self._sql.schema)
        qualify = "" if self.schema is None else f'"{self.schema}".'
        names = [f'{qualify}"{name}"' for name in [*wanted.tables, *wanted.indexes]]
        rows = await conn.fetch(_CATALOG, names)
        found = {row[0]: set(row[1] or ()) for row in rows if row[1] is not None}
        for name in wanted.indexes if indexes else ():
            if f'{qualify}"{name}"' not in found:
                return False
        return all(
            columns <= found.get(f'{qualify}"{table}"', set())
            for table, columns in wanted.tables.items()
        )

    def _no_reset(self) -> dict[str, Any]:
        """Skip asyncpg's reset query on every release (one round trip per call): this
        ledger leaves no session state behind. (asyncpg 0.30+; an open transaction is
        still rolled back.)"""
        if "reset" not in inspect.signature(self._asyncpg.create_pool).parameters:
            return {}
        return {"reset": _keep_session}

    def _moved(self, why: Moved) -> None:
        """The last event loop this ledger ran in has closed, or this process is a
        child of the one it ran in (``_loops``): the pool it made there, its writer
        task and its listener went with it, and are made anew here. The old
        connections' sockets close as they are collected -- in a child they are the
        parent's, kept as they are. (A given pool ties the ledger to its loop.)"""
        if why is Moved.FORKED:
            keep((self._pool, self._wakeups))
        self._pool = None
        self._calls = self._writes = self._wakeups = None
        self._ready = False
        self._opening = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the pool this ledger made (a caller-supplied pool stays open); within
        ``command_timeout``, after which its connections are cut."""
        if moved := self._loop.moved():
            self._moved(moved)
        wakeups, self._wakeups = self._wakeups, None
        if wakeups is not None:
            await wakeups.aclose()
        writes, self._writes = self._writes, None
        if writes is not None:  # the writes callers are waiting for, first
            await writes.aclose(self.command_timeout)
        pool = self._pool
        self._ready = False
        self._calls = None
        if self._owns_pool and pool is not None:
            self._pool = None
            try:
                await asyncio.wait_for(pool.close(), self.command_timeout)
            except Exception:
                pool.terminate()

    async def pauses(self) -> list[ProviderPause]:
        """See ``Ledger.pauses``."""
        return [pause_from_row(row) for row in await self._fetch(self._pause_sql.every)]

    async def pause_provider(
        self, provider: str, *, reason: str, by: str
    ) -> tuple[ProviderPause, bool]:
        """See ``Ledger.pause_provider``."""
        row = await self._fetchrow(self._pause_sql.insert, provider, kept_text(reason), by)
        if row is None:  # lifted between the insert's check and the read: try once more
            return await self.pause_provider(provider, reason=reason, by=by)
        return pause_from_row(row), bool(row[4])

    async def lift_pause(self, provider: str) -> ProviderPause | None:
        """See ``Ledger.lift_pause``."""
        row = await self._fetchrow(self._pause_sql.delete, provider)
        return None if row is None else pause_from_row(row)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        calls = await self._connection_pool()
        return await calls.fetch(sql, *args)

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        calls = await self._connection_pool()
        return await calls.fetchrow(sql, *args)

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
        lease = float(lease_seconds)
        params_text = dump_params(stored.params)
        state = (LedgerState.SENDING if sending else LedgerState.PENDING).value
        intent = Insert(
            provider=provider,
            key=key,
            params_hash=params_hash,
            params=params_text,
            order_id=order_id,
            owner=owner,
            lease=lease,
            recipient=stored.recipient,
            state=state,
            attempts=int(sending),
            switch=switch_provider,
            signature=stored.signature,
            provider_account=provider_account,
            account_signature=stored.account_signature,
        )
        for tries_left in (1, 0):
            try:
                row = await self._submit(intent)
                if row is not None:
                    record = self._records.begun(row, params, stored.params)
                    return Claim(record=record, claimed=True, created=True)
                row = await self._fetchrow(
                    self._sql.claim,
                    *(provider, key, owner, lease),
                    recipients.accepted_hashes(params_hash, params),
                    *(_ACTIVE, list(take_over)),
                )
                if row is not None:
                    return Claim(record=self._record(row), claimed=True)
                again = (
                    params_hash, params_text, order_id, stored.recipient, stored.signature,
                    provider_account, stored.account_signature,
                )  # fmt: skip
                row = await self._fetchrow(self._sql.rebegin, provider, key, owner, lease, *again)
                break
            except self._asyncpg.UniqueViolationError as error:
                if not _violates(error, LIVE_KEY_INDEX):
                    raise IdempotencyConflictError(key, order_id=order_id) from error
                # A race, lost: to another provider's row of the key (the conflict), or
                # to a begin of this very row that inserted it first (no other row:
                # its insert passed ON CONFLICT's check before that row was there), which
                # the next try sees as any later begin does.
                elsewhere = await self._elsewhere(provider, key)
                if not tries_left or not isinstance(elsewhere, LedgerNotWrittenError):
                    raise elsewhere from error
        if row is not None:
            return Claim(record=self._record(row), claimed=True)
        found = await self._fetchrow(self._sql.get, provider, key)
        if found is None:  # not recorded: another provider's row has the key
            raise await self._elsewhere(provider, key)
        if found["state"] == LedgerState.REFUSED.value:  # not recorded again: why?
            other = await self._fetchrow(self._sql.others, key, provider)
            if other is not None and LedgerState(other["state"]) not in DEAD_STATES:
                state = other["state"]
                raise IdempotencyConflictError(key, provider=other["provider"], state=state)
        record = self._record(found)
        row_name = f"{provider}/{key}"
        if not recipients.matches(
            record.params_hash, record.params, params, row=row_name, digest=params_hash
        ):
            raise IdempotencyConflictError(key)
        return Claim(record=record, claimed=False)

    async def _elsewhere(self, provider: str, key: str) -> Exception:
        """The error for ``key``, which a row under another provider holds."""
        row = await self._fetchrow(self._sql.others, key, provider)
        if row is None:  # (rows are never deleted: not seen here)
            return LedgerNotWrittenError(f"{provider}/{key} was not recorded; try again")
        return IdempotencyConflictError(key, provider=row["provider"], state=row["state"])

    async def _submit(self, write: Write) -> Any:
        """Queue ``write`` with the writes of concurrent payouts, written together in
        one statement (``ledger._postgres_writes``): its row, or None (its key had a
        row, or its lease was lost). Never two writes of one key in a batch."""
        check(write)  # (one that would fail the statement fails alone, before it)
        calls = await self._connection_pool()
        if self._writes is None:
            self._writes = Batcher(
                self._write_batch, calls.patience, is_integrity_error=is_integrity_violation
            )
        # A cancelled caller does not take its write back: a recovery point is written
        # anyway (the batch is not cancelled with it).
        return await self._writes.submit(write.key, write)

    async def _write_batch(self, batch: Sequence[Pending[Write]], until: float) -> list[Any]:
        """One statement for ``batch``: each write's row, or None."""
        calls = await self._connection_pool()
        scopes = [p.scope for p in batch]
        inserts, moves = arguments([p.values for p in batch])
        rows = await calls.fetch_for(scopes, until, self._sql.writes.batch, inserts, moves)
        found: list[Any] = [None] * len(batch)
        for row in rows:
            found[row["n"]] = row
        return found

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
        """See ``Ledger.transition``: queued with the writes of concurrent payouts, and
        written with them in one statement (``ledger._postgres_writes``)."""
        fields = sign_changes(self._recipients, provider, key, check_changes(changes))
        to_state = LedgerState(state)
        final = to_state.is_final
        move = Move(
            provider=provider,
            key=key,
            owner=owner,
            token=token,
            # None for a final state (a final row is nobody's) or a release: it ends.
            lease=None if final or release else float(lease_seconds),
            state=to_state.value,
            attempt=int(add_attempt),
            note=note,
            final=final,
            changes=fields,
        )
        operation_id = fields.get("operation_id")
        try:
            row = await self._submit(move)
        except self._asyncpg.UniqueViolationError as error:
            if operation_id is None or not _violates(error, OPERATION_INDEX):
                raise
            taken = await self._taken(provider, key, operation_id)
            raise (taken or OperationTakenError(provider, key, operation_id, None)) from error
        if row is None:
            taken = None if operation_id is None else await self._taken(provider, key, operation_id)
            raise taken or LeaseLostError.not_held(provider, key, owner, token)
        return self._record(row)

    async def _taken(
        self, provider: str, key: str, operation_id: str
    ) -> OperationTakenError | None:
        """``OperationTakenError`` when another row of ``provider`` holds
        ``operation_id`` (what a drive that lost its lease is told first); else None."""
        holder = await self._fetchrow(self._sql.operation_holder, provider, operation_id)
        if holder is None or holder["key"] == key:
            return None
        return OperationTakenError(provider, key, operation_id, holder["key"])

    async def renew(
        self, provider: str, key: str, *, owner: str, token: int, lease_seconds: float
    ) -> None:
        """See ``Ledger.renew``: queued with the writes of concurrent payouts (every
        money-moving request's fence is one) and written with them in one statement."""
        move = Move(provider, key, owner, token, float(lease_seconds), renew=True)
        if await self._submit(move) is None:
            raise LeaseLostError.not_held(provider, key, owner, token)

    async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
        """See ``Ledger.release``."""
        await self._fetch(self._sql.release, provider, key, owner, token)

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
        args: list[Any] = [owner, float(lease_seconds)]
        args += [sorted(LedgerState(state).value for state in states), limit]
        args += [list(dead_owners), list(exclude)]
        by_provider = ""
        if provider is not None:
            by_provider = " AND p.provider = $7"
            args.append(provider)
        rows = await self._fetch(self._sql.claim_stranded.format(by_provider=by_provider), *args)
        claims = [Claim(record=self._record(row), claimed=True) for row in rows]
        return sorted(claims, key=lambda c: (c.record.created_at, c.record.provider, c.record.key))

    async def lease_holders(self, *, provider: str | None = None) -> list[LeaseHolder]:
        """See ``Ledger.lease_holders``."""
        by_provider = "" if provider is None else " AND provider = $1"
        args = [] if provider is None else [provider]
        rows = await self._fetch(self._sql.lease_holders.format(by_provider=by_provider), *args)
        return [
            LeaseHolder(owner=row[0], rows=int(row[1]), expires_at=float(row[2])) for row in rows
        ]

    async def enqueue(
        self, provider: str, intents: Sequence[Intent], *, switch_provider: bool = False
    ) -> list[Enqueued]:
        """See ``Ledger.enqueue``: up to a thousand intents per statement, which also
        sends the ``NOTIFY`` that wakes listening workers when it commits."""
        results: list[Enqueued] = []
        violation = self._asyncpg.UniqueViolationError
        for start in range(0, len(intents), CHUNK):
            chunk = intents[start : start + CHUNK]
            results += await enqueue_chunk(
                self._queue,
                self._fetch,
                self.get,
                self._recipients,
                violation,
                provider,
                chunk,
                switch_provider,
            )
        if any(r.outcome in (EnqueueOutcome.NEW, EnqueueOutcome.AGAIN) for r in results):
            self._listening().hub.wake(provider)  # the NOTIFY reaches other connections
        return results

    async def listen_for_work(self, provider: str | None = None) -> WorkListener:
        """See ``Ledger.listen_for_work``: ``LISTEN`` on a connection of its own (not
        one of the pool's, unless the ledger was given a pool: then it keeps one of
        those), shared by this ledger object's listeners."""
        await self._connection_pool()  # the tables, and a first check of the server
        return await self._listening().listener(provider)

    def _listening(self) -> PostgresWakeups:
        if self._wakeups is None:
            self._wakeups = PostgresWakeups(
                self._queue.channel,
                self._listen_connect,
                self._listen_disconnect,
                self.command_timeout,
            )
        return self._wakeups

    async def _listen_connect(self) -> Any:
        if self._owns_pool:
            return await self._asyncpg.connect(self._dsn, timeout=self.command_timeout)
        return await self._pool.acquire()

    async def _listen_disconnect(self, conn: Any) -> None:
        if self._owns_pool:
            await conn.close(timeout=self.command_timeout)
        else:
            await self._pool.release(conn, timeout=self.command_timeout)

    async def announce_work(self, provider: str) -> None:
        """See ``Ledger.announce_work``: a ``NOTIFY`` every listening process hears."""
        await self._fetch(self._queue.notify, self._queue.channel, provider)

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
        settle = self._sql.settle.format(drop=_DROP_RECIPIENT if to_state.is_final else "")
        row = await self._fetchrow(
            settle,
            *(provider, order_id, to_state.value, provider_status, note),
            *(scrub(reason), params_hash),
        )
        if row is not None:
            return Settlement(self._record(row), LedgerState(row["from_state"]))
        # Unknown, already final, or not the row the caller checked.
        record = await self.find_order(provider, order_id)
        return None if record is None else Settlement(record, None)

    async def find_order(self, provider: str, order_id: str) -> PayoutRecord | None:
        """See ``Ledger.find_order``."""
        row = await self._fetchrow(self._sql.by_order_id, provider, order_id)
        return None if row is None else self._record(row)

    async def note(self, provider: str, key: str, note: str) -> None:
        """See ``Ledger.note``."""
        await self._fetch(self._sql.note, provider, key, note)

    def _record(self, row: Any) -> PayoutRecord:
        return self._records.read(row)

    def params_hash(self, params: Mapping[str, Any]) -> str:
        """See ``Ledger.params_hash``."""
        return self._recipients.params_hash(params)

    def params_match(self, record: PayoutRecord, params: Mapping[str, Any]) -> bool:
        """See ``Ledger.params_match``."""
        row = f"{record.provider}/{record.key}"
        return self._recipients.matches(record.params_hash, record.params, params, row=row)

    async def get(self, provider: str, key: str) -> PayoutRecord | None:
        """See ``Ledger.get``."""
        row = await self._fetchrow(self._sql.get, provider, key)
        return None if row is None else self._record(row)

    async def history(self, provider: str, key: str) -> list[Transition]:
        """See ``Ledger.history``."""
        rows = await self._fetch(self._sql.history, provider, key)
        return [transition_from_row(row) for row in rows]

    async def records(
        self,
        *,
        provider: str | None = None,
        state: LedgerState | None = None,
        limit: int | None = None,
    ) -> list[PayoutRecord]:
        """See ``Ledger.records``."""
        where, args = _filters(provider, state)
        sql = self._sql.records.format(where=where)
        if limit is not None:
            sql += f" LIMIT ${len(args) + 1}"
            args.append(max(limit, 0))
        return [self._record(row) for row in await self._fetch(sql, *args)]

    async def counts(self, *, provider: str | None = None) -> dict[LedgerState, int]:
        """See ``Ledger.counts``."""
        where, args = _filters(provider, None)
        rows = await self._fetch(self._sql.counts.format(where=where), *args)
        return {LedgerState(row[0]): int(row[1]) for row in rows}

    async def identity(self) -> LedgerIdentity:
        """See ``Ledger.identity``: the id in the ``payout_ledger`` table; the mark is
        the last number the ``payouts_begun`` sequence gave a row (``pg_dump`` keeps
        both, so a restored dump has the mark of its day)."""
        row = await self._fetchrow(self._sql.identity)
        return LedgerIdentity(str(row[0]), int(row[1]))

    async def shared_keys(self, *, limit: int = 100) -> list[str]:
        """See ``Ledger.shared_keys``."""
        return [row[0] for row in await self._fetch(self._sql.shared_keys, max(limit, 0))]


async def _keep_session(connection: Any) -> None:
    """A pool ``reset`` that keeps the session as it is."""


def _filters(provider: str | None, state: LedgerState | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if provider is not None:
        args.append(provider)
        clauses.append(f"provider = ${len(args)}")
    if state is not None:
        args.append(LedgerState(state).value)
        clauses.append(f"state = ${len(args)}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
