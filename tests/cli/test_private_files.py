"""Issue 24: files the commands write are created anew (``O_EXCL | O_NOFOLLOW``, mode
0600) and renamed into place: a symbolic link planted at the temporary name or at the
target never redirects the write nor changes another file's mode; a directory as the
target is one ``error:`` line, not a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

import pytest

from payout_async.cli._args import CLIError
from payout_async.cli._files import create_new, write_private
from payout_async.ledger import SQLiteLedger, new_encryption_key

from .support import COMMAND, cli, cli_many
from .test_hostile_text import _hostile_ledger

VICTIM_TEXT = "do not touch\n"


def _victim(path: Path) -> Path:
    path.write_text(VICTIM_TEXT, encoding="utf-8")
    path.chmod(0o644)
    return path


def _untouched(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == VICTIM_TEXT
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


def _private_file(path: Path) -> None:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode), f"{path} is not a regular file"
    assert stat.S_IMODE(info.st_mode) == 0o600


async def test_export_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await _hostile_ledger(db)
    out = tmp_path / "out" / "export.csv"
    out.parent.mkdir()
    partial_victim = _victim(tmp_path / "partial-victim.txt")
    target_victim = _victim(tmp_path / "target-victim.txt")
    # The temporary name the previous main used, and the target itself.
    (out.parent / ".export.csv.partial").symlink_to(partial_victim)
    out.symlink_to(target_victim)
    run = await cli("export", "--ledger", f"sqlite:///{db}", "--output", str(out))
    assert run.code == 0, run
    _untouched(partial_victim)
    _untouched(target_victim)
    _private_file(out)
    assert out.read_text(encoding="utf-8").startswith("schema,key,")
    assert _names(out.parent) == {"export.csv", ".export.csv.partial"}  # no leftovers


async def test_export_never_replaces_the_ledger_or_any_database(tmp_path: Path) -> None:
    """``export -o`` naming the ledger (a slip of the finger) would destroy the record of
    what was paid -- and a batch run again on a new ledger would pay it all again."""
    db = tmp_path / "ledger.db"
    await _hostile_ledger(db)
    other = tmp_path / "other.db"
    async with SQLiteLedger(other):
        pass
    files = {path: path.read_bytes() for path in (db, other)}
    ledger = f"sqlite:///{db}"
    targets = [
        db,
        Path(f"{db}-wal"),
        Path(f"{db}-shm"),
        other,
        tmp_path / ".." / db.parent.name / db.name,
    ]
    runs = await cli_many([["export", "--ledger", ledger, "-o", str(t)] for t in targets])
    for target, run in zip(targets, runs, strict=True):
        assert run.code == 2 and len(run.errors) == 1, (target, run)
        assert "the command reads it" in run.err or "SQLite database" in run.err, run
    assert {path: path.read_bytes() for path in files} == files
    assert (await cli("status", "--ledger", ledger)).code == 0


async def test_export_never_replaces_the_ledgers_key_or_the_config(tmp_path: Path) -> None:
    """Without its key file a ledger's sealed recipients cannot be read again."""
    db = tmp_path / "ledger.db"
    await _hostile_ledger(db)
    key = tmp_path / "ledger.key"
    key.write_text(new_encryption_key() + "\n", encoding="utf-8")
    config = tmp_path / "payouts.toml"
    config.write_text(f'ledger = "sqlite:///{db}"\n', encoding="utf-8")
    for path in (key, config):
        path.chmod(0o600)
    before = {path: path.read_bytes() for path in (key, config)}
    runs = await cli_many([
        ["export", "--ledger", f"sqlite:///{db}", "--ledger-key-file", str(key), "-o", str(key)],
        ["export", "--config", str(config), "-o", str(config)],
    ])  # fmt: skip
    for run in runs:
        assert run.code == 2 and "the command reads it" in run.err, run
    assert {path: path.read_bytes() for path in before} == before


