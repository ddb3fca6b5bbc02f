"""Issue 25: workers stop spending when the money runs out.

Two ``worker`` processes share a PostgreSQL ledger; the sandbox's balances cover three
payouts of each provider. The first refusal for want of money pauses that provider
for both workers (ERROR in their logs, a record in the ledger that ``status`` and
``funds`` show); nothing more is created or executed there, also for rows enqueued
since. A top-up resumes Enot by itself (the workers read its balance); IntellectMoney,
which has no balance call, resumes on ``funds resume``. Every payout ends paid exactly
once. Also: ``batch --dry-run`` reports an Enot shortfall, and ``status`` names a
batch's leases as that batch's, not as workers'.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from payout_async.ledger import (
    ACTIVE_STATES,
    LedgerState,
    PostgresLedger,
    SQLiteLedger,
    new_encryption_key,
)
from payout_async.payouts._owner import BATCH, new_owner
from payout_async.sandbox import Sandbox

from ..ledger.support import PG_DSN, drop_schema, require_postgres
from ..payouts.support import fast_config
from .support import CARD, cli, credentials, write_csv
from .test_production_batches import paid_once, rows
from .test_queue_cli import FAST, line_with, spawn

#: Money-moving requests, by sandbox route.
SENDS = ("im.create", "im.execute", "enot.create")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 90) -> None:
    """Wait for ``check`` (a generous limit: only a hang reaches it)."""
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def sends(sandbox: Sandbox) -> dict[str, int]:
    counts = sandbox.faults.call_counts
    return {route: counts.get(route, 0) for route in SENDS}


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"funds_{uuid.uuid4().hex[:10]}"
    yield name
    await drop_schema(name)


@pytest.mark.postgres
async def test_two_workers_pause_a_provider_out_of_money_and_resume_it(
    schema: str, tmp_path: Path
) -> None:
    config = fast_config(im_balance="35.00", enot_balance="35.00")
    url = f"{PG_DSN}?schema={schema}"
    async with Sandbox(config=config) as sandbox, PostgresLedger(PG_DSN, schema=schema) as book:
        env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
        first = rows("intellectmoney", ["10.00"] * 10, "fi") + rows("enot", ["10.00"] * 10, "fe")
        run = await cli("enqueue", str(write_csv(tmp_path / "a.csv", first)), "--ledger", url,
                        env=env)  # fmt: skip
        assert run.code == 0, run
        options = [*FAST, "--idle-poll", "0.5", "--balance-poll", "0.5", "--concurrency", "3"]
        workers = [await spawn("worker", "--ledger", url, *options, env=env) for _ in range(2)]
        try:

            async def both_paused() -> bool:
                return {p.provider for p in await book.pauses()} == {"intellectmoney", "enot"}

            await eventually(both_paused, "both providers paused")

            async def settled() -> bool:  # nothing in flight, nothing leased
                counts = await book.counts()
                busy = ACTIVE_STATES - {LedgerState.PENDING, LedgerState.CREATED}
                holders = await book.lease_holders()
                return not holders and not any(counts.get(state) for state in busy)

            await eventually(settled, "every drive ended")
            spent = sends(sandbox)
            counts = await book.counts()
            assert counts[LedgerState.SUCCEEDED] == 6, counts  # three of each provider
            assert counts[LedgerState.REFUSED] >= 2, counts  # the first of each, at least
            assert sandbox.stats().intellectmoney.not_enough_money >= 1

            # status and funds show the pauses; rows enqueued now are not sent either.
            status, funds = (
                await cli("status", "--ledger", url, "--json", env=env),
                await cli("funds", "--ledger", url, "--json", env=env),
            )
            paused = {p["provider"]: p for p in json.loads(status.out)["paused"]}
            assert set(paused) == {"intellectmoney", "enot"}, status
            assert "for want of money" in paused["enot"]["reason"]
            assert json.loads(funds.out)["refused_for_funds"]["intellectmoney"] >= 1, funds
            human = await cli("status", "--ledger", url, env=env)
            assert "intellectmoney is PAUSED since" in human.out, human
            assert "payout-async funds resume enot" in human.out, human
            later = rows("intellectmoney", ["10.00"] * 2, "li") + rows("enot", ["10.00"] * 2, "le")
            run = await cli("enqueue", str(write_csv(tmp_path / "b.csv", later)), "--ledger",
                            url, env=env)  # fmt: skip
            assert run.code == 0, run
            await asyncio.sleep(2.0)  # four idle polls of each worker: none may send
            assert sends(sandbox) == spent
            for row in later:
                record = await book.get(row["provider"], row["key"])
                assert record is not None and record.state is LedgerState.PENDING

            # Enot: a top-up, and the workers' balance read resumes it by itself.
            sandbox.top_up("enot", Decimal("300.00"))

            async def enot_done() -> bool:
                return (await book.counts(provider="enot")) == {LedgerState.SUCCEEDED: 12}

            await eventually(enot_done, "every Enot payout paid after the top-up")
            assert [p.provider for p in await book.pauses()] == ["intellectmoney"]
            now = sends(sandbox)
            assert (now["im.create"], now["im.execute"]) == (spent["im.create"],
                                                             spent["im.execute"])  # fmt: skip

            # IntellectMoney has no balance call: the operator resumes it after a top-up.
            sandbox.top_up("intellectmoney", Decimal("300.00"))
            run = await cli("funds", "resume", "intellectmoney", "--ledger", url, env=env)
            assert run.code == 0 and "intellectmoney resumed (paused since" in run.out, run

            async def im_done() -> bool:
                counts = await book.counts(provider="intellectmoney")
                return counts == {LedgerState.SUCCEEDED: 12}

            await eventually(im_done, "every IntellectMoney payout paid after resume")
            assert await book.pauses() == []
        finally:
            outputs = []
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(worker.communicate(), 60)
                outputs.append((worker.returncode, err.decode()))
        paid_once(sandbox, [row["key"] for row in first + later])
        for code, err in outputs:
            assert code == 0, err[-3000:]
            for provider in ("intellectmoney", "enot"):
                assert f"ERROR {provider} payouts are paused" in err, err[-3000:]
            assert "enot payouts are no longer paused" in err, err[-3000:]
            assert "Traceback" not in err


async def test_a_dry_run_reports_the_enot_shortfall(tmp_path: Path) -> None:
    async with Sandbox(config=fast_config(enot_balance="50.00")) as sandbox:
        path = write_csv(tmp_path / "b.csv", rows("enot", ["30.00"] * 3, "dr"))
        env = credentials(sandbox)
        ledger = f"sqlite:///{tmp_path / 'l.db'}"
        run = await cli("batch", str(path), "--ledger", ledger, "--dry-run", env=env,
                        state=tmp_path)  # fmt: skip
        assert run.code == 2, run
        [error] = [line for line in run.err.splitlines() if line.startswith("error:")]
        assert "50.00" in error and "90.00" in error and "--dry-run" in error, run
        assert "would be sent" not in run.out + run.err
        partial = await cli("batch", str(path), "--ledger", ledger, "--dry-run",
                            "--allow-partial", env=env, state=tmp_path)  # fmt: skip
        assert partial.code == 0, partial
        assert "does not cover" in partial.err and "3 would be sent" in partial.out
        assert dict(sandbox.faults.call_counts) == {"enot.balance": 2}  # nothing sent
        assert not (tmp_path / "l.db").exists()


async def test_status_names_a_batchs_leases_as_that_batch(tmp_path: Path) -> None:
    """One batch holds rows of both providers under two owners (one per provider):
    ``status`` shows one holder, the batch process, not "2 worker(s)"."""
    db = tmp_path / "l.db"
    async with SQLiteLedger(db) as book:
        for provider in ("intellectmoney", "enot"):
            owner = new_owner(BATCH)
            params = {"amount": "1.00", "pan": CARD}
            await book.begin(provider, f"{provider}-k", book.params_hash(params), params,
                             owner=owner, lease_seconds=600)  # fmt: skip
    db.chmod(0o600)
    run = await cli("status", "--ledger", f"sqlite:///{db}", state=tmp_path)
    assert run.code == 0, run
    assert f"holding payouts now: the batch pid {os.getpid()} on this host:" in run.out, run
    assert f"2 payout(s) are leased to the batch pid {os.getpid()}" in run.out, run
    assert "worker" not in run.out, run
    run = await cli("status", "--ledger", f"sqlite:///{db}", "--json", state=tmp_path)
    views = json.loads(run.out)["workers"]
    assert [v["command"] for v in views] == ["batch", "batch"]
    assert len({v["process"] for v in views}) == 1


async def test_funds_commands_pause_list_and_resume(tmp_path: Path) -> None:
    """``funds pause`` by hand, ``funds`` lists it, ``funds resume`` queues the rows
    refused for want of money again -- refusing, with nothing changed, when they cannot
    be read without the ledger's key."""
    key = new_encryption_key()
    db = tmp_path / "l.db"
    params = {"service": "card", "wallet_to": CARD, "amount": "10.00"}
    async with SQLiteLedger(db, encryption_key=key) as book:
        claim = await book.begin("enot", "r1", book.params_hash(params), params, owner="w",
                                 lease_seconds=60, order_id="r1")  # fmt: skip
        await book.transition(
            "enot", "r1", owner="w", token=claim.record.lease_token, release=True,
            state=LedgerState.REFUSED, lease_seconds=60, reason="HTTP 403: Insufficient funds",
        )  # fmt: skip
    db.chmod(0o600)
    ledger = ["--ledger", f"sqlite:///{db}"]
    keyed = {"PAYOUT_ASYNC_LEDGER_KEY": key}
    run = await cli("funds", "pause", "enot", "--reason", "top-up due", *ledger, env=keyed)
    assert run.code == 0 and "enot is paused." in run.out, run
    run = await cli("funds", *ledger, env=keyed)
    assert "enot is PAUSED since" in run.out and "by operator: top-up due" in run.out, run
    assert "1 enot payout(s) were refused for want of money." in run.out, run
    run = await cli("funds", "resume", "enot", *ledger)  # without the key
    assert run.code == 2 and "nothing was changed" in run.err, run
    run = await cli("funds", "resume", *ledger, env=keyed)
    assert run.code == 2 and "funds resume needs a PROVIDER" in run.err, run
    run = await cli("funds", "resume", "enot", *ledger, "--json", env=keyed)
    assert run.code == 0, run
    report = json.loads(run.out)
    assert (report["requeued"], [p["by"] for p in report["lifted"]]) == (1, ["operator"])
    async with SQLiteLedger(db, encryption_key=key) as book:
        record = await book.get("enot", "r1")
        assert record is not None and record.state is LedgerState.PENDING
        assert await book.pauses() == []


