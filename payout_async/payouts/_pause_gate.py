"""A worker's view of its provider's pause (``ledger._pauses``): money ran out.

The first payout a provider refuses for want of money (``payouts._funds``) pauses that
provider in the ledger, for every worker sharing it. From then on no worker claims the
provider's rows but those whose money has moved (``processing``, polled to the end), and
no drive starts a money-moving request for it: before each one
(``_StoppingLedger``) the gate reads the pause afresh -- one read serves every drive
that asked while it was under way, and each read starts after its askers asked, so a
pause committed before a request was to be recorded always stops it. A paused worker
looks again every ``idle_poll`` seconds and when woken (``payout-async funds resume``
announces work), and, when it has a balance to read (Enot), reads it every
``balance_poll`` seconds: once it covers the smallest payout refused for want of money
(or any when none is), the worker records those payouts ``pending`` again and lifts
the pause (``resume_provider``).

A ledger that cannot keep pauses (one of the caller's own) pauses this worker only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation

from .._errors import ConfigurationError
from ..ledger import Ledger, LedgerError, PayoutRecord, ProviderPause
from ._funds import funds_refused_rows, requeue_refused_for_funds

__all__ = ["BalanceProbe", "PauseGate", "resume_provider"]

logger = logging.getLogger("payout_async")

#: Reads the provider's balance available to pay with (None: it could not say).
BalanceProbe = Callable[[], Awaitable[Decimal | None]]


async def resume_provider(ledger: Ledger, provider: str) -> tuple[ProviderPause | None, int]:
    """Pay again what ``provider`` refused for want of money, then lift its pause:
    records those rows ``pending`` (each once: a row that moved on is left as it is)
    and wakes the workers. Returns the pause lifted (None: there was none) and how
    many rows were queued again."""
    requeued = await requeue_refused_for_funds(ledger, provider)
    lifted = await ledger.lift_pause(provider)
    await ledger.announce_work(provider)
    return lifted, requeued


def _amount(record: PayoutRecord) -> Decimal | None:
    try:
        return Decimal(str(record.params.get("amount")))
    except (InvalidOperation, ValueError):
        return None


class PauseGate:
    """One worker's knowledge of its provider's pause, and the checks it makes."""

    def __init__(
        self,
        ledger: Ledger,
        provider: str,
        owner: str,
        *,
        balance: BalanceProbe | None = None,
        balance_poll: float = 60.0,
    ) -> None:
        self._ledger = ledger
        self._provider = provider
        self._owner = owner
        self._balance = balance
        self._balance_poll = balance_poll
        self._balance_read = -float("inf")
        #: The pause in force as last seen (or made) here; None: not paused.
        self.pause: ProviderPause | None = None
        self._shared = True  # the ledger keeps pauses
        self._next: asyncio.Future[bool] | None = None  # the read callers wait for
        self._reading: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    # -- reading ----------------------------------------------------------------------

    async def paused(self) -> bool:
        """Whether the provider is paused, read from the ledger by a read that starts
        after this call (joined with the other callers waiting for one)."""
        if self.pause is not None and not self._shared:
            return True
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiting = self._next
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_all())
        return await asyncio.shield(waiting)

    async def _read_all(self) -> None:
        while (answer := self._next) is not None:
            self._next = None
            try:
                found = await self._read()
            except Exception as error:  # the callers see it (a LedgerError)
                answer.set_exception(error)
                answer.exception()  # retrieved: a caller may have gone
            else:
                answer.set_result(found)

    async def _read(self) -> bool:
        if not self._shared:
            return self.pause is not None
        try:
            pause = await self._ledger.pause_of(self._provider)
        except ConfigurationError:
            self._shared = False
            return self.pause is not None
        if pause is None and self._writes:
            return True  # this worker's pause is being recorded: it holds meanwhile
        self._seen(pause)
        return pause is not None

    def _seen(self, pause: ProviderPause | None) -> None:
        """Note the pause read (None: lifted), and say so when it is news."""
        if pause is not None and self.pause is None:
            logger.error(
                "%s payouts are paused (%s; by %s): this worker sends none until the "
                "balance is topped up and the pause lifted (by a balance check, or "
                "`payout-async funds resume %s`)",
                self._provider, pause.reason, pause.by, self._provider,
            )  # fmt: skip
        elif pause is None and self.pause is not None:
            logger.warning("%s payouts are no longer paused: this worker pays them again",
                           self._provider)  # fmt: skip
        self.pause = pause

    # -- pausing ----------------------------------------------------------------------

    def refused(self, record: PayoutRecord) -> None:
        """``record`` was just refused for want of money: no money-moving request of
        this worker starts from now on, and the pause is recorded for every worker."""
        reason = f"payout {record.key!r} refused for want of money: {record.reason or ''}"
        if self.pause is not None:
            return  # paused already: recorded, or being recorded
        self._seen(ProviderPause(self._provider, time.time(), reason, self._owner))
        task = asyncio.ensure_future(self._record(reason))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, reason: str) -> None:
        if not self._shared:
            return
        try:
            pause, made = await self._ledger.pause_provider(
                self._provider, reason=reason, by=self._owner
            )
        except ConfigurationError:
            self._shared = False
            return
        except LedgerError as error:
            logger.error("could not record the pause of %s payouts: %s", self._provider, error)
            return
        if made:
            logger.error("paused %s payouts for every worker of this ledger", self._provider)
        self._seen(pause)

    async def settled(self) -> None:
        """Wait for the pauses being recorded."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    # -- resuming ---------------------------------------------------------------------

    def balance_due(self) -> float | None:
        """Seconds until the balance is to be read again (None: never read here)."""
        if self._balance is None:
            return None
        return max(self._balance_read + self._balance_poll - time.monotonic(), 0.0)

    async def try_resume(self) -> bool:
        """When the balance is due to be read and covers a payout refused for want
        of money, pay those again and lift the pause; True when it was lifted."""
        due = self.balance_due()
        if due is None or due > 0 or self.pause is None:
            return False
        assert self._balance is not None
        self._balance_read = time.monotonic()
        try:
            available = await self._balance()
        except Exception as error:  # a provider's or transport's error: read again later
            logger.warning("could not read the %s balance: %s", self._provider, error)
            return False
        if available is None or available <= 0:
            return False
        refused = await funds_refused_rows(self._ledger, self._provider)
        amounts = [a for a in map(_amount, refused) if a is not None]
        if amounts and available < min(amounts):
            logger.info("%s balance %s covers no refused payout yet (the smallest is %s)",
                        self._provider, available, min(amounts))  # fmt: skip
            return False
        if not self._shared:  # this worker's own pause: lift it here only
            requeued = await requeue_refused_for_funds(self._ledger, self._provider)
            logger.warning("%s balance is %s: resuming its payouts; %d queued again",
                           self._provider, available, requeued)  # fmt: skip
            self._seen(None)
            return True
        lifted, requeued = await resume_provider(self._ledger, self._provider)
        logger.warning(
            "%s balance is %s: resuming its payouts; %d refused for want of money are "
            "queued again%s", self._provider, available, requeued,
            "" if lifted is not None else " (the pause had been lifted already)",
        )  # fmt: skip
        self._seen(None)
        return True
