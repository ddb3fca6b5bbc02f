"""Plain-SQL access to a ledger's database, as someone who can write to it (but has no
key) has: for the tests of altered rows and key rotation."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

import asyncpg

from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import Ledger, PostgresLedger, SQLiteLedger, new_encryption_key
from payout_async.payouts._orchestrator import intent_for
from payout_async.sandbox import Sandbox

from ..ledger.support import PG_DSN, Backend
from .support import enot_client, im_client

CARD = "4111111111111111"
KEY = new_encryption_key()


class Store(Backend):
    """A keyed ledger, and the same database opened with plain SQL."""

    def ledger(self, key: Any = KEY, **options: Any) -> SQLiteLedger | PostgresLedger:
        return super().ledger(encryption_key=key, **options)

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


def request_for(provider: str, amount: str = "100.00") -> OperationRequest | PayoffRequest:
    if provider == "intellectmoney":
        return OperationRequest(pan=CARD, amount=Decimal(amount), description="k")
    return PayoffRequest(service="card", wallet_to=CARD, amount=Decimal(amount))


def client_for(provider: str, sandbox: Sandbox) -> Any:
    if provider == "intellectmoney":
        return im_client(sandbox.intellectmoney_url)
    return enot_client(sandbox.enot_url)


def paid(sandbox: Sandbox, provider: str) -> list[tuple[str, Decimal]]:
    """(recipient, amount) of every payout the sandbox's books hold as paid or created."""
    if provider == "intellectmoney":
        return [
            (op.details.recipient, op.details.amount)
            for op in sandbox.state.intellectmoney
            if op.executions
        ]
    return [(p.details.wallet or "", p.details.amount) for p in sandbox.state.enot]


async def queue(ledger: Ledger, provider: str, *keys: str) -> None:
    """Rows recorded for workers (pending, nothing sent), as ``Payouts.enqueue`` does."""
    await ledger.enqueue(provider, [intent_for(key, request_for(provider)) for key in keys])
