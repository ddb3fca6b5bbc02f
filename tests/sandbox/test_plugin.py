"""The pytest plugin's fixtures, as a user's test suite gets them."""

from __future__ import annotations

from payout_async import EnotClient, IntellectMoneyClient
from payout_async.sandbox import Sandbox, SandboxConfig


def test_config_fixture_can_be_overridden(payout_sandbox_config: SandboxConfig) -> None:
    assert payout_sandbox_config.im_final_after == 0.05  # from tests/sandbox/conftest.py


async def test_clients_point_at_the_running_sandbox(
    payout_sandbox: Sandbox,
    payout_intellectmoney_client: IntellectMoneyClient,
    payout_enot_client: EnotClient,
) -> None:
    assert payout_sandbox.url.startswith("http://127.0.0.1:")
    await payout_intellectmoney_client.create_operation(pan="4111111111111111", amount="1.00")
    await payout_enot_client.create_payoff(
        service="card", wallet_to="4111111111111111", amount=5, order_id="plugin"
    )
    stats = payout_sandbox.stats()
    assert (stats.intellectmoney.created, stats.enot.created) == (1, 1)
