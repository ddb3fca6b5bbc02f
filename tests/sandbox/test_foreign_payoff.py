"""``Sandbox.foreign_payoff``: a payoff another system made on the same Enot account.
Enot shows it by order_id and sends its signed webhook; the sandbox's own books of
*our* payouts (``paid_per_payout``, ``duplicates``, ``stats``) leave it out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from payout_async import NO_RETRY, InvalidRequestError
from payout_async.enot import SIGNATURE_HEADER, PayoffStatus, parse_webhook
from payout_async.sandbox import Sandbox

from .support import CARD, fast_config

OTHER_CARD = "5555555555554444"


class Hooks:
    """A webhook endpoint on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        self.arrived.set()
        return web.Response(text="ok")


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Hooks, str]]:
    receiver = Hooks()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("/hook"))
    finally:
        await server.close()


async def test_a_foreign_payoff_is_found_by_order_id_and_sends_its_signed_webhook(
    hooks: tuple[Hooks, str],
) -> None:
    receiver, url = hooks
    async with Sandbox(config=fast_config()) as sandbox:
        payoff_id = sandbox.foreign_payoff(
            order_id="w-1001", amount="10.00", wallet_to=OTHER_CARD, hook_url=url
        )
        await asyncio.wait_for(receiver.arrived.wait(), 10)
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            found = await client.get_payoff(order_id="w-1001")
            by_id = await client.get_payoff(payoff_id=payoff_id)
        balance = sandbox.stats().enot.balance
    assert found.payoff_id == by_id.payoff_id == payoff_id
    assert (found.amount, found.status) == (Decimal("10.00"), PayoffStatus.SUCCESS)
    [(body, signature)] = receiver.received
    hook = parse_webhook(body, signature, sandbox.credentials.enot_additional_key)
    assert (hook.payoff_id, hook.order_id, hook.status) == (
        payoff_id,
        "w-1001",
        PayoffStatus.SUCCESS,
    )
    assert hook.amount == Decimal("10.00") and hook.raw["service"] == "card"
    # Not one of our payouts -- but the same account's balance paid for it.
    assert sandbox.paid_per_payout() == {} and sandbox.duplicates() == []
    assert sandbox.stats().enot.created == 0 and len(sandbox.state.enot) == 0
    assert [p.id for p in sandbox.state.enot.foreign()] == [payoff_id]
    assert balance == fast_config().enot_balance - Decimal("10.00")


async def test_our_payoff_under_the_same_order_id_is_counted_alone() -> None:
    async with Sandbox(config=fast_config(duplicate_order_id="accept")) as sandbox:
        theirs = sandbox.foreign_payoff(order_id="w-1002", amount="10.00", status="fail")
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            ours = await client.create_payoff(
                service="card", wallet_to=CARD, amount=150, order_id="w-1002"
            )
            first = await client.get_payoff(order_id="w-1002")
        assert first.payoff_id == theirs  # Enot shows the first one under that order_id
        [mine] = list(sandbox.state.enot)
        assert mine.id == ours.payoff_id
        assert sandbox.duplicates() == []  # one payoff of ours under w-1002
        assert sandbox.stats().enot.created == 1


async def test_a_used_order_id_refuses_our_create_when_enot_refuses_duplicates() -> None:
    async with Sandbox(config=fast_config(duplicate_order_id="reject")) as sandbox:
        sandbox.foreign_payoff(order_id="w-7", amount="10.00")
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            with pytest.raises(InvalidRequestError, match="order_id"):
                await client.create_payoff(
                    service="card", wallet_to=CARD, amount=150, order_id="w-7"
                )
        assert len(sandbox.state.enot) == 0


def test_a_foreign_payoff_is_checked_like_a_create() -> None:
    sandbox = Sandbox(config=fast_config())
    with pytest.raises(ValueError, match="status"):
        sandbox.foreign_payoff(order_id="x", amount="10.00", status="wait")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Enot would refuse it"):
        sandbox.foreign_payoff(order_id="x", amount="0.10")
    with pytest.raises(ValueError, match="final_after"):
        sandbox.foreign_payoff(order_id="x", amount="10.00", final_after=-1)
