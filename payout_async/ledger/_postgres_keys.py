"""``PostgresLedger``'s SQL for ``ledger._keys``: a key is one payout, whatever the provider.

The statements that record a new row read the key's rows under other providers, cancel
a refused one the key moves from (``moved``: the new row's insert reads it, so it runs
first), and insert nothing when another row is in the way. Two concurrent begins of one
key under two providers both pass those reads; the unique index of live keys
(``{prefix}payouts_one_live_key``) then lets one insert through and fails the other.
"""

from __future__ import annotations

from ._keys import DEAD_STATES, SWITCHABLE_STATES, moved_note
from ._recipient import MASKED_HASH

__all__ = ["DEAD", "LIVE_KEY_INDEX", "key_blocked", "moved_ctes", "others_sql"]

DEAD = ", ".join(f"'{state.value}'" for state in sorted(DEAD_STATES))
LIVE_KEY_INDEX = "payouts_one_live_key"  # after the table prefix
_SWITCHABLE = ", ".join(f"'{state.value}'" for state in sorted(SWITCHABLE_STATES))
# Row ``{o}``'s lease is live (a drive holds it), on the ledger's clock ``now.t``.
_LEASED = "({o}.lease_owner IS NOT NULL AND COALESCE({o}.lease_expires_at, 0) > now.t)"


def key_blocked(table: str, provider: str, key: str, switch: str) -> str:
    """SQL: the ``key`` expression has a row under a provider other than ``provider``
    that keeps it from being recorded there (with ``switch`` true, a failed, cancelled,
    or refused and unleased row does not)."""
    return (
        f"EXISTS (SELECT 1 FROM {table} x WHERE x.key = {key} AND x.provider <> {provider} "
        f"AND NOT ({switch} AND x.state IN ({_SWITCHABLE}) "
        f"AND NOT (x.state = 'refused' AND {_LEASED.format(o='x')})))"
    )


def _note(provider: str) -> str:
    """``moved_note`` as an SQL expression around the ``provider`` expression."""
    before, after = moved_note("\0").split("\0")
    return f"'{before}' || {provider} || '{after}'"


def moved_ctes(table: str, log: str, source: str, names: tuple[str, str, str, str]) -> str:
    """``moved`` (the refused rows cancelled as their key moves) and ``moved_log``, for
    the intents of CTE ``source`` whose columns ``names`` give the provider, key,
    switch and owner expressions (on ``i``)."""
    provider, key, switch, owner = names
    blocked = key_blocked(table, provider, key, switch)
    fresh = f"NOT EXISTS (SELECT 1 FROM {table} s WHERE s.provider = {provider} AND s.key = {key})"
    return f"""
moved AS (
    UPDATE {table} o SET state = 'cancelled', reason = {_note(provider)},
        updated_at = now.t, lease_owner = NULL, lease_expires_at = NULL,
        lease_token = o.lease_token + 1, recipient = NULL, params_hash = '{MASKED_HASH}'
    FROM {source} i, now
    WHERE {switch} AND o.key = {key} AND o.provider <> {provider} AND o.state = 'refused'
      AND NOT {_LEASED.format(o="o")} AND NOT {blocked} AND {fresh}
    RETURNING o.provider, o.key, o.updated_at, {provider} AS to_provider, {owner} AS by_owner
),
moved_log AS ({log} SELECT provider, key, 'refused', 'cancelled', updated_at, by_owner,
                     {_note("to_provider")} FROM moved)"""


def others_sql(table: str) -> str:
    """The key ``$1``'s rows under providers other than ``$2``, with whether a drive
    holds each; the ones that still hold the key first."""
    leased = _LEASED.format(o="o").replace("now.t", "extract(epoch FROM clock_timestamp())")
    return (
        f"SELECT provider, state, {leased} AS leased FROM {table} o "
        f"WHERE key = $1 AND provider <> $2 ORDER BY state IN ({DEAD}), provider"
    )
