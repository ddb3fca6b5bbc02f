"""Helpers shared by the reliability tests and their child processes.

Everything here is fast: short sandbox delays, short client timeouts and backoffs, so
that every fault costs well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from payout_async import (
    EnotClient,
    IntellectMoneyClient,
    Payouts,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from payout_async.enot import PayoffRequest, PayoffWebhook, webhook_handler
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import Ledger
from payout_async.sandbox import SandboxConfig, SandboxCredentials
from tests.ledger.support import KINDS, Backend, require_postgres

CARD = "4111111111111111"
TIMEOUTS = Timeouts(total=2.0, connect=1.0, read=0.3)
#: For tests with leases of about a second (a lease must outlive a request).
SHORT_TIMEOUTS = Timeouts(total=0.6, connect=0.3, read=0.3)
#: The lease that goes with ``SHORT_TIMEOUTS``: a money-moving request whose answer may be
#: lost (or a row taken over with one in flight) is waited out for 0.6 s + a tenth of it
#: (``in_flight_bound``), not the 2 s + 0.5 s of ``TIMEOUTS`` and a 5 s lease.
SHORT_LEASE = 1.5
RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.05, max_retry_after=0.05)
POLL = PollPolicy(initial=0.02, multiplier=1.5, maximum=0.1, deadline=10.0)
GRACE = 0.4  # longer than TIMEOUTS.read: a stalled create is visible by then
SETTLE = 0.3  # longer than any lag the sandbox shows after an accepted execute here


def fast_config(**overrides: Any) -> SandboxConfig:
    """A sandbox whose payouts settle in about a tenth of a second."""
    settings: dict[str, Any] = {
        "im_in_process_after": 0.02,
        "im_final_after": 0.05,
        "enot_final_after": 0.05,
        "stall_seconds": 0.8,
        "retry_after": 0.01,
        "latency": (0.0, 0.02),
        "seed": 7,
    }
    settings.update(overrides)
    return SandboxConfig(**settings)


def im_client(
    base_url: str,
    credentials: SandboxCredentials | None = None,
    *,
    timeouts: Timeouts = TIMEOUTS,
) -> IntellectMoneyClient:
    """An IntellectMoney client for a sandbox at ``base_url`` (the current API)."""
    credentials = credentials or SandboxCredentials()
    return IntellectMoneyClient(
        credentials.im_user_token,
        credentials.im_secret_key,
        bearer_token=credentials.im_bearer_token,
        base_url=base_url,
        timeouts=timeouts,
        retry=RETRY,
    )


def enot_client(
    base_url: str,
    credentials: SandboxCredentials | None = None,
    *,
    timeouts: Timeouts = TIMEOUTS,
    limit: int = 100,
) -> EnotClient:
    """An Enot client for a sandbox at ``base_url`` (``limit``: connections at once)."""
    credentials = credentials or SandboxCredentials()
    return EnotClient(
        credentials.enot_user_id,
        credentials.enot_secret_key,
        base_url=base_url,
        timeouts=timeouts,
        retry=RETRY,
        limit=limit,
    )


def payouts(
    client: IntellectMoneyClient | EnotClient, ledger: Ledger, **kwargs: Any
) -> Payouts[Any]:
    """``Payouts`` tuned for tests (short poll, grace, settle window and lease)."""
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("grace", GRACE)
    kwargs.setdefault("execute_settle", SETTLE)
    kwargs.setdefault("lease_seconds", 5.0)
    return Payouts(client, ledger, **kwargs)


def im_request(key: str, amount: str = "10.00") -> OperationRequest:
    """A card payout whose Description is its key, so the books can be checked per key."""
    return OperationRequest(pan=CARD, amount=Decimal(amount), description=key)


def enot_request(amount: str = "10.00") -> PayoffRequest:
    """A card payoff; ``Payouts`` derives its order_id from the key."""
    return PayoffRequest(service="card", wallet_to=CARD, amount=Decimal(amount))


def books(state: Any) -> tuple[Counter[str], Counter[str]]:
    """(IntellectMoney executions per Description, Enot payoffs per order_id) as the
    sandbox's books hold them. An operation performed twice (the sandbox's
    ``im_second_execute="pay_again"``) counts twice."""
    executed: Counter[str] = Counter()
    for operation in state.intellectmoney:
        executed[operation.details.description or ""] += operation.executions
    executed = +executed  # operations never executed are not listed, as before
    created: Counter[str] = Counter(payoff.details.order_id or "" for payoff in state.enot)
    return executed, created


@contextlib.asynccontextmanager
async def hook_server(
    on_webhook: Callable[[PayoffWebhook], Awaitable[object]], additional_key: str
) -> AsyncIterator[str]:
    """Serve ``webhook_handler(on_webhook, additional_key)`` on 127.0.0.1 while the
    block runs; yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", webhook_handler(on_webhook, additional_key))
    async with serving(app) as url:
        yield url + "hook"


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 while the block runs; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def side_by_side(cases: dict[str, Awaitable[None]]) -> None:
    """Run independent cases at once -- each spends most of its time waiting out its
    own timeouts and windows -- and fail naming every case that failed."""
    names = list(cases)
    outcomes = await asyncio.gather(*cases.values(), return_exceptions=True)
    failed = {
        name: f"{type(outcome).__name__}: {outcome}"
        for name, outcome in zip(names, outcomes, strict=True)
        if isinstance(outcome, BaseException)
    }
    assert not failed, failed


def on_every_ledger_at_once(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run ``test(backend, ...)`` on every ledger backend side by side, as one test:
    each run has its own store, its own ``tmp_path`` folder and whatever the body makes
    (sandbox, clients); a failure names the backends that failed. For tests that spend
    their time waiting out leases and windows and patch nothing global."""
    signature = inspect.signature(test)
    wants_folder = "tmp_path" in signature.parameters
    shown = [p for p in signature.parameters.values() if p.name != "backend"]
    if not wants_folder:
        shown.append(inspect.Parameter("tmp_path", inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(test)
    async def on_every_ledger(**arguments: Any) -> None:
        folder: Path = arguments.pop("tmp_path")
        require_postgres()
        stores = {kind: Backend(kind, folder / kind) for kind in KINDS}
        for store in stores.values():
            store.folder.mkdir()
        try:
            await side_by_side(
                {
                    kind: test(
                        backend=store,
                        **arguments,
                        **({"tmp_path": store.folder} if wants_folder else {}),
                    )
                    for kind, store in stores.items()
                }
            )
        finally:
            for store in stores.values():
                await store.close()

    on_every_ledger.__signature__ = signature.replace(parameters=shown)  # type: ignore[attr-defined]
    return pytest.mark.postgres(on_every_ledger)
