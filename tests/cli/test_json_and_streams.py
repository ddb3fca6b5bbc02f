"""``--json`` on every command that had none, results on stdout, and a batch file
written by Excel in a Russian locale."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import CARD, cli, cli_many, credentials, good_rows, write_csv
from .test_queue_cli import FAST, line_with, spawn


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def test_worker_json_lines(sandbox: Sandbox, tmp_path: Path) -> None:
    count = 6
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(count))
    run = await cli("enqueue", str(path), "--ledger", ledger, state=tmp_path)
    assert run.code == 0, run
    env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
    worker = await spawn("worker", "--ledger", ledger, "--json", *FAST, env=env)
    started = json.loads(await line_with(worker.stdout, '"started"'))
    assert (started["command"], started["event"]) == ("worker", "started")
    assert started["providers"] == ["intellectmoney", "enot"]
    keys = set()
    while len(keys) < count:
        event = json.loads(await line_with(worker.stdout, '"payout"'))
        assert event["payout"]["status"] == "succeeded", event
        keys.add(event["payout"]["key"])
    worker.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 0, err.decode()[-3000:]
    (stopped,) = [json.loads(line) for line in out.decode().splitlines()]
    assert stopped["event"] == "stopped" and stopped["counts"] == {"succeeded": count}
    assert keys == {f"b-{n}" for n in range(count)}


async def test_export_ledger_key_and_dry_run_json(sandbox: Sandbox, tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(4))
    env = credentials(sandbox)
    run = await cli("batch", str(path), "--ledger", ledger, "--no-progress", env=env,
                    state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    export, key, status, dry, dry_json = await cli_many(
        [["export", "--ledger", ledger, "--json"],
         ["ledger-key", "--json"],
         ["ledger-key", "status", "--ledger", ledger, "--json"],
         ["batch", str(path), "--ledger", ledger, "--dry-run"],
         ["batch", str(path), "--ledger", ledger, "--dry-run", "--json"]],
        env=env, state=tmp_path,
    )  # fmt: skip
    for done in (export, key, status, dry, dry_json):
        assert done.code == 0, done
    document = json.loads(export.out)
    assert (document["command"], len(document["payouts"])) == ("export", 4)
    assert document["fields"][:3] == ["schema", "key", "provider"]
    assert all(CARD not in json.dumps(row) for row in document["payouts"])
    made = json.loads(key.out)
    assert made["command"] == "ledger-key new" and len(made["key"]) == 44
    assert len(made["key_id"]) == 8
    assert json.loads(status.out)["command"] == "ledger-key status"
    # The dry run's verdict is a result: stdout, like enqueue's and batch's.
    assert "4 row(s) are valid: 0 would be sent, 4 are already in the ledger" in dry.out, dry
    assert "would be sent" not in dry.err
    assert json.loads(dry_json.out)["to_send"] == 0


async def test_sandbox_json(tmp_path: Path) -> None:
    process = await spawn("sandbox", "--port", "0", "--json", env={})
    assert process.stdout is not None
    first = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    document = json.loads(first)
    assert document["command"] == "sandbox"
    assert document["url"].startswith("http://127.0.0.1:")
    environment = document["environment"]
    assert environment["PAYOUT_ASYNC_ENOT_BASE_URL"] == document["enot_url"]
    assert environment["PAYOUT_ASYNC_IM_BASE_URL"] == document["intellectmoney_url"]


async def test_demo_json_keeps_its_ledger(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    run = await cli("demo", "--count", "20", "--no-progress", "--json", "--ledger", str(db))
    assert run.code == 0, run
    document = json.loads(run.out)
    assert document["command"] == "demo" and document["duplicates"] == 0
    assert document["ledger"] == str(db) and db.exists()
    assert sum(sum(c.values()) for c in document["counts"].values()) == 20
    assert any("payout-async status --ledger" in c for c in document["commands"])
    status = await cli("status", *document["commands"][0].split()[2:], "--json")
    assert status.code == 0, status


async def test_excel_decimal_commas_are_said_once(tmp_path: Path) -> None:
    lines = ["Key;Provider;Method;Recipient;Amount"]
    lines += [f"r{n};enot;card;{CARD};1 50{n % 10},00" for n in range(40)]
    lines.append(f"bad;enot;card;{CARD};abc")
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    run = await cli("batch", str(path), "--ledger", f"sqlite:///{tmp_path / 'l.db'}",
                    "--dry-run", state=tmp_path)  # fmt: skip
    assert run.code == 2, run
    problems = [line for line in run.err.splitlines() if ": line " in line]
    assert len(problems) == 2, run  # the comma column once, the other bad row once
    assert "40 of 41 amounts use ',' as the decimal point (lines 2-41" in problems[0]
    assert "150.00" in problems[0] and "Use system separators" in problems[0]
    assert "41 bad row(s); nothing was sent." in run.err

    path.write_bytes(("\r\n".join(lines[:-1]) + "\r\n").encode())
    run = await cli("batch", str(path), "--ledger", f"sqlite:///{tmp_path / 'l.db'}",
                    "--dry-run", state=tmp_path)  # fmt: skip
    assert "the whole Amount column uses ','" in run.err, run
