"""What the sandbox reports: stats, duplicates, the /_sandbox/ endpoints and reset."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest

from payout_async import NO_RETRY, ProviderRejectedError
from payout_async.sandbox import Sandbox, SandboxState, build_app

from .support import CARD, PHONE, SBP_BANK


async def _pay_twice(sandbox: Sandbox, description: str | None, other: str | None) -> None:
    async with sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        for text in (description, other):
            created = await client.create_operation(pan=CARD, amount="25.00", description=text)
            assert created.operation_id is not None
            await client.execute_operation(created.operation_id)


async def test_intellectmoney_duplicate_needs_same_recipient_amount_and_description(
    payout_sandbox: Sandbox,
) -> None:
    await _pay_twice(payout_sandbox, "salary may", "salary june")
    assert payout_sandbox.duplicates() == []
    await _pay_twice(payout_sandbox, "bonus", "bonus")
    [duplicate] = payout_sandbox.duplicates()
    assert duplicate.provider == "intellectmoney"
    assert duplicate.key == f"{CARD}|25.00|bonus"
    assert duplicate.count == 2


async def test_created_but_not_executed_is_no_duplicate(payout_sandbox: Sandbox) -> None:
    async with payout_sandbox.intellectmoney_client(retry=NO_RETRY) as client:
        for _ in range(3):
            await client.create_operation(pan=CARD, amount="1.00")
    assert payout_sandbox.duplicates() == []
    stats = payout_sandbox.stats().intellectmoney
    assert stats.by_recipient[CARD].created == 3
    assert stats.by_recipient[CARD].executed == 0
    assert stats.by_amount["1.00"].created == 3


async def test_stats_endpoint_reset_and_user_token(payout_sandbox: Sandbox) -> None:
    await _pay_twice(payout_sandbox, "x", "x")
    async with payout_sandbox.enot_client(retry=NO_RETRY) as enot:
        await enot.create_payoff(
            service="sbp", wallet_to=PHONE, amount=10, order_id="o", sbp_bank_id=SBP_BANK
        )
        await enot.create_payoff(
            service="sbp", wallet_to=PHONE, amount=10, order_id="o", sbp_bank_id=SBP_BANK
        )
    url = payout_sandbox.url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/_sandbox/stats") as response:
            assert response.status == 200
            stats = await response.json()
        assert stats["intellectmoney"]["executed"] == 2
        assert stats["intellectmoney"]["by_recipient"][CARD]["executed"] == 2
        assert stats["enot"]["created"] == 2
        assert stats["enot"]["by_order_id"]["o"]["created"] == 2
        assert Decimal(stats["enot"]["active_balance"]) == payout_sandbox.config.enot_balance - 20
        assert stats["requests"]["im.execute"] == 2
        assert {(d["provider"], d["count"]) for d in stats["duplicates"]} == {
            ("intellectmoney", 2),
            ("enot", 2),
        }

        async with session.post(f"{url}/_sandbox/user-token") as response:
            token = (await response.json())["UserToken"]
        async with payout_sandbox.intellectmoney_client(user_token=token) as client:
            await client.create_operation(pan=CARD, amount="1.00")

        async with session.post(f"{url}/_sandbox/reset") as response:
            assert response.status == 200
        async with session.get(f"{url}/_sandbox/stats") as response:
            stats = await response.json()
    assert stats["intellectmoney"]["created"] == 0
    assert stats["enot"]["created"] == 0
    assert stats["requests"] == {}
    assert stats["duplicates"] == []
    assert Decimal(stats["enot"]["balance"]) == payout_sandbox.config.enot_balance
    # The issued token is forgotten; the configured one works again.
    async with payout_sandbox.intellectmoney_client(user_token=token, retry=NO_RETRY) as client:
        with pytest.raises(ProviderRejectedError, match="UserToken"):
            await client.create_operation(pan=CARD, amount="1.00")
    async with payout_sandbox.enot_client(retry=NO_RETRY) as enot:
        assert (await enot.get_balance()).balance == payout_sandbox.config.enot_balance


def test_build_app_serves_a_state_without_a_sandbox() -> None:
    state = SandboxState()
    app = build_app(state)
    paths = {resource.canonical for resource in app.router.resources()}
    assert "/personal/payout/createOperation" in paths
    assert "/personal/payout/CreateOperation" in paths
    assert "/payoff/create" in paths
    assert "/account/users/{user_id}/balance" in paths
    assert "/_sandbox/stats" in paths
