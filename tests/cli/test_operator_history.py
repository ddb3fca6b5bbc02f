"""Issue 27, items 3-7: what operators do over days -- re-run refused rows, prune the
history, retry refusals that were not -- through the installed ``payout-async`` command,
on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from payout_async.ledger import Ledger, LedgerState
from payout_async.sandbox import Sandbox

from ..ledger.support import DURABLE, PG_DSN, Backend, require_postgres
from ..payouts.support import fast_config
from .support import CARD, assert_paid_once, cli, credentials, write_csv

FAST = ["--request-timeout", "1", "--grace", "1.5", "--execute-settle", "1"]


@attrs.frozen
class Place:
    """A ledger the command is pointed at (``url``) and the same store for the test."""

    url: str
    backend: Backend

    async def open(self) -> Ledger:
        return await self.backend.new()


@pytest.fixture(params=DURABLE)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    backend = Backend(request.param, tmp_path)
    if request.param == "postgres":
        require_postgres()
        url = f"{PG_DSN}?schema={backend.schema}"
    else:
        url = f"sqlite:///{backend.path}"
    try:
        yield Place(url, backend)
    finally:
        await backend.close()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def enot_row(key: str, amount: str) -> dict[str, str]:
    return {"key": key, "provider": "enot", "method": "card", "recipient": CARD,
            "amount": amount}  # fmt: skip


# 6. A corrected re-run of a refused row is refused by the CLI. --------------------------


@pytest.mark.parametrize("command", ["batch", "enqueue"])
async def test_6_a_refused_row_is_paid_again_with_corrected_parameters(
    sandbox: Sandbox, place: Place, tmp_path: Path, command: str
) -> None:
    over = write_csv(tmp_path / "over.csv", [enot_row("r6-1", "700000.00")])  # off the tariff
    run = await cli("batch", str(over), "--ledger", place.url, "--no-progress", *FAST,
                    env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 1, run
    ledger = await place.open()
    record = await ledger.get("enot", "r6-1")
    assert record is not None and record.state is LedgerState.REFUSED, record

    fixed = write_csv(tmp_path / "fixed.csv", [enot_row("r6-1", "700.00")])
    tuning = FAST if command == "batch" else []
    run = await cli(command, str(fixed), "--ledger", place.url, *tuning,
                    env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    assert "other parameters" not in run.err
    if command == "enqueue":
        assert "1 refused earlier and recorded again" in run.out, run
        record = await ledger.get("enot", "r6-1")
        assert record is not None and record.state is LedgerState.PENDING, record
        run = await cli("resume", "--ledger", place.url, "--no-progress", *FAST,
                        env=credentials(sandbox))  # fmt: skip
        assert run.code == 0, run
    record = await ledger.get("enot", "r6-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record
    assert_paid_once(sandbox, ["r6-1"])
