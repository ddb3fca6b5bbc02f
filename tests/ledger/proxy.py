"""A TCP proxy on 127.0.0.1 in front of the test PostgreSQL that misbehaves on demand.

``cut()`` aborts every open connection; ``refuse()`` stops listening (connections are
refused) until ``accept()``; ``stall()`` stops moving bytes either way (connections
stay open, new ones are accepted but hang) until ``unstall()``; ``flap(up, down)``
alternates refusing-and-cutting with working until ``steady()``. ``quiet()`` waits
until nothing sent through the proxy can still reach the server: a statement held by
a stall is delivered when it ends, even when its client gave up meanwhile, and the
server runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: The longest ``FaultyProxy.quiet`` waits for the server to run what a stall held.
QUIET_BOUND = 10.0


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
        self._held = 0  # chunks read but not yet passed on (a stall holds them)
        self._ended: set[int] = set()  # local ports of upstream connections closed
        self._clients: set[asyncio.StreamReader] = set()  # of the links still open
        self._open: set[int] = set()  # local ports of upstream connections open

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

    async def quiet(self) -> None:
        """Wait (at most ``QUIET_BOUND`` seconds) until no chunk is held and the server
        has ended the session of every upstream connection the proxy closed: it ends a
        session only once it has run what it read (asked over a connection of its own,
        not through the proxy). What a client that gave up sent during a stall has
        landed by then."""
        import asyncpg  # (the proxy serves the PostgreSQL tests only)

        async with asyncio.timeout(QUIET_BOUND):
            while True:  # every chunk passed on, and every link whose client went closed
                if not self._held and not any(client.at_eof() for client in self._clients):
                    break
                await asyncio.sleep(0.01)
            admin = await asyncpg.connect(self._target_dsn)
            try:
                while True:
                    if not await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1)",
                        # (a port a closed link had may serve a live one again)
                        sorted(self._ended - self._open),
                    ):
                        break
                    await asyncio.sleep(0.02)
            finally:
                await admin.close()

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
        upstream_port = up_writer.get_extra_info("sockname")[1]
        self._clients.add(reader)
        self._open.add(upstream_port)
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
            self._ended.add(upstream_port)
            self._open.discard(upstream_port)
            self._clients.discard(reader)
            self._handlers.discard(handler)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while chunk := await reader.read(65536):
                self._held += 1
                try:
                    await self._flowing.wait()
                    if writer.transport.is_closing():
                        return
                    writer.write(chunk)
                    await writer.drain()
                finally:
                    self._held -= 1
