"""An aiohttp.web handler that feeds verified Enot payoff webhooks to ``Payouts``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._models import parse_webhook_payload
from ._webhook import SIGNATURE_HEADER, verify_webhook

if TYPE_CHECKING:
    from ..payouts import Payouts

__all__ = ["webhook_handler"]

logger = logging.getLogger("payout_async")

_MAX_BODY = 64 * 1024


def webhook_handler(
    payouts: Payouts[Any], additional_key: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp.web handler for Enot's payoff webhooks (mount it at your
    ``hook_url``).

    A bad signature is answered 401 and nothing is recorded; a good one is parsed
    and its final status recorded in the ledger through ``payouts.apply_webhook``
    (repeated and out-of-order deliveries are harmless), then answered 200.
    """

    async def handle(request: web.Request) -> web.Response:
        body = await request.content.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            return web.json_response({"ok": False, "error": "body too large"}, status=413)
        if not verify_webhook(body, request.headers.get(SIGNATURE_HEADER, ""), additional_key):
            logger.warning("rejected an Enot webhook with a bad signature")
            return web.json_response({"ok": False, "error": "bad signature"}, status=401)
        webhook = parse_webhook_payload(json.loads(body))
        result = await payouts.apply_webhook(webhook)
        logger.info(
            "Enot webhook for order %s: %s (%s)",
            webhook.order_id,
            webhook.raw_status,
            "recorded" if result is not None else "nothing to record",
        )
        return web.json_response({"ok": True})

    return handle