def test_write_private_never_replaces_a_database_or_its_log(tmp_path: Path) -> None:
    for name, head in [("db", b"SQLite format 3\x00"), ("wal", b"\x37\x7f\x06\x82")]:
        path = tmp_path / name
        path.write_bytes(head + b"rest")
        with pytest.raises(CLIError, match="SQLite database"):
            write_private(path, ["x"])
        assert path.read_bytes() == head + b"rest"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "db")  # a link is replaced, its target left alone
    write_private(link, ["x"])
    assert link.read_text(encoding="utf-8") == "x" and not link.is_symlink()


async def test_export_to_a_directory_or_a_missing_one_is_one_error_line(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await _hostile_ledger(db)
    ledger = f"sqlite:///{db}"
    runs = await cli_many([
        ["export", "--ledger", ledger, "-o", str(tmp_path)],
        ["export", "--ledger", ledger, "-o", str(tmp_path / "none" / "x.csv")],
    ])  # fmt: skip
    for run in runs:
        assert run.code == 2 and len(run.errors) == 1, run
        assert "Traceback" not in run.err
    assert "is a directory" in runs[0].err
    # Two processes closing one SQLite file at once may each leave its write-ahead log
    # to the other: those are SQLite's files, not the export's.
    assert _names(tmp_path) - {"ledger.db-wal", "ledger.db-shm"} == {"ledger.db"}


async def _write_sandbox_config(config: Path) -> None:
    """``payout-async sandbox --write-config CONFIG`` until it has written it."""
    process = await asyncio.create_subprocess_exec(
        COMMAND, "sandbox", "--port", "0", "--write-config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        while b"settings written" not in await asyncio.wait_for(process.stdout.readline(), 30):
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


REAL_CONFIG = """ledger = "sqlite:///payouts.db"
[enot]
user_id = "real"
secret_key = "real secret"
"""


@pytest.mark.parametrize(
    "text",
    [REAL_CONFIG, REAL_CONFIG + 'base_url = "https://enot.io"\n', VICTIM_TEXT, "not toml ["],
    ids=["real providers", "a real base_url", "other text", "unreadable"],
)
async def test_sandbox_write_config_never_replaces_a_real_config(tmp_path: Path, text: str) -> None:
    """An operator's config -- the providers' credentials -- is not overwritten with the
    sandbox's, nor is any other file; a link to one is left as it is too."""
    config = tmp_path / "payouts.toml"
    config.write_text(text, encoding="utf-8")
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    for target in (config, link):
        run = await cli("sandbox", "--port", "0", "--write-config", str(target))
        assert run.code == 2 and "not a sandbox config" in run.err, run
        assert "listening" not in run.out  # refused before serving
    assert config.read_text(encoding="utf-8") == text and link.is_symlink()


async def test_sandbox_write_config_replaces_its_own_config_not_a_link_target(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sandbox.toml"
    await _write_sandbox_config(config)
    first = config.read_text(encoding="utf-8")
    await _write_sandbox_config(config)  # a new port: the config of the last run
    assert config.read_text(encoding="utf-8") != first and "[enot]" in first
    _private_file(config)
    # A link to a sandbox config is replaced by a file of its own; its target stays.
    (tmp_path / "kept.toml").write_text(first, encoding="utf-8")
    link = tmp_path / "link.toml"
    link.symlink_to(tmp_path / "kept.toml")
    await _write_sandbox_config(link)
    assert not link.is_symlink() and (tmp_path / "kept.toml").read_text("utf-8") == first
    _private_file(link)


def test_create_new_refuses_an_existing_name_or_a_link(tmp_path: Path) -> None:
    victim = _victim(tmp_path / "victim")
    (tmp_path / "link").symlink_to(victim)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("link", "dangling", "victim"):
        with pytest.raises(FileExistsError):
            create_new(tmp_path / name)
    assert not (tmp_path / "nowhere").exists()
    _untouched(victim)
    os.close(create_new(tmp_path / "fresh"))
    _private_file(tmp_path / "fresh")


def test_write_private_replaces_a_link_without_following_it(tmp_path: Path) -> None:
    victim = _victim(tmp_path / "victim")
    target = tmp_path / "target"
    target.symlink_to(victim)
    write_private(target, ["a\n", "b\n"])
    _untouched(victim)
    _private_file(target)
    assert target.read_text(encoding="utf-8") == "a\nb\n"
