"""Issue 24, "secrets on the command line": a command line is readable by every user
of the machine (``/proc/PID/cmdline``), so a secret flag with its value is refused
with an error naming its ``-file`` form (the value never repeated), a ``--ledger``
holding a password gets a warning, and a config or secret file that group or others
may read is refused, as ssh does, naming the ``chmod 600`` that fixes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .support import cli, cli_many, good_rows, write_csv

SECRET = "s3cr3t-VALUE-9f2c"
SECRET_FLAGS = (
    "--im-user-token",
    "--im-secret-key",
    "--im-bearer-token",
    "--enot-secret-key",
)


def _file(path: Path, text: str, mode: int) -> str:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return str(path)


async def test_a_secret_flag_with_its_value_is_refused(tmp_path: Path) -> None:
    batch = str(write_csv(tmp_path / "batch.csv", good_rows(2)))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    commands = []
    for flag in SECRET_FLAGS:
        commands += [
            ["batch", batch, "--dry-run", "--ledger", ledger, flag, SECRET],
            ["batch", batch, "--dry-run", "--ledger", ledger, f"{flag}={SECRET}"],
            ["resume", "--ledger", ledger, flag, SECRET],
        ]
    runs = await cli_many(commands, state=tmp_path)
    for command, run in zip(commands, runs, strict=True):
        flag = next(word for word in command if word.startswith(SECRET_FLAGS)).split("=")[0]
        assert run.code == 2 and len(run.errors) == 1, (command, run)
        assert f"{flag}-file FILE" in run.err and "/proc/PID/cmdline" in run.err, run
        assert SECRET not in run.err and SECRET not in run.out, run
    assert not (tmp_path / "ledger.db").exists()


async def test_a_ledger_url_with_a_password_is_warned_about(tmp_path: Path) -> None:
    with_password, without = await cli_many([
        ["status", "--ledger", f"postgresql://u:{SECRET}@127.0.0.1:1/db"],
        ["status", "--ledger", "postgresql://u@127.0.0.1:1/db"],
    ])  # fmt: skip
    assert "warning: --ledger holds a password" in with_password.err, with_password
    assert "PAYOUT_ASYNC_LEDGER" in with_password.err
    assert SECRET not in with_password.err and SECRET not in with_password.out
    assert "holds a password" not in without.err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620])
async def test_config_and_secret_files_open_to_others_are_refused(
    tmp_path: Path, mode: int
) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    batch = str(write_csv(tmp_path / "batch.csv", good_rows(2)))
    config = _file(tmp_path / "config.toml", f'[enot]\nsecret_key = "{SECRET}"\n', mode)
    secret = _file(tmp_path / "enot.key", SECRET + "\n", mode)
    key = _file(tmp_path / "ledger.key", SECRET + "\n", mode)
    commands = [
        ["batch", batch, "--dry-run", "--ledger", ledger, "--config", config],
        ["batch", batch, "--dry-run", "--ledger", ledger, "--enot-secret-key-file", secret],
        ["status", "--ledger", ledger, "--ledger-key-file", key],
    ]
    runs, from_env = await asyncio.gather(
        cli_many(commands, state=tmp_path),
        cli("status", "--ledger", ledger, env={"PAYOUT_ASYNC_CONFIG": config}),
    )
    runs.append(from_env)
    commands.append(["status", "(PAYOUT_ASYNC_CONFIG)"])
    for command, run, path in zip(commands, runs, [config, secret, key, config], strict=True):
        assert run.code == 2 and len(run.errors) == 1, (command, run)
        assert f"chmod 600 {path}" in run.errors[0], run
        assert SECRET not in run.err and SECRET not in run.out, run
    assert not (tmp_path / "ledger.db").exists()


#: A dry run reads the Enot balance: here at a closed loopback port (a warning).
CLOSED = {"PAYOUT_ASYNC_ENOT_BASE_URL": "http://127.0.0.1:9/",
          "PAYOUT_ASYNC_IM_BASE_URL": "http://127.0.0.1:9/"}  # fmt: skip


async def test_private_files_and_pipes_are_read(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    batch = str(write_csv(tmp_path / "batch.csv", good_rows(2)))
    config = _file(tmp_path / "config.toml", f'[enot]\nsecret_key = "{SECRET}"\n', 0o600)
    secret = _file(tmp_path / "enot.key", SECRET + "\n", 0o400)
    runs = await cli_many(
        [["batch", batch, "--dry-run", "--ledger", ledger, "--config", config],
         ["batch", batch, "--dry-run", "--ledger", ledger, "--enot-secret-key-file", secret],
         ["batch", batch, "--dry-run", "--ledger", ledger, "--enot-secret-key-file",
          "/dev/stdin"]],
        state=tmp_path, env=CLOSED,
    )  # fmt: skip
    for run in runs:
        assert "chmod" not in run.err and "open to other users" not in run.err, run
        assert SECRET not in run.err and SECRET not in run.out, run
