"""Helpers for the sandbox tests: fast settings, a manual clock, raw signed requests."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import aiohttp

from payout_async.intellectmoney import sign
from payout_async.sandbox import Sandbox, SandboxConfig

CARD = "4111111111111111"
PHONE = "+79001234567"
SBP_BANK = "100000000004"


def fast_config(**overrides: Any) -> SandboxConfig:
    """Settings whose delays are a few hundredths of a second."""
    settings: dict[str, Any] = {
        "im_in_process_after": 0.02,
        "im_final_after": 0.05,
        "enot_final_after": 0.05,
        "stall_seconds": 5.0,
        "retry_after": 0.01,
        "latency": (0.0, 0.02),
        "webhook_retry_delay": 0.05,
        "seed": 3,
    }
    settings.update(overrides)
    return SandboxConfig(**settings)


class ManualClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def im_raw(
    sandbox: Sandbox,
    method: str,
    fields: dict[str, Any],
    *,
    form: bool = False,
    sign_with: str | None = None,
    headers: dict[str, str] | None = None,
    sign_header: bool = True,
) -> tuple[int, dict[str, Any]]:
    """POST ``fields`` (plus the sandbox's UserToken unless given) to an IntellectMoney
    method, signed like a client would, and return (HTTP status, decoded body)."""
    credentials = sandbox.credentials
    params = {"UserToken": credentials.im_user_token, **fields}
    signature = sign(method, params, sign_with or credentials.im_secret_key)
    sent_headers = {"Authorization": f"Bearer {credentials.im_bearer_token}"}
    if sign_header:
        sent_headers["Sign"] = signature
    sent_headers.update(headers or {})
    async with aiohttp.ClientSession() as session:
        if form:
            body: Any = urlencode(params)
            sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(params)
            sent_headers["Content-Type"] = "application/json"
        async with session.post(
            sandbox.intellectmoney_url + method, data=body, headers=sent_headers
        ) as response:
            return response.status, json.loads(await response.read())


async def enot_raw(
    sandbox: Sandbox,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    key: str | None = None,
) -> tuple[int, dict[str, Any], str]:
    """An Enot request with the sandbox's key; returns (status, decoded body, raw text)."""
    headers = {"x-api-signature-sha256": key or sandbox.credentials.enot_secret_key}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, sandbox.enot_url + path, json=body, params=params, headers=headers
        ) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text), text


def card_payoff(sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    """A valid ``payoff/create`` body."""
    body: dict[str, Any] = {
        "user_id": sandbox.credentials.enot_user_id,
        "service": "card",
        "wallet_to": CARD,
        "amount": 100,
        "order_id": "order-1",
    }
    body.update(overrides)
    return body
