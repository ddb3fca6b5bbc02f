"""The ``store`` fixture of the keyed-ledger tests (``altering.Store``): a SQLite file
and a PostgreSQL schema in turn, each dropped after its test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..ledger.support import DURABLE, backend_of
from .altering import Store


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for made in backend_of(request.param, tmp_path, Store):
        yield made
