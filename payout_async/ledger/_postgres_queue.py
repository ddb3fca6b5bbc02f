"""``PostgresLedger``'s work queue: intents recorded in batches, and ``LISTEN/NOTIFY``.

``enqueue`` inserts up to a thousand intents in one statement, which also appends
their history and, when it recorded any, sends a ``NOTIFY`` -- delivered when the
statement commits, so a woken worker finds the rows. Idle workers ``LISTEN`` on one
dedicated connection per ledger object (not one of the pool's), shared by all its
listeners; if that connection breaks, every listener is woken (something may have been
missed) and the next wait connects again. While it cannot, listeners fall back to
their timeout: a worker then polls at its idle interval, never in a tight loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from .._errors import IdempotencyConflictError
from ._base import Enqueued, EnqueueOutcome, Intent, LedgerState, PayoutRecord
from ._keys import DEAD_STATES, Other, rows_to_cancel
from ._listen import ListenerHub, LocalListener
from ._postgres_keys import DEAD, key_blocked, moved_ctes, others_sql
from ._recipient import Recipients, Stored
from ._rows import dump_params

__all__ = ["CHUNK", "PostgresWakeups", "QueueSQL", "enqueue_chunk"]

logger = logging.getLogger("payout_async")

CHUNK = 1000  # intents per statement
_NOW = "now AS MATERIALIZED (SELECT extract(epoch FROM clock_timestamp())::float8 AS t)"

Fetch = Callable[..., Awaitable[list[Any]]]
Get = Callable[[str, str], Awaitable[PayoutRecord | None]]


class QueueSQL:
    """The queue's statements, for one schema and table prefix (``_SQL``'s names)."""

    def __init__(self, schema: str | None, prefix: str) -> None:
        qualify = "" if schema is None else f'"{schema}".'
        t = f'{qualify}"{prefix}payouts"'
        h = f'{qualify}"{prefix}payout_transitions"'
        digest = hashlib.sha256(f"{schema or ''}:{prefix}".encode()).hexdigest()[:24]
        #: The NOTIFY channel of this ledger's tables (payload: the provider).
        self.channel = f"payout_async_work_{digest}"
        log = f"INSERT INTO {h} (provider, key, from_state, to_state, at, owner, note)"
        # Every statement of a WITH sees the rows as they were before it: ``p`` is
        # what was there already, ``ins`` what this statement added. ON CONFLICT
        # without a target skips a key already there, an order_id another key holds,
        # and a key another provider's row took meanwhile (``ledger._postgres_keys``).
        names = ("$1::text", "i.key", "$8::bool", "NULL::text")
        self.enqueue = f"""
WITH {_NOW},
input AS (
    SELECT u.key, u.params_hash, u.params, u.order_id, u.recipient, u.signature,
           u.account_signature, u.n
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $7::text[], $9::text[],
                $10::text[])
         WITH ORDINALITY AS u(key, params_hash, params, order_id, recipient, signature,
                              account_signature, n)
),{moved_ctes(t, log, "input", names)},
ins AS (
    INSERT INTO {t} (provider, key, params_hash, params, state, order_id, attempts,
                     lease_owner, lease_expires_at, lease_token, created_at, updated_at,
                     recipient, signature, account_signature)
    SELECT $1::text, i.key, i.params_hash, i.params::jsonb, 'pending', i.order_id, 0,
           NULL, NULL, 0, now.t, now.t, i.recipient, i.signature, i.account_signature
    FROM input i, now
    WHERE NOT {key_blocked(t, *names[:3])} AND (SELECT count(*) FROM moved) >= 0
    ORDER BY i.n
    ON CONFLICT DO NOTHING
    RETURNING key, created_at
),
log AS ({log} SELECT $1::text, key, NULL, 'pending', created_at, NULL,
               'intent recorded (enqueued)' FROM ins),
woke AS (SELECT pg_notify($6::text, $1::text) FROM (SELECT 1 FROM ins LIMIT 1) AS added)
SELECT i.key, ins.key IS NOT NULL AS added, p.params_hash, p.state,
       (SELECT count(*) FROM woke) AS woke
