"""An answer about another payout is no evidence about this one.

A read names what it asked about: Enot's ``payoff/info`` by ``id`` or ``order_id``,
IntellectMoney's ``getOperationState`` by ``PayoutOperationId``. Between the library
and the provider stands whatever the deployment put there -- an API gateway, a caching
proxy that keys ``GET`` answers on the path alone, a provider laxer than documented --
and an answer may come back about another payoff. Taken as this payout's, it settles
the row with another payout's fate: recorded paid and never sent (lost), or recorded
failed while it pays (paid again by hand). Here a proxy in front of the sandbox hands
every read the answer it kept from another payout, of the same amount and recipient
(so that nothing but the identifiers can tell the two apart).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from payout_async import InvalidResponseError, PayoutStatus, PollPolicy
from payout_async._redact import scrub
from payout_async.enot import EnotClient, Payoff
from payout_async.intellectmoney import IntellectMoneyClient, PayoutOperation
from payout_async.ledger import (
    LeaseLostError,
    LedgerState,
    MemoryLedger,
    PayoutRecord,
    SQLiteLedger,
)
from payout_async.sandbox import Sandbox

from .support import (
    books,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
    serving,
)

#: Polls that give up within a second (a read that is never about its payout parks).
SHORT_POLL = PollPolicy(initial=0.02, multiplier=1.5, maximum=0.1, deadline=1.0)
#: The reads whose answers the proxy may keep and hand out again.
READS = ("/payoff/info", "/getOperationState")
#: The creates whose answers a gateway that replays ``POST`` answers hands out again.
CREATES = ("/payoff/create", "/createOperation")


class StaleProxy:
    """Forwards everything to ``upstream``; once ``stale`` is set, answers each call
    to one of ``paths`` with the last answer it forwarded for that path (as a cache
    keyed on the path alone would), whatever the call asked about."""

    def __init__(self, upstream: str, paths: tuple[str, ...] = READS) -> None:
        self.upstream = upstream.rstrip("/")
        self.paths = paths
        self.stale = False
        self.kept: dict[str, tuple[int, bytes]] = {}
        self.served_stale = 0

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        read = path.endswith(self.paths)
        if self.stale and read and path in self.kept:
            self.served_stale += 1
            status, body = self.kept[path]
            return web.Response(status=status, body=body, content_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=await request.read(),
            ) as answer,
        ):
            body = await answer.read()
            if read and answer.status == 200:
                self.kept[path] = (answer.status, body)
            return web.Response(status=answer.status, body=body, content_type="application/json")


@contextlib.asynccontextmanager
async def stale_proxy(
    upstream: str, paths: tuple[str, ...] = READS
) -> AsyncIterator[tuple[StaleProxy, str]]:
    proxy = StaleProxy(upstream, paths)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    async with serving(app) as url:
        yield proxy, url


async def test_enot_client_refuses_an_answer_about_another_payoff() -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.enot_url) as (proxy, url),
        enot_client(url) as client,
    ):
        first = await client.create_payoff_from(enot_request(), order_id="order-first")
        await client.get_payoff(payoff_id=first.payoff_id)
        second = await client.create_payoff_from(enot_request(), order_id="order-second")
        proxy.stale = True

        with pytest.raises(InvalidResponseError) as by_id:
            await client.get_payoff(payoff_id=second.payoff_id)
        with pytest.raises(InvalidResponseError) as by_order_id:
            await client.get_payoff(order_id="order-second")

    assert by_id.value.status == 200 and by_id.value.body  # the raw answer is kept
    # The message names the other payoff, its digit runs masked as any (a random GUID
    # may hold ten digits in a row, which read as a phone number); the body keeps it.
    assert first.payoff_id is not None and scrub(first.payoff_id) in str(by_id.value)
    assert first.payoff_id.encode() in by_id.value.body
    assert "order-first" in str(by_order_id.value)


async def test_intellectmoney_client_refuses_an_answer_about_another_operation() -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.intellectmoney_url) as (proxy, url),
        im_client(url) as client,
    ):
        first = await client.create_operation_from(im_request("first"))
        await client.get_operation_state(first.operation_id or "")
        second = await client.create_operation_from(im_request("second"))
        proxy.stale = True

        with pytest.raises(InvalidResponseError) as caught:
            await client.get_operation_state(second.operation_id or "")

    assert caught.value.status == 200 and caught.value.body
    assert first.operation_id is not None and scrub(first.operation_id) in str(caught.value)
    assert first.operation_id.encode() in caught.value.body


@pytest.mark.parametrize("lookup_before_create", [False, True], ids=["poll", "lookup-first"])
async def test_an_enot_row_is_never_settled_by_another_payoffs_answer(
    tmp_path: Path, lookup_before_create: bool
) -> None:
    """The second payout, of the same amount and card, reads only the first one's
    ``success``. Before the fix it was recorded paid -- looked up first, without ever
    being sent. It waits instead, and once the reads tell the truth it settles."""
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.enot_url) as (proxy, url),
        enot_client(url) as client,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        pay = payouts(client, ledger, lookup_before_create=lookup_before_create, poll=SHORT_POLL)
        first = await pay.pay("first", enot_request())
        assert first.status is PayoutStatus.SUCCEEDED
        proxy.stale = True

        second = await pay.pay("second", enot_request())
        sent = books(sandbox.state)[1]["second"]

        assert proxy.served_stale > 0
        assert second.status is PayoutStatus.NEEDS_ATTENTION, second
        assert second.provider_id != first.provider_id  # never another payoff's id
        assert sent == (0 if lookup_before_create else 1)  # looked up first: not sent

        proxy.stale = False  # the cache is fixed: the reads tell the truth again
        [settled] = await pay.reconcile()

    assert settled.key == "second" and settled.status is PayoutStatus.SUCCEEDED, settled
    assert settled.provider_id != first.provider_id
    assert books(sandbox.state)[1]["second"] == 1  # paid once


async def test_an_intellectmoney_row_is_never_settled_by_another_operations_answer(
    tmp_path: Path,
) -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.intellectmoney_url) as (proxy, url),
        im_client(url) as client,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        pay = payouts(client, ledger, poll=SHORT_POLL)
        first = await pay.pay("first", im_request("first"))
        assert first.status is PayoutStatus.SUCCEEDED
        proxy.stale = True

        second = await pay.pay("second", im_request("second"))

        assert proxy.served_stale > 0
        assert second.status is PayoutStatus.NEEDS_ATTENTION, second
        assert second.provider_id != first.provider_id
        proxy.stale = False
        [settled] = await pay.reconcile()

    assert settled.key == "second" and settled.status is PayoutStatus.SUCCEEDED, settled
    assert books(sandbox.state)[0]["second"] == 1


async def test_an_enot_payoff_of_another_order_id_is_not_this_payout(tmp_path: Path) -> None:
    """Asked by its own payoff id, Enot (laxer than documented) describes the payoff as
    another order's: the books disagree with what this payout created, so the row parks
    rather than take that payoff's fate."""

    class Mislabelled(EnotClient):
        async def get_payoff(
            self, *, payoff_id: str | None = None, order_id: str | None = None
        ) -> Payoff:
            payoff = await super().get_payoff(payoff_id=payoff_id, order_id=order_id)
            return attrs.evolve(payoff, order_id="someone-elses-order")

    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url) as client,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        client.__class__ = Mislabelled
        result = await payouts(client, ledger, poll=SHORT_POLL).pay("k", enot_request())

    assert result.status is PayoutStatus.NEEDS_ATTENTION, result
    assert result.reason is not None and "someone-elses-order" in result.reason
    assert books(sandbox.state)[1]["k"] == 1


