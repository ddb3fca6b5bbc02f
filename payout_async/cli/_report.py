"""Running payouts with a progress bar on stderr, and reporting them on stdout.

Exit codes of the paying subcommands:

====  =============================================================
0     every payout succeeded
1     some payouts failed (refused or failed by the provider)
2     bad input (usage, invalid batch rows, missing credentials)
3     some payouts need attention (see ``payout-async status``)
4     some payouts are still processing (``payout-async resume`` later)
130   interrupted (Ctrl-C); re-run the same command to finish
====  =============================================================
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..payouts import PayoutResult, Payouts, PayoutStatus

__all__ = [
    "EXIT_ATTENTION",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROCESSING",
    "compact_table",
    "exit_code",
    "pay_all",
    "print_results",
    "stderr",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ATTENTION, EXIT_PROCESSING = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True)
ORDER = [status.value for status in PayoutStatus]


def exit_code(results: Iterable[PayoutResult]) -> int:
    """The exit code that sums ``results`` up (see the module docstring)."""
    statuses = {result.status for result in results}
    if PayoutStatus.NEEDS_ATTENTION in statuses:
        return EXIT_ATTENTION
    if PayoutStatus.FAILED in statuses or PayoutStatus.REJECTED in statuses:
        return EXIT_FAILED
    if PayoutStatus.PROCESSING in statuses:
        return EXIT_PROCESSING
    return EXIT_OK


async def pay_all(
    work: Sequence[tuple[Payouts[Any], Sequence[tuple[str, Any]]]],
    *,
    concurrency: int,
    show_progress: bool = True,
) -> list[PayoutResult]:
    """Pay every group (one ``Payouts`` per provider) at once, with a live bar."""
    total = sum(len(items) for _, items in work)
    results: list[PayoutResult] = []
    with Progress(
        TextColumn("[bold]paying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=not show_progress,
        transient=False,
    ) as progress:
        task = progress.add_task("paying", total=total, summary="")
        tally: Counter[str] = Counter()

        async def drain(payouts: Payouts[Any], items: Sequence[tuple[str, Any]]) -> None:
            async for result in payouts.pay_many(items, concurrency=concurrency):
                results.append(result)
                tally[result.status.value] += 1
                summary = " ".join(f"{name}={tally[name]}" for name in ORDER if tally[name])
                progress.update(task, advance=1, summary=summary)

        await asyncio.gather(*(drain(payouts, items) for payouts, items in work if items))
    return results


def compact_table(
    *columns: str,
    rows: Iterable[Sequence[str]],
    title: str | None = None,
    keep: int = 0,
) -> Table:
    """A table without vertical borders or edges, so that it fits 80 columns. Cells
    stay on one line except in the last column, which wraps; the first ``keep``
    columns are never cut short (the others are, with an ellipsis, if they must)."""
    table = Table(title=title, box=box.SIMPLE, show_edge=False, padding=(0, 1, 0, 0))
    for name in columns[:-1]:
        table.add_column(name, no_wrap=True)
    table.add_column(columns[-1])
    for row in rows:
        table.add_row(*row)
    for column in table.columns[:keep]:
        column.min_width = max(len(str(cell)) for cell in [column.header, *column.cells])
    return table


def print_results(results: Sequence[PayoutResult], *, as_json: bool) -> None:
    """Every result on stdout: JSON lines, or a table and the totals."""
    if as_json:
        for result in results:
            print(json.dumps(result_json(result), ensure_ascii=False))
        return
    out = Console()
    ordered = sorted(results, key=lambda r: (ORDER.index(r.status.value), r.key))
    rows = [
        (
            result.key,
            result.provider,
            result.status.value,
            result.provider_id or "",
            result.provider_status or "",
            result.reason or "",
        )
        for result in ordered
    ]
    headers = ("key", "provider", "status", "provider id", "provider status", "reason")
    table = compact_table(*headers, rows=rows, keep=3)
    out.print(table)
    counts = Counter(result.status.value for result in results)
    out.print("  ".join(f"{name}: {counts[name]}" for name in ORDER if counts[name]) or "nothing")


def result_json(result: PayoutResult) -> dict[str, Any]:
    """A result as a JSON object."""
    return {
        "key": result.key,
        "provider": result.provider,
        "status": result.status.value,
        "state": None if result.state is None else result.state.value,
        "provider_id": result.provider_id,
        "provider_status": result.provider_status,
        "order_id": result.order_id,
        "attempts": result.attempts,
        "reason": result.reason,
    }


def say(message: str) -> None:
    """A line of progress or advice on stderr."""
    print(message, file=sys.stderr)
