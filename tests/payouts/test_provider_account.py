"""A row is finished through the Enot account that sent it (protocol A14).

Two sandboxes stand for two Enot accounts (each its own books and ``user_id``): an
order_id is looked up within one account, so a payoff whose create answer was lost in
account A is "not found" in account B -- and B, after the grace, would create it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async import PayoutStatus
from payout_async._redact import mask_card
from payout_async.enot import EnotClient, PayoffWebhook
from payout_async.ledger import LedgerState, SQLiteLedger, new_encryption_key
from payout_async.payouts import intent_for
from payout_async.sandbox import Sandbox, SandboxCredentials

from .support import books, enot_client, enot_request, fast_config, payouts

#: Each test runs on a plain ledger and on a keyed one (whose rows' accounts are signed).
KEYS = pytest.mark.parametrize("key", [None, new_encryption_key()], ids=["plain", "keyed"])
A = SandboxCredentials(enot_user_id="11111111-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
B = SandboxCredentials(enot_user_id="22222222-bbbb-4bbb-8bbb-bbbbbbbbbbbb")


@contextlib.asynccontextmanager
async def account(credentials: SandboxCredentials) -> AsyncIterator[tuple[Sandbox, EnotClient]]:
    """One Enot account: its sandbox (its books) and a client of it."""
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(
            Sandbox(config=fast_config(), credentials=credentials)
        )
        client = await stack.enter_async_context(enot_client(sandbox.enot_url, credentials))
        yield sandbox, client


def created(sandbox: Sandbox, key: str) -> int:
    return books(sandbox.state)[1][key]


async def strand_a_lost_create(ledger: SQLiteLedger, client: EnotClient, key: str) -> None:
    """What a process of account ``client`` leaves when it dies after sending a create
    whose answer it never read: the payoff exists there, and the row says ``sending``."""
    request = enot_request()
    intent = intent_for(key, request)
    await ledger.begin(
        "enot", key, ledger.params_hash(intent.params), intent.params,
        owner="gone", lease_seconds=0.05, order_id=intent.order_id, sending=True,
        provider_account=client.user_id,
    )  # fmt: skip
    await client.create_payoff_from(request, order_id=intent.order_id)
    await asyncio.sleep(0.1)  # its lease runs out: the row is stranded


@KEYS
async def test_a_row_sent_through_another_account_is_parked_not_created_again(
    tmp_path: Path,
    key: str | None,
) -> None:
    async with (
        account(A) as (books_a, client_a),
        account(B) as (books_b, client_b),
        SQLiteLedger(tmp_path / "ledger.db", encryption_key=key) as ledger,
    ):
        await strand_a_lost_create(ledger, client_a, "k")

        [parked] = await payouts(client_b, ledger).resume()  # the other account's creds

        assert parked.status is PayoutStatus.NEEDS_ATTENTION
        assert parked.reason is not None and A.enot_user_id in parked.reason
        assert books_b.stats().requests == {}  # nothing looked up, nothing created in B
        # Through the account that sent it, the payoff is found and the row settles.
        [settled] = await payouts(client_a, ledger).reconcile()
        assert settled.status is PayoutStatus.SUCCEEDED
        assert (created(books_a, "k"), created(books_b, "k")) == (1, 0)


@pytest.mark.parametrize("lookup_before_create", [False, True])
@KEYS
async def test_each_create_records_the_account_it_goes_through(
    tmp_path: Path, key: str | None, lookup_before_create: bool
) -> None:
    async with (
        account(A) as (_, client_a),
        SQLiteLedger(tmp_path / "ledger.db", encryption_key=key) as ledger,
    ):
        paid = await payouts(client_a, ledger, lookup_before_create=lookup_before_create).pay(
            "k", enot_request()
        )
        assert paid.status is PayoutStatus.SUCCEEDED
        row = await ledger.get("enot", "k")
        assert row is not None and row.provider_account == A.enot_user_id


@KEYS
async def test_a_row_nothing_was_sent_for_is_paid_through_the_account_driving_it(
    tmp_path: Path,
    key: str | None,
) -> None:
    """Recorded (enqueued, or begun) by account A but never sent: account B pays it,
    once, and the row then names B."""
    async with (
        account(A) as (books_a, client_a),
        account(B) as (books_b, client_b),
        SQLiteLedger(tmp_path / "ledger.db", encryption_key=key) as ledger,
    ):
        intent = intent_for("k", enot_request())
        await ledger.begin(
            "enot", "k", ledger.params_hash(intent.params), intent.params,
            owner="gone", lease_seconds=0.05, order_id=intent.order_id,
            provider_account=client_a.user_id,
        )  # fmt: skip
        await asyncio.sleep(0.1)

        [paid] = await payouts(client_b, ledger).resume()

        assert paid.status is PayoutStatus.SUCCEEDED
        assert (created(books_a, "k"), created(books_b, "k")) == (0, 1)
        row = await ledger.get("enot", "k")
        assert row is not None and row.state is LedgerState.SUCCEEDED
        assert row.provider_account == B.enot_user_id


@KEYS
async def test_a_key_paid_through_another_account_says_so(tmp_path: Path, key: str | None) -> None:
    """Paid once through account A (a sandbox's, say, whose "success" paid nobody):
    asked again through account B, the payout is not paid again, and says where it
    was paid."""
    async with (
        account(A) as (_, client_a),
        account(B) as (books_b, client_b),
        SQLiteLedger(tmp_path / "ledger.db", encryption_key=key) as ledger,
    ):
        first = await payouts(client_a, ledger).pay("k", enot_request())
        assert first.status is PayoutStatus.SUCCEEDED and first.reason is None
        again = await payouts(client_b, ledger).pay("k", enot_request())
        assert again.status is PayoutStatus.SUCCEEDED
        assert again.reason == (
            f"paid through account {A.enot_user_id}, not this client's ({B.enot_user_id})"
        )
        assert books_b.stats().requests == {}
        assert (await payouts(client_a, ledger).pay("k", enot_request())).reason is None


@KEYS
@pytest.mark.parametrize("status", ["fail", "success"])
async def test_a_webhook_of_another_account_settles_no_row_sent_through_this_one(
    tmp_path: Path, key: str | None, status: str
) -> None:
    """A webhook is verified with one account's key: it speaks of that account's
    payoffs. A row whose create was sent through account A is not settled by account
    B's webhook for the same order_id, amount and recipient (another system's payoff on
    B): "fail" would record a payout that A may still pay as failed, "success" one
    that A may fail as paid. Through A, the row settles by its own payoff."""
    async with (
        account(A) as (books_a, client_a),
        account(B) as (books_b, client_b),
        SQLiteLedger(tmp_path / "ledger.db", encryption_key=key) as ledger,
    ):
        await strand_a_lost_create(ledger, client_a, "k")
        row = await ledger.get("enot", "k")
        assert row is not None and row.order_id is not None
        request = enot_request()
        webhook = PayoffWebhook(
            order_id=row.order_id,
            raw_status=status,
            amount=request.amount,
            service=request.service,
            wallet=mask_card(request.wallet_to),
        )

        assert await payouts(client_b, ledger).apply_webhook(webhook) is None

        row = await ledger.get("enot", "k")
        assert row is not None and row.state is LedgerState.SENDING
        notes = [step.note or "" for step in await ledger.history("enot", "k")]
        assert any(A.enot_user_id in note for note in notes), notes
        [settled] = await payouts(client_a, ledger).resume()
        assert settled.status is PayoutStatus.SUCCEEDED
        assert (created(books_a, "k"), created(books_b, "k")) == (1, 0)
