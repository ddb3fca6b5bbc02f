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
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from payout_async import PayoutStatus
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import (
    LedgerState,
)
from payout_async.payouts._orchestrator import intent_for
from payout_async.sandbox import Sandbox

from ..cli.support import cli
from .altering import CARD, Store, client_for, paid, queue, request_for
from .support import fast_config, im_client, payouts
from .test_provider_account import A, B, account, created, strand_a_lost_create

ATTACKER = "4000006666666663"
ALTERED = "the row was altered outside payout-async"
PROVIDERS = ["intellectmoney", "enot"]


async def _resume(store: Store, provider: str, sandbox: Sandbox) -> dict[str, Any]:
    ledger = store.ledger()
    async with ledger, client_for(provider, sandbox) as client:
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
        await queue(ledger, provider, "altered", "untouched")
    await store.sql(
        "UPDATE payouts SET recipient = ? WHERE key = ?", _clear_recipient(provider), "altered"
    )
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["altered"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_raised_amount_is_never_paid(store: Store, provider: str) -> None:
    async with store.ledger() as ledger:
        await queue(ledger, provider, "altered", "untouched")
    await store.edit_params("altered", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        _check_set_aside(results["altered"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_inserted_row_is_never_paid(store: Store, provider: str) -> None:
    async with store.ledger() as ledger:
        await queue(ledger, provider, "untouched")
    intent = intent_for("inserted", request_for(provider, "5000.00"))
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
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


async def test_an_operation_id_pointed_elsewhere_is_never_executed(store: Store) -> None:
    """An IntellectMoney row whose operation was created (not executed) is pointed at
    another operation -- one paying the attacker: that operation is never executed."""
    provider = "intellectmoney"
    async with Sandbox(config=fast_config()) as sandbox:
        async with store.ledger() as ledger, im_client(sandbox.intellectmoney_url) as client:
            for key in ("altered", "untouched"):
                request = request_for(provider)
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
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))]
        [attacker] = [op for op in sandbox.state.intellectmoney if op.id == theirs.operation_id]
        assert attacker.executions == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_untouched_rows_are_paid_and_a_set_aside_row_stays_so(
    store: Store, provider: str
) -> None:
    """The control: rows nobody touched are paid; and ``reconcile()`` tries a set-aside
    row again only to set it aside again (its alteration is still there)."""
    async with store.ledger() as ledger:
        await queue(ledger, provider, "a", "b", "altered")
    await store.edit_params("altered", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        results = await _resume(store, provider, sandbox)
        assert {k: r.status for k, r in results.items()} == {
            "a": PayoutStatus.SUCCEEDED,
            "b": PayoutStatus.SUCCEEDED,
            "altered": PayoutStatus.NEEDS_ATTENTION,
        }
        ledger = store.ledger()
        async with ledger, client_for(provider, sandbox) as client:
            [again] = await payouts(client, ledger).reconcile()
        _check_set_aside(again)
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))] * 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_without_a_key_the_fingerprint_catches_an_accident(
    store: Store, provider: str
) -> None:
    """No key: the plain fingerprint is checked on load the same way -- it catches an
    edit by mistake, not someone who recomputes it."""
    ledger = store.ledger(key=None)
    async with ledger:
        await queue(ledger, provider, "edited", "untouched")
    await store.edit_params("edited", amount="99999.00")
    async with Sandbox(config=fast_config()) as sandbox:
        ledger = store.ledger(key=None)
        async with ledger, client_for(provider, sandbox) as client:
            results = {r.key: r for r in await payouts(client, ledger).resume()}
        _check_set_aside(results["edited"])
        assert results["untouched"].status is PayoutStatus.SUCCEEDED
        assert paid(sandbox, provider) == [(CARD, Decimal("100.00"))]


async def test_status_counts_the_altered_rows_without_the_key(tmp_path: Path) -> None:
    store = Store("sqlite", tmp_path)
    async with store.ledger() as ledger:
        await queue(ledger, "enot", "a", "b", "c")
    await store.sql("UPDATE payouts SET recipient = ? WHERE key != 'c'", _clear_recipient("enot"))
    async with Sandbox(config=fast_config()) as sandbox:
        await _resume(store, "enot", sandbox)
    shown = await cli("status", "--ledger", f"sqlite:///{store.path}")  # no key given
    assert shown.code == 0, shown
    assert "2 rows altered outside payout-async" in shown.out
    assert ATTACKER not in shown.out + shown.err
    as_json = await cli("status", "--json", "--ledger", f"sqlite:///{store.path}")
    assert json.loads(as_json.out)["altered"] == 2


async def test_a_row_altered_while_it_is_driven_is_set_aside_at_its_next_step(
    tmp_path: Path,
) -> None:
    """The row read back by a step is checked too: an order_id changed while the create
    was in flight parks the row at its next step; nothing more is sent for it."""
    store = Store("sqlite", tmp_path)
    async with Sandbox(config=fast_config()) as sandbox:
        ledger = store.ledger()
        async with ledger, client_for("enot", sandbox) as client:
            flow = payouts(client, ledger)

            async def alter(record: Any) -> None:
                await store.sql("UPDATE payouts SET order_id = 'theirs' WHERE key = ?", record.key)

            flow._before_send = alter
            result = await flow.pay("k", request_for("enot"))
        _check_set_aside(result)
        assert paid(sandbox, "enot") == [(CARD, Decimal("100.00"))]  # the create before it
        async with store.ledger() as reread:
            row = await reread.get("enot", "k")
        assert row is not None and row.state is LedgerState.NEEDS_ATTENTION
        assert row.lease_owner is None


@pytest.mark.parametrize("edit", ["the driving account", "none"])
async def test_a_row_moved_to_another_account_is_never_created_again(
    store: Store, edit: str
) -> None:
    """An Enot row whose create answer was lost in account A names A as the account it
    was sent through. Edited to name the account now driving it (B), or none, B would
    find no payoff under its order_id and create it again: the same payout paid from
    two accounts. The account is signed with the row: the edit sets it aside."""
    async with (
        account(A) as (books_a, client_a),
        account(B) as (books_b, client_b),
    ):
        async with store.ledger() as ledger:
            await strand_a_lost_create(ledger, client_a, "k")
        moved_to = B.enot_user_id if edit == "the driving account" else None
        await store.sql("UPDATE payouts SET provider_account = ? WHERE key = ?", moved_to, "k")

        async with store.ledger() as ledger:
            [result] = await payouts(client_b, ledger).resume()
        _check_set_aside(result)
        assert books_b.stats().requests == {}  # nothing looked up, nothing created in B
        assert (created(books_a, "k"), created(books_b, "k")) == (1, 0)
