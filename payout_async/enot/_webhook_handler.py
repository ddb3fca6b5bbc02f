"""An aiohttp.web handler that verifies Enot payoff webhooks and hands each one to a
callback (``Payouts.apply_webhook`` records it in the ledger)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .._decode import UnreadableError
from ._models import PayoffWebhook
from ._webhook import SIGNATURE_HEADER, read_webhook, verified_payload

__all__ = ["webhook_handler"]

logger = logging.getLogger("payout_async")

_MAX_BODY = 64 * 1024


def webhook_handler(
    on_webhook: Callable[[PayoffWebhook], Awaitable[object]], additional_key: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp.web handler for Enot's payoff webhooks (mount it at your
    ``hook_url``): ``webhook_handler(payouts.apply_webhook, additional_key)``.

    A bad signature (or a body that cannot be checked) is answered 401 and the
    callback is not called; a signed body whose fields cannot be read is answered
    400; a good one is parsed, passed to ``on_webhook`` and, once that returns,
    answered 200 (an error it raises propagates: aiohttp answers 500). A body over
    64 KiB is answered 413. ``on_webhook`` returns what it recorded, or None when
    there was nothing to record (the log line says which); ``Payouts.apply_webhook``
    records a final status in the ledger, and repeated or out-of-order deliveries
    are harmless to it.
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
        result = await on_webhook(webhook)
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
