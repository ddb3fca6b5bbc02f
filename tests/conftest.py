"""Shared test set-up: aioresponses on aiohttp 3.14, the ``backend`` fixture (each
ledger backend in turn: memory, SQLite, PostgreSQL), and the lines the tests report
after the run (the fuzz's HTTP call count), gathered from pytest-xdist's workers."""

from __future__ import annotations

import inspect
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import aioresponses.core
import pytest

from tests.ledger.support import BACKENDS, Backend, backend_of
from tests.unit.answers import REPORT

# A suite started in the background by a non-interactive shell (``pytest ... &``)
# inherits SIGINT ignored, and so would every command it starts: the tests that stop a
# command with Ctrl-C (SIGINT) would see it ignored, as such a shell means it to be.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _patch_aioresponses_for_aiohttp_314() -> None:
    """aioresponses 0.7.9 builds ``ClientResponse`` without the ``stream_writer``
    argument that aiohttp 3.14 requires (pnuckowski/aioresponses#289, fix pending in
    #288). aiohttp only reads ``stream_writer.output_size``, so supply a stand-in."""
    if "stream_writer" not in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        return

    class _Response(aiohttp.ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", mock.Mock(output_size=0))
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = _Response  # type: ignore[misc]


_patch_aioresponses_for_aiohttp_314()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each ledger backend in turn; ``backend.new()`` opens another instance over the
    same store, as another process would."""
    async for made in backend_of(request.param, tmp_path, Backend):
        yield made


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this worker's report lines to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["report"] = list(session.config.stash.get(REPORT, []))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """(pytest-xdist, in the controller) a worker has finished: keep its report lines."""
    lines = getattr(node, "workeroutput", {}).get("report", [])
    node.config.stash.setdefault(REPORT, []).extend(lines)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for line in config.stash.get(REPORT, []):
        terminalreporter.write_line(line)
