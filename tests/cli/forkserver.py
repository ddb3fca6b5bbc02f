"""A fork server for the command-line tests: one interpreter per test process imports
``payout_async.cli`` once, and each ``payout-async`` run is a child forked from it.

Starting the command costs about half a second of CPU, nearly all of it importing the
package; the suite runs the command hundreds of times. A forked child is still a new
process -- its own pid, its own file descriptors 0-2 (the caller's pipes), environment,
working directory, signal dispositions as a fresh interpreter has them and a reseeded
``random`` -- and it runs the console script's own ``main()``; what it skips is only the
import. Nothing in the package reads the environment or the process identity at
import time (``tests/cli/test_forkserver.py`` holds it to that).

The tests that signal the command, kill it or count its processes start the installed
console script itself, as do the documentation's shell blocks; and
``PAYOUT_ASYNC_TEST_FORKSERVER=0`` sends every run through the console script.

Protocol, over a Unix socket: the client sends one JSON line (``argv``, ``env``,
``cwd``) with three file descriptors (stdin, stdout, stderr); when the child has
ended, the server answers its exit code on one line (negative: the signal that ended
it, as ``asyncio.subprocess`` reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["enabled", "run"]

_SWITCH = "PAYOUT_ASYNC_TEST_FORKSERVER"
_ROOT = Path(__file__).resolve().parents[2]


def enabled() -> bool:
    """Whether ``cli()`` runs go through the fork server."""
    return os.environ.get(_SWITCH, "1") != "0"


# -- the server ---------------------------------------------------------------------


def _serve(path: str) -> None:
    import payout_async.cli  # noqa: F401  # the import every child would otherwise pay for

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the test run, not for us
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)  # closed: the test process is gone
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                return
            if key.fileobj is listener:
                client, _ = listener.accept()
                request, fds = _receive(client)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    selector.close()
                    for pidfd, (_, other) in waiting.items():
                        os.close(pidfd)
                        other.close()
                    _child(client, request, fds)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, client)
                selector.register(pidfd, selectors.EVENT_READ)
            else:
                pidfd = key.fd
                pid, client = waiting.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _answer(client, os.waitstatus_to_exitcode(status))
                client.close()


def _receive(client: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(client, 1 << 16, 3)
    while not data.endswith(b"\n"):
        more = client.recv(1 << 16)
        if not more:
            break
        data += more
    return json.loads(data), fds


def _answer(client: socket.socket, value: int) -> None:
    # OSError: the test gave up waiting (its own timeout); the child runs on regardless.
    with contextlib.suppress(OSError):
        client.sendall(f"{value}\n".encode())


def _child(client: socket.socket, request: dict[str, Any], fds: list[int]) -> NoReturn:
    """In the forked child: become the command the request names, run it, exit --
    never returning into the server's loop, whatever happens."""
    code = 1
    try:
        client.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        random.seed()
        sys.argv = list(request["argv"])
        code = _run_command(sys.argv[1:])
    except BaseException:
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _run_command(arguments: list[str]) -> int:
    """The console script's ``sys.exit(main())``, as an exit code."""
    from payout_async.cli import main

    try:
        return main(arguments)
    except SystemExit as stop:  # argparse
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as an interpreter does: end by the signal itself
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


# -- the client ---------------------------------------------------------------------


class _Server:
    """This test process's fork server, started on the first run."""

    def __init__(self) -> None:
        self.path = str(Path(tempfile.mkdtemp(prefix="pa-fork-")) / "socket")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.forkserver", self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        if self.process.stdout.readline() != b"ready\n":
            raise RuntimeError("the fork server did not start")


_server: _Server | None = None


async def run(argv: list[str], env: dict[str, str], cwd: Path | None) -> tuple[int, bytes, bytes]:
    """Run the command ``argv`` (``argv[0]`` as the console script's path) in a child of
    the fork server; its exit code, stdout and stderr."""
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _Server()
    loop = asyncio.get_running_loop()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(_server.path)
        request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd or Path.cwd())})
        socket.send_fds(connection, [request.encode() + b"\n"], [stdin, out_write, err_write])
    finally:
        for fd in (stdin, out_write, err_write):
            os.close(fd)
    connection.setblocking(False)
    try:
        out, err, code = await asyncio.gather(
            _read_all(loop, out_read), _read_all(loop, err_read), _exit_code(loop, connection)
        )
    finally:
        connection.close()
    return code, out, err


async def _read_all(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    try:
        return await reader.read()
    finally:
        transport.close()


async def _exit_code(loop: asyncio.AbstractEventLoop, connection: socket.socket) -> int:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await loop.sock_recv(connection, 64)
        if not chunk:
            raise RuntimeError(f"the fork server hung up: {data!r}")
        data += chunk
    return int(data)


if __name__ == "__main__":
    try:
        _serve(sys.argv[1])
    finally:  # the test process is gone: leave no socket and no folder behind
        os.unlink(sys.argv[1])
        os.rmdir(os.path.dirname(sys.argv[1]))
