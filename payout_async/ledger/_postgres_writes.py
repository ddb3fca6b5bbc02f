"""The writes ``PostgresLedger`` group-commits, and the one statement that writes them.

A ``begin``'s insert (``Insert``), a ``transition`` and a ``renew`` -- every money-moving
request's fence is one -- (``Move``) queue up in one ``Batcher``
(``ledger._postgres_batch``), which writes whatever is queued with ``WritesSQL.batch``:
one statement for inserts, transitions and renewals together, a lone write included.
Each write is a small record whose fields name the statement's inputs: ``arguments``
lays a batch out as JSON objects keyed by those names (one document for the inserts,
one for the moves: the server reads them with ``jsonb_to_recordset``), which costs
the driver far less than an array per input.

In the statement, inserts go in key order (two processes inserting the same keys wait
in one order) after ``moved`` (the refused rows of other providers a key moves from:
``ledger._postgres_keys``); transitions and renewals lock their rows in key order,
each only while the drive's lease (owner and fencing token) still holds it and the row
is not final, and append the transitions' history in the same statement. It returns
one row per write that landed -- the row written, or a renewal's bare ordinal --
numbered ``n`` by the write's place in the batch: a write without one was not written
(an insert whose key had a row, a move whose lease was lost).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import msgspec

from ._base import MUTABLE_FIELDS
from ._postgres_keys import key_blocked, moved_ctes
from ._recipient import MASKED_HASH
from ._rows import COLUMNS, FINAL_VALUES, FLOAT_FIELDS

__all__ = ["CHANGEABLE", "Insert", "Move", "Write", "WritesSQL", "arguments", "check"]

#: The fields a transition may set (``check_changes``), and the signatures of the
#: operation id and the provider account (``sign_changes``).
CHANGEABLE = tuple(sorted(MUTABLE_FIELDS | {"operation_signature", "account_signature"}))
_FINAL = ", ".join(f"'{state}'" for state in FINAL_VALUES)


@attrs.frozen(slots=False)
class Insert:
    """A ``begin``'s new row: recorded, leased to ``owner``, unless the key has one."""

    provider: str
    key: str
    params_hash: str
    params: str = attrs.field(repr=False)  # JSON text, the recipient masked
    order_id: str | None
    owner: str
    lease: float
    recipient: str | None = attrs.field(repr=False)
    state: str
    attempts: int
    switch: bool  # ``switch_provider``
    signature: str | None
    provider_account: str | None
    account_signature: str | None


@attrs.frozen(slots=False)
class Move:
    """A ``transition`` -- or, with ``renew``, a ``renew`` -- under the lease (``owner``,
    ``token``). ``lease``: seconds from now; None ends it. ``final``: the recipient
    goes. ``changes``: the ``CHANGEABLE`` fields to set."""

    provider: str
    key: str
    owner: str
    token: int
    lease: float | None
    renew: bool = False
    state: str | None = None
    attempt: int = 0
    note: str | None = None
    final: bool = False
    changes: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


Write: TypeAlias = Insert | Move

# Each input of the statement: its name and SQL type, an insert's fields and a move's.
_INSERT_INPUTS = [
    ("provider", "text"),
    ("key", "text"),
    ("params_hash", "text"),
    ("params", "text"),
    ("order_id", "text"),
    ("owner", "text"),
    ("lease", "float8"),
    ("recipient", "text"),
    ("state", "text"),
    ("attempts", "int4"),
    ("switch", "bool"),
    ("signature", "text"),
    ("provider_account", "text"),
    ("account_signature", "text"),
]
_MOVE_INPUTS = [
    ("provider", "text"),
    ("key", "text"),
    ("owner", "text"),
    ("token", "int8"),
    ("lease", "float8"),
    ("renew", "bool"),
    ("state", "text"),
    ("attempt", "int4"),
    ("note", "text"),
    ("final", "bool"),
    ("changes", "jsonb"),
]
_INSERT_NAMES = tuple(name for name, _ in _INSERT_INPUTS)
_MOVE_NAMES = tuple(name for name, _ in _MOVE_INPUTS)
assert list(_INSERT_NAMES) == [f.name for f in attrs.fields(Insert)]
assert list(_MOVE_NAMES) == [f.name for f in attrs.fields(Move)]
_insert_values = operator.attrgetter(*_INSERT_NAMES)
_move_values = operator.attrgetter(*_MOVE_NAMES)


def check(write: Write) -> None:
    """``ValueError`` for a write JSON cannot carry (a lease or a time that is not a
    finite number): its caller's error, before it joins a batch it would fail."""
    numbers = (write.lease, *write.changes.values()) if isinstance(write, Move) else (write.lease,)
    for value in numbers:  # (a loop: a generator per write cost more than the check)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{write.provider}/{write.key}: times must be finite numbers")


def arguments(writes: Sequence[Write]) -> tuple[str, str]:
    """``WritesSQL.batch``'s arguments for ``writes``: the inserts, then the moves, as
    JSON arrays of objects keyed by input name, each with its place in the batch
    (``n``). msgspec's C encoder writes them (``json.dumps`` cost five times as much;
    PostgreSQL reads the same values from either); ``check`` has refused every time
    that is not a finite number, which JSON cannot carry."""
    inserts: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    for n, write in enumerate(writes):
        if isinstance(write, Insert):
            laid = dict(zip(_INSERT_NAMES, _insert_values(write), strict=True))
            inserts.append(laid)
        else:
            laid = dict(zip(_MOVE_NAMES, _move_values(write), strict=True))
            moves.append(laid)
        laid["n"] = n
    return msgspec.json.encode(inserts).decode(), msgspec.json.encode(moves).decode()


