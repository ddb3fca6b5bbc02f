"""Lease renewal for every drive of one ``Payouts``, on one timer.

Each drive's lease is renewed every third of its length while the drive runs, so that
a long poll or reconciliation keeps its row. A renewal that learns the lease is gone
sets the drive's ``lost`` (the next ``move`` or ``fence`` ends the drive); one the
ledger could not make is logged and tried again a period later. A drive that is
``frozen`` (inside the ``before_send`` hook, as a paused process would be) is not
renewed then: it is looked at again a period later.

All drives of a ``Payouts`` share one lease length, so the drive entered first is
always the first due: the drives wait in a dict in the order they are due, and one
timer handle, for the first of them, serves them all. A payout that ends within a
third of its lease costs a dict entry, not a timer of its own on the event loop's
heap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import Token
from typing import Protocol

from .._holds import ON_HOLD
from ..ledger import LeaseLostError, PayoutRecord

__all__ = ["Heartbeats", "Leased"]

logger = logging.getLogger("payout_async")

#: Tells a provider's ``Retry-After`` hold of ``seconds`` as a wait (``_holds``).
Holds = Callable[[float], AbstractContextManager[None]]


class Leased(Protocol):
    """A drive whose lease ``Heartbeats`` renews (``payouts._run.Run``)."""

    #: True while the drive must renew nothing (a paused process would not).
    frozen: bool
    record: PayoutRecord

    async def renew(self) -> None:
        """Extend the lease; ``LeaseLostError`` when it is gone."""


class Heartbeats:
    """Renews the leases of the drives running under it, every ``period`` seconds
    each (a third of their lease). ``async with heartbeats.beating(run):`` runs the
    body with ``run``'s lease renewed."""

    def __init__(self, period: float) -> None:
        self.period = period
        #: Drives waiting for their next renewal, first due first, with when (loop time).
        self._due: dict[Leased, float] = {}
        #: Drives whose renewal is under way.
        self._renewing: dict[Leased, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def beating(self, run: Leased, holds: Holds | None = None) -> _Beating:
        """The context in which ``run``'s lease is renewed (and, given ``holds``, the
        ``Retry-After`` holds of its requests are told as waits)."""
        return _Beating(self, run, holds)

    def _enter(self, run: Leased) -> None:
        """``run`` is due a period from now (as it enters, and after each renewal)."""
        loop = asyncio.get_running_loop()
        self._due[run] = loop.time() + self.period
        self._schedule(loop)

    def _leave(self, run: Leased) -> asyncio.Task[None] | None:
        """Stop renewing ``run``'s lease: the renewal under way, if any, is cancelled
        and returned (to be awaited)."""
        self._due.pop(run, None)
        renewing = self._renewing.pop(run, None)
        if not self._due and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if renewing is None or renewing.done():
            return None
        renewing.cancel()
        return renewing

    def _tick(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            run, due = next(iter(self._due.items()))
            if due > now:
                break
            del self._due[run]
            if run.frozen:
                self._due[run] = now + self.period
            else:
                self._renewing[run] = loop.create_task(self._renew(run))
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._due:
            self._timer = loop.call_at(next(iter(self._due.values())), self._tick)

    async def _renew(self, run: Leased) -> None:
        try:
            await run.renew()
        except LeaseLostError:
            return  # ``lost`` is set: the next fence() or move() ends the drive
        except Exception as error:  # the ledger is unreachable: try again next time
            logger.warning("could not renew the lease of %s: %s", run.record.key, error)
        finally:
            self._renewing.pop(run, None)
        self._enter(run)


class _Beating:
    """One drive under ``Heartbeats`` (an async context manager entered once per
    drive: no generator), its ``Retry-After`` holds told by ``holds`` while it runs."""

    __slots__ = ("_heartbeats", "_holds", "_run", "_token")

    def __init__(self, heartbeats: Heartbeats, run: Leased, holds: Holds | None) -> None:
        self._heartbeats = heartbeats
        self._run = run
        self._holds = holds
        self._token: Token[Holds | None] | None = None

    async def __aenter__(self) -> None:
        if self._holds is not None:
            self._token = ON_HOLD.set(self._holds)
        self._heartbeats._enter(self._run)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._token is not None:
            ON_HOLD.reset(self._token)
        renewing = self._heartbeats._leave(self._run)
        if renewing is not None:
            await asyncio.gather(renewing, return_exceptions=True)
