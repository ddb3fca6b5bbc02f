"""Running payouts with a progress bar on stderr, and reporting them on stdout.

Exit codes of the paying subcommands:

====  =============================================================
0     every payout succeeded
1     some payouts failed, were refused, or were not sent
2     bad input or configuration (usage, rows, credentials, ledger); nothing was sent
3     some payouts need attention (see ``payout-async status``)
4     some payouts are still processing (``payout-async resume`` later)
5     a provider refused payouts for want of money: top up and re-run (``_funds``)
130   interrupted (Ctrl-C or SIGTERM); re-run the same command to finish
====  =============================================================
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._redact import scrub
from ..ledger import LedgerState
from ..payouts import PayoutResult, Payouts, PayoutStatus
from ._console import Column, literal, render_table, show, terminal_width
from ._funds import out_of_funds
from ._waits import WaitBoard

__all__ = [
    "EXIT_ATTENTION",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_FUNDS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROCESSING",
    "ORDER",
    "Work",
    "counts",
    "exit_code",
    "pay_all",
    "print_results",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ATTENTION, EXIT_PROCESSING = 0, 1, 2, 3, 4
EXIT_FUNDS = 5
EXIT_INTERRUPTED = 130

ORDER = [status.value for status in PayoutStatus]

NOT_STARTED = PayoutStatus.NOT_STARTED  # nothing recorded or sent: a re-run pays it

_RESULT_COLUMNS = (
    Column("key"),
    Column("provider"),
    Column("status"),
    Column("provider id", "shrink", minimum=10),
    Column("reason", "wrap", minimum=24),
)


@attrs.frozen
class Work:
    """One provider's share of a batch: its ``Payouts`` and its (key, request) items."""

    payouts: Payouts[Any]
    items: Sequence[tuple[str, Any]]


def exit_code(results: Iterable[PayoutResult]) -> int:
    """The exit code that sums ``results`` up (see the module docstring)."""
    results = list(results)
    statuses = {result.status for result in results}
    if PayoutStatus.NEEDS_ATTENTION in statuses:
        return EXIT_ATTENTION
    if any(out_of_funds(result) for result in results):
        return EXIT_FUNDS
    failed = {PayoutStatus.FAILED, PayoutStatus.REJECTED, NOT_STARTED}
    if statuses & failed:
        return EXIT_FAILED
    if PayoutStatus.PROCESSING in statuses:
        return EXIT_PROCESSING
    return EXIT_OK


def is_refusal(result: PayoutResult) -> bool:
    """True for a provider's refusal of a create that left nothing behind (a wrong
    secret, a rule the provider enforces): the row stays retryable."""
    return result.status is PayoutStatus.REJECTED and result.state is LedgerState.REFUSED


@attrs.define
class _Breaker:
    """Stops feeding one provider after ``limit`` refusals in a row (0: never), or
    after its first refusal for want of money."""

    provider: str
    limit: int
    streak: int = 0
    last_reason: str | None = None
    no_money: str | None = None  # the first refusal for want of money

    @property
    def tripped(self) -> bool:
        return self.no_money is not None or (self.limit > 0 and self.streak >= self.limit)

    def observe(self, result: PayoutResult) -> None:
        if self.no_money is None and out_of_funds(result):
            self.no_money = result.reason or "not enough money"
        if is_refusal(result):
            self.streak += 1
            self.last_reason = result.reason
        elif not self.tripped:
            self.streak = 0

    def not_sent(self, key: str) -> PayoutResult:
        if self.no_money is not None:
            return PayoutResult(
                key=key,
                status=NOT_STARTED,
                provider=self.provider,
                reason=f"not sent: {self.provider} refused a payout for want of money "
                f"({self.no_money}); top up and re-run",
            )
        return PayoutResult(
            key=key,
            status=NOT_STARTED,
            provider=self.provider,
            reason=f"not sent: {self.provider} refused {self.streak} payouts in a row "
            f"(last: {self.last_reason}); fix the cause and run the same command again",
        )


async def pay_all(
    work: Sequence[Work],
    *,
    concurrency: int,
    show_progress: bool = True,
    max_refusals: int = 0,
    waits: WaitBoard | None = None,
) -> list[PayoutResult]:
    """Pay every provider's items at once, with a live bar on stderr -- and above it,
    what ``waits`` (the payouts' ``on_wait`` hook) says is being waited out. After
    ``max_refusals`` refusals in a row from one provider (0: no limit), or its first
    refusal for want of money, no new payout is started for it (those already under
    way, at most ``concurrency``, finish): the items it was not given come back
    ``not_started``."""
    total = sum(len(share.items) for share in work)
    results: list[PayoutResult] = []
    with Progress(
        TextColumn("paying", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[summary]}", markup=False),
        TimeElapsedColumn(),
        # Made per run: a console reads the terminal's size and colours when it is made.
        console=Console(stderr=True, markup=False, highlight=False, emoji=False),
        disable=not show_progress,
        transient=False,
    ) as progress:
        task = progress.add_task("paying", total=total, summary="")
        if waits is not None and show_progress:
            waits.sink = lambda line: progress.console.print(literal(line), soft_wrap=True)
        tally: Counter[str] = Counter()

        def record(result: PayoutResult) -> None:
            results.append(result)
            tally[result.status.value] += 1
            summary = " ".join(f"{name}={tally[name]}" for name in ORDER if tally[name])
            progress.update(task, advance=1, summary=summary)

        async def drain(share: Work) -> None:
            breaker = _Breaker(share.payouts.provider, max_refusals)
            given = 0

            async def feed() -> AsyncIterator[tuple[str, Any]]:
                nonlocal given
                for item in share.items:
                    await asyncio.sleep(0)  # a result just put out is observed first
                    if breaker.tripped:
                        return
                    given += 1
                    yield item

            async for result in share.payouts.pay_many(feed(), concurrency=concurrency):
                breaker.observe(result)
                record(result)
            for key, _ in share.items[given:]:
                record(breaker.not_sent(key))

        try:
            await asyncio.gather(*(drain(share) for share in work if share.items))
        finally:
            if waits is not None:
                waits.close()
    return results


def counts(results: Iterable[PayoutResult]) -> dict[str, int]:
    """How many results have each status (only the statuses that occur)."""
    tally = Counter(result.status.value for result in results)
    return {name: tally[name] for name in ORDER if tally[name]}


def _reason(result: PayoutResult) -> str:
    if result.reason:
        return scrub(result.reason)
    if result.status is not PayoutStatus.SUCCEEDED and result.provider_status:
        return f"provider status {result.provider_status}"
    return ""


def print_results(results: Sequence[PayoutResult]) -> None:
    """Every result as a table on stdout (reasons never cut), then the totals."""
    ordered = sorted(results, key=lambda r: (ORDER.index(r.status.value), r.provider, r.key))
    rows = [(r.key, r.provider, r.status.value, r.provider_id or "", _reason(r)) for r in ordered]
    if rows:
        for line in render_table(_RESULT_COLUMNS, rows, width=terminal_width()):
            show(line)
    tally = counts(results)
    show("  ".join(f"{name}: {n}" for name, n in tally.items()) or "nothing to do")