# -- a create's answer about another payout ------------------------------------------


async def test_an_intellectmoney_create_answered_with_another_payouts_operation(
    tmp_path: Path,
) -> None:
    """A gateway replays the first payout's createOperation answer to the second (or
    IntellectMoney hands back an existing operation). Before the fix the second
    executed the first's operation and was recorded paid, never paid itself. The
    operation is the first's in the ledger: the second parks before any execute, the
    first is left alone, and once creates are answered truly ``reconcile()`` pays it."""
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.intellectmoney_url, CREATES) as (proxy, url),
        im_client(url) as client,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        pay = payouts(client, ledger, poll=SHORT_POLL)
        first = await pay.pay("first", im_request("first"))
        first_row = await ledger.get("intellectmoney", "first")
        proxy.stale = True

        second = await pay.pay("second", im_request("second"))

        assert proxy.served_stale == 1
        assert second.status is PayoutStatus.NEEDS_ATTENTION, second
        assert second.attempts == 0 and second.provider_id is None  # nothing executed
        assert second.reason is not None and "'first'" in second.reason
        assert books(sandbox.state)[0] == Counter(first=1)
        assert await ledger.get("intellectmoney", "first") == first_row  # left alone
        proxy.stale = False
        [settled] = await pay.reconcile()

    assert first.status is PayoutStatus.SUCCEEDED
    assert settled.key == "second" and settled.status is PayoutStatus.SUCCEEDED, settled
    assert settled.provider_id != first.provider_id
    assert books(sandbox.state)[0] == Counter(first=1, second=1)  # each paid once


