"""Rows other workers hold: who holds them and until when, and waiting them out.

A holder is named by its process and, when its owner name says it (``payouts._owner``),
the command running there: "batch pid 4242 on this host", not "2 workers" for the two
owners (one per provider) of one batch.

After a crash or beside a running batch, some rows are leased to another process.
``resume`` cannot take them until the lease ends (at once, for a dead process of this
host: ``Payouts.resume`` checks), so the commands list them instead of saying
"nothing", and ``resume --wait`` waits for them with a progress line.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..ledger import ACTIVE_STATES, LeaseHolder, Ledger, PayoutRecord
from ..payouts._owner import host_name, owner_is_dead, owner_process, owner_role
from ._console import Column, render_table, show, terminal_width

__all__ = [
    "describe_wait",
    "holder_name",
    "lease_holders",
    "leased_rows",
    "print_leases",
    "print_workers",
    "until",
    "worker_views",
]

_PLURALS = {"batch": "batches", "worker": "workers", "other process": "other processes"}
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
    """The lease owner as recorded, with the holder it names."""
    if not owner:
        return ""
    name = holder_name(owner)
    return owner if name == owner else f"{owner} ({name})"


def holder_name(owner: str) -> str:
    """The process holding a lease, as people name it: ``batch pid 4242 on this host``
    (``worker``, or ``process`` when the owner names no command; ``, ended`` once it
    has provably ended), or the owner itself when it is of another form."""
    parts = owner.split(":")
    if len(parts) != 6:
        return owner
    host, pid = parts[0], parts[3]
    where = "this host" if host == host_name() else f"host {host}"
    ended = ", ended" if owner_is_dead(owner) else ""
    return f"{owner_role(owner) or 'process'} pid {pid} on {where}{ended}"


def _holders(owners: Iterable[str | None]) -> str:
    """Who holds leases, by process: ``the batch pid 4242 on this host``, ``2 workers``;
    ``other workers`` when no owner names its command."""
    named = [owner for owner in owners if owner]
    processes = {owner_process(owner): owner_role(owner) for owner in named}
    if not any(processes.values()):
        return "other workers"
    if len(processes) == 1:
        return f"the {holder_name(named[0])}"
    roles = Counter(role or "other process" for role in processes.values())
    return ", ".join(
        f"1 {role}" if n == 1 else f"{n} {_PLURALS[role]}" for role, n in sorted(roles.items())
    )


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
        f"{len(records)} payout(s) are leased to {_holders(r.lease_owner for r in records)} "
        "(resume takes them when the lease ends, or at once if its process has died on "
        "this host):"
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
    owners = {owner_process(r.lease_owner or "") for r in records}
    holders = _holders(r.lease_owner for r in records)
    if holders == "other workers":
        holders = f"{len(owners)} other worker(s)"
    next_end = until(min(ends)) if ends else "unknown"
    return f"waiting for {len(records)} payout(s) leased to {holders}; next lease ends {next_end}"


_WORKER_COLUMNS = (
    Column("payouts held"),
    Column("until"),
    Column("holder"),
    Column("lease owner(s)", "wrap", minimum=20),
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
    """A table of the processes holding payouts (one row per process, naming the
    command it runs where its owner says), on stdout."""
    if not holders:
        return
    by_process: dict[str, list[LeaseHolder]] = {}
    for holder in holders:
        by_process.setdefault(owner_process(holder.owner), []).append(holder)
    show(f"holding payouts now: {_holders(h.owner for h in holders)}:")
    now = time.time()
    rows = [
        (str(sum(h.rows for h in group)), until(max(h.expires_at for h in group), now),
         holder_name(group[0].owner), " ".join(h.owner for h in group))
        for group in by_process.values()
    ]  # fmt: skip
    for line in render_table(_WORKER_COLUMNS, rows, width=terminal_width()):
        show(line)


def worker_views(holders: Sequence[LeaseHolder]) -> list[dict[str, Any]]:
    """The ``workers`` section of a JSON document."""
    return [
        {
            "owner": h.owner,
            "process": owner_process(h.owner),
            "command": owner_role(h.owner),
            "rows": h.rows,
            "expires_at": h.expires_at,
            "ended": owner_is_dead(h.owner),
        }
        for h in holders
    ]