async def test_a_batch_says_the_workers_have_paused_its_provider(tmp_path: Path) -> None:
    async with Sandbox(config=fast_config()) as sandbox:
        env = credentials(sandbox)
        ledger = ["--ledger", f"sqlite:///{tmp_path / 'l.db'}"]
        path = write_csv(tmp_path / "b.csv", rows("enot", ["5.00"], "bp"))
        run = await cli("enqueue", str(path), *ledger, state=tmp_path)
        assert run.code == 0, run
        run = await cli("funds", "pause", "enot", *ledger, state=tmp_path)
        assert run.code == 0, run
        run = await cli("batch", str(path), *ledger, "--no-progress", env=env, state=tmp_path)
        assert run.code == 0, run
        assert "warning: workers have paused enot for want of money" in run.err, run
        assert "payout-async funds resume enot" in run.err
        paid_once(sandbox, ["bp-0"])


async def test_status_watch_shows_a_paused_provider(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    ledger = ["--ledger", f"sqlite:///{db}"]
    path = write_csv(tmp_path / "b.csv", rows("enot", ["5.00"], "sw"))
    run = await cli("enqueue", str(path), *ledger, state=tmp_path)
    assert run.code == 0, run
    run = await cli("funds", "pause", "enot", "--reason", "top-up due", *ledger, state=tmp_path)
    assert run.code == 0, run
    for as_json in (False, True):
        extra = ["--json"] if as_json else []
        watching = await spawn("status", *ledger, "--watch", "--interval", "0.2", *extra, env={})
        line = await line_with(watching.stdout, "paused" if as_json else "payouts")
        watching.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(watching.communicate(), 60)
        assert watching.returncode == 0, err.decode()
        if as_json:
            [pause] = json.loads(line)["paused"]
            assert (pause["provider"], pause["reason"]) == ("enot", "top-up due")
        else:
            assert "PAUSED for want of money: enot" in line, line
