"""Every command logs what it does (``--log-level``, ``-v``/``-q``, ``--log-format``,
INFO by default for ``worker``), and ends quietly when its reader closes the output
(``| head``) -- issue 25."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import CARD, COMMAND, cli, credentials, good_rows, write_csv


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def test_json_logs_carry_each_transition_and_no_card(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(4))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = await cli(
        "batch", str(path), "--ledger", ledger, "--no-progress", "--log-format", "json", "-v",
        env=credentials(sandbox), state=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run
    lines = [json.loads(line) for line in run.err.splitlines() if line.startswith("{")]
    moves = [line for line in lines if "to" in line]
    assert {line["key"] for line in moves if line["to"] == "succeeded"} == {
        f"b-{n}" for n in range(4)
    }
    for line in moves:
        assert {"time", "level", "key", "provider", "from", "to", "attempt"} <= set(line)
    assert CARD not in run.err
    quiet = await cli("status", "--ledger", ledger, "-q", "--log-format", "json")
    assert quiet.code == 0, quiet
    assert not [line for line in quiet.err.splitlines() if line.startswith("{")], quiet


async def test_text_logs_follow_the_level(sandbox: Sandbox, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = credentials(sandbox)
    silent = await cli(
        "batch", str(path), "--ledger", ledger, "--no-progress", env=env, state=tmp_path
    )
    assert silent.code == 0, silent
    assert " INFO " not in silent.err  # WARNING by default for batch
    path = write_csv(tmp_path / "more.csv", good_rows(2, prefix="c"))
    loud = await cli(
        "batch", str(path), "--ledger", ledger, "--no-progress", "--log-level", "info",
        env=env, state=tmp_path,
    )  # fmt: skip
    assert loud.code == 0, loud
    assert " INFO payout c-0 (" in loud.err


async def test_a_closed_pipe_ends_the_command_quietly(sandbox: Sandbox, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(6))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = await cli(
        "batch", str(path), "--ledger", ledger, env=credentials(sandbox), state=tmp_path
    )
    assert run.code == 0, run
    for command in (["status", "--json"], ["export"], ["status"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written: `| head -c 0`
        try:
            process = await asyncio.create_subprocess_exec(
                COMMAND, *command, "--ledger", ledger,
                stdout=write, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        finally:
            os.close(write)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert b"Traceback" not in err and b"BrokenPipe" not in err, (command, err)
        assert process.returncode == 141, (command, process.returncode, err)


def test_main_in_process_gives_the_logger_back(tmp_path: Path) -> None:
    """``main()`` called inside a host program (or a test session) leaves the
    ``payout_async`` logger as it found it: handlers, level and propagation."""
    import logging

    from payout_async.cli import main

    logger = logging.getLogger("payout_async")
    before = (logger.handlers[:], logger.level, logger.propagate)
    assert main(["ledger-key", "-v"]) == 0
    assert (logger.handlers[:], logger.level, logger.propagate) == before
    missing = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main(["status", "--ledger", missing, "-v"]) == 2  # an error exit gives it back too
    assert (logger.handlers[:], logger.level, logger.propagate) == before
