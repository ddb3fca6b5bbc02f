"""Issue 27: what operators do over days -- move a row to the other provider, restore a
ledger from a backup -- never pays twice. Each test drives the installed
``payout-async`` command against a sandbox in this process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.ledger import LedgerState, ledger_from_url
from payout_async.sandbox import Sandbox

from ..ledger.support import PG_DSN, drop_schema, require_postgres
from ..ledger.test_ledger_upgrade import v3_sqlite_with_shared_keys
from ..payouts.support import fast_config
from .support import CARD, Run, cli, credentials, write_csv

IM, ENOT = "intellectmoney", "enot"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A ledger location that does not exist yet: an SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'payouts.db'}"
        return
    require_postgres()
    schema = f"history_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{PG_DSN}?schema={schema}"
    finally:
        await drop_schema(schema)


def rows(provider: str, amounts: list[str], prefix: str) -> list[dict[str, str]]:
    """Card payouts of ``amounts`` (IntellectMoney rows carry their key as Description)."""
    return [
        {"key": f"{prefix}-{n}", "provider": provider, "method": "card", "recipient": CARD,
         "amount": amount, "bank_id": "", "description": f"{prefix}-{n}" if provider == IM else ""}
        for n, amount in enumerate(amounts)
    ]  # fmt: skip


def moved_to(provider: str, file: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same rows, edited to go through ``provider``."""
    return [{**row, "provider": provider, "description": ""} for row in file]


def bad_rows(run: Run) -> list[str]:
    """The problems a run refused the file for (exit 2, nothing sent)."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run
    return [line for line in run.err.splitlines() if " is already in the ledger " in line]


async def batch(path: Path, ledger: str, sandbox: Sandbox, state: Path, *extra: str) -> Run:
    return await cli(
        "batch", str(path), "--ledger", ledger, "--no-progress", *extra,
        env=credentials(sandbox), state=state,
    )  # fmt: skip


def paid(sandbox: Sandbox) -> dict[tuple[str, str], int]:
    """Payments per (provider, key), as the sandbox's books hold them."""
    assert sandbox.duplicates() == []
    return dict(sandbox.paid_per_payout())


# -- 1. a row moved to the other provider ------------------------------------------------


async def test_a_paid_key_moved_to_the_other_provider_is_refused(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str
) -> None:
    file = rows(IM, ["10.00", "11.00"], "mv")
    path = write_csv(tmp_path / "b.csv", file)
    run = await batch(path, ledger_url, sandbox, tmp_path)
    assert run.code == 0, run
    assert paid(sandbox) == {(IM, "mv-0"): 1, (IM, "mv-1"): 1}

    # The operator edits the provider column and runs the file again: refused, nothing
    # sent -- with --switch-provider too, since those payouts were made.
    write_csv(path, moved_to(ENOT, file))
    for extra in ((), ("--switch-provider",)):
        problems = bad_rows(await batch(path, ledger_url, sandbox, tmp_path, *extra))
        assert len(problems) == 2, problems
        assert all("under intellectmoney (state succeeded)" in p for p in problems)
        assert all("a key is one payout, whatever the provider" in p for p in problems)
    enqueued = await cli("enqueue", str(path), "--ledger", ledger_url, state=tmp_path)
    assert len(bad_rows(enqueued)) == 2
    # Through another ledger: the key registry knows the keys, whatever the provider.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    run = await batch(path, other, sandbox, tmp_path)
    assert run.code == 2 and "already paid through another ledger" in run.err, run
    assert sandbox.stats().enot.created == 0
    assert paid(sandbox) == {(IM, "mv-0"): 1, (IM, "mv-1"): 1}
    ledger = ledger_from_url(ledger_url)
    async with ledger:
        assert await ledger.records(provider=ENOT) == []


async def test_a_refused_key_moves_to_the_other_provider_when_the_operator_says_so(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str
) -> None:
    file = rows(IM, ["10.00", "11.00"], "sw")
    path = write_csv(tmp_path / "b.csv", file)
    wrong = {**credentials(sandbox), "PAYOUT_ASYNC_IM_SECRET_KEY": "wrong-secret"}
    run = await cli(
        "batch", str(path), "--ledger", ledger_url, "--no-progress", "--max-refusals", "0",
        env=wrong, state=tmp_path,
    )  # fmt: skip
    assert run.code == 1, run  # refused: nothing exists at IntellectMoney

    write_csv(path, moved_to(ENOT, file))
    problems = bad_rows(await batch(path, ledger_url, sandbox, tmp_path))
    assert len(problems) == 2 and all("--switch-provider" in p for p in problems), problems
    assert sandbox.stats().enot.created == 0
    run = await batch(path, ledger_url, sandbox, tmp_path, "--switch-provider")
    assert run.code == 0, run
    assert paid(sandbox) == {(ENOT, "sw-0"): 1, (ENOT, "sw-1"): 1}

    # The old rows are cancelled: the original file, credentials fixed, pays nothing.
    ledger = ledger_from_url(ledger_url)
    async with ledger:
        for key in ("sw-0", "sw-1"):
            old = await ledger.get(IM, key)
            assert old is not None and old.state is LedgerState.CANCELLED
            assert old.reason == "the key moved to enot (switch_provider)"
    write_csv(path, file)
    await batch(path, ledger_url, sandbox, tmp_path)
    await cli("reconcile", "--ledger", ledger_url, "--no-progress", env=credentials(sandbox))
    assert paid(sandbox) == {(ENOT, "sw-0"): 1, (ENOT, "sw-1"): 1}


async def test_status_reports_keys_an_older_ledger_holds_under_both_providers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.db"
    v3_sqlite_with_shared_keys(path)
    run = await cli("status", "--ledger", f"sqlite:///{path}")
    assert run.code == 0, run
    assert "1 key(s) have a live row under both providers" in run.out, run
    assert "'both'" in run.out
    run = await cli("status", "--ledger", f"sqlite:///{path}", "--json")
    assert json.loads(run.out)["shared_keys"] == ["both"]
