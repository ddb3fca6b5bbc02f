"""Enot with ``webhook_wait``: a payout whose webhook arrives in time makes no status
call, one whose webhook is lost falls back to polling, a webhook wakes only the payout
of its order_id, and one handled by another process is found in the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from payout_async import ConfigurationError, PayoutResult, PayoutStatus, PollPolicy
from payout_async.enot import PayoffRequest, PayoffWebhook
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import FaultKind, Sandbox

from .support import CARD, enot_client, fast_config, hook_server, im_client, payouts

#: Polls after about 50 ms: a payout settled by polling shows ``enot.info`` calls.
POLL = PollPolicy(initial=0.05, multiplier=1.5, maximum=0.1, deadline=10.0)
#: A loopback port nothing listens on: webhooks sent there are lost.
LOST = "http://127.0.0.1:9/hook"
#: Far longer than any test here takes: a payout that ends before it was woken.
LONG_WAIT = 600.0
#: Guards against a hang should a payout not be woken (not a performance bound).
HANG = 60.0


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    async with SQLiteLedger(tmp_path / "ledger.db") as opened:
        yield opened


def request(hook_url: str | None = None) -> PayoffRequest:
    return PayoffRequest("card", CARD, "10.00", hook_url=hook_url)


def info_calls(sandbox: Sandbox) -> int:
    return sandbox.stats().requests.get("enot.info", 0)


def outcome(result: PayoutResult) -> tuple[Any, ...]:
    """What a payout's result says, its key and the provider's ids aside."""
    return (
        result.status,
        result.provider_status,
        result.state,
        result.attempts,
        result.reason,
        bool(result.provider_id),
    )


async def wait_for_state(ledger: SQLiteLedger, key: str, state: LedgerState) -> None:
    for _ in range(400):
        record = await ledger.get("enot", key)
        if record is not None and record.state is state:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{key} never reached {state.value}")


async def webhook(ledger: SQLiteLedger, key: str, status: str) -> PayoffWebhook:
    """Enot's webhook for the payoff of ``key``: it names the payoff id the row holds."""
    record = await ledger.get("enot", key)
    assert record is not None and record.operation_id
    return PayoffWebhook(order_id=key, payoff_id=record.operation_id, raw_status=status)


async def test_a_webhook_in_time_settles_the_payout_without_a_status_call(
    ledger: SQLiteLedger,
) -> None:
    config = fast_config(enot_final_after=0.2)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        flow = payouts(client, ledger, poll=POLL, webhook_wait=LONG_WAIT)
        key = sandbox.credentials.enot_additional_key
        async with hook_server(flow.apply_webhook, key) as url:
            async with asyncio.timeout(HANG):
                hooked = await flow.pay("w-hook", request(url))
            assert info_calls(sandbox) == 0
            assert sandbox.stats().requests.get("enot.create") == 1
            polled = await payouts(client, ledger, poll=POLL).pay("w-poll", request())
            assert info_calls(sandbox) > 0
    assert hooked.status is PayoutStatus.SUCCEEDED
    assert outcome(hooked) == outcome(polled)  # exactly what polling gives
    record = await ledger.get("enot", "w-hook")
    assert record is not None and record.lease_owner is None
    history = await ledger.history("enot", "w-hook")
    assert [step.note for step in history][-1] == "webhook"
    assert [step.to_state for step in history].count(LedgerState.SUCCEEDED) == 1


async def test_after_a_lost_create_answer_the_payoff_found_waits_for_its_webhook(
    ledger: SQLiteLedger,
) -> None:
    """The create's answer is lost: the order_id is looked up (one info call, the
    reconciliation), and the payoff found waits for its webhook, not polled."""
    config = fast_config(enot_final_after=0.3)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        sandbox.faults.script("enot.create", kind=FaultKind.COMMIT_THEN_CLOSE, nth=1)
        flow = payouts(client, ledger, poll=POLL, webhook_wait=LONG_WAIT)
        key = sandbox.credentials.enot_additional_key
        async with hook_server(flow.apply_webhook, key) as url:
            async with asyncio.timeout(HANG):
                result = await flow.pay("w-unknown", request(url))
        assert sandbox.faults.injected.get(FaultKind.COMMIT_THEN_CLOSE.value) == 1
        assert info_calls(sandbox) == 1
        assert [payoff.details.order_id for payoff in sandbox.state.enot] == ["w-unknown"]
    assert (result.status, result.provider_status) == (PayoutStatus.SUCCEEDED, "success")


