"""Every request of both clients arrives at the sandbox with
``User-Agent: payout-async/<version>``: every method, both IntellectMoney APIs and body
formats, retried attempts, a token-refresh repeat, and a caller's own session."""

from __future__ import annotations

import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import payout_async
from payout_async import RetryPolicy
from payout_async._transport import USER_AGENT
from payout_async.sandbox import FaultKind, Sandbox, SandboxConfig
from payout_async.sandbox._app import build_app

from .support import CARD, PHONE, SBP_BANK, fast_config

RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.002, max_retry_after=0.01)


@pytest.fixture
async def recorded(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Sandbox, list[str]]]:
    """A sandbox whose app also records each request's path and User-Agent."""
    seen: list[str] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path} {request.headers.get('User-Agent')}")
        return await handler(request)

    def recording_app(*args: Any, **kwargs: Any) -> web.Application:
        app = build_app(*args, **kwargs)
        app.middlewares.insert(0, record)
        return app

    monkeypatch.setattr("payout_async.sandbox._server.build_app", recording_app)
    config: SandboxConfig = fast_config()
    async with Sandbox(config=config) as sandbox:
        yield sandbox, seen


def test_the_version_has_one_source() -> None:
    assert payout_async.__version__ == importlib.metadata.version("payout-async")
    assert USER_AGENT.split("/") == ["payout-async", payout_async.__version__]


async def test_every_request_carries_the_user_agent(recorded: tuple[Sandbox, list[str]]) -> None:
    sandbox, seen = recorded
    for api, body_format in (("current", "json"), ("current", "form"), ("legacy", "json")):
        async with sandbox.intellectmoney_client(
            api=api,  # type: ignore[arg-type]
            body_format=body_format,
            retry=RETRY,
        ) as im:
            created = await im.create_operation(pan=CARD, amount="10.00", recipient_name="Иван")
            operation_id = created.operation_id or ""
            assert operation_id
            await im.execute_operation(operation_id)
            await im.get_operation_state(operation_id)
            spare = await im.create_operation(pan=CARD, amount="10.00", recipient_name="Иван")
            assert spare.operation_id is not None
            await im.delete_operation(spare.operation_id)
    async with sandbox.enot_client(retry=RETRY) as enot:
        made = await enot.create_payoff(
            service="sbp", wallet_to=PHONE, sbp_bank_id=SBP_BANK, amount="10.00", order_id="o-1"
        )
        await enot.get_payoff(payoff_id=made.payoff_id)
        await enot.get_payoff(order_id="o-1")
        await enot.list_sbp_banks()
        await enot.get_balance()
    # Retried attempts (a 503 and a 429 first) carry it too.
    sandbox.faults.script("im.state", kind=FaultKind.HTTP_503)
    sandbox.faults.script("enot.info", kind=FaultKind.RATE_LIMIT)
    async with sandbox.intellectmoney_client(retry=RETRY) as im:
        await im.get_operation_state(operation_id)
    async with sandbox.enot_client(retry=RETRY) as enot:
        await enot.get_payoff(order_id="o-1")
    # A repeat after a refused UserToken, too.
    sandbox.script_inner_code("im.state", 2, "UserToken недействителен")

    async def token() -> str:
        return sandbox.credentials.im_user_token

    async with sandbox.intellectmoney_client(user_token=token) as im:
        await im.get_operation_state(operation_id)

    expected = 3 * 5 + 5 + 2 + 2 + 2
    assert len(seen) == expected, seen
    assert [line for line in seen if not line.endswith(f" {USER_AGENT}")] == []


async def test_a_caller_session_gets_the_user_agent_too(
    recorded: tuple[Sandbox, list[str]],
) -> None:
    sandbox, seen = recorded
    async with aiohttp.ClientSession(headers={"User-Agent": "their-app/1.0"}) as session:
        async with sandbox.enot_client(session=session) as enot:
            await enot.get_balance()
        async with sandbox.intellectmoney_client(session=session) as im:
            await im.create_operation(pan=CARD, amount="10.00")
    assert len(seen) == 2
    assert all(line.endswith(f" {USER_AGENT}") for line in seen), seen
