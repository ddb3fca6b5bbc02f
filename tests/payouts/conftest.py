"""The ``store`` fixture of the keyed-ledger tests (``altering.Store``): a SQLite file
and a PostgreSQL schema in turn, each dropped after its test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..ledger.support import DURABLE, durable_place
from .altering import Store


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for made in durable_place(request.param, tmp_path, Store):
        yield made
