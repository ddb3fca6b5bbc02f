"""The durable ledgers remember what a live row's checks came to (``ledger._rows.Records``)
so that a payout's next write is not checked again from scratch -- and yet a row altered
outside payout-async between two reads by the same ledger object is caught: its
parameters, recipient, fingerprint, order id or operation id changed under a ledger
that had just read it trusted."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from payout_async.ledger import (
    Ledger,
    LedgerState,
    PostgresLedger,
    SQLiteLedger,
    new_encryption_key,
)
from payout_async.ledger._recipient import ALTERED

from .support import DURABLE, PG_DSN, drop_schema, require_postgres

P = "intellectmoney"
PARAMS = {"amount": "10.00", "pan": "4276000012345673", "currency": "RUB"}
KEY = new_encryption_key()


class Opened:
    """One ledger over a store, and a way to change its rows behind its back."""

    def __init__(self, ledger: Ledger, alter: Any, keyed: bool) -> None:
        self.ledger = ledger
        self.alter = alter
        self.keyed = keyed


@pytest.fixture(params=[(kind, key) for kind in DURABLE for key in (None, KEY)])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opened]:
    kind, key = request.param
    if kind == "sqlite":
        path = tmp_path / "ledger.db"

        async def alter_sqlite(sql: str, *args: Any) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)
            finally:
                conn.close()

        async with SQLiteLedger(path, encryption_key=key) as ledger:
            yield Opened(ledger, alter_sqlite, key is not None)
        return
    require_postgres()
    schema = f"records_{uuid.uuid4().hex[:12]}"

    async def alter_postgres(sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql.replace("payouts", f'"{schema}".payouts'), *args)
        finally:
            await conn.close()

    try:
        async with PostgresLedger(PG_DSN, schema=schema, encryption_key=key) as ledger:
            yield Opened(ledger, alter_postgres, key is not None)
    finally:
        await drop_schema(schema)


async def created(ledger: Ledger, key: str) -> tuple[int, Any]:
    """A row moved to ``created`` with an operation id, read back trusted."""
    claim = await ledger.begin(
        P, key, ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=30
    )
    assert claim.record.untrusted is None
    token = claim.record.lease_token
    record = await ledger.transition(
        P, key, owner="w", token=token, state=LedgerState.CREATED, lease_seconds=30,
        operation_id=f"op-{key}",
    )  # fmt: skip
    assert record.untrusted is None and record.params == PARAMS
    return token, record


async def test_a_payouts_own_writes_read_back_trusted(opened: Opened) -> None:
    ledger = opened.ledger
    token, _ = await created(ledger, "k")
    executing = await ledger.transition(
        P, "k", owner="w", token=token, state=LedgerState.EXECUTING, lease_seconds=30,
        add_attempt=True,
    )  # fmt: skip
    assert executing.untrusted is None and executing.params == PARAMS
    executing.params["pan"] = "changed by the caller"  # its own copy
    again = await ledger.get(P, "k")
    assert again is not None and again.untrusted is None and again.params == PARAMS
    done = await ledger.transition(
        P, "k", owner="w", token=token, state=LedgerState.SUCCEEDED, lease_seconds=30,
        provider_status="Completed",
    )  # fmt: skip
    assert done.params_hash == "masked" and done.params["pan"] != PARAMS["pan"]


@pytest.mark.parametrize(
    ("column", "value", "without_key"),
    [
        ("operation_id", "op-theirs", False),
        ("order_id", "o-theirs", False),
        ("params", '{"amount":"99999.00","currency":"RUB","pan":"427600******5673"}', True),
        ("params_hash", "0" * 64, True),
    ],
)
async def test_a_row_altered_between_two_reads_is_caught(
    opened: Opened, column: str, value: str, without_key: bool
) -> None:
    """Without a key only the fingerprint is checked (it catches accidents, not someone
    who can write to the database); with one, everything the signatures cover."""
    ledger, keyed = opened.ledger, opened.keyed
    token, _ = await created(ledger, "k")
    cast = "::jsonb" if column == "params" and isinstance(ledger, PostgresLedger) else ""
    await opened.alter(f"UPDATE payouts SET {column} = $1{cast} WHERE key = $2", value, "k")
    read = await ledger.get(P, "k")
    if not (keyed or without_key):  # the admitted limit (docs/security.md): a key closes it
        assert read is not None and read.untrusted is None and getattr(read, column) == value
        return
    assert read is not None and read.untrusted is not None
    assert read.untrusted.startswith(ALTERED)
    moved = await ledger.transition(
        P, "k", owner="w", token=token, state=LedgerState.EXECUTING, lease_seconds=30
    )
    assert moved.untrusted is not None
