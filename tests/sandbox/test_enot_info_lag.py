"""Enot ``payoff/info`` lagging behind ``payoff/create``, and the per-payout paid counts
across both providers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from payout_async import NO_RETRY, NotFoundError
from payout_async.enot import PayoffStatus
from payout_async.sandbox import Sandbox

from .support import CARD, ManualClock, enot_raw, fast_config

LAG = 5.0


async def test_info_answers_not_found_by_id_and_by_order_id_for_the_lag() -> None:
    clock = ManualClock()
    config = fast_config(enot_info_lag=LAG, enot_final_after=1.0)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.enot_client(retry=NO_RETRY) as client,
    ):
        created = await client.create_payoff(
            service="card", wallet_to=CARD, amount=100, order_id="o-1"
        )
        user_id = sandbox.credentials.enot_user_id
        unknown = await enot_raw(
            sandbox, "GET", "/payoff/info", params={"user_id": user_id, "id": "no-such-payoff"}
        )
        assert unknown[0] == 404
        for params in ({"id": created.payoff_id}, {"order_id": "o-1"}):
            status, body, _ = await enot_raw(
                sandbox, "GET", "/payoff/info", params={"user_id": user_id, **params}
            )
            assert (status, body) == (404, unknown[1])  # exactly what an unknown payoff gets
        assert unknown[1] == {
            "data": None,
            "error": "Вывод не найден.",
            "status": 404,
            "status_check": False,
        }

        clock.advance(LAG - 0.1)
        with pytest.raises(NotFoundError):
            await client.get_payoff(payoff_id=created.payoff_id)
        with pytest.raises(NotFoundError):
            await client.get_payoff(order_id="o-1")
        # The balance is not delayed: the withdrawal is visible, and settled after 1 s.
        balance = await client.get_balance()
        assert balance.balance == config.enot_balance - 100
        assert balance.freeze_balance == 0

        clock.advance(0.1)
        by_id = await client.get_payoff(payoff_id=created.payoff_id)
        by_order = await client.get_payoff(order_id="o-1")
    assert by_id.payoff_id == by_order.payoff_id == created.payoff_id
    assert by_id.status is PayoffStatus.SUCCESS
    assert sandbox.stats().enot.paid == 1


async def test_each_payoff_has_its_own_lag() -> None:
    clock = ManualClock()
    async with (
        Sandbox(config=fast_config(enot_info_lag=LAG), clock=clock) as sandbox,
        sandbox.enot_client(retry=NO_RETRY) as client,
    ):
        first = await client.create_payoff(
            service="card", wallet_to=CARD, amount=10, order_id="o-1"
        )
        clock.advance(3.0)
        second = await client.create_payoff(
            service="card", wallet_to=CARD, amount=10, order_id="o-2"
        )
        clock.advance(2.0)
        assert (await client.get_payoff(payoff_id=first.payoff_id)).order_id == "o-1"
        with pytest.raises(NotFoundError):
            await client.get_payoff(payoff_id=second.payoff_id)
        with pytest.raises(NotFoundError):
            await client.get_payoff(order_id="o-2")


@pytest.fixture
async def hook_url() -> AsyncIterator[tuple[asyncio.Event, str]]:
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield arrived, str(server.make_url("/hook"))
    finally:
        await server.close()


async def test_webhook_is_not_delayed_by_the_info_lag(hook_url: tuple[asyncio.Event, str]) -> None:
    arrived, url = hook_url
    clock = ManualClock()
    config = fast_config(enot_info_lag=LAG, enot_final_after=0.02)
    async with (
        Sandbox(config=config, clock=clock) as sandbox,
        sandbox.enot_client(retry=NO_RETRY) as client,
    ):
        created = await client.create_payoff(
            service="card", wallet_to=CARD, amount=10, order_id="hooked", hook_url=url
        )
        clock.advance(0.02)
        await asyncio.wait_for(arrived.wait(), 5)
        with pytest.raises(NotFoundError):  # the webhook came, info still says not found
            await client.get_payoff(payoff_id=created.payoff_id)
        clock.advance(LAG)
        assert (await client.get_payoff(order_id="hooked")).status is PayoffStatus.SUCCESS
    assert [delivery.delivered for delivery in sandbox.webhooks] == [True]


async def test_paid_per_payout_counts_both_providers() -> None:
    config = fast_config(im_second_execute="pay_again")
    async with (
        Sandbox(config=config) as sandbox,
        sandbox.enot_client(retry=NO_RETRY) as enot,
        sandbox.intellectmoney_client(retry=NO_RETRY) as im,
    ):
        for order_id in ("o-1", "o-1", "o-2"):  # duplicate order_ids are accepted
            await enot.create_payoff(service="card", wallet_to=CARD, amount=10, order_id=order_id)
        created = await im.create_operation(pan=CARD, amount="5.00", description="im-1")
        assert created.operation_id is not None
        await im.execute_operation(created.operation_id)
        await im.execute_operation(created.operation_id)
        await im.create_operation(pan=CARD, amount="5.00", description="never-executed")
        paid = sandbox.paid_per_payout()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sandbox.url}/_sandbox/stats") as response,
        ):
            endpoint = (await response.json())["paid_per_payout"]
    assert paid == Counter({("enot", "o-1"): 2, ("enot", "o-2"): 1, ("intellectmoney", "im-1"): 2})
    assert max(paid.values()) == 2  # "nobody paid twice" would be: <= 1
    assert endpoint == {"intellectmoney": {"im-1": 2}, "enot": {"o-1": 2, "o-2": 1}}
    assert sandbox.stats().intellectmoney.balance == config.im_balance - Decimal("10.00")


async def test_paid_per_payout_leaves_out_failed_payouts() -> None:
    config = fast_config(failure_ratio=1.0, im_in_process_after=0, im_final_after=0)
    async with (
        Sandbox(config=config) as sandbox,
        sandbox.enot_client(retry=NO_RETRY) as enot,
        sandbox.intellectmoney_client(retry=NO_RETRY) as im,
    ):
        await enot.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="o-1")
        created = await im.create_operation(pan=CARD, amount="5.00", description="im-1")
        assert created.operation_id is not None
        await im.execute_operation(created.operation_id)
    assert sandbox.paid_per_payout() == Counter()