def _rows(document: str, prefix: str, inputs: list[tuple[str, str]]) -> str:
    """A ``FROM`` item: the objects of JSON parameter ``document`` as rows -- ``n``, and
    each input named with ``prefix``."""
    typed = ", ".join(f"{name} {kind}" for name, kind in [("n", "int4"), *inputs])
    named = ", ".join(f"r.{name} AS {prefix}{name}" for name, _ in inputs)
    return f"(SELECT r.n, {named} FROM jsonb_to_recordset({document}::jsonb) AS r({typed}))"


def _select(alias: str = "") -> str:
    """``COLUMNS`` as a ``RETURNING`` list (of table alias ``alias``), ``params`` as
    text whatever codecs a caller-supplied pool has."""
    qualify = f"{alias}." if alias else ""
    return ", ".join(
        f"{qualify}params::text AS params" if name == "params" else f"{qualify}{name}"
        for name in COLUMNS
    )


class WritesSQL:
    """``batch``: the statement for one table and its history table."""

    def __init__(self, table: str, history: str, now: str) -> None:
        t = table
        log = f"INSERT INTO {history} (provider, key, from_state, to_state, at, owner, note)"
        intent = ("i.i_provider", "i.i_key", "i.i_switch", "i.i_owner")
        blocked = key_blocked(t, *intent[:3])
        moved = moved_ctes(t, log, "i", intent)
        changes = "".join(
            f",\n        {name} = CASE WHEN cur.m_changes ? '{name}' "
            f"THEN (cur.m_changes ->> '{name}')::{'float8' if name in FLOAT_FIELDS else 'text'} "
            f"ELSE p.{name} END"
            for name in CHANGEABLE
        )
        cols = ", ".join(COLUMNS)
        nothing = ", ".join("NULL" for _ in COLUMNS)
        self.batch = f"""
WITH {now},
i AS MATERIALIZED (SELECT * FROM {_rows("$1", "i_", _INSERT_INPUTS)} AS i),{moved},
ins AS (
    INSERT INTO {t} (provider, key, params_hash, params, state, order_id, attempts,
                     lease_owner, lease_expires_at, lease_token, created_at, updated_at,
                     recipient, signature, provider_account, account_signature)
    SELECT i_provider, i_key, i_params_hash, i_params::jsonb, i_state, i_order_id,
           i_attempts, i_owner, now.t + i_lease, 1, now.t, now.t, i_recipient, i_signature,
           i_provider_account, i_account_signature
    FROM i, now
    WHERE NOT {blocked} AND (SELECT count(*) FROM moved) >= 0
    ORDER BY i_provider, i_key
    ON CONFLICT (provider, key) DO NOTHING
    RETURNING {_select()}
),
ins_log AS ({log} SELECT provider, key, NULL, state, created_at, lease_owner,
                   'intent recorded' FROM ins),
m AS MATERIALIZED (SELECT * FROM {_rows("$2", "m_", _MOVE_INPUTS)} AS m),
cur AS (
    SELECT p.provider, p.key, p.state AS from_state, m.* FROM {t} p JOIN m
      ON p.provider = m.m_provider AND p.key = m.m_key
    WHERE p.lease_owner = m.m_owner AND p.lease_token = m.m_token
      AND p.state NOT IN ({_FINAL})
    ORDER BY p.provider, p.key
    FOR UPDATE OF p
),
upd AS (
    UPDATE {t} p SET state = cur.m_state, attempts = p.attempts + cur.m_attempt,
        lease_owner = CASE WHEN cur.m_lease IS NULL THEN NULL ELSE p.lease_owner END,
        lease_expires_at = now.t + cur.m_lease, updated_at = now.t{changes},
        recipient = CASE WHEN cur.m_final THEN NULL ELSE p.recipient END,
        signature = CASE WHEN cur.m_final THEN NULL ELSE p.signature END,
        params_hash = CASE WHEN cur.m_final THEN '{MASKED_HASH}' ELSE p.params_hash END
    FROM cur, now
    WHERE p.provider = cur.provider AND p.key = cur.key AND NOT cur.m_renew
    RETURNING {_select("p")}, cur.n, cur.from_state, cur.m_owner, cur.m_note
),
upd_log AS ({log} SELECT provider, key, from_state, state, updated_at, m_owner, m_note
            FROM upd ORDER BY n),
ren AS (
    UPDATE {t} p SET lease_expires_at = now.t + cur.m_lease
    FROM cur, now
    WHERE p.provider = cur.provider AND p.key = cur.key AND cur.m_renew
    RETURNING cur.n
)
SELECT {", ".join(f"ins.{name}" for name in COLUMNS)}, i.n
FROM ins JOIN i ON i.i_provider = ins.provider AND i.i_key = ins.key
UNION ALL SELECT {cols}, n FROM upd
UNION ALL SELECT {nothing}, n FROM ren"""