FROM input i
LEFT JOIN ins ON ins.key = i.key
LEFT JOIN {t} p ON p.provider = $1::text AND p.key = i.key
ORDER BY i.n"""
        self.requeue = f"""
WITH {_NOW},
upd AS (
    UPDATE {t} p SET state = 'pending', params_hash = $3, params = $4::text::jsonb,
                     recipient = $7, order_id = $5, signature = $8, reason = NULL,
                     updated_at = now.t, lease_owner = NULL,
                     lease_expires_at = NULL, lease_token = p.lease_token + 1
    FROM now WHERE p.provider = $1 AND p.key = $2 AND p.state = 'refused'
      AND NOT EXISTS (SELECT 1 FROM {t} o WHERE o.key = $2 AND o.provider <> $1
                      AND o.state NOT IN ({DEAD}))
    RETURNING p.provider, p.key, p.updated_at
),
log AS ({log} SELECT provider, key, 'refused', 'pending', updated_at, NULL,
               'intent recorded again after a refusal (enqueued)' FROM upd),
woke AS (SELECT pg_notify($6::text, $1::text) FROM upd)
SELECT (SELECT count(*) FROM woke) FROM upd"""
        self.notify = "SELECT pg_notify($1::text, $2::text)"
        self.others = others_sql(t)


async def enqueue_chunk(
    sql: QueueSQL,
    fetch: Fetch,
    get: Get,
    recipients: Recipients,
    unique_violation: type[BaseException],
    provider: str,
    intents: Sequence[Intent],
    switch_provider: bool = False,
) -> list[Enqueued]:
    """``Ledger.enqueue`` for up to ``CHUNK`` intents: one statement, then a read for
    each intent it could not settle at once, and one statement per refused row."""
    prepared = [
        _Prepared(
            i,
            recipients.params_hash(i.params),
            recipients.store(provider, i.key, i.params, order_id=i.order_id),
        )
        for i in intents
    ]
    rows = await fetch(
        sql.enqueue,
        provider,
        [one.intent.key for one in prepared],
        [one.digest for one in prepared],
        [dump_params(one.stored.params) for one in prepared],
        [one.intent.order_id for one in prepared],
        sql.channel,
        [one.stored.recipient for one in prepared],
        switch_provider,
        [one.stored.signature for one in prepared],
        [one.stored.account_signature for one in prepared],
    )
    results: list[Enqueued | None] = []
    added: set[str] = set()
    for one, row in zip(prepared, rows, strict=True):
        key = one.intent.key
        if row["added"] and key not in added:
            added.add(key)
            results.append(Enqueued(key, EnqueueOutcome.NEW, LedgerState.PENDING))
        elif row["params_hash"] == one.digest and row["state"] != LedgerState.REFUSED.value:
            results.append(Enqueued(key, EnqueueOutcome.EXISTING, LedgerState(row["state"])))
        else:  # another fingerprint, refused, given twice, or its order_id taken
            results.append(None)
    settled = iter(
        [
            await _settle(
                sql, fetch, get, recipients, unique_violation, provider, one, switch_provider
            )
            for one, result in zip(prepared, results, strict=True)
            if result is None
        ]
    )
    return [next(settled) if result is None else result for result in results]


@attrs.frozen
class _Prepared:
    """An intent as ``begin`` would write it: its fingerprint, and its parameters as
    kept (the recipient apart)."""

    intent: Intent
    digest: str
    stored: Stored


async def _settle(
    sql: QueueSQL,
    fetch: Fetch,
    get: Get,
    recipients: Recipients,
    unique_violation: type[BaseException],
    provider: str,
    one: _Prepared,
    switch_provider: bool,
) -> Enqueued:
    """The outcome of an intent the insert did not settle (``begin``'s rules)."""
    key = one.intent.key
    record = await get(provider, key)
    if record is None:  # another provider's row has the key, or another key its order_id
        others = await fetch(sql.others, key, provider)
        try:
            rows_to_cancel(key, _others(others), switch_provider=switch_provider)
        except IdempotencyConflictError as error:
            return _elsewhere(error)
        return Enqueued(key, EnqueueOutcome.CONFLICT, None)
    if record.state is LedgerState.REFUSED:
        params_text = dump_params(one.stored.params)
        args = (one.digest, params_text, one.intent.order_id, sql.channel)
        kept = (one.stored.recipient, one.stored.signature)
        try:
            again = await fetch(sql.requeue, provider, key, *args, *kept)
        except unique_violation:  # the new order_id belongs to another key
            return Enqueued(key, EnqueueOutcome.CONFLICT, record.state)
        if again:
            return Enqueued(key, EnqueueOutcome.AGAIN, LedgerState.PENDING)
        record = await get(provider, key)  # recorded again meanwhile, or held elsewhere
        if record is None:
            return Enqueued(key, EnqueueOutcome.CONFLICT, None)
        if record.state is LedgerState.REFUSED:
            for other in _others(await fetch(sql.others, key, provider))[:1]:
                if other.state not in DEAD_STATES:
                    held = IdempotencyConflictError(
                        key, provider=other.provider, state=other.state.value
                    )
                    return _elsewhere(held)
    row = f"{provider}/{key}"
    if recipients.matches(
        record.params_hash, record.params, one.intent.params, row=row, digest=one.digest
    ):
        return Enqueued(key, EnqueueOutcome.EXISTING, record.state)
    return Enqueued(key, EnqueueOutcome.CONFLICT, record.state)


def _others(rows: Sequence[Any]) -> list[Other]:
    return [Other(row["provider"], LedgerState(row["state"]), row["leased"]) for row in rows]


def _elsewhere(error: IdempotencyConflictError) -> Enqueued:
    """``enqueue``'s outcome for a key that belongs to another provider."""
    state = None if error.state is None else LedgerState(error.state)
    return Enqueued(error.key, EnqueueOutcome.CONFLICT, state, provider=error.provider)


Connect = Callable[[], Awaitable[Any]]
Disconnect = Callable[[Any], Awaitable[None]]


class PostgresWakeups:
    """The ``LISTEN`` connection of one ``PostgresLedger``, and its listeners."""

    def __init__(
        self, channel: str, connect: Connect, disconnect: Disconnect, timeout: float
    ) -> None:
        self.channel = channel
        self.hub = ListenerHub()
        self._connect = connect
        self._disconnect = disconnect
        self._timeout = timeout
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._down = False  # the last attempt to listen failed (said once per outage)

    async def listener(self, provider: str | None) -> _PostgresListener:
        """A listener; listening starts now (or, if the server cannot be reached, at
        one of its waits)."""
        listener = _PostgresListener(self, self.hub.listener(provider))
        await self.ensure()
        return listener

    async def ensure(self) -> bool | None:
        """Listen if not listening: False when already listening, True when listening
        started just now (announcements may have been missed), None when it cannot."""
        if self._listening():
            return False
        async with self._lock:
            if self._listening():
                return True
            try:
                async with asyncio.timeout(self._timeout):
                    conn = await self._connect()
                    try:
                        await conn.add_listener(self.channel, self._notified)
                    except BaseException:
                        await self._disconnect(conn)
                        raise
            except Exception as error:
                if not self._down:
                    logger.warning(
                        "cannot LISTEN for work on PostgreSQL (%s); waking on a timer until it can",
                        type(error).__name__,
                    )
                self._down = True
                return None
            conn.add_termination_listener(self._lost)
            self._conn, self._down = conn, False
            return True

    def _listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.hub.wake(payload or None)

    def _lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None
            self.hub.wake(None)  # whatever was announced meanwhile is unknown

    async def aclose(self) -> None:
        """Stop listening and give the connection up."""
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            async with asyncio.timeout(self._timeout):
                await conn.remove_listener(self.channel, self._notified)
                await self._disconnect(conn)
        except Exception:
            conn.terminate()


class _PostgresListener:
    """A listener that makes sure the ledger is listening before each wait."""

    def __init__(self, wakeups: PostgresWakeups, local: LocalListener) -> None:
        self._wakeups = wakeups
        self._local = local

    async def wait(self, seconds: float) -> bool:
        """See ``WorkListener.wait``."""
        listening = await self._wakeups.ensure()
        if listening is True:
            return True
        woken = await self._local.wait(seconds)
        return woken or listening is None  # no LISTEN: every timeout may hide work

    async def aclose(self) -> None:
        """See ``WorkListener.aclose``."""
        await self._local.aclose()
