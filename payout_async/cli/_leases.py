"""Rows other workers hold: who holds them and until when, and waiting them out.

After a crash or beside a running batch, some rows are leased to another process.
``resume`` cannot take them until the lease ends (at once, for a dead process of this
host: ``Payouts.resume`` checks), so the commands list them instead of saying
"nothing", and ``resume --wait`` waits for them with a progress line.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..ledger import ACTIVE_STATES, LeaseHolder, Ledger, PayoutRecord
from ..payouts._owner import host_name, owner_is_dead
from ._console import Column, render_table, show, terminal_width

__all__ = [
    "describe_wait",
    "lease_holders",
    "leased_rows",
    "print_leases",
    "print_workers",
    "until",
    "worker_views",
]

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
    if owner.split(":", 1)[0] != host_name():
        return owner
    return f"{owner} (this host, process ended)" if owner_is_dead(owner) else f"{owner} (this host)"


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


_WORKER_COLUMNS = (
    Column("payouts held"),
    Column("until"),
    Column("worker (lease owner)", "wrap", minimum=20),
)


async def lease_holders(ledger: Ledger, providers: Iterable[str]) -> list[LeaseHolder]:
    """The workers holding live leases on ``providers``' rows (one entry per owner)."""
    merged: dict[str, tuple[int, float]] = {}
    for provider in providers:
        for holder in await ledger.lease_holders(provider=provider):
            rows, latest = merged.get(holder.owner, (0, 0.0))
            merged[holder.owner] = (rows + holder.rows, max(latest, holder.expires_at))
    return [
        LeaseHolder(owner=owner, rows=rows, expires_at=expires)
        for owner, (rows, expires) in sorted(merged.items())
    ]


def print_workers(holders: Sequence[LeaseHolder]) -> None:
    """A table of the workers holding payouts, on stdout."""
    if not holders:
        return
    show(f"{len(holders)} worker(s) hold payouts now:")
    now = time.time()
    rows = [(str(h.rows), until(h.expires_at, now), _owner(h.owner)) for h in holders]
    for line in render_table(_WORKER_COLUMNS, rows, width=terminal_width()):
        show(line)


def worker_views(holders: Sequence[LeaseHolder]) -> list[dict[str, Any]]:
    """The ``workers`` section of a JSON document."""
    return [
        {
            "owner": h.owner,
            "rows": h.rows,
            "expires_at": h.expires_at,
            "ended": owner_is_dead(h.owner),
        }
        for h in holders
    ]
