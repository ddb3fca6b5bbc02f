"""Issue 27: what operators do over days -- move a row to the other provider, restore a
ledger from a backup -- never pays twice. Each test drives the installed
``payout-async`` command against a sandbox in this process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.ledger import LedgerState, SQLiteLedger, ledger_from_url
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
    async with SQLiteLedger(path):  # upgraded by the new version's first writer
        pass
    run = await cli("status", "--ledger", f"sqlite:///{path}")
    assert run.code == 0, run
    assert "1 key(s) have a live row under both providers" in run.out, run
    assert "'both'" in run.out
    run = await cli("status", "--ledger", f"sqlite:///{path}", "--json")
    assert json.loads(run.out)["shared_keys"] == ["both"]


# -- 2. a ledger restored from a backup, or created anew -------------------------------


def _pg_schema(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def backup(url: str, to: Path) -> None:
    """Copy the ledger aside (SQLite: the file; PostgreSQL: ``pg_dump`` of its schema)."""
    if url.startswith("sqlite:"):
        shutil.copyfile(url.removeprefix("sqlite:///"), to)
        return
    if shutil.which("pg_dump") is None or shutil.which("psql") is None:
        pytest.skip("pg_dump and psql are needed to back a PostgreSQL ledger up")
    await _run("pg_dump", "--schema", _pg_schema(url), "--file", str(to), PG_DSN)


async def remove(url: str) -> None:
    """Remove the ledger (SQLite: its files; PostgreSQL: its schema)."""
    if url.startswith("sqlite:"):
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(url.removeprefix("sqlite:///") + suffix)
        return
    await drop_schema(_pg_schema(url))


async def restore(url: str, copy: Path) -> None:
    await remove(url)
    if url.startswith("sqlite:"):
        shutil.copyfile(copy, url.removeprefix("sqlite:///"))
        return
    await _run("psql", "--quiet", "--file", str(copy), PG_DSN)


def lines(run: Run, text: str) -> list[str]:
    return [line for line in run.err.splitlines() if text in line]


async def test_a_ledger_restored_from_a_backup_pays_nothing_again(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str
) -> None:
    first = write_csv(tmp_path / "a.csv", rows(IM, ["10.00", "11.00"], "a"))
    second = write_csv(tmp_path / "b.csv", rows(IM, ["12.00", "13.00"], "b"))
    assert (await batch(first, ledger_url, sandbox, tmp_path)).code == 0
    await backup(ledger_url, tmp_path / "yesterday")
    assert (await batch(second, ledger_url, sandbox, tmp_path)).code == 0
    books = paid(sandbox)
    assert books == {(IM, key): 1 for key in ("a-0", "a-1", "b-0", "b-1")}

    await restore(ledger_url, tmp_path / "yesterday")
    run = await batch(second, ledger_url, sandbox, tmp_path)
    assert run.code == 2 and len(run.errors) == 1, run
    assert "older than the one this user paid through there" in run.errors[0]
    assert "it lacks 2 key(s) of this file sent through it: 'b-0', 'b-1'" in run.errors[0]
    assert "--accept-restored-ledger" in run.errors[0]

    # Accepted: the IntellectMoney rows it lacks cannot be looked up, so they are refused.
    run = await batch(second, ledger_url, sandbox, tmp_path, "--accept-restored-ledger")
    assert run.code == 2, run
    refused = lines(run, "the restored ledger lacks it")
    assert len(refused) == 2 and all("cannot be looked up" in line for line in refused), run
    assert paid(sandbox) == books

    # New payouts go on through the accepted ledger, which is then the one noted here.
    third = write_csv(tmp_path / "c.csv", rows(IM, ["14.00"], "c"))
    run = await batch(third, ledger_url, sandbox, tmp_path, "--accept-restored-ledger")
    assert run.code == 0, run
    assert (await batch(third, ledger_url, sandbox, tmp_path)).code == 0
    assert paid(sandbox) == {**books, (IM, "c-0"): 1}


async def test_a_ledger_created_anew_at_the_same_place_is_refused(
    sandbox: Sandbox, tmp_path: Path, ledger_url: str
) -> None:
    file = write_csv(tmp_path / "a.csv", rows(IM, ["10.00"], "n") + rows(ENOT, ["5.00"], "e"))
    assert (await batch(file, ledger_url, sandbox, tmp_path)).code == 0
    books = paid(sandbox)
    await remove(ledger_url)
    for command in (
        ["batch", str(file), "--no-progress"],
        ["enqueue", str(file)],
        ["batch", str(file), "--no-progress", "--dry-run"],
    ):
        run = await cli(
            *command, "--ledger", ledger_url, env=credentials(sandbox), state=tmp_path
        )  # fmt: skip
        assert run.code == 2 and len(run.errors) == 1, run
        assert "no ledger at" in run.errors[0] and "it was removed or moved" in run.errors[0]
        assert "it lacks 2 key(s)" in run.errors[0]
    run = await batch(file, ledger_url, sandbox, tmp_path, "--accept-restored-ledger")
    assert run.code == 2 and len(lines(run, "the restored ledger lacks it")) == 1, run
    assert paid(sandbox) == books
