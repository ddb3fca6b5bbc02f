"""Helpers shared by the benchmark scripts: the sandbox in a process of its own, CPU
and memory readings, and table printing.

The sandbox runs as ``python -m payout_async sandbox --port 0 ...`` so that the
benchmark process's CPU time (``time.process_time()``) is the client's alone.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python benchmarks/NAME.py`` from a checkout
    sys.path.insert(0, str(ROOT))

from payout_async import EnotClient, IntellectMoneyClient  # noqa: E402
from payout_async.enot import PayoffRequest  # noqa: E402
from payout_async.intellectmoney import OperationRequest  # noqa: E402
from payout_async.ledger import LedgerState, PayoutRecord  # noqa: E402
from payout_async.sandbox import SandboxCredentials  # noqa: E402

__all__ = [
    "PAN",
    "ROOT",
    "SandboxProcess",
    "clients",
    "disagreement",
    "enot_request",
    "im_request",
    "machine",
    "median",
    "peak_rss_mb",
    "postgres_cpu_seconds",
    "process_cpu_seconds",
    "table",
]

#: A test card number (passes the Luhn check).
PAN = "4111111111111111"

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def im_request(key: str, amount: str = "1.00") -> OperationRequest:
    """An IntellectMoney card payout whose Description is its key, so that the sandbox's
    books say which payout an operation belongs to."""
    return OperationRequest(pan=PAN, amount=amount, description=key)


def enot_request(amount: str = "1.00", hook_url: str | None = None) -> PayoffRequest:
    """An Enot card payoff; ``Payouts`` derives its order_id from the key."""
    return PayoffRequest(service="card", wallet_to=PAN, amount=amount, hook_url=hook_url)


def clients(im_url: str, enot_url: str, **options: Any) -> tuple[IntellectMoneyClient, EnotClient]:
    """Both clients for a sandbox at these URLs, with its credentials; ``options``
    (``timeout``, ``retry``, ``limit``...) go to both."""
    creds = SandboxCredentials()
    im = IntellectMoneyClient(
        creds.im_user_token,
        creds.im_secret_key,
        bearer_token=creds.im_bearer_token,
        base_url=im_url,
        **options,
    )
    enot = EnotClient(creds.enot_user_id, creds.enot_secret_key, base_url=enot_url, **options)
    return im, enot


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by another process (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by a PostgreSQL server on this host: every live
    ``postgres`` process, plus what the postmaster has reaped from exited backends.
    NaN when there is none (a remote server). Other clients' queries count too."""
    total = 0.0
    found = False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 :].rsplit(")", 1)
        if name != "postgres":
            continue
        fields = rest.split()
        found = True
        total += int(fields[11]) + int(fields[12])
        if fields[1] == "1" or _comm(int(fields[1])) != "postgres":  # the postmaster
            total += int(fields[13]) + int(fields[14])
    return total / _CLK_TCK if found else float("nan")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * width for width in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


class SandboxProcess:
    """``payout-async sandbox`` in a child process on a free loopback port.

    ``options`` are the CLI's (``{"fault_rate": 0.2, "seed": 7}`` becomes
    ``--fault-rate 0.2 --seed 7``). Use as a context manager; ``stats()``,
    ``traffic()`` and ``reset()`` talk to its ``/_sandbox/`` endpoints,
    ``cpu_seconds()`` reads its CPU time. The sandbox accepts the default
    ``SandboxCredentials``.
    """

    def __init__(self, **options: object) -> None:
        self.args = [sys.executable, "-m", "payout_async", "sandbox", "--port", "0"]
        for name, value in options.items():
            if value is not None:
                self.args += ["--" + name.replace("_", "-"), str(value)]
        self.credentials = SandboxCredentials()
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())

    def __enter__(self) -> SandboxProcess:
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}
        process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=ROOT, env=env
        )
        self._process = process
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        for line in process.stdout:
            found = _LISTENING.search(line)
            if found:
                self.url = found.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.close()
            raise RuntimeError(f"the sandbox did not start: {self.stderr_tail()}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the sandbox (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._stderr.close()

    @property
    def pid(self) -> int:
        """The sandbox process id."""
        assert self._process is not None
        return self._process.pid

    @property
    def intellectmoney_url(self) -> str:
        """Base URL for ``IntellectMoneyClient``."""
        return self.url + "/personal/payout/"

    @property
    def enot_url(self) -> str:
        """Base URL for ``EnotClient``."""
        return self.url

    def cpu_seconds(self) -> float:
        """CPU seconds the sandbox has used so far."""
        return process_cpu_seconds(self.pid)

    def stats(self) -> dict[str, Any]:
        """``GET /_sandbox/stats``: counts, requests and faults by route, duplicates."""
        with urllib.request.urlopen(self.url + "/_sandbox/stats", timeout=60) as answer:
            payload: dict[str, Any] = json.load(answer)
        return payload

    def traffic(self) -> dict[str, list[float]]:
        """``GET /_sandbox/traffic``: when each request arrived, by route (the
        sandbox's monotonic clock, seconds)."""
        with urllib.request.urlopen(self.url + "/_sandbox/traffic", timeout=60) as answer:
            payload: dict[str, list[float]] = json.load(answer)
        return payload

    def reset(self) -> None:
        """``POST /_sandbox/reset``: empty books, restored balances, counters at zero."""
        request = urllib.request.Request(self.url + "/_sandbox/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()

    def stderr_tail(self, limit: int = 3000) -> str:
        """The end of the sandbox's stderr."""
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-limit:]
        except ValueError:
            return ""


async def drop_postgres_tables(dsn: str, prefix: str) -> None:
    """Drop what a ``PostgresLedger`` with this table prefix made (``drop_statement``)."""
    import asyncpg

    from payout_async.ledger._postgres import drop_statement

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(drop_statement(prefix))
    finally:
        await conn.close()


#: Where a payout ends with nothing paid: a payment in the books is a disagreement.
_UNPAID_ENDS = frozenset({LedgerState.FAILED, LedgerState.CANCELLED, LedgerState.REFUSED})


def disagreement(record: PayoutRecord, times: int) -> str | None:
    """Where one payout's ledger row and the provider's books (``times`` payments)
    disagree, or None: ``succeeded`` with no payment, or ended unpaid (failed,
    cancelled, refused) with one. A payment made twice is counted apart (duplicates)."""
    if (record.state is LedgerState.SUCCEEDED and not times) or (
        record.state in _UNPAID_ENDS and times
    ):
        state = record.state.value
        return f"{record.key}: {state} in the ledger, paid {times} time(s) in the books"
    return None
