"""A long wait says what it waits for and until when: a lost answer's Enot grace and
IntellectMoney settle window, in ``batch``, ``resume`` and the worker's log."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import pytest

from payout_async.sandbox import FaultKind, Sandbox

from ..payouts.support import fast_config
from .support import assert_paid_once, cli, credentials, good_rows, write_csv
from .test_queue_cli import line_with, spawn

#: A short grace and settle window; a lost answer is waited out from its request's
#: timeout plus a tenth of the lease at the latest.
SHORT = ["--request-timeout", "1", "--lease-seconds", "5", "--grace", "3",
         "--execute-settle", "3"]  # fmt: skip
CLOCK = r"until \d\d:\d\d:\d\d"
GRACE = "the 3 s Enot grace after a lost answer for 1 payout, " + CLOCK
SETTLE = "the 3 s IntellectMoney settle window after a lost execute answer for 1 payout, " + CLOCK


def lose_first_answers(sandbox: Sandbox) -> None:
    """The first Enot create and IntellectMoney execute meet a gateway's 502: nothing
    happened, but the client cannot know it, so each waits its window out."""
    sandbox.faults.script("enot.create", kind=FaultKind.HTTP_502, nth=1)
    sandbox.faults.script("im.execute", kind=FaultKind.HTTP_502, nth=1)


@pytest.mark.parametrize("command", ["batch", "resume"])
async def test_batch_and_resume_say_what_they_wait_for(tmp_path: Path, command: str) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    async with Sandbox(config=fast_config()) as sandbox:
        env = credentials(sandbox)
        lose_first_answers(sandbox)
        if command == "batch":
            run = await cli("batch", str(path), "--ledger", ledger, *SHORT, env=env,
                            state=tmp_path)  # fmt: skip
        else:
            queued = await cli("enqueue", str(path), "--ledger", ledger, state=tmp_path)
            assert queued.code == 0, queued
            run = await cli("resume", "--ledger", ledger, *SHORT, env=env, state=tmp_path)
        assert run.code == 0, run
        assert re.search("waiting out .*" + GRACE, run.err), run
        assert re.search("waiting out .*" + SETTLE, run.err), run
        assert "waiting out" not in run.out  # progress, not a result
        if command == "resume":
            assert "enot: finishing up to 1 payout(s)..." in run.err, run
        assert_paid_once(sandbox, ["b-0", "b-1"])


async def test_no_progress_says_no_wait(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    async with Sandbox(config=fast_config()) as sandbox:
        lose_first_answers(sandbox)
        run = await cli("batch", str(path), "--ledger", ledger, *SHORT, "--no-progress",
                        env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    assert "waiting out" not in run.err + run.out


async def test_a_worker_logs_what_it_waits_for(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    async with Sandbox(config=fast_config()) as sandbox:
        queued = await cli("enqueue", str(path), "--ledger", ledger, state=tmp_path)
        assert queued.code == 0, queued
        lose_first_answers(sandbox)
        env = {**credentials(sandbox), "PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
        worker = await spawn("worker", "--ledger", ledger, *SHORT, "--log-format", "json",
                             env=env)  # fmt: skip
        line = await line_with(worker.stderr, "waiting out")
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.communicate(), 60)
    logged = json.loads(line)
    assert logged["level"] == "INFO", logged
    assert re.search(f"({GRACE})|({SETTLE})", logged["message"]), logged


async def test_a_retry_after_hold_is_said(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = write_csv(tmp_path / "batch.csv", good_rows(2)[1:])  # one Enot payout
    async with Sandbox(config=fast_config(retry_after=2)) as sandbox:
        sandbox.faults.script("enot.create", kind=FaultKind.RATE_LIMIT, nth=1)
        run = await cli("batch", str(path), "--ledger", ledger, *SHORT,
                        env=credentials(sandbox), state=tmp_path)  # fmt: skip
        assert run.code == 0, run
        assert_paid_once(sandbox, ["b-1"])
    assert re.search("waiting out the provider's Retry-After hold for 1 payout, " + CLOCK,
                     run.err), run  # fmt: skip
