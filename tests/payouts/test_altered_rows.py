"""A keyed ledger trusts no row it cannot authenticate (DESIGN rule 14).

Someone who can write to the ledger's database -- but has no key -- alters rows with
plain SQL, as an attacker would: a sealed recipient replaced by a clear one, the amount
raised, a row inserted, an IntellectMoney operation id pointed at another operation.
``resume()`` sends nothing for any of them: each ends ``needs_attention``, "the row was
altered outside payout-async", and the sandbox's own books show nothing paid to the
attacker. Untouched rows beside them are paid as before.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest

from payout_async import PayoutStatus
from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import (
    Ledger,
    LedgerState,
    PostgresLedger,
    SQLiteLedger,
    new_encryption_key,
)
from payout_async.payouts._orchestrator import intent_for
from payout_async.sandbox import Sandbox

from ..cli.support import cli
from ..ledger.support import DURABLE, PG_DSN, drop_schema, require_postgres
from .support import enot_client, fast_config, im_client, payouts

ATTACKER = "4000006666666663"
CARD = "4111111111111111"
KEY = new_encryption_key()
ALTERED = "the row was altered outside payout-async"
PROVIDERS = ["intellectmoney", "enot"]


@attrs.define
class Store:
    """A keyed ledger, and the same database opened with plain SQL."""

    kind: str
    path: Path
    schema: str = attrs.field(factory=lambda: f"alter_{uuid.uuid4().hex[:12]}")

    def ledger(self, key: str | None = KEY) -> Ledger:
        if self.kind == "sqlite":
            return SQLiteLedger(self.path, encryption_key=key)
        return PostgresLedger(PG_DSN, schema=self.schema, encryption_key=key)

    async def sql(self, statement: str, *args: Any) -> list[Any]:
        """Run ``statement`` (``?`` placeholders, table ``payouts``) outside the library."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                rows = conn.execute(statement, args).fetchall()
                conn.commit()
            finally:
                conn.close()
            return rows
        numbered = statement
        for n in range(1, statement.count("?") + 1):
            numbered = numbered.replace("?", f"${n}", 1)
        numbered = numbered.replace("payouts", f'"{self.schema}".payouts')
        pg = await asyncpg.connect(PG_DSN)
        try:
            return list(await pg.fetch(numbered, *args))
        finally:
            await pg.close()

    async def edit_params(self, key: str, **values: Any) -> None:
        """Change fields of a row's stored parameters (read, edit, write back)."""
        cast = "" if self.kind == "sqlite" else "::text"
        [(text,)] = await self.sql(f"SELECT params{cast} FROM payouts WHERE key = ?", key)
        params = {**json.loads(text), **values}
        assign = "?" if self.kind == "sqlite" else "?::jsonb"
        await self.sql(
            f"UPDATE payouts SET params = {assign} WHERE key = ?", json.dumps(params), key
        )


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        require_postgres()
    made = Store(request.param, tmp_path / "ledger.db")
    try:
        yield made
    finally:
        if request.param == "postgres":
            await drop_schema(made.schema)


def _request(provider: str, amount: str = "100.00") -> OperationRequest | PayoffRequest:
    if provider == "intellectmoney":
        return OperationRequest(pan=CARD, amount=Decimal(amount), description="k")
    return PayoffRequest(service="card", wallet_to=CARD, amount=Decimal(amount))


def _client(provider: str, sandbox: Sandbox) -> Any:
    if provider == "intellectmoney":
        return im_client(sandbox.intellectmoney_url)
    return enot_client(sandbox.enot_url)


def _paid(sandbox: Sandbox, provider: str) -> list[tuple[str, Decimal]]:
    """(recipient, amount) of every payout the sandbox's books hold as paid or created."""
    if provider == "intellectmoney":
        return [
            (op.details.recipient, op.details.amount)
            for op in sandbox.state.intellectmoney
            if op.executions
        ]
    return [(p.details.wallet or "", p.details.amount) for p in sandbox.state.enot]


async def _queue(ledger: Ledger, provider: str, *keys: str) -> None:
    """Rows recorded for workers (pending, nothing sent), as ``Payouts.enqueue`` does."""
    await ledger.enqueue(provider, [intent_for(key, _request(provider)) for key in keys])


async def _resume(store: Store, provider: str, sandbox: Sandbox) -> dict[str, Any]:
    ledger = store.ledger()
    async with ledger, _client(provider, sandbox) as client:
        results = await payouts(client, ledger).resume()
    return {result.key: result for result in results}


def _clear_recipient(provider: str) -> str:
    return json.dumps({"pan" if provider == "intellectmoney" else "wallet_to": ATTACKER})


