"""The ``store`` fixture of the keyed-ledger tests (``altering.Store``): a SQLite file
and a PostgreSQL schema in turn, each dropped after its test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..ledger.support import DURABLE, drop_schema, require_postgres
from .altering import Store


@pytest.fixture(params=DURABLE)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        require_postgres()
    made = Store(request.param, tmp_path / "ledger.db")
    try:
        yield made
    finally:
        if request.param == "postgres":
            await drop_schema(made.schema)
