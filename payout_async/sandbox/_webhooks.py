"""Delivering Enot payoff webhooks from inside the running sandbox.

Statuses are computed lazily, so something must act when a payoff falls due: the
dispatcher sleeps until the next due time (or until woken by a new payoff), settles
the books and POSTs each due webhook, signed with the additional key as Enot signs
them. Only ``127.0.0.1`` and ``localhost`` are ever contacted; any other ``hook_url``
is logged as not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from yarl import URL

from ..enot._webhook import SIGNATURE_HEADER, sign_webhook
from ._enot_book import FAIL, EnotPayoff
from ._state import SandboxState, WebhookDelivery
from ._wire import money_text

__all__ = ["WebhookDispatcher", "loopback_url", "webhook_payload"]

#: Longest nap between checks, so that a manual test clock is noticed too.
_MAX_SLEEP = 0.25
_LOOPBACK = frozenset({"127.0.0.1", "localhost"})


def loopback_url(hook_url: str) -> URL | None:
    """``hook_url`` aimed at 127.0.0.1 (``localhost`` rewritten), or ``None`` when it
    points anywhere else."""
    try:
        url = URL(hook_url)
    except (ValueError, TypeError):
        return None
    if url.scheme not in ("http", "https") or url.host not in _LOOPBACK:
        return None
    return url.with_host("127.0.0.1")


def webhook_payload(payoff: EnotPayoff) -> dict[str, Any]:
    """The body Enot POSTs when a payoff ends."""
    details = payoff.details
    payload: dict[str, Any] = {
        "payoff_id": payoff.id,
        "order_id": details.order_id,
        "status": payoff.outcome,
        "type": "payoff",
        "service": details.service,
        "wallet": details.wallet,
        "amount": money_text(details.amount),
        "commission": money_text(payoff.commission),
        "amount_receive": money_text(payoff.receive),
    }
    if details.comment is not None:
        payload["comment"] = details.comment
    if payoff.outcome == FAIL:
        payload["error_message"] = "Отказ платёжной системы."
    return payload


def _php_json(payload: dict[str, Any]) -> bytes:
    text = json.dumps(dict(sorted(payload.items())), separators=(",", ":"))
    return text.replace("/", "\\/").encode()


class WebhookDispatcher:
    """The background task that settles Enot payoffs and sends their webhooks."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start watching the books."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._state.watch_enot(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="payout-sandbox-webhooks")

    async def stop(self) -> None:
        """Stop watching; webhooks still in flight are abandoned."""
        self._state.watch_enot(None)
        tasks = [*self._deliveries, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        state = self._state
        while True:
            enot = state.enot
            enot.settle()
            for payoff in enot.take_outbox():
                task = asyncio.create_task(self._deliver(payoff))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
            due = enot.next_due()
            nap = _MAX_SLEEP if due is None else min(_MAX_SLEEP, max(0.0, due - state.clock()))
            self._wake.clear()
            # Not ``wait_for``: Python 3.11's swallows a cancellation that arrives as
            # the wake-up does (a ``reset`` then ``close``), and ``stop`` never ended.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(nap):
                    await self._wake.wait()

    async def _deliver(self, payoff: EnotPayoff) -> None:
        state = self._state
        hook_url = payoff.details.hook_url or ""
        url = loopback_url(hook_url)
        if url is None:
            state.webhooks.append(
                WebhookDelivery(payoff.id, hook_url, 0, error="not sent: not a loopback address")
            )
            return
        payload = webhook_payload(payoff)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook(payload, state.credentials.enot_additional_key),
        }
        body = _php_json(payload)
        assert self._session is not None
        for attempt in range(1, state.config.webhook_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(state.config.webhook_retry_delay)
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                record = WebhookDelivery(payoff.id, hook_url, attempt, error=repr(error))
            else:
                record = WebhookDelivery(payoff.id, hook_url, attempt, status=response.status)
            state.webhooks.append(record)
            if record.delivered:
                return
