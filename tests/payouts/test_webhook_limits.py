"""Issue 24, "the webhook endpoint", over real sockets on loopback: a body that does not
come in time is answered 408 and its connection closed; requests beyond
``max_in_flight`` are answered 503 with ``Retry-After``; a body the client abandons
is one WARNING line, never an ERROR traceback; a content type other than
``application/json`` is answered 415. Every wait is bounded (``WAIT``), and no
assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from payout_async.enot import PayoffWebhook, sign_webhook, webhook_handler

KEY = "hook-key"
WAIT = 30.0  # the longest any step may take before the test fails
PAYLOAD = {"order_id": "o-1", "status": "wait", "amount": "10.00"}
BODY = json.dumps(PAYLOAD).encode()
SIGNATURE = sign_webhook(PAYLOAD, KEY)


class Hook:
    """``webhook_handler`` on 127.0.0.1 with the given limits; counts deliveries."""

    def __init__(self) -> None:
        self.port = 0
        self.delivered = 0

    async def on_webhook(self, webhook: PayoffWebhook) -> object:
        self.delivered += 1
        return None


@contextlib.asynccontextmanager
async def serving(**limits: Any) -> AsyncIterator[Hook]:
    hook = Hook()
    app = web.Application()
    app.router.add_post("/hook", webhook_handler(hook.on_webhook, KEY, **limits))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        hook.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield hook
    finally:
        await runner.cleanup()


def head(length: int, content_type: str | None = "application/json") -> bytes:
    lines = ["POST /hook HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"x-api-sha256-signature: {SIGNATURE}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the next answer on ``reader``."""
    status = int((await asyncio.wait_for(reader.readline(), WAIT)).split()[1])
    headers: dict[str, str] = {}
    while (line := await asyncio.wait_for(reader.readline(), WAIT)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (whatever it sent before)."""
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(65536), WAIT):
            pass
    return True


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``condition()`` holds (``TimeoutError`` after ``WAIT`` seconds)."""
    async with asyncio.timeout(WAIT):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def post(port: int, body: bytes = BODY, content_type: str | None = "application/json") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head(len(body), content_type) + body)
        await writer.drain()
        return (await answer(reader))[0]
    finally:
        writer.close()


async def slow_client(port: int, *, dribble: bool) -> tuple[int, bool]:
    """Headers, then a byte of the body now and then (``dribble``) or nothing more:
    the answer's status and whether the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in BODY:
                await asyncio.sleep(0.2)
                writer.write(bytes([byte]))
                await writer.drain()

    writer.write(head(len(BODY)))
    await writer.drain()
    sender = asyncio.create_task(trickle() if dribble else asyncio.sleep(0))
    try:
        status, _ = await answer(reader)
        return status, await closed(reader)
    finally:
        sender.cancel()
        writer.close()


async def test_slow_bodies_are_answered_408_and_their_connections_closed() -> None:
    async with serving(body_timeout=0.5) as hook:
        clients = [slow_client(hook.port, dribble=n % 2 == 0) for n in range(40)]
        results = await asyncio.wait_for(asyncio.gather(*clients), WAIT * 2)
        assert results == [(408, True)] * 40
        assert await post(hook.port) == 200  # and the endpoint still works
        assert hook.delivered == 1


async def test_the_default_body_timeout_closes_a_stalled_client() -> None:
    async with serving() as hook:
        result = await asyncio.wait_for(slow_client(hook.port, dribble=False), WAIT * 2)
        assert result == (408, True)


async def test_requests_beyond_max_in_flight_get_503_with_retry_after() -> None:
    async with serving(max_in_flight=2, body_timeout=WAIT) as hook:
        stalled = [await asyncio.open_connection("127.0.0.1", hook.port) for _ in range(2)]
        for _, writer in stalled:
            writer.write(head(len(BODY)))  # the headers, then nothing: each holds a slot
            await writer.drain()
        # The two are in the handler once the server has read their headers: ask
        # until the answer says so (bounded by WAIT, not by a guess of the delay).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", hook.port)
            writer.write(head(len(BODY)) + BODY)
            status, headers = await answer(reader)
            writer.close()
            if status == 503 or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status == 503 and headers.get("retry-after", "").isdigit(), (status, headers)
        for _, writer in stalled:  # the slots come back as the clients go away
            writer.close()

        async def served() -> bool:
            return await post(hook.port) == 200

        await until(served)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed client would."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_an_abandoned_body_is_one_warning_not_an_error(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving() as hook:
        _, writer = await asyncio.open_connection("127.0.0.1", hook.port)
        writer.write(head(len(BODY)) + BODY[:10])
        await writer.drain()
        await asyncio.sleep(0.2)
        if how == "reset":
            _reset(writer)
        else:
            writer.close()

        def reported() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno >= logging.WARNING]

        async def logged() -> bool:
            return bool(reported())

        await until(logged)
        assert await post(hook.port) == 200  # the endpoint still works
    records = reported()
    assert [r.levelname for r in records] == ["WARNING"], [r.getMessage() for r in records]
    assert "ended early" in records[0].getMessage()
    assert records[0].exc_info is None
    assert hook.delivered == 1


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"],
)
async def test_a_body_that_is_not_json_is_answered_415(content_type: str | None) -> None:
    async with serving() as hook:
        assert await post(hook.port, content_type=content_type) == 415
        assert await post(hook.port, content_type="application/json; charset=utf-8") == 200
        assert hook.delivered == 1


def test_limits_must_be_sensible() -> None:
    from payout_async import ConfigurationError

    for limits in ({"body_timeout": 0}, {"body_timeout": float("nan")}, {"max_in_flight": 0}):
        with pytest.raises(ConfigurationError):
            webhook_handler(Hook().on_webhook, KEY, **limits)  # type: ignore[arg-type]
