"""What the payouts of a command are waiting out, said in one line.

``WaitBoard.on_wait`` is the ``Payouts(on_wait=...)`` hook: it keeps the payouts
waiting now, by reason, and -- a moment after a change, and at most every few seconds
unless a new kind of wait begins -- hands its ``sink`` one line such as
``waiting out the 60 s Enot grace after a lost answer for 12 payouts, until
11:42:10``: the batch's progress display, a line on stderr, or the worker's log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..payouts import Waiting
from ..payouts._waiting import GRACE, RETRY_AFTER, SETTLE, TAKEN_OVER

__all__ = ["WaitBoard", "describe"]

#: How long after a change the line is made (a burst of waits is said once).
_SETTLE_DELAY = 0.25
_WHAT = {
    GRACE: "Enot grace after a lost answer",
    TAKEN_OVER: "Enot grace for payouts taken over from another worker",
    SETTLE: "IntellectMoney settle window after a lost execute answer",
    RETRY_AFTER: "provider's Retry-After hold",
}


def _clock(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(moment))


def describe(waits: list[Waiting]) -> str:
    """One line for the payouts ``waits`` holds: each reason, how many, until when."""
    groups: dict[tuple[str, float], list[float]] = {}
    for wait in waits:
        if wait.until is not None:
            # Retry-After holds differ in length: one group, said by its longest.
            window = 0.0 if wait.reason == RETRY_AFTER else wait.window
            groups.setdefault((wait.reason, window), []).append(wait.until)
    parts = []
    for (reason, window), ends in sorted(groups.items()):
        what = _WHAT.get(reason, reason)
        count = f"{len(ends)} payout{'s' if len(ends) != 1 else ''}"
        length = f"the {window:g} s " if window else "the "
        parts.append(f"{length}{what} for {count}, until {_clock(max(ends))}")
    return ("waiting out " + "; ".join(parts)) if parts else ""


class WaitBoard:
    """The payouts waiting now (``on_wait``), said to ``sink`` as one line when the
    kinds of wait change, else at most every ``every`` seconds."""

    def __init__(self, sink: Callable[[str], None] | None = None, *, every: float = 10.0) -> None:
        self.sink = sink
        self.every = every
        self._waits: dict[tuple[str, str], Waiting] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._said = ""
        self._said_at = -float("inf")
        self._kinds: frozenset[tuple[str, float]] = frozenset()

    def on_wait(self, event: Waiting) -> None:
        """The ``Payouts(on_wait=...)`` hook."""
        slot = (event.provider, event.key)
        if event.over:
            self._waits.pop(slot, None)
        else:
            self._waits[slot] = event
        if self.sink is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_SETTLE_DELAY, self._flush)

    def line(self) -> str:
        """What is being waited for now ("" when nothing)."""
        return describe(list(self._waits.values()))

    def close(self) -> None:
        """Say nothing more (the command is ending)."""
        self.sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        line = self.line()
        kinds = frozenset(
            (w.reason, 0.0 if w.reason == RETRY_AFTER else w.window) for w in self._waits.values()
        )
        if not line or line == self._said or self.sink is None:
            self._said, self._kinds = line, kinds
            return
        now = time.monotonic()
        early = self._said_at + self.every - now
        if kinds <= self._kinds and early > 0:  # nothing new: not before ``every``
            self._timer = asyncio.get_running_loop().call_later(early, self._flush)
            return
        self._said, self._said_at, self._kinds = line, now, kinds
        self.sink(line)