async def test_a_lost_webhook_falls_back_to_polling(ledger: SQLiteLedger) -> None:
    config = fast_config(enot_final_after=0.1)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        flow = payouts(client, ledger, poll=POLL, webhook_wait=0.3)
        result = await flow.pay("w-lost", request(LOST))
        assert info_calls(sandbox) >= 1
        assert any(delivery.url == LOST and not delivery.delivered for delivery in sandbox.webhooks)
    assert result.status is PayoutStatus.SUCCEEDED
    assert result.provider_status == "success"
    history = await ledger.history("enot", "w-lost")
    assert "webhook" not in [step.note for step in history]


async def test_a_webhook_wakes_only_the_payout_of_its_order_id(ledger: SQLiteLedger) -> None:
    """Two payouts wait (Enot would take 30 s); a webhook for the first settles the
    first only: the second still waits until its own arrives. No status call at all."""
    config = fast_config(enot_final_after=30.0)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        flow = payouts(client, ledger, poll=POLL, webhook_wait=LONG_WAIT)
        first = asyncio.create_task(flow.pay("w-a", request(LOST)))
        second = asyncio.create_task(flow.pay("w-b", request(LOST)))
        await wait_for_state(ledger, "w-a", LedgerState.PROCESSING)
        await wait_for_state(ledger, "w-b", LedgerState.PROCESSING)
        # Not final: wakes nobody.
        assert await flow.apply_webhook(await webhook(ledger, "w-b", "wait")) is None
        await flow.apply_webhook(await webhook(ledger, "w-a", "success"))
        async with asyncio.timeout(HANG):
            a = await first
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done()
        await flow.apply_webhook(await webhook(ledger, "w-b", "fail"))
        async with asyncio.timeout(HANG):
            b = await second
        assert info_calls(sandbox) == 0
    assert (a.key, a.status, a.provider_status) == ("w-a", PayoutStatus.SUCCEEDED, "success")
    assert (b.key, b.status, b.provider_status) == ("w-b", PayoutStatus.FAILED, "fail")
    assert a.provider_id and b.provider_id and a.provider_id != b.provider_id


async def test_a_webhook_handled_by_another_process_is_read_from_the_ledger(
    ledger: SQLiteLedger,
) -> None:
    """The in-process wake-up never comes (another ``Payouts``, as another process,
    applied the webhook): when the wait runs out the row is read, not polled."""
    config = fast_config(enot_final_after=30.0)
    async with Sandbox(config=config) as sandbox, enot_client(sandbox.enot_url) as client:
        flow = payouts(client, ledger, poll=POLL, webhook_wait=1.0)
        elsewhere = payouts(client, ledger, poll=POLL)
        paying = asyncio.create_task(flow.pay("w-x", request(LOST)))
        await wait_for_state(ledger, "w-x", LedgerState.PROCESSING)
        await elsewhere.apply_webhook(await webhook(ledger, "w-x", "success"))
        result = await paying
        assert info_calls(sandbox) == 0
    assert (result.status, result.provider_status) == (PayoutStatus.SUCCEEDED, "success")


async def test_webhook_wait_is_checked() -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
        SQLiteLedger(":memory:") as ledger,
    ):
        with pytest.raises(ConfigurationError, match="webhook_wait"):
            payouts(im, ledger, webhook_wait=5.0)
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ConfigurationError, match="webhook_wait"):
                payouts(enot, ledger, webhook_wait=bad)
        payouts(im, ledger, webhook_wait=0.0)  # off: fine for either provider
