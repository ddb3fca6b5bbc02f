"""``pay()`` cancelled at each of its await points in turn, then resumed: every
payout is paid exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from payout_async import PayoutStatus
from payout_async.sandbox import Sandbox
from tests.ledger.support import BACKENDS, Backend, require_postgres

from .support import (
    SHORT_LEASE,
    SHORT_TIMEOUTS,
    books,
    enot_client,
    enot_request,
    fast_config,
    im_client,
    im_request,
    payouts,
)


class Checkpoints:
    """Cancels ``target`` at the ``cancel_at``-th checkpoint: one before and one after
    every ledger call and every HTTP exchange of the payout."""

    def __init__(self, cancel_at: int) -> None:
        self.cancel_at = cancel_at
        self.passed = 0
        self.target: asyncio.Task[Any] | None = None

    def hit(self) -> None:
        self.passed += 1
        if self.passed == self.cancel_at and self.target is not None:
            self.target.cancel()

    def wrap(self, obj: Any, names: list[str]) -> None:
        for name in names:
            original = getattr(obj, name)

            async def wrapped(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                self.hit()
                result = await __original(*args, **kwargs)
                self.hit()
                return result

            setattr(obj, name, wrapped)


LEDGER_CALLS = ["begin", "transition", "renew", "release", "get"]


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("provider", ["intellectmoney", "enot"])
async def test_cancel_at_every_await_point_then_resume(
    tmp_path: Path, provider: str, kind: str
) -> None:
    if kind == "postgres":
        require_postgres()
    backend = Backend(kind, tmp_path)
    ledger = await backend.new()
    try:
        await _cancel_at_every_await_point_then_resume(ledger, provider)
    finally:
        await backend.close()


async def _cancel_at_every_await_point_then_resume(ledger: Any, provider: str) -> None:
    async with Sandbox(config=fast_config()) as sandbox:
        if provider == "intellectmoney":
            client: Any = im_client(sandbox.intellectmoney_url, timeouts=SHORT_TIMEOUTS)
        else:
            client = enot_client(sandbox.enot_url, timeouts=SHORT_TIMEOUTS)
        keys: list[str] = []
        cancelled = 0
        async with client:
            for cancel_at in range(1, 200):
                key = f"cancel-{cancel_at}"
                keys.append(key)
                checkpoints = Checkpoints(cancel_at)
                checkpoints.wrap(ledger, LEDGER_CALLS)
                checkpoints.wrap(client._transport, ["send"])
                flow = payouts(client, ledger, lease_seconds=SHORT_LEASE)
                request = im_request(key) if provider == "intellectmoney" else enot_request()
                task = asyncio.create_task(flow.pay(key, request))
                checkpoints.target = task
                try:
                    await task
                except asyncio.CancelledError:
                    cancelled += 1
                finally:
                    for name in [*LEDGER_CALLS]:
                        delattr(ledger, name)
                    delattr(client._transport, "send")
                await asyncio.sleep(0.05)  # shielded writes finish in the background
                if checkpoints.passed < cancel_at:
                    break  # this pay() ran to the end before reaching the checkpoint
            else:
                pytest.fail("pay() never ran to completion")

            resumed = await payouts(client, ledger, lease_seconds=SHORT_LEASE).resume()
            # A row may still be processing once; a second pass finishes it.
            resumed += await payouts(client, ledger, lease_seconds=SHORT_LEASE).resume()

        assert cancelled >= 10, "the flow should have many await points"
        for key in keys:
            record = await ledger.get(provider, key)
            assert record is not None, key
            assert record.state.is_final, (key, record.state, record.reason)
        statuses = {r.key: r.status for r in resumed}
        assert all(status is PayoutStatus.SUCCEEDED for status in statuses.values())
        executed, created = books(sandbox.state)
        paid = executed if provider == "intellectmoney" else created
        assert {key: paid[key] for key in keys} == dict.fromkeys(keys, 1)
        assert sandbox.duplicates() == []
