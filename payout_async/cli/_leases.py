"""Rows other workers hold: who holds them and until when, and waiting them out.

After a crash or beside a running batch, some rows are leased to another process.
``resume`` cannot take them until the lease ends (at once, for a dead process of this
host: ``Payouts.resume`` checks), so the commands list them instead of saying
"nothing", and ``resume --wait`` waits for them with a progress line.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Iterable, Sequence

from ..ledger import ACTIVE_STATES, Ledger, PayoutRecord
from ._console import Column, render_table, show, terminal_width

__all__ = ["describe_wait", "leased_rows", "print_leases", "until"]

_COLUMNS = (
    Column("key"),
    Column("provider"),
    Column("state"),
    Column("held until"),
    Column("lease owner", "wrap", minimum=20),
)


def until(timestamp: float | None, now: float | None = None) -> str:
    """``12:03:04 (in 95 s)``: a lease's end in local time, and how far away it is."""
    if timestamp is None:
        return ""
    now = time.time() if now is None else now
    clock = datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")
    left = timestamp - now
    return f"{clock} (in {left:.0f} s)" if left >= 0 else f"{clock} (ended)"


def _owner(owner: str | None) -> str:
    """The lease owner as recorded, marked when it is a process of this host."""
    if not owner:
        return ""
    host = owner.split(":", 1)[0]
    return f"{owner} (this host)" if host == socket.gethostname() else owner


async def leased_rows(
    ledger: Ledger, providers: Iterable[str], *, keys: set[tuple[str, str]] | None = None
) -> list[PayoutRecord]:
    """Unfinished rows whose lease has not ended (held by another worker, since this
    process releases its own), optionally only those ``keys``."""
    now = time.time()
    found: list[PayoutRecord] = []
    for provider in providers:
        for state in sorted(ACTIVE_STATES):
            for record in await ledger.records(provider=provider, state=state):
                if keys is not None and (record.provider, record.key) not in keys:
                    continue
                if record.lease_owner and (record.lease_expires_at or 0) > now:
                    found.append(record)
    return sorted(found, key=lambda r: (r.lease_expires_at or 0, r.provider, r.key))


def print_leases(records: Sequence[PayoutRecord]) -> None:
    """A table of rows held by other workers, on stdout."""
    if not records:
        return
    show(
        f"{len(records)} payout(s) are leased to other workers (resume takes them when "
        "the lease ends, or at once if its process has died on this host):"
    )
    now = time.time()
    rows = [
        (r.key, r.provider, r.state.value, until(r.lease_expires_at, now), _owner(r.lease_owner))
        for r in records
    ]
    for line in render_table(_COLUMNS, rows, width=terminal_width()):
        show(line)


def describe_wait(records: Sequence[PayoutRecord]) -> str:
    """One progress line while waiting for leases to end."""
    ends = [r.lease_expires_at for r in records if r.lease_expires_at is not None]
    owners = {r.lease_owner for r in records}
    next_end = until(min(ends)) if ends else "unknown"
    return (
        f"waiting for {len(records)} payout(s) leased to {len(owners)} other worker(s); "
        f"next lease ends {next_end}"
    )
