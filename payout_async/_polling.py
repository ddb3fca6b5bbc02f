"""The poll schedule shared by the state pollers and the reconciliation loops.

A payout settles after some time ``T`` the caller does not know. Polling at times
``t_1 < t_2 < ...`` after the start, the first poll that sees it settled comes at the
first ``t_n >= T``; if every poll comes at most ``multiplier`` times as long after the
start as the one before (``t_{n+1} <= multiplier * t_n``), that is never later than
``multiplier * T``: a settled state is seen within ``multiplier - 1`` (20% by default)
of the settle time, with the fewest polls that bound allows -- a schedule geometric in
the time since the start, not in the pause between polls. The first poll comes at
``initial`` seconds (randomised within ``[initial / multiplier, initial]``, which keeps
the bound for every ``T >= initial / multiplier`` and spreads payouts that start
together); each later one ``multiplier`` times as long after the start as the one
before, but never more than ``maximum`` seconds after it.
"""

from __future__ import annotations

import math
from asyncio import sleep
from collections.abc import Awaitable, Callable, Iterator
from random import uniform
from time import monotonic
from typing import TypeVar

import attrs

from ._retry import is_inconclusive, is_transient

__all__ = ["PollPolicy", "is_inconclusive", "is_transient", "poll_until_final"]

T = TypeVar("T")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"PollPolicy.{attribute.name} must be a positive number, not {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"PollPolicy.{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen
class PollPolicy:
    """When to poll, counted from the start (the create or execute answer, or the call).

    The first poll comes ``initial`` seconds after the start (randomised within
    ``[initial / multiplier, initial]``); every later one ``multiplier`` times as long
    after the start as the one before, but at most ``maximum`` seconds after it;
    polling gives up at ``deadline`` seconds after the start.

    So a payout that settles ``T`` seconds after the start is seen settled by
    ``multiplier * T`` at the latest, for any ``T`` from ``initial / multiplier`` up to
    ``maximum / (multiplier - 1)`` (beyond that, within ``maximum`` seconds of it). The
    defaults poll at about 1.0-1.2 s, then 1.2 times as late each time (1.44, 1.73,
    2.07, ... s: 7 polls by about 3.6 s, 10 by 6.2 s), and see a payout settled within 20% of
    a settle time of 1 s to 50 s. Set ``initial`` to 1.2 times the shortest settle time
    you care about; a larger ``multiplier`` spends fewer polls and allows more lateness.
    A ``multiplier`` of exactly 1 polls every ``initial`` seconds (randomised between
    half and all of it).

    Before this release ``multiplier`` grew the pause between polls from
    ``initial`` (defaults 0.5 s and 1.6, each pause randomised between half and all of
    it) and the first poll came at once. A policy written for that keeps working and
    polls at much the same pace once past its first few polls (a pause that grows by
    a factor makes the time since the start grow by that factor too); only its first
    poll now waits ``initial``.
    """

    initial: float = attrs.field(default=1.2, validator=_positive)
    multiplier: float = attrs.field(default=1.2, validator=_at_least_one)
    maximum: float = attrs.field(default=10.0, validator=_positive)
    deadline: float = attrs.field(default=300.0, validator=_positive)

    def first(self) -> float:
        """When the first poll is due, in seconds after the start (randomised)."""
        if self.multiplier == 1:
            return uniform(self.initial / 2, self.initial)
        return uniform(self.initial / self.multiplier, self.initial)

    def after(self, elapsed: float) -> float:
        """When the poll after one made ``elapsed`` seconds after the start is due."""
        if self.multiplier == 1:
            return elapsed + uniform(self.initial / 2, self.initial)
        return elapsed + min(self.maximum, elapsed * (self.multiplier - 1))

    def times(self) -> Iterator[float]:
        """The poll times in seconds after the start, endless (the first randomised,
        the others following from it); the caller checks ``deadline``."""
        elapsed = self.first()
        while True:
            yield elapsed
            elapsed = self.after(elapsed)

    def delays(self) -> Iterator[float]:
        """The pauses before each poll of ``times()``, endless: for a loop that tries
        once at once and then pauses before each next try."""
        previous = 0.0
        for elapsed in self.times():
            yield elapsed - previous
            previous = elapsed

    def expires_at(self) -> float:
        """The monotonic time at which polling that starts now must stop."""
        return monotonic() + self.deadline


async def poll_until_final(
    fetch: Callable[[], Awaitable[T]],
    is_final: Callable[[T], bool],
    *,
    policy: PollPolicy,
    on_poll: Callable[[T], Awaitable[None]] | None = None,
    keep_going: Callable[[BaseException], bool] = is_inconclusive,
    started: float | None = None,
) -> T:
    """Call ``fetch`` on ``policy``'s schedule until ``is_final`` holds; return that answer.

    The schedule counts from ``started`` (a ``monotonic()`` value, e.g. when the
    request that set the payout going left; default: now): a poll whose time has
    passed is made at once, and each next one is due ``policy.after`` the time the
    last one was actually made, so a slow answer never shortens the bound.

    At ``policy.deadline`` after ``started`` the last answer is returned as it is.
    Errors for which ``keep_going`` holds (default: ``is_inconclusive``: any failed
    read but "not found") do not stop the polling; if no answer at all arrived by the
    deadline (one poll is made at it), the last error is raised. ``on_poll`` sees
    every answer.
    """
    origin = monotonic() if started is None else started
    stop_at = origin + policy.deadline
    last: T | None = None
    have_answer = False
    due = origin + policy.first()
    while True:
        if due >= stop_at:
            if have_answer:
                return last  # type: ignore[return-value]  # set whenever have_answer
            due = stop_at
        pause = due - monotonic()
        if pause > 0:
            await sleep(pause)
        polled_at = max(due, monotonic())
        try:
            last = await fetch()
        except Exception as error:
            if not keep_going(error) or (not have_answer and monotonic() >= stop_at):
                raise
        else:
            have_answer = True
            if on_poll is not None:
                await on_poll(last)
            if is_final(last):
                return last
        due = origin + policy.after(polled_at - origin)
