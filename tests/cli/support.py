"""Running the installed ``payout-async`` command against a sandbox in this process."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from payout_async.cli._sandbox import environment
from payout_async.sandbox import Sandbox

from ..payouts.support import books
from . import forkserver

__all__ = [
    "CARD",
    "COMMAND",
    "Run",
    "assert_paid_once",
    "calls",
    "cli",
    "cli_many",
    "credentials",
    "good_rows",
    "write_csv",
]

CARD = "4111111111111111"
#: The console script pip installed beside this interpreter.
COMMAND = str(Path(sys.executable).with_name("payout-async"))
HEADER = ["key", "provider", "method", "recipient", "amount", "bank_id", "description"]


@attrs.frozen
class Run:
    """What one run of the command did."""

    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        """The stderr lines that report an error."""
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def _environment(env: dict[str, str] | None, state: Path | None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")}
    base["COLUMNS"] = "80"
    if state is not None:
        base["PAYOUT_ASYNC_STATE_DIR"] = str(state)
    return {**base, **(env or {})}


async def cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    state: Path | None = None,
    wait: float = 120,
) -> Run:
    """Run ``payout-async ARGS`` (``state``: the key registry's directory): a child of
    this test process's fork server (``forkserver.py``), or the console script itself
    with ``PAYOUT_ASYNC_TEST_FORKSERVER=0``."""
    if forkserver.enabled():
        code, out_bytes, err_bytes = await asyncio.wait_for(
            forkserver.run([COMMAND, *args], _environment(env, state), cwd), wait
        )
        return Run(code, out_bytes.decode(), err_bytes.decode())
    process = await asyncio.create_subprocess_exec(
        COMMAND, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=_environment(env, state), cwd=cwd,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), wait)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def cli_many(runs: Sequence[Sequence[str]], **kwargs: Any) -> list[Run]:
    """Several independent runs at once (start-up is most of a run's cost)."""
    return list(await asyncio.gather(*(cli(*args, **kwargs) for args in runs)))


def credentials(sandbox: Sandbox) -> dict[str, str]:
    """The sandbox's credentials and base URLs as environment variables (as
    ``payout-async sandbox`` prints them)."""
    return environment(sandbox)


def write_csv(path: Path, rows: list[dict[str, str]], header: Sequence[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(header))
        writer.writeheader()
        writer.writerows(rows)
    return path


def good_rows(count: int, prefix: str = "b") -> list[dict[str, str]]:
    """Card payouts, IntellectMoney on even rows (Description = key), Enot on odd."""
    rows = []
    for n in range(count):
        provider = "intellectmoney" if n % 2 == 0 else "enot"
        rows.append({
            "key": f"{prefix}-{n}", "provider": provider, "method": "card", "recipient": CARD,
            "amount": f"{10 + n}.00", "bank_id": "",
            "description": f"{prefix}-{n}" if provider == "intellectmoney" else "",
        })  # fmt: skip
    return rows


def calls(sandbox: Sandbox) -> int:
    """Requests the sandbox has answered so far."""
    return sum(sandbox.faults.call_counts.values())


def assert_paid_once(sandbox: Sandbox, keys: Sequence[str]) -> None:
    """Each IntellectMoney key (even rows) executed once, each Enot key created once."""
    executed, created = books(sandbox.state)
    assert sandbox.duplicates() == []
    for key in keys:
        paid = executed[key] + created[key]
        assert paid == 1, (key, paid)