def _check_set_aside(result: Any) -> None:
    assert result.status is PayoutStatus.NEEDS_ATTENTION, result
    assert result.reason is not None and result.reason.startswith(ALTERED), result.reason


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_recipient_replaced_in_clear_is_never_paid(store: Store, provider: str) -> None:
    async with store.ledger() as ledger:
        await _queue(ledger, provider, "altered", "untouched")
    await store.sql(
        "UPDATE payouts SET recipient = ? WHERE key = ?", _clear_recipient(provider), "altered"
    )
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["altered"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_raised_amount_is_never_paid(store: Store, provider: str) -> None:
    async with store.ledger() as ledger:
        await _queue(ledger, provider, "altered", "untouched")
    await store.edit_params("altered", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["altered"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_inserted_row_is_never_paid(store: Store, provider: str) -> None:
    async with store.ledger() as ledger:
        await _queue(ledger, provider, "untouched")
    intent = intent_for("inserted", _request(provider, "5000.00"))
    params = dict(intent.params)
    params["pan" if provider == "intellectmoney" else "wallet_to"] = ATTACKER
    now = time.time()
    await store.sql(
        "INSERT INTO payouts (provider, key, params_hash, params, state, order_id, attempts, "
        "lease_token, created_at, updated_at) VALUES (?, 'inserted', 'x', ?, 'pending', ?, 0, "
        "0, ?, ?)",
        provider, json.dumps(params), intent.order_id, now, now,
    )  # fmt: skip
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["inserted"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


async def test_an_operation_id_pointed_elsewhere_is_never_executed(store: Store) -> None:
    """An IntellectMoney row whose operation was created (not executed) is pointed at
    another operation -- one paying the attacker: that operation is never executed."""
    provider = "intellectmoney"
    async with Sandbox(config=fast_config()) as sandbox:
        async with store.ledger() as ledger, im_client(sandbox.intellectmoney_url) as client:
            for key in ("altered", "untouched"):
                request = _request(provider)
                intent = intent_for(key, request)
                claim = await ledger.begin(
                    provider, key, ledger.params_hash(intent.params), intent.params,
                    owner="w", lease_seconds=30,
                )  # fmt: skip
                created = await client.create_operation_from(request)
                await ledger.transition(
                    provider, key, owner="w", token=claim.record.lease_token,
                    state=LedgerState.CREATED, lease_seconds=30, release=True,
                    operation_id=created.operation_id,
                )  # fmt: skip
            theirs = await client.create_operation_from(
                OperationRequest(pan=ATTACKER, amount=Decimal("100.00"), description="x")
            )
        await store.sql(
            "UPDATE payouts SET operation_id = ? WHERE key = ?", theirs.operation_id, "altered"
        )
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["altered"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))]
        [attacker] = [op for op in sandbox.state.intellectmoney if op.id == theirs.operation_id]
        assert attacker.executions == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_untouched_rows_are_paid_and_a_set_aside_row_stays_so(
    store: Store, provider: str
) -> None:
    """The control: rows nobody touched are paid; and ``reconcile()`` tries a set-aside
    row again only to set it aside again (its alteration is still there)."""
    async with store.ledger() as ledger:
        await _queue(ledger, provider, "a", "b", "altered")
    await store.edit_params("altered", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        assert {k: r.status for k, r in results.items()} == {
            "a": PayoutStatus.SUCCEEDED,
            "b": PayoutStatus.SUCCEEDED,
            "altered": PayoutStatus.NEEDS_ATTENTION,
        }
        ledger = store.ledger()
        async with ledger, _client(provider, sandbox) as client:
            [again] = await payouts(client, ledger).reconcile()
        _check_set_aside(again)
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))] * 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_without_a_key_the_fingerprint_catches_an_accident(
    store: Store, provider: str
) -> None:
    """No key: the plain fingerprint is checked on load the same way -- it catches an
    edit by mistake, not someone who recomputes it."""
    ledger = store.ledger(key=None)
    async with ledger:
        await _queue(ledger, provider, "edited", "untouched")
    await store.edit_params("edited", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        ledger = store.ledger(key=None)
        async with ledger, _client(provider, sandbox) as client:
            results = {r.key: r for r in await payouts(client, ledger).resume()}
        _check_set_aside(results["edited"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert _paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


async def test_status_counts_the_altered_rows_without_the_key(tmp_path: Path) -> None:
    store = Store("sqlite", tmp_path / "ledger.db")
    async with store.ledger() as ledger:
        await _queue(ledger, "enot", "a", "b", "c")
    await store.sql("UPDATE payouts SET recipient = ? WHERE key != 'c'", _clear_recipient("enot"))
    async with Sandbox(config=fast_config()) as sandbox:
        await _resume(store, "enot", sandbox)
    shown = await cli("status", "--ledger", f"sqlite:///{store.path}")  # no key given
    assert shown.code == 0, shown
    assert "2 rows altered outside payout-async" in shown.out
    assert ATTACKER not in shown.out + shown.err
    as_json = await cli("status", "--json", "--ledger", f"sqlite:///{store.path}")
    assert json.loads(as_json.out)["altered"] == 2