async def test_an_enot_create_answered_with_another_payouts_payoff(tmp_path: Path) -> None:
    """The same for Enot: the second create's answer names the first payoff. The
    second parks -- its create's outcome unknown -- and ``reconcile()`` finds out by
    its own order_id whether it exists, and creates it if not: paid once."""
    async with (
        Sandbox(config=fast_config()) as sandbox,
        stale_proxy(sandbox.enot_url, CREATES) as (proxy, url),
        enot_client(url) as client,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        pay = payouts(client, ledger, poll=SHORT_POLL)
        first = await pay.pay("first", enot_request())
        proxy.stale = True

        second = await pay.pay("second", enot_request())

        assert second.status is PayoutStatus.NEEDS_ATTENTION, second
        assert second.provider_id is None
        assert books(sandbox.state)[1] == Counter(first=1)  # the replay never reached Enot
        proxy.stale = False
        [settled] = await pay.reconcile()

    assert settled.key == "second" and settled.status is PayoutStatus.SUCCEEDED, settled
    assert settled.provider_id != first.provider_id
    assert books(sandbox.state)[1] == Counter(first=1, second=1)


async def _first_payouts_operation(
    client: IntellectMoneyClient, ledger: MemoryLedger
) -> PayoutOperation:
    """An operation created, not yet executed, that the ledger's row ``first`` holds."""
    theirs = await client.create_operation_from(im_request("first"))
    claim = await ledger.begin("intellectmoney", "first", "h", {}, owner="o", lease_seconds=60)
    await ledger.transition(
        "intellectmoney", "first", owner="o", token=claim.record.lease_token,
        state=LedgerState.CREATED, lease_seconds=60, operation_id=theirs.operation_id,
    )  # fmt: skip
    return theirs


async def test_another_payouts_operation_is_never_deleted(tmp_path: Path) -> None:
    """Even when the row is taken over while it is being set aside, the operation its
    create was answered with stays the other payout's: not deleted (a row that loses
    its lease deletes the orphan it just created, and this is no orphan of its own)."""

    class TakenOverWhileSetAside(MemoryLedger):
        async def transition(self, provider: str, key: str, **kwargs: Any) -> PayoutRecord:
            if key == "second" and kwargs["state"] is LedgerState.NEEDS_ATTENTION:
                raise LeaseLostError(f"{key}: taken over")
            return await super().transition(provider, key, **kwargs)

    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        ledger = TakenOverWhileSetAside()
        theirs = await _first_payouts_operation(client, ledger)

        class Replayed(IntellectMoneyClient):
            async def create_operation_from(self, request: Any) -> PayoutOperation:
                return theirs

        client.__class__ = Replayed
        result = await payouts(client, ledger, poll=SHORT_POLL).pay("second", im_request("s"))
        client.__class__ = IntellectMoneyClient
        state = await client.get_operation_state(theirs.operation_id or "")

    assert result.status is not PayoutStatus.SUCCEEDED, result
    assert state.raw_state == "Created"  # the first payout's operation, left for it


async def test_a_drive_that_lost_its_row_never_deletes_another_payouts_operation() -> None:
    """A drive whose create was answered with another payout's operation, and which
    lost its row meanwhile, is told by the ledger that the operation is another's --
    not merely that its lease is gone, on which it deletes the orphan it created."""
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        ledger = MemoryLedger()
        theirs = await _first_payouts_operation(client, ledger)
        pay = payouts(client, ledger, poll=SHORT_POLL)

        class SlowAndReplayed(IntellectMoneyClient):
            async def create_operation_from(self, request: Any) -> PayoutOperation:
                # Meanwhile another worker takes the row over.
                await ledger.claim_stranded(
                    owner="thief", lease_seconds=60, limit=1, dead_owners=[pay.owner]
                )
                return theirs

        client.__class__ = SlowAndReplayed
        result = await pay.pay("second", im_request("second"))
        client.__class__ = IntellectMoneyClient
        state = await client.get_operation_state(theirs.operation_id or "")

    assert result.status is not PayoutStatus.SUCCEEDED, result
    assert state.raw_state == "Created"  # the first payout's operation, left for it


async def test_an_enot_payoff_named_by_its_own_order_id_is_its_payouts(tmp_path: Path) -> None:
    """A create answer replayed to ``second`` named ``first``'s payoff before ``first``
    had recorded it (its own answer was lost). ``first`` finds the payoff by its own
    order_id: the payoff is its, and it settles without the id another row recorded,
    rather than parking. ``second`` learns the payoff is another order's, parks
    forgetting the id, and ``reconcile()`` pays it: each paid once."""
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url) as client,
        enot_client(sandbox.enot_url) as replayed,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
    ):
        theirs = await client.create_payoff_from(enot_request(), order_id="first")
        polled, go_on = asyncio.Event(), asyncio.Event()

        class ReplayedThenSlow(EnotClient):
            async def create_payoff_from(self, request: Any, *, order_id: str | None = None) -> Any:
                return theirs

            async def get_payoff(self, **asked: Any) -> Payoff:
                polled.set()
                await go_on.wait()
                return await super().get_payoff(**asked)

        replayed.__class__ = ReplayedThenSlow
        second_drive = asyncio.create_task(
            payouts(replayed, ledger, poll=SHORT_POLL).pay("second", enot_request())
        )
        await polled.wait()  # ``second`` has recorded the payoff's id, and polls it
        pay = payouts(client, ledger, poll=SHORT_POLL, lookup_before_create=True)
        first = await pay.pay("first", enot_request())
        go_on.set()
        second = await second_drive
        [settled] = await pay.reconcile()

    assert first.status is PayoutStatus.SUCCEEDED, first
    assert second.status is PayoutStatus.NEEDS_ATTENTION and second.provider_id is None, second
    assert settled.key == "second" and settled.status is PayoutStatus.SUCCEEDED, settled
    assert books(sandbox.state)[1] == Counter(first=1, second=1)
