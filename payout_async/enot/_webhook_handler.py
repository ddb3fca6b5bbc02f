"""An aiohttp.web handler that feeds verified Enot payoff webhooks to ``Payouts``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .._decode import UnreadableError
from ._webhook import SIGNATURE_HEADER, read_webhook, verified_payload

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

    A bad signature (or a body that cannot be checked) is answered 401 and nothing is
    recorded; a signed body whose fields cannot be read is answered 400; a good one
    is parsed and its final status recorded in the ledger through
    ``payouts.apply_webhook`` (repeated and out-of-order deliveries are harmless),
    then answered 200. A body over 64 KiB is answered 413.
    """

    async def handle(request: web.Request) -> web.Response:
        body = await _read_body(request)
        if body is None:
            return web.json_response({"ok": False, "error": "body too large"}, status=413)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if verified_payload(body, signature, additional_key) is None:
            logger.warning("rejected an Enot webhook with a bad signature")
            return web.json_response({"ok": False, "error": "bad signature"}, status=401)
        try:
            webhook = read_webhook(body)
        except UnreadableError:
            logger.warning("rejected a signed Enot webhook whose body cannot be read")
            return web.json_response({"ok": False, "error": "unreadable body"}, status=400)
        result = await payouts.apply_webhook(webhook)
        logger.info(
            "Enot webhook for order %s: %s (%s)",
            webhook.order_id,
            webhook.raw_status,
            "recorded" if result is not None else "nothing to record",
        )
        return web.json_response({"ok": True})

    return handle


async def _read_body(request: web.Request) -> bytes | None:
    """The whole body, or None once it passes ``_MAX_BODY`` (``read(n)`` alone may
    return less than is coming)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_MAX_BODY + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > _MAX_BODY:
            return None
