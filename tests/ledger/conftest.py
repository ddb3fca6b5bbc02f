"""Fixture: ``ledger`` (one instance of each backend; ``backend`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from payout_async.ledger import Ledger

from .support import Backend


@pytest.fixture
async def ledger(backend: Backend) -> Ledger:
    return await backend.new()
