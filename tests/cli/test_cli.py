"""The command line, driven as a subprocess against a sandbox in this process."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.sandbox import Sandbox

from ..payouts.support import books, fast_config

CARD = "4111111111111111"


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payout_async", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def credentials(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "PAYOUT_ASYNC_IM_USER_TOKEN": c.im_user_token,
        "PAYOUT_ASYNC_IM_SECRET_KEY": c.im_secret_key,
        "PAYOUT_ASYNC_IM_BEARER_TOKEN": c.im_bearer_token,
        "PAYOUT_ASYNC_IM_BASE_URL": sandbox.intellectmoney_url,
        "PAYOUT_ASYNC_ENOT_USER_ID": c.enot_user_id,
        "PAYOUT_ASYNC_ENOT_SECRET_KEY": c.enot_secret_key,
        "PAYOUT_ASYNC_ENOT_BASE_URL": sandbox.enot_url,
    }


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, ["key", "provider", "method", "recipient", "amount", "bank_id", "description"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows(count: int) -> list[dict[str, str]]:
    rows = []
    for n in range(count):
        provider = "intellectmoney" if n % 2 == 0 else "enot"
        rows.append({
            "key": f"b-{n}", "provider": provider, "method": "card", "recipient": CARD,
            "amount": f"{10 + n}.00", "bank_id": "",
            "description": f"b-{n}" if provider == "intellectmoney" else "",
        })  # fmt: skip
    return rows


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def assert_paid_once(sandbox: Sandbox, count: int) -> None:
    executed, created = books(sandbox.state)
    assert sandbox.duplicates() == []
    for n in range(count):
        paid = executed if n % 2 == 0 else created
        assert paid[f"b-{n}"] == 1, f"b-{n}"


async def test_demo_exits_zero_with_no_duplicates() -> None:
    code, out, err = await cli("demo", "--count", "60")
    assert code == 0, err[-2000:]
    assert "duplicates in the sandbox's books: 0" in out
    assert "succeeded" in out


async def test_bad_rows_are_all_reported_and_nothing_is_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    rows = good_rows(4)
    rows[1]["amount"] = "10.001"
    rows[2]["recipient"] = "4111111111111112"  # fails Luhn
    rows[3]["provider"] = "paypal"
    path = write_csv(tmp_path / "batch.csv", rows)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    for extra in ([], ["--dry-run"]):
        code, _, err = await cli("batch", str(path), "--ledger", ledger, *extra,
                                 env=credentials(sandbox))  # fmt: skip
        assert code == 2
        assert "line 3: amount" in err
        assert "line 4: pan" in err
        assert "line 5: provider" in err
        assert "nothing was sent" in err
    assert sum(sandbox.faults.call_counts.values()) == 0
    assert not (tmp_path / "ledger.db").exists()


async def test_batch_then_rerun_pays_nothing_twice_and_status_json(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(10))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = credentials(sandbox)
    code, out, err = await cli("batch", str(path), "--ledger", ledger, "--json", env=env)
    assert code == 0, err[-2000:]
    results = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["key"] for r in results) == sorted(f"b-{n}" for n in range(10))
    assert {r["status"] for r in results} == {"succeeded"}
    calls = sum(sandbox.faults.call_counts.values())

    code, out, _ = await cli("batch", str(path), "--ledger", ledger, "--json", env=env)
    assert code == 0
    assert sum(sandbox.faults.call_counts.values()) == calls  # nothing sent again
    assert_paid_once(sandbox, 10)

    code, out, _ = await cli("status", "--ledger", ledger, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["intellectmoney"]["counts"]["succeeded"] == 5
    assert report["enot"]["counts"]["succeeded"] == 5
    code, out, _ = await cli("status", "b-1", "--ledger", ledger, "--json")
    (row,) = json.loads(out)
    assert row["state"] == "succeeded" and row["history"][0]["to"] == "pending"


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
async def test_interrupted_batch_reruns_without_paying_twice(
    tmp_path: Path, how: signal.Signals
) -> None:
    count = 60
    slow = fast_config(im_in_process_after=0.2, im_final_after=0.6, enot_final_after=0.6)
    async with Sandbox(config=slow) as sandbox:
        path = write_csv(tmp_path / "batch.csv", good_rows(count))
        ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        args = ["batch", str(path), "--ledger", ledger, "--concurrency", "5",
                "--no-progress"]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payout_async", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **credentials(sandbox)},
        )  # fmt: skip
        await asyncio.sleep(1.5)
        process.send_signal(how)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        if how is signal.SIGINT:
            assert process.returncode == 130, err.decode()[-2000:]
            assert "nothing will be paid twice" in err.decode()
        else:
            # The killed worker's leases run 120 s more: the re-run takes them over at
            # once, as their owner is a dead process of this host.
            assert process.returncode == -signal.SIGKILL
        executed, created = books(sandbox.state)
        assert 0 < sum(executed.values()) + sum(created.values()) < count

        code, _, err2 = await cli(*args, env=credentials(sandbox))
        assert code == 0, err2[-2000:]
        assert_paid_once(sandbox, count)


async def test_missing_credentials_is_bad_input(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    blank = {name: "" for name in os.environ if name.startswith("PAYOUT_ASYNC_")}
    code, _, err = await cli(
        "batch", str(path), "--ledger", f"sqlite:///{tmp_path}/l.db", env=blank
    )
    assert code == 2
    assert "PAYOUT_ASYNC_IM_USER_TOKEN" in err
