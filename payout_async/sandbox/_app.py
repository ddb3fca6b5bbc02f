"""The aiohttp application: both providers at their real paths, plus ``/_sandbox/``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import attrs
from aiohttp import web

from ._enot_routes import enot_error, enot_processors
from ._faults import ROUTES
from ._im_routes import im_error, intellectmoney_processors
from ._inject import with_faults
from ._state import SandboxState
from ._stats import collect_stats, find_duplicates, paid_per_payout
from ._webhooks import WebhookDispatcher
from ._wire import json_answer

__all__ = ["STATE_KEY", "build_app"]

STATE_KEY = web.AppKey("payout_sandbox_state", SandboxState)


async def _stats(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    payload = collect_stats(state).to_json()
    payload["duplicates"] = [attrs.asdict(found) for found in find_duplicates(state)]
    paid: dict[str, dict[str, int]] = {"intellectmoney": {}, "enot": {}}
    for (provider, key), count in paid_per_payout(state).items():
        paid[provider][key] = count
    payload["paid_per_payout"] = paid
    return json_answer(payload)


async def _reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset()
    return json_answer({"reset": True})


async def _top_up(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read(), parse_float=Decimal)
        provider, amount = body["provider"], Decimal(str(body["amount"]))
        balance = request.app[STATE_KEY].top_up(provider, amount)
    except (ValueError, TypeError, KeyError, ArithmeticError) as error:
        problem = f"a top-up needs a provider and an amount above 0 ({error})"
        return json_answer({"error": problem}, status=400)
    return json_answer({"provider": provider, "balance": str(balance)})


async def _traffic(request: web.Request) -> web.StreamResponse:
    traffic = request.app[STATE_KEY].traffic
    return json_answer({route: traffic.times(route) for route in ROUTES})


async def _user_token(request: web.Request) -> web.StreamResponse:
    return json_answer({"UserToken": request.app[STATE_KEY].tokens.issue()})


def build_app(state: SandboxState) -> web.Application:
    """An application serving ``state``: IntellectMoney under ``/personal/payout/``,
    Enot at its paths, and ``GET /_sandbox/stats`` (with ``duplicates`` and
    ``paid_per_payout`` by provider), ``GET /_sandbox/traffic`` (arrival times by
    route), ``POST /_sandbox/reset``, ``POST /_sandbox/top-up`` (``{"provider":
    "enot", "amount": "100.00"}``) and ``POST /_sandbox/user-token``. Webhooks are
    delivered while it runs."""
    app = web.Application()
    app[STATE_KEY] = state
    for processors, error in (
        (intellectmoney_processors(state), im_error),
        (enot_processors(state), enot_error),
    ):
        for route, method, path, process in processors:
            app.router.add_route(method, path, with_faults(route, process, state, error))
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_get("/_sandbox/traffic", _traffic)
    app.router.add_post("/_sandbox/reset", _reset)
    app.router.add_post("/_sandbox/top-up", _top_up)
    app.router.add_post("/_sandbox/user-token", _user_token)

    async def dispatch_webhooks(_: web.Application) -> AsyncIterator[None]:
        dispatcher = WebhookDispatcher(state)
        await dispatcher.start()
        yield
        await dispatcher.stop()

    app.cleanup_ctx.append(dispatch_webhooks)
    return app
