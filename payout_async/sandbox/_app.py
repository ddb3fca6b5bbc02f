"""The aiohttp application: both providers at their real paths, plus ``/_sandbox/``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
from aiohttp import web

from ._enot_routes import enot_error, enot_processors
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


async def _user_token(request: web.Request) -> web.StreamResponse:
    return json_answer({"UserToken": request.app[STATE_KEY].tokens.issue()})


def build_app(state: SandboxState) -> web.Application:
    """An application serving ``state``: IntellectMoney under ``/personal/payout/``,
    Enot at its paths, and ``GET /_sandbox/stats`` (with ``duplicates`` and
    ``paid_per_payout`` by provider), ``POST /_sandbox/reset`` and
    ``POST /_sandbox/user-token``. Webhooks are delivered while it runs."""
    app = web.Application()
    app[STATE_KEY] = state
    for processors, error in (
        (intellectmoney_processors(state), im_error),
        (enot_processors(state), enot_error),
    ):
        for route, method, path, process in processors:
            app.router.add_route(method, path, with_faults(route, process, state, error))
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_post("/_sandbox/reset", _reset)
    app.router.add_post("/_sandbox/user-token", _user_token)

    async def dispatch_webhooks(_: web.Application) -> AsyncIterator[None]:
        dispatcher = WebhookDispatcher(state)
        await dispatcher.start()
        yield
        await dispatcher.stop()

    app.cleanup_ctx.append(dispatch_webhooks)
    return app
