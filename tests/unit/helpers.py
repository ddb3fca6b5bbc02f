"""Shared constants and builders for the unit tests."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import parse_qs

from aioresponses import aioresponses
from aioresponses.core import normalize_url  # type: ignore[attr-defined]
from yarl import URL

import payout_async
from payout_async import EnotClient, IntellectMoneyClient

IM_BASE = "https://api.intellectmoney.ru/personal/payout/"
ENOT_BASE = "https://api.enot.io/"
SECRET = "SECRET"
BEARER = "BEARER-TOKEN"
USER_TOKEN = "UT"
ENOT_USER = "a6f112da-7c3f-4323-ad99-ec3630e7c8ff"
ENOT_KEY = "d6be996241deef230e9a0ca9dc60679da8720d14"
OP_ID = "81fa5265-de0b-498d-be37-5d48f4aa3ba1"
PAYOFF_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CARD = "4111111111111111"
PHONE = "+79001234567"
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
FAST = payout_async.RetryPolicy(attempts=3, initial=0.001, maximum=0.002)


def im_client(api: str = "current", **kwargs: Any) -> IntellectMoneyClient:
    """An IntellectMoney client with one request per call unless ``retry`` is given."""
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    if api == "current":
        kwargs.setdefault("bearer_token", BEARER)
    user_token = kwargs.pop("user_token", USER_TOKEN)
    return IntellectMoneyClient(user_token, SECRET, api=api, **kwargs)  # type: ignore[arg-type]


def enot_client(**kwargs: Any) -> EnotClient:
    """An Enot client with one request per call unless ``retry`` is given."""
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    return EnotClient(ENOT_USER, ENOT_KEY, **kwargs)


def im_url(method: str) -> str:
    return IM_BASE + method


def im_ok(state: str | None = "Created", *, code: int = 0, op_id: str = OP_ID) -> dict[str, Any]:
    """A successful IntellectMoney envelope."""
    result: dict[str, Any] = {"State": {"Code": 0, "Desc": "ok"}, "PayoutOperationId": op_id}
    if state is not None:
        result["PayoutOperationState"] = state
    return {
        "OperationState": {"Code": code, "Desc": "Операция выполнена"},
        "OperationId": "a654fe39-42eb-4ac3-a3ec-76d148b2ba3a",
        "Result": result,
    }


def im_error(desc: str = "Не переданы реквизиты для выплаты", code: int = 2) -> dict[str, Any]:
    """The documented IntellectMoney error envelope."""
    return {"OperationState": {"Code": code, "Desc": desc}, "Result": False}


def enot_ok(data: Any) -> dict[str, Any]:
    return {"data": data, "status": 200, "status_check": True}


def enot_error(status: int, message: str) -> dict[str, Any]:
    return {"data": None, "error": message, "status": status, "status_check": False}


def calls(m: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    """The keyword arguments of every request recorded for ``method url``."""
    return [call.kwargs for call in m.requests.get((method, normalize_url(URL(url))), [])]


def only_call(m: aioresponses, method: str, url: str) -> dict[str, Any]:
    """The one request recorded for ``method url`` (asserts there was exactly one)."""
    recorded = calls(m, method, url)
    assert len(recorded) == 1, f"expected one {method} {url}, got {len(recorded)}"
    return recorded[0]


def total_requests(m: aioresponses) -> int:
    return sum(len(recorded) for recorded in m.requests.values())


def body_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The sent body as a dict, whether it went as JSON or as a form."""
    data: bytes = kwargs["data"]
    content_type = kwargs["headers"]["Content-Type"]
    if content_type == "application/json":
        decoded: dict[str, Any] = json.loads(data)
        return decoded
    assert content_type == "application/x-www-form-urlencoded"
    return {
        key: values[0]
        for key, values in parse_qs(data.decode("ascii"), keep_blank_values=True).items()
    }


# --- a raw TCP server on 127.0.0.1 for failure classification --------------------------------


def http_response(body: bytes, *, status: str = "200 OK", length: int | None = None) -> bytes:
    """An HTTP/1.1 answer; ``length`` may lie about the body's size."""
    size = len(body) if length is None else length
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class RawServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 whose misbehaviour is chosen per test.

    ``behaviour``: ``"answer"`` (read the request, send ``answer``), ``"close_before_read"``
    (drop the connection without reading a byte), ``"close_after_read"`` (read the whole
    request, then drop the connection), ``"stall"`` (read the request, never answer),
    ``"hold"`` (read the request, send ``answer`` once ``release`` is set), ``"truncated"``
    (read the request, promise 1000 body bytes, send a few, close).
    Every fully read request is kept in ``requests`` as ``(head, body)``.
    """

    def __init__(self, behaviour: str, answer: bytes = b"") -> None:
        self.behaviour = behaviour
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.got_request = asyncio.Event()
        self.release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.behaviour == "close_before_read":
                writer.transport.abort()
                return
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests.append((head, body))
            self.got_request.set()
            if self.behaviour == "close_after_read":
                writer.transport.abort()
            elif self.behaviour == "stall":
                await asyncio.sleep(3600)
            elif self.behaviour == "hold":
                await self.release.wait()
                writer.write(self.answer)
                await writer.drain()
                writer.close()
            elif self.behaviour == "truncated":
                writer.write(http_response(b'{"data": {"payoff_id"', length=1000))
                await writer.drain()
                writer.transport.abort()
            else:
                writer.write(self.answer)
                await writer.drain()
                writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def closed_port() -> tuple[socket.socket, int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nobody else takes it)
    but not listening. Close the returned socket when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return sock, port
