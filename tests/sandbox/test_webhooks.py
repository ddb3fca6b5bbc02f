"""Enot payoff webhooks, POSTed by the sandbox to a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from payout_async import NO_RETRY
from payout_async.enot import SIGNATURE_HEADER, PayoffStatus, parse_webhook, verify_webhook
from payout_async.sandbox import Sandbox, WebhookDelivery

from .support import CARD, fast_config


class Receiver:
    """A webhook endpoint that answers ``statuses`` in turn (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[bytes, str]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.arrived.set()
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver_server() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(500)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("/hook"))
    finally:
        await server.close()


async def _deliveries(sandbox: Sandbox, count: int) -> list[WebhookDelivery]:
    """The sandbox's webhook deliveries, once it has recorded ``count`` (5 s at most)."""
    for _ in range(250):
        if len(sandbox.webhooks) >= count:
            break
        await asyncio.sleep(0.02)
    return sandbox.webhooks


async def test_webhook_is_signed_and_retried(receiver_server: tuple[Receiver, str]) -> None:
    receiver, url = receiver_server
    async with Sandbox(config=fast_config(failure_ratio=0.0)) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            created = await client.create_payoff(
                service="card",
                wallet_to=CARD,
                amount=100,
                order_id="hooked",
                hook_url=url,
                comment="a/b",
            )
        await asyncio.wait_for(receiver.arrived.wait(), 5)
        # The receiver has answered; the sandbox records the delivery once it reads
        # that answer (a moment later: on Python 3.12+ it is not yet done here).
        deliveries = await _deliveries(sandbox, 2)

    assert [(d.attempt, d.status) for d in deliveries] == [(1, 500), (2, 200)]
    assert deliveries[-1].delivered
    body, signature = receiver.received[-1]
    key = sandbox.credentials.enot_additional_key
    assert verify_webhook(body, signature, key)
    assert not verify_webhook(body, signature, "another key")
    hook = parse_webhook(body, signature, key)
    assert hook.payoff_id == created.payoff_id
    assert hook.order_id == "hooked"
    assert hook.status is PayoffStatus.SUCCESS
    assert str(hook.amount) == "100.00"
    assert str(hook.commission) == "2.50"
    assert hook.raw["type"] == "payoff"


async def test_failed_payoff_hook_says_fail(receiver_server: tuple[Receiver, str]) -> None:
    receiver, url = receiver_server
    receiver.statuses.clear()
    async with Sandbox(config=fast_config(failure_ratio=1.0)) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            await client.create_payoff(
                service="card", wallet_to=CARD, amount=10, order_id="f", hook_url=url
            )
        await asyncio.wait_for(receiver.arrived.wait(), 5)
    body, signature = receiver.received[0]
    hook = parse_webhook(body, signature, sandbox.credentials.enot_additional_key)
    assert hook.status is PayoffStatus.FAIL
    assert hook.raw["error_message"]


async def test_non_loopback_hook_is_never_contacted() -> None:
    async with Sandbox(config=fast_config(enot_final_after=0.01)) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            await client.create_payoff(
                service="card",
                wallet_to=CARD,
                amount=10,
                order_id="x",
                hook_url="https://enot.io/hook",
            )
        [delivery] = await _deliveries(sandbox, 1)
    assert delivery.attempt == 0
    assert delivery.status is None
    assert delivery.error is not None and "loopback" in delivery.error


async def test_payoff_without_hook_sends_nothing() -> None:
    async with Sandbox(config=fast_config(enot_final_after=0.01)) as sandbox:
        async with sandbox.enot_client(retry=NO_RETRY) as client:
            await client.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="quiet")
        await asyncio.sleep(0.1)
        assert sandbox.stats().enot.paid == 1
        assert sandbox.webhooks == []
