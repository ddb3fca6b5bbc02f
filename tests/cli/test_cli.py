"""The command line, driven as a subprocess against a sandbox in this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.enot import PayoffRequest
from payout_async.ledger import SQLiteLedger, params_hash
from payout_async.payouts._orchestrator import _request_params
from payout_async.sandbox import Sandbox

from ..payouts.support import books, fast_config
from .support import (
    CARD,
    COMMAND,
    Run,
    assert_paid_once,
    calls,
    cli,
    cli_many,
    credentials,
    good_rows,
    write_csv,
)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def test_demo_exits_zero_with_no_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    run = await cli("demo", "--count", "60", "--no-progress", "--ledger", str(db))
    assert run.code == 0, run
    assert "duplicates in the sandbox's books: 0" in run.out
    assert "succeeded" in run.out
    # Its failures are explained (the sandbox's failure_ratio), and its ledger kept.
    for line in run.out.splitlines():
        if line.startswith("failed "):
            assert "by design" in line and "failure_ratio" in line, run
    assert db.exists() and f"the ledger is kept at {db}" in run.out
    assert f"payout-async status --ledger sqlite:///{db}" in run.out


async def test_batch_then_rerun_pays_nothing_twice_and_status_json(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(10))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = credentials(sandbox)
    run = await cli("batch", str(path), "--ledger", ledger, "--json", env=env, state=tmp_path)
    assert run.code == 0, run
    report = json.loads(run.out)
    assert (report["schema"], report["command"]) == (1, "batch")
    assert report["ledger"] == str(tmp_path / "ledger.db")
    assert sorted(p["key"] for p in report["payouts"]) == sorted(f"b-{n}" for n in range(10))
    assert {p["status"] for p in report["payouts"]} == {"succeeded"}
    assert report["counts"] == {"succeeded": 10}
    sent = calls(sandbox)

    run = await cli("batch", str(path), "--ledger", ledger, "--json", env=env, state=tmp_path)
    assert run.code == 0, run
    assert calls(sandbox) == sent  # nothing sent again
    assert_paid_once(sandbox, [f"b-{n}" for n in range(10)])

    run = await cli("status", "--ledger", ledger, "--json")
    assert run.code == 0, run
    report = json.loads(run.out)
    assert report["counts"]["intellectmoney"]["succeeded"] == 5
    assert report["counts"]["enot"]["succeeded"] == 5


@pytest.mark.parametrize(
    "how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "sigkill"]
)
async def test_interrupted_batch_reruns_without_paying_twice(
    tmp_path: Path, how: signal.Signals
) -> None:
    count = 30
    slow = fast_config(im_in_process_after=0.1, im_final_after=0.4, enot_final_after=0.4)
    async with Sandbox(config=slow) as sandbox:
        path = write_csv(tmp_path / "batch.csv", good_rows(count))
        ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        args = ["batch", str(path), "--ledger", ledger, "--concurrency", "5",
                "--request-timeout", "1", "--lease-seconds", "5", "--grace", "1.5",
                "--execute-settle", "1", "--no-progress"]  # fmt: skip
        env = {**os.environ, **credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
        process = await asyncio.create_subprocess_exec(
            COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        # Signal once money is moving (the handlers are installed by then), however
        # slowly a loaded machine starts the process.
        for _ in range(3000):
            if sum(map(sum, (c.values() for c in books(sandbox.state)))) > 0:
                break
            await asyncio.sleep(0.01)
        process.send_signal(how)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        if how is signal.SIGKILL:
            # The killed worker's leases run 120 s more: the re-run takes them over at
            # once, as their owner is a dead process of this host.
            assert process.returncode == -signal.SIGKILL
        else:
            # SIGTERM takes the Ctrl-C path: payouts in flight recorded, leases handed back.
            assert process.returncode == 130, err.decode()[-2000:]
            assert "nothing will be paid twice" in err.decode()
            assert "Traceback" not in err.decode()
        executed, created = books(sandbox.state)
        assert 0 < sum(executed.values()) + sum(created.values()) < count

        if how is not signal.SIGKILL:
            # Nothing is left leased: resume finishes every row at once.
            run = await cli("resume", "--ledger", ledger, "--no-progress",
                            "--request-timeout", "1", "--lease-seconds", "5", "--grace", "1.5",
                            "--execute-settle", "1",
                            env=credentials(sandbox))  # fmt: skip
            assert run.code == 0, run
            assert "leased to other workers" not in run.out
        run = await cli(*args, env=credentials(sandbox), state=tmp_path)
        assert run.code == 0, run
        assert_paid_once(sandbox, [f"b-{n}" for n in range(count)])


async def test_rows_leased_elsewhere_are_shown_and_waited_for(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Issue 11, "after a crash, say what is happening": status, batch and resume show a
    row another worker holds, with its owner and the lease's end; resume exits 4 instead
    of "nothing"; resume --wait waits the lease out, then pays the row once."""
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    request = PayoffRequest(service="card", wallet_to=CARD, amount="7.00")
    params = _request_params(request)
    params["order_id"] = "held-1"
    # A lease that outlives the three commands below however loaded the machine is;
    # it is cut short afterwards for ``resume --wait`` to wait out.
    async with SQLiteLedger(db) as book:
        await book.begin(
            "enot", "held-1", params_hash(params), params,
            owner="other-host:4242:1:x", lease_seconds=600, order_id="held-1",
        )  # fmt: skip
    db.chmod(0o600)
    path = write_csv(tmp_path / "batch.csv", [
        {"key": "held-1", "provider": "enot", "method": "card", "recipient": CARD, "amount": "7.00"}
    ])  # fmt: skip
    env = credentials(sandbox)
    status, batch, resume = await cli_many(
        [["status", "--ledger", ledger],
         ["batch", str(path), "--ledger", ledger, "--no-progress"],
         ["resume", "--ledger", ledger, "--no-progress"]],
        env=env, state=tmp_path,
    )  # fmt: skip
    for run in (status, batch, resume):
        assert "leased to other workers" in run.out, run
        assert "other-host:4242:1:x" in run.out and "(in " in run.out, run
    assert status.code == 0
    assert batch.code == 4 and resume.code == 4, (batch, resume)
    assert calls(sandbox) <= 2  # batch's reads; nothing created

    # resume --wait starts while the lease has minutes left and says it waits; only then
    # is the lease cut short, so its wait is seen however slowly a loaded machine
    # starts it (a lease of a fixed few seconds was seen to run out first), and costs
    # no more than its next look (within a second).
    waiting = await asyncio.create_subprocess_exec(
        COMMAND, "resume", "--ledger", ledger, "--wait",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")},
             "COLUMNS": "80", **env},
    )  # fmt: skip
    assert waiting.stderr is not None
    said = b""
    while b"waiting for 1 payout(s) leased to 1 other worker(s)" not in said:
        line = await asyncio.wait_for(waiting.stderr.readline(), 60)
        assert line, said.decode()
        said += line
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE payouts SET lease_expires_at = ?", (time.time(),))
    connection.close()
    out, err = await asyncio.wait_for(waiting.communicate(), 60)
    run = Run(waiting.returncode if waiting.returncode is not None else -1,
              out.decode(), (said + err).decode())  # fmt: skip
    assert run.code == 0, run
    assert "held-1" in run.out and "succeeded" in run.out
    assert books(sandbox.state)[1]["held-1"] == 1
