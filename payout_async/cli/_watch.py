"""``payout-async status --watch``: the whole ledger's progress, refreshed, whichever
workers (on whichever hosts) are paying it. Read-only: counts by state and the lease
holders, two cheap queries per refresh.

On a terminal the screen is redrawn; otherwise one line is printed per refresh (one
JSON document per line with ``--json``). Ctrl-C or SIGTERM ends it (exit 0).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Sequence

import attrs

from ..ledger import (
    ACTIVE_STATES,
    FINAL_STATES,
    PARKED_STATES,
    LeaseHolder,
    Ledger,
    LedgerState,
    ProviderPause,
)
from ._console import Column, literal, render_table, show, terminal_width
from ._funds_commands import pause_lines, pause_views
from ._leases import lease_holders, print_workers, worker_views
from ._report import EXIT_OK
from ._views import document

__all__ = ["watch"]

_RATE_WINDOW = 10.0  # seconds over which the rate is measured
_CLEAR = "\x1b[H\x1b[2J"


@attrs.frozen
class Snapshot:
    """The ledger at one moment."""

    at: float  # monotonic
    counts: dict[str, dict[LedgerState, int]]
    holders: list[LeaseHolder]
    paused: list[ProviderPause]

    def total(self, states: frozenset[LedgerState] | None = None) -> int:
        """Rows in ``states`` (all rows when None), over every provider."""
        return sum(
            count
            for tally in self.counts.values()
            for state, count in tally.items()
            if states is None or state in states
        )

    @property
    def in_flight(self) -> int:
        """Rows workers hold now."""
        return sum(holder.rows for holder in self.holders)


async def _snapshot(ledger: Ledger, providers: Sequence[str]) -> Snapshot:
    counts = {provider: await ledger.counts(provider=provider) for provider in providers}
    holders = await lease_holders(ledger, providers)
    paused = [pause for pause in await ledger.pauses() if pause.provider in providers]
    return Snapshot(time.monotonic(), counts, holders, paused)


def _rate(history: collections.deque[Snapshot]) -> float | None:
    """Payouts ended (final or parked) per second over the window, once it has two."""
    first, last = history[0], history[-1]
    if last.at - first.at <= 0:
        return None
    ended = FINAL_STATES | PARKED_STATES
    return (last.total(ended) - first.total(ended)) / (last.at - first.at)


def _summary(snap: Snapshot, rate: float | None) -> str:
    active = snap.total(ACTIVE_STATES)
    parts = [
        f"{snap.total()} payouts",
        f"{snap.total(frozenset({LedgerState.SUCCEEDED}))} succeeded",
        f"{snap.total(frozenset({LedgerState.FAILED, LedgerState.CANCELLED}))} failed",
        f"{snap.total(PARKED_STATES)} need attention or were refused",
        f"{max(active - snap.in_flight, 0)} waiting",
        f"{snap.in_flight} in flight ({len(snap.holders)} worker(s))",
    ]
    line = ", ".join(parts)
    if snap.paused:
        line += f"; PAUSED for want of money: {', '.join(p.provider for p in snap.paused)}"
    if rate is not None:
        line += f"; {rate:.1f} ended/s"
        if rate > 0 and active:
            line += f", about {active / rate:.0f} s to go"
    return line


def _redraw(location: str, snap: Snapshot, rate: float | None, interval: float) -> None:
    clock = time.strftime("%H:%M:%S")
    print(_CLEAR, end="")
    show(literal(f"{location} at {clock} (every {interval:g} s; Ctrl-C to stop)"))
    show()
    show(literal(_summary(snap, rate)))
    show()
    providers = list(snap.counts)
    columns = (Column("state"), *(Column(p) for p in providers))
    rows = [(s.value, *(str(snap.counts[p].get(s, 0)) for p in providers)) for s in LedgerState]
    for line in render_table(columns, rows, width=terminal_width()):
        show(line)
    for line in pause_lines(snap.paused):
        show()
        show(literal(line))
    if snap.holders:
        show()
        print_workers(snap.holders)


async def watch(
    ledger: Ledger, location: str, providers: Sequence[str], *, interval: float, as_json: bool
) -> int:
    """Show the ledger every ``interval`` seconds until interrupted."""
    history: collections.deque[Snapshot] = collections.deque()
    redraw = sys.stdout.isatty() and not as_json
    try:
        while True:
            snap = await _snapshot(ledger, providers)
            history.append(snap)
            while len(history) > 2 and snap.at - history[0].at > _RATE_WINDOW:
                history.popleft()
            rate = _rate(history)
            if as_json:
                counts = {
                    p: {s.value: snap.counts[p].get(s, 0) for s in LedgerState} for p in providers
                }
                show(document("status", location, watch=True, at=time.time(), counts=counts,
                              workers=worker_views(snap.holders), paused=pause_views(snap.paused),
                              rate=rate))  # fmt: skip
            elif redraw:
                _redraw(location, snap, rate, interval)
            else:
                show(literal(f"{time.strftime('%H:%M:%S')} {_summary(snap, rate)}"))
            await asyncio.sleep(interval)
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: the way a watch ends
        return EXIT_OK
