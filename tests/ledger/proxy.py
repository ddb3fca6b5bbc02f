"""A TCP proxy on 127.0.0.1 in front of the test PostgreSQL that misbehaves on demand.

``cut()`` aborts every open connection; ``refuse()`` stops listening (connections are
refused) until ``accept()``; ``stall()`` stops moving bytes either way (connections
stay open, new ones are accepted but hang) until ``unstall()``; ``flap(up, down)``
alternates refusing-and-cutting with working until ``steady()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class FaultyProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` (a ``host:port`` on loopback)."""

    def __init__(self, target_dsn: str) -> None:
        parts = urlsplit(target_dsn)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self._target_dsn = target_dsn
        self._target = (parts.hostname, parts.port or 5432)
        self._server: asyncio.Server | None = None
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._flapper: asyncio.Task[None] | None = None
        self.connections = 0

    @property
    def dsn(self) -> str:
        """The target DSN, pointed at the proxy."""
        parts = urlsplit(self._target_dsn)
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}"))

    async def __aenter__(self) -> FaultyProxy:
        await self.accept()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def accept(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening: new connections are refused (open ones carry on)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def cut(self) -> None:
        """Abort every open connection, both ways."""
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    def stall(self) -> None:
        """Hold every byte, both ways, until ``unstall()``."""
        self._flowing.clear()

    def unstall(self) -> None:
        """Let the held bytes go on."""
        self._flowing.set()

    def flap(self, *, up: float, down: float) -> None:
        """Alternate: ``down`` seconds refusing (open connections cut), ``up`` working."""

        async def run() -> None:
            while True:
                await self.refuse()
                self.cut()
                await asyncio.sleep(down)
                await self.accept()
                await asyncio.sleep(up)

        self._flapper = asyncio.create_task(run())

    async def steady(self) -> None:
        """Stop flapping and work normally."""
        if self._flapper is not None:
            self._flapper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flapper
            self._flapper = None
        self.unstall()
        await self.accept()

    async def close(self) -> None:
        """Stop listening, cut every connection and wait for its handler to end."""
        await self.steady()
        await self.refuse()
        self.cut()
        if self._handlers:
            await asyncio.wait(self._handlers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            self._handlers.discard(handler)
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [self._pump(reader, up_writer), self._pump(up_reader, writer)]
        tasks = [asyncio.create_task(pump) for pump in pumps]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            self._handlers.discard(handler)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    return
                writer.write(chunk)
                await writer.drain()
