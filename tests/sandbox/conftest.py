"""The sandbox tests use the project's own pytest plugin (``payout_async.testing``)
with fast settings."""

from __future__ import annotations

import pytest

from payout_async.sandbox import SandboxConfig

from .support import fast_config


@pytest.fixture
def payout_sandbox_config() -> SandboxConfig:
    """Fast delays for every test that uses the plugin's ``payout_sandbox``."""
    return fast_config()
