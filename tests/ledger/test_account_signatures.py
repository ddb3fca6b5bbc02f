"""A keyed ledger signs each live row's provider account (DESIGN rule 14): the account
an Enot payoff was sent through is where its order_id is looked up, so an account
edited to the one driving the row would find nothing and create the payout again
(``tests/payouts/test_altered_rows.py`` shows the payout set aside instead).

Rows written before accounts were signed are signed by the upgrade when the ledger
opens with its key; opened without it, they are set aside (never sent) until
``ledger-key rotate`` signs them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from payout_async.ledger import Ledger, LedgerState, new_encryption_key, rotate_keys

from .support import DURABLE, PG_DSN, Backend, backend_of

KEY = new_encryption_key()
PARAMS = {"service": "card", "wallet_to": "4111111111111111", "amount": "100.00"}
ALTERED = "the row was altered outside payout-async"


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for made in backend_of(request.param, tmp_path, Backend):
        yield made


async def _begin(ledger: Ledger, key: str = "k", account: str | None = "acct-A") -> int:
    """A row of ``key`` recorded through ``account``, leased to ``w``: its token."""
    claim = await ledger.begin(
        "enot", key, ledger.params_hash(PARAMS), PARAMS, owner="w", lease_seconds=30,
        order_id=f"o-{key}", provider_account=account,
    )  # fmt: skip
    return claim.record.lease_token


async def _sql(store: Backend, statement: str) -> None:
    """``statement`` on the store's ``payouts`` table, outside the library."""
    if store.kind == "sqlite":
        with sqlite3.connect(store.path) as conn:
            conn.executescript(statement)
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(statement.replace("payouts", f'"{store.schema}".payouts'))
    finally:
        await conn.close()


async def _as_before_accounts_were_signed(store: Backend) -> None:
    """The store as a version that kept no account signatures left it."""
    if store.kind == "sqlite":
        await _sql(store, "UPDATE payouts SET account_signature = NULL; PRAGMA user_version = 7;")
    else:
        await _sql(store, "ALTER TABLE payouts DROP COLUMN account_signature")


async def _untrusted(store: Backend, key: str = "k") -> str | None:
    async with store.ledger(encryption_key=KEY) as ledger:
        record = await ledger.get("enot", key)
    assert record is not None
    return record.untrusted


async def _an_edit_of_its_account_is_caught(store: Backend, account: str, key: str = "k") -> None:
    """Edited outside the library, the row's account makes it untrusted."""
    await _sql(store, f"UPDATE payouts SET provider_account = '{account}' WHERE key = '{key}'")
    untrusted = await _untrusted(store, key)
    assert untrusted is not None and untrusted.startswith(ALTERED), untrusted


async def test_every_new_row_has_its_account_signed_and_an_edit_is_caught(
    store: Backend,
) -> None:
    async with store.ledger(encryption_key=KEY) as ledger:
        await _begin(ledger, "sent", "acct-A")
        await _begin(ledger, "none", None)
    assert await _untrusted(store, "sent") is None
    assert await _untrusted(store, "none") is None
    for key in ("sent", "none"):
        await _an_edit_of_its_account_is_caught(store, "acct-B", key)


async def test_a_transition_that_records_another_account_signs_it(store: Backend) -> None:
    """A row nothing was sent for, driven through another account: the step that sends
    records (and signs) that account; the row stays trusted, and reads the same in a
    ledger that did not write it."""
    async with store.ledger(encryption_key=KEY) as ledger:
        token = await _begin(ledger, account=None)
        moved = await ledger.transition(
            "enot", "k", owner="w", token=token, state=LedgerState.SENDING, lease_seconds=30,
            add_attempt=True, provider_account="acct-B",
        )  # fmt: skip
        assert moved.untrusted is None and moved.provider_account == "acct-B"
    assert await _untrusted(store) is None
    await _an_edit_of_its_account_is_caught(store, "acct-A")


async def test_an_upgrade_with_the_key_signs_the_accounts(store: Backend) -> None:
    async with store.ledger(encryption_key=KEY) as ledger:
        await _begin(ledger)
    await _as_before_accounts_were_signed(store)

    assert await _untrusted(store) is None  # signed by the upgrade
    await _an_edit_of_its_account_is_caught(store, "acct-B")


async def test_an_upgrade_without_the_key_leaves_the_accounts_to_rotate(store: Backend) -> None:
    async with store.ledger(encryption_key=KEY) as ledger:
        await _begin(ledger)
    await _as_before_accounts_were_signed(store)
    async with store.ledger():  # upgraded by a ledger without the key: nothing signed
        pass

    untrusted = await _untrusted(store)
    assert untrusted is not None and "provider account is not signed" in untrusted, untrusted
    assert "ledger-key rotate" in untrusted
    async with store.ledger(encryption_key=KEY) as ledger:
        report = await rotate_keys(ledger)
    assert report.rotated == 1 and report.left == []
    assert await _untrusted(store) is None


async def test_an_upgrade_signs_no_account_of_a_row_an_older_version_set_aside(
    store: Backend,
) -> None:
    """A row without a signature (inserted by a writer of the database) was never sent
    by the older version; the upgrade leaves it so instead of signing its account."""
    async with store.ledger(encryption_key=KEY) as ledger:
        await _begin(ledger)
    await _sql(store, "UPDATE payouts SET signature = NULL")
    await _as_before_accounts_were_signed(store)

    untrusted = await _untrusted(store)
    assert untrusted is not None and "carries no signature" in untrusted, untrusted
