"""Runs a page's code blocks, in order, as a reader would: in an empty folder of their
own, with a sandbox running and its settings in the environment -- the ``export`` lines
``payout-async sandbox`` prints -- and ``PAYOUT_ASYNC_LEDGER_KEY`` set.

What each kind of block must do (docs/getting-started.md, "About the examples", says it in short):

- ``python`` without a title: executed as a script (``__name__ == "__main__"``), in one
  namespace per page, so a block may use what an earlier block of the page defined.
  With a title that is a file of the repository (``docs/examples/web_app.py``): equal
  to that file (tests/payouts/test_pay_wait.py and tests/test_readme.py run it). With
  another title (``conftest.py``): written to that file, which a later shell block of
  the page must use.
- ``sh``: every command runs, in order, and must exit 0. ``payout-async ...`` runs the
  installed command line; ``python ...`` this interpreter; ``export NAME=VALUE`` sets a
  variable (``export NAME=...`` names one the sandbox provides -- it must be set);
  ``chmod``; ``pip install ...`` is not run but must be one of ``INSTALLS``. The
  commands that serve until stopped (``sandbox``, ``worker``) are stopped with SIGTERM
  once ready (the sandbox, given ``--port 0``) or after ``WORKER_SECONDS``, and must
  exit 0 then.
- ``toml`` and ``csv``: a title, the file written there (a ``"..."`` TOML value is
  filled in with the sandbox's value of that setting), and a later shell block that
  uses it. ``json``: parsed. ``sql``: executed on a ledger's tables (``title="SQLite"``
  or ``title="PostgreSQL"``).
  ``ini`` (systemd units): parsed; ``ExecStart`` must be a valid payout-async command.
  ``yaml`` (compose files): parsed; each ``payout-async`` command valid, each
  ``depends_on`` a service of the file.
- Any other block, or one a rule above cannot run, fails -- unless marked
  ``<!-- docs-test: skip REASON -->``.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import csv
import io
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

from payout_async.cli import build_parser
from payout_async.cli._sandbox import environment
from payout_async.ledger import SQLiteLedger, new_encryption_key
from payout_async.sandbox import Sandbox, SandboxConfig

from .blocks import ROOT, Block

#: The install commands the docs may show (``pip install`` lines are checked, not run).
INSTALLS = frozenset({
    "pip install payout-async",
    "pip install 'payout-async[postgres]'",
    "pip install 'payout-async[pytest]'",
    "pip install .",
    "pip install -e '.[test]'",
    "pip install -e '.[docs]'",
    "pip install -e '.[bench,postgres]'",
})  # fmt: skip
#: How long a documented ``payout-async worker`` runs before it is sent SIGTERM.
WORKER_SECONDS = 6.0
#: A command's time limit: a stuck one fails the test instead of hanging the suite.
COMMAND_TIMEOUT = 180.0

#: ``[section] name`` of a TOML config -> the sandbox's environment variable.
_TOML_SETTINGS = {
    ("intellectmoney", "user_token"): "PAYOUT_ASYNC_IM_USER_TOKEN",
    ("intellectmoney", "secret_key"): "PAYOUT_ASYNC_IM_SECRET_KEY",
    ("intellectmoney", "bearer_token"): "PAYOUT_ASYNC_IM_BEARER_TOKEN",
    ("intellectmoney", "base_url"): "PAYOUT_ASYNC_IM_BASE_URL",
    ("enot", "user_id"): "PAYOUT_ASYNC_ENOT_USER_ID",
    ("enot", "secret_key"): "PAYOUT_ASYNC_ENOT_SECRET_KEY",
    ("enot", "base_url"): "PAYOUT_ASYNC_ENOT_BASE_URL",
    ("", "ledger_key"): "PAYOUT_ASYNC_LEDGER_KEY",
}


class ThreadedSandbox:
    """A ``Sandbox`` on an event loop of its own thread, so that the examples can run
    ``asyncio.run()`` and subprocesses against it."""

    def __init__(self, config: SandboxConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.sandbox = Sandbox(config=config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def __enter__(self) -> Sandbox:
        self._thread.start()
        self.call(self.sandbox.start())
        return self.sandbox

    def __exit__(self, *exc: object) -> None:
        self.call(self.sandbox.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def sandbox_environment(sandbox: Sandbox, ledger: str) -> dict[str, str]:
    """What ``payout-async sandbox`` tells a reader to export, a ledger key, and the
    ledger URL ``export PAYOUT_ASYNC_LEDGER=...`` stands for."""
    return {
        **environment(sandbox),
        "PAYOUT_ASYNC_ENOT_ADDITIONAL_KEY": sandbox.credentials.enot_additional_key,
        "PAYOUT_ASYNC_LEDGER_KEY": new_encryption_key(),
        "PAYOUT_ASYNC_LEDGER": ledger,
    }


class PageRun:
    """The state of one page's run: its folder, namespace and files still to be used."""

    def __init__(self, folder: Path, provided: dict[str, str]) -> None:
        self.folder = folder
        self.provided = provided  # what ``export NAME=...`` may refer to
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.unused: dict[str, Block] = {}  # files written, not yet used by a command

    def run(self, block: Block) -> None:
        runner = getattr(self, "_" + block.language, None)
        assert runner is not None, (
            f"{block.where}: a {block.language or 'plain'} block the docs tests cannot run: "
            "give it a language they run, or mark it <!-- docs-test: skip REASON -->"
        )
        runner(block)

    def finish(self) -> None:
        for name, block in self.unused.items():
            raise AssertionError(f"{block.where}: {name} is written, but no command uses it")

    def _file(self, block: Block, text: str) -> None:
        assert block.title, f"{block.where}: a {block.language} block needs a title= file name"
        path = self.folder / block.title
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)  # as a config file must be
        self.unused[block.title] = block

    def _python(self, block: Block) -> None:
        if block.title and (ROOT / block.title).is_file():
            expected = (ROOT / block.title).read_text(encoding="utf-8")
            assert block.code == expected, f"{block.where}: differs from {block.title}"
            return
        if block.title:
            self._file(block, block.code)
            return
        exec(compile(block.code, block.where, "exec"), self.namespace)

    def _toml(self, block: Block) -> None:
        settings = tomllib.loads(block.code)

        def fill(match: re.Match[str], section: list[str] = [""]) -> str:  # noqa: B006
            line = match.group(0)
            header = re.match(r"\s*\[(\w+)\]", line)
            if header:
                section[0] = header[1]
                return line
            name = line.split("=")[0].strip()
            variable = _TOML_SETTINGS.get((section[0], name))
            if '"..."' not in line:
                return line
            assert variable, f"{block.where}: no sandbox value for {section[0]}.{name}"
            return line.replace('"..."', json.dumps(self.provided[variable]))

        assert isinstance(settings, dict)
        self._file(block, re.sub(r"(?m)^.*$", fill, block.code))

    def _csv(self, block: Block) -> None:
        rows = list(csv.reader(io.StringIO(block.code)))
        assert rows and all(len(row) == len(rows[0]) for row in rows), block.where
        self._file(block, block.code)

    def _json(self, block: Block) -> None:
        json.loads(block.code)

    def _sql(self, block: Block) -> None:
        """Run on a ledger's tables: ``title="SQLite"`` or ``title="PostgreSQL"``."""
        assert block.title in ("SQLite", "PostgreSQL"), f"{block.where}: title the database"
        if block.title == "PostgreSQL":
            asyncio.run(_run_on_postgres(block.code))
            return
        database = self.folder / "sql-example.db"

        async def create() -> None:
            async with SQLiteLedger(database):
                pass

        asyncio.run(create())
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.executescript(block.code)

    def _ini(self, block: Block) -> None:
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read_string(block.code)
        assert {"Unit", "Service", "Install"} <= set(unit.sections()), block.where
        command = shlex.split(unit["Service"]["ExecStart"])
        assert command[0].startswith("/") and command[0].endswith("/payout-async"), block.where
        parse_command(command[1:], block)

    def _yaml(self, block: Block) -> None:
        document = yaml.safe_load(block.code)
        services = document["services"]
        for name, service in services.items():
            for other in service.get("depends_on", []):
                assert other in services, f"{block.where}: {name} depends on unknown {other}"
            command = service.get("command")
            if service.get("entrypoint") == ["payout-async"] and command is not None:
                parse_command(command if isinstance(command, list) else shlex.split(command), block)

    def _sh(self, block: Block) -> None:
        for line in logical_lines(block.code):
            command: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word != "&&":
                    command.append(word)
                elif command:
                    self._command(command, block)
                    command = []

    def _command(self, words: list[str], block: Block) -> None:
        where = f"{block.where}: {shlex.join(words)}"
        name, args = words[0], words[1:]
        if name == "pip":
            assert shlex.join(words) in {shlex.join(shlex.split(i)) for i in INSTALLS}, (
                f"{where}: not one of the documented install commands"
            )
        elif name == "export":
            for assignment in args:
                variable, _, value = assignment.partition("=")
                if value == "...":
                    assert self.provided.get(variable), f"{where}: the tests provide no {variable}"
                    os.environ[variable] = self.provided[variable]
                else:
                    os.environ[variable] = value
        elif name == "chmod":
            (self.folder / args[1]).chmod(int(args[0], 8))
        elif name == "payout-async":
            self._use(args)
            self._payout_async(args, where)
        elif name == "python":
            self._use(args)
            finished = subprocess.run(
                [sys.executable, *args], cwd=self.folder, capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT, check=False,
            )  # fmt: skip
            assert finished.returncode == 0, f"{where}:\n{finished.stdout}\n{finished.stderr}"
        else:
            raise AssertionError(f"{where}: a command the docs tests do not run")

    def _use(self, args: list[str]) -> None:
        for arg in args:
            self.unused.pop(arg, None)
        if any(arg.startswith("test") or arg == "pytest" for arg in args):
            self.unused = {k: v for k, v in self.unused.items() if not k.endswith(".py")}

    def _payout_async(self, args: list[str], where: str) -> None:
        command = [sys.executable, "-m", "payout_async", *args]
        serving = args[:1] in (["sandbox"], ["worker"])
        if not serving:
            finished = subprocess.run(
                command, cwd=self.folder, capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT, check=False,
            )  # fmt: skip
            status = finished.returncode
            assert status == 0, f"{where}: exit {status}\n{finished.stderr}"
            return
        if args[0] == "sandbox":
            command += ["--port", "0"]
        with subprocess.Popen(
            command, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            try:
                if args[0] == "sandbox":
                    assert process.stdout is not None
                    for output in process.stdout:  # ready once it has said what to export
                        if "PAYOUT_ASYNC_ENOT_BASE_URL" in output:
                            break
                else:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(WORKER_SECONDS)
                process.send_signal(signal.SIGTERM)
                _, errors = process.communicate(timeout=COMMAND_TIMEOUT)
            finally:
                if process.poll() is None:
                    process.kill()
            assert process.returncode == 0, f"{where}: exit {process.returncode}\n{errors}"


async def _run_on_postgres(code: str) -> None:
    """``code`` on a PostgreSQL ledger's tables, in a schema made for it and dropped."""
    import asyncpg

    from payout_async.ledger import PostgresLedger

    from ..ledger.support import drop_schema, require_postgres

    dsn, schema = require_postgres(), f"docs_sql_{os.getpid()}_{threading.get_ident()}"
    try:
        async with PostgresLedger(dsn, schema=schema):
            pass
        connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            await connection.execute(code)
        finally:
            await connection.close()
    finally:
        await drop_schema(schema)


def logical_lines(code: str) -> Iterator[str]:
    """The shell lines of ``code``, continuation lines (``\\``) joined."""
    pending = ""
    for line in code.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            yield line


def parse_command(args: list[str], block: Block) -> None:
    """``payout-async ARGS`` must be a command line the parser accepts."""
    try:
        build_parser().parse_args(args)
    except SystemExit as exit:
        raise AssertionError(f"{block.where}: payout-async {shlex.join(args)}: {exit}") from None


_ALIASES = {"bash": "sh", "shell": "sh", "console": "sh", "systemd": "ini"}


def run_page(page_blocks: list[Block], folder: Path, provided: dict[str, str]) -> None:
    """Run ``page_blocks`` in order in ``folder`` (the current directory meanwhile)."""
    state = PageRun(folder, provided)
    for block in page_blocks:
        if block.skip is not None:
            assert len(block.skip) > 10, f"{block.where}: a skip marker must say why"
            continue
        language = _ALIASES.get(block.language, block.language)
        state.run(attrs.evolve(block, language=language))
    state.finish()
