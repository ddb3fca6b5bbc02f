"""The fork server the command-line tests run ``payout-async`` through
(``forkserver.py``) gives each run what a fresh process of the console script has:
nothing the package learns at import time depends on the environment or the process,
and a forked run answers as the console script does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from . import forkserver
from .support import COMMAND, _environment

IMPORT_ONLY = """
import json, os, sys

class Watched(os._Environ):
    read = set()
    def __getitem__(self, key):
        Watched.read.add(key)
        return super().__getitem__(key)

environ = Watched(os.environ._data, os.environ.encodekey, os.environ.decodekey,
                  os.environ.encodevalue, os.environ.decodevalue)
os.environ = environ
import payout_async.cli
from payout_async.payouts import _owner
caches = [f.cache_info().currsize for f in (_owner.host_name, _owner.boot_id, _owner.pid_namespace)]
print(json.dumps({"read": sorted(Watched.read), "caches": caches}))
"""


def test_importing_the_command_reads_no_setting_and_no_process_identity() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, check=True
    )
    seen = json.loads(done.stdout)
    assert [name for name in seen["read"] if name.startswith(("PAYOUT_ASYNC", "COLUMNS"))] == []
    assert seen["caches"] == [0, 0, 0]  # host name, boot id, PID namespace: learnt per run


async def test_a_forked_run_answers_as_the_console_script(tmp_path: Path) -> None:
    env = _environment({"PAYOUT_ASYNC_LEDGER": f"sqlite:///{tmp_path / 'none.db'}"}, tmp_path)
    for args in (["status"], ["status", "--json"], ["--version"], ["batch"], ["ledger-key"]):
        forked = await forkserver.run([COMMAND, *args], env, tmp_path)
        real = await asyncio.create_subprocess_exec(
            COMMAND, *args, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await real.communicate()
        assert forked[0] == real.returncode, args
        if args != ["ledger-key"]:  # a new random key each time
            assert (forked[1], forked[2]) == (out, err), args


async def test_a_child_that_cannot_start_leaves_the_server_serving(tmp_path: Path) -> None:
    """A run whose folder is gone fails alone (exit 1, the reason on stderr); the
    server, its socket and the next run are untouched."""
    env = _environment(None, tmp_path)
    code, _, err = await forkserver.run([COMMAND, "--version"], env, tmp_path / "gone")
    assert code == 1 and b"FileNotFoundError" in err
    code, out, _ = await forkserver.run([COMMAND, "--version"], env, tmp_path)
    assert code == 0 and out.startswith(b"payout-async ")
