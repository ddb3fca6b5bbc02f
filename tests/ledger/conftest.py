"""Fixtures: ``backend`` (each of the three) and ``ledger`` (one instance of it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.ledger import Ledger

from .support import BACKENDS, Backend, require_postgres


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "postgres":
        require_postgres()
    made = Backend(request.param, tmp_path)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def ledger(backend: Backend) -> Ledger:
    return await backend.new()
