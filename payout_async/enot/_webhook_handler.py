"""An aiohttp.web handler that verifies Enot payoff webhooks and hands each one to a
callback (``Payouts.apply_webhook`` records it in the ledger), bounded in time (the
body must come within ``body_timeout``) and in number (``max_in_flight``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import PayloadEncodingError

from .._decode import UnreadableError
from .._errors import ConfigurationError
from ._models import PayoffWebhook
from ._webhook import SIGNATURE_HEADER, read_webhook, verified_payload

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_IN_FLIGHT", "webhook_handler"]

logger = logging.getLogger("payout_async")

_MAX_BODY = 64 * 1024
#: Seconds a client has to send a whole body once its headers are in.
DEFAULT_BODY_TIMEOUT = 10.0
#: Requests handled at once; more are answered 503 at once.
DEFAULT_MAX_IN_FLIGHT = 64
_RETRY_AFTER = "5"
_JSON = "application/json"
#: How a body can end early: the client went away, or sent less than it announced.
_ABORTED = (ConnectionError, ClientPayloadError, PayloadEncodingError)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def webhook_handler(
    on_webhook: Callable[[PayoffWebhook], Awaitable[object]],
    additional_key: str,
    *,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> Handler:
    """An aiohttp.web handler for Enot's payoff webhooks (mount it at your
    ``hook_url``): ``webhook_handler(payouts.apply_webhook, additional_key)``.

    The answers:

    - 503 with ``Retry-After`` when ``max_in_flight`` requests are being handled;
    - 415 for a content type other than ``application/json``;
    - 408 when the body is not all in within ``body_timeout`` seconds of the headers
      (a slow or stalled client), 413 for a body over 64 KiB;
    - 401 for a bad signature (or a body that cannot be checked): the callback is
      not called; 400 for a signed body whose fields cannot be read;
    - 200 once ``on_webhook`` has returned (an error it raises propagates: aiohttp
      answers 500).

    After a 408, 413, 415 or 503 the connection is closed at once. A body the client
    abandons is one WARNING line, not an error. ``on_webhook`` returns what it
    recorded, or None when there was nothing to record (the log line says which);
    ``Payouts.apply_webhook`` records a final status in the ledger, and repeated or
    out-of-order deliveries are harmless to it.
    """
    if not body_timeout > 0 or max_in_flight < 1:
        raise ConfigurationError("body_timeout must be above 0 and max_in_flight at least 1")
    in_flight = asyncio.Semaphore(max_in_flight)

    async def handle(request: web.Request) -> web.StreamResponse:
        if in_flight.locked():
            logger.warning("refused an Enot webhook: %d already being handled", max_in_flight)
            return await _refuse(request, 503, "busy", {"Retry-After": _RETRY_AFTER})
        async with in_flight:
            return await _handle(request)

    async def _handle(request: web.Request) -> web.StreamResponse:
        if request.content_type != _JSON:
            logger.warning("refused an Enot webhook that is not application/json")
            return await _refuse(request, 415, f"content type must be {_JSON}")
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(request)
        except TimeoutError:
            logger.warning("refused an Enot webhook whose body took over %g s", body_timeout)
            return await _refuse(request, 408, "body not received in time")
        except _ABORTED as error:
            logger.warning("an Enot webhook's body ended early: %s", type(error).__name__)
            return web.json_response({"ok": False, "error": "body ended early"}, status=400)
        if body is None:
            return await _refuse(request, 413, "body too large")
        return await _verified(request, body)

    async def _verified(request: web.Request, body: bytes) -> web.Response:
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


async def _refuse(
    request: web.Request, status: int, error: str, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """An error answer, then the connection closed: whatever is left of the body is
    neither read nor waited for."""
    response = web.json_response({"ok": False, "error": error}, status=status, headers=headers)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response


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
