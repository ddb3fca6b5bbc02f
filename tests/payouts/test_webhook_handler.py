"""The Enot webhook handler over loopback: good, tampered, repeated and out-of-order
deliveries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from payout_async import PayoutStatus, PollPolicy
from payout_async.enot import (
    SIGNATURE_HEADER,
    PayoffRequest,
    PayoffStatus,
    PayoffWebhook,
    sign_webhook,
)
from payout_async.ledger import LedgerState, PayoutRecord, SQLiteLedger, Transition
from payout_async.sandbox import Sandbox

from .support import CARD, enot_client, fast_config, hook_server, payouts

SHORT_POLL = PollPolicy(initial=0.02, maximum=0.05, deadline=0.1)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db") as opened:
        yield opened


async def post(url: str, payload: dict[str, Any], signature: str) -> int:
    async with aiohttp.ClientSession() as session:
        body = json.dumps(payload).encode()
        headers = {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status


async def test_deliveries_good_tampered_repeated_out_of_order(ledger: SQLiteLedger) -> None:
    config = fast_config(enot_final_after=30.0)  # only the webhooks below settle it
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        key = sandbox.credentials.enot_additional_key
        flow = payouts(client, ledger, poll=SHORT_POLL)
        async with hook_server(flow.apply_webhook, key) as url:
            pending = await flow.pay("w-1", PayoffRequest("card", CARD, "10.00"))
            assert pending.status is PayoutStatus.PROCESSING
            payload = {"order_id": "w-1", "payoff_id": pending.provider_id, "status": "success",
                       "amount": "10.00", "type": 2}  # fmt: skip

            tampered = {**payload, "amount": "1000.00"}
            assert await post(url, tampered, sign_webhook(payload, key)) == 401
            assert await post(url, payload, sign_webhook(payload, "wrong key")) == 401
            record = await ledger.get("enot", "w-1")
            assert record is not None and record.state is LedgerState.PROCESSING

            assert await post(url, payload, sign_webhook(payload, key)) == 200
            assert await post(url, payload, sign_webhook(payload, key)) == 200  # repeated
            late = {**payload, "status": "wait"}
            assert await post(url, late, sign_webhook(late, key)) == 200  # out of order
            contrary = {**payload, "status": "fail"}
            assert await post(url, contrary, sign_webhook(contrary, key)) == 200

            result = await flow.get("w-1")
            assert result is not None and result.status is PayoutStatus.SUCCEEDED
            assert result.provider_status == "success"
            history = await ledger.history("enot", "w-1")
            assert [step.note for step in history].count("webhook") == 1

            unknown = {**payload, "order_id": "nobody"}
            assert await post(url, unknown, sign_webhook(unknown, key)) == 200
            assert await ledger.get("enot", "nobody") is None


async def test_sandbox_webhook_settles_a_payout_before_polling(ledger: SQLiteLedger) -> None:
    async with Sandbox(config=fast_config(enot_final_after=0.3)) as sandbox:
        async with enot_client(sandbox.enot_url) as client:
            flow = payouts(client, ledger, poll=SHORT_POLL)
            key = sandbox.credentials.enot_additional_key
            async with hook_server(flow.apply_webhook, key) as url:
                request = PayoffRequest("card", CARD, "10.00", hook_url=url)
                assert (await flow.pay("w-2", request)).status is PayoutStatus.PROCESSING
                for _ in range(50):
                    result = await flow.get("w-2")
                    if result is not None and result.status is PayoutStatus.SUCCEEDED:
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the sandbox's webhook never settled the payout")
        assert any(delivery.url == url for delivery in sandbox.webhooks)


async def test_any_callback_gets_each_verified_webhook_and_nothing_else() -> None:
    """The handler knows nothing of ``Payouts``: any coroutine function will do."""
    received: list[PayoffWebhook] = []
    failing = False

    async def on_webhook(webhook: PayoffWebhook) -> None:
        if failing:
            raise RuntimeError("the ledger is down")
        received.append(webhook)

    async with hook_server(on_webhook, "hook key") as url:
        payload = {"order_id": "w-3", "payoff_id": "p-3", "status": "success",
                   "amount": "10.00", "type": 2}  # fmt: skip
        assert await post(url, payload, sign_webhook(payload, "wrong key")) == 401
        assert received == []
        assert await post(url, payload, sign_webhook(payload, "hook key")) == 200
        assert [(hook.order_id, hook.status) for hook in received] == [
            ("w-3", PayoffStatus.SUCCESS)
        ]
        failing = True  # an error in the callback is not answered 200: Enot may retry
        assert await post(url, payload, sign_webhook(payload, "hook key")) == 500


async def test_the_delivery_that_settles_a_payout_is_reported_once(ledger: SQLiteLedger) -> None:
    """``on_transition`` sees the webhook's settlement once (not its repeats), and a
    failure settled by webhook says so in its reason."""
    steps: list[Transition] = []

    def seen(record: PayoutRecord, transition: Transition) -> None:
        steps.append(transition)

    config = fast_config(enot_final_after=30.0)  # only the webhook below settles it
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        key = sandbox.credentials.enot_additional_key
        flow = payouts(client, ledger, poll=SHORT_POLL, on_transition=seen)
        async with hook_server(flow.apply_webhook, key) as url:
            pending = await flow.pay("w-4", PayoffRequest("card", CARD, "10.00"))
            assert pending.status is PayoutStatus.PROCESSING
            before = len(steps)
            payload = {"order_id": "w-4", "payoff_id": pending.provider_id, "status": "fail",
                       "amount": "10.00", "type": 2}  # fmt: skip
            for _ in range(2):  # delivered twice
                assert await post(url, payload, sign_webhook(payload, key)) == 200
    reported = [(step.key, step.from_state, step.to_state, step.note) for step in steps[before:]]
    assert reported == [("w-4", LedgerState.PROCESSING, LedgerState.FAILED, "webhook")]
    result = await flow.get("w-4")
    assert result is not None and result.status is PayoutStatus.FAILED
    assert result.reason == "fail (reported by webhook)"
