"""One claimed ledger row being driven: its recovery points, its lease and its fence."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, NoReturn

from .._errors import ConfigurationError
from .._shield import shielded
from ..ledger import (
    Claim,
    LeaseLostError,
    Ledger,
    LedgerError,
    LedgerOutcomeUnknownError,
    LedgerState,
    OperationTakenError,
    PayoutRecord,
)
from ._heartbeat import Heartbeats
from ._observe import Observer
from ._waiting import GRACE, RETRY_AFTER, TAKEN_OVER

__all__ = [
    "FenceNotConfirmedError",
    "ForeignOperationError",
    "Run",
    "UntrustedRowError",
    "fence_margin",
    "in_flight_bound",
]

logger = logging.getLogger("payout_async")

#: A hook awaited after a money-moving step is recorded and before its fence is
#: checked (tests pause a worker there: ``payout_async.testing.pause_before_send``).
BeforeSend = Callable[[PayoutRecord], Awaitable[None]]


def fence_margin(lease_seconds: float) -> float:
    """How much longer than a money-moving request the lease must still run when the
    request leaves: a tenth of the lease (12 s for the default 120 s). It bounds the
    pause the protocol assumes between a confirmed fence write and the request's first
    byte (``docs/protocol.md``, assumption A2)."""
    return lease_seconds / 10


def in_flight_bound(request_timeout: float, lease_seconds: float) -> float:
    """The longest a money-moving request can still be under way after the fence write
    that let it leave: its total timeout plus ``fence_margin``. A drive that takes a
    row over waits this long from its claim before any evidence about the row counts."""
    return request_timeout + fence_margin(lease_seconds)


class FenceNotConfirmedError(LeaseLostError):
    """The fence write before a money-moving request failed or its outcome is unknown:
    the request was not sent, and this drive stops where it stands (the row keeps its
    recovery point; whoever drives it next treats its last request as unknown)."""


class UntrustedRowError(LeaseLostError):
    """The row was altered outside payout-async while this drive held it: it is set
    aside (``needs_attention``) and this drive sends nothing more."""


class ForeignOperationError(LeaseLostError):
    """An answer named an operation (or payoff) that another row holds
    (``OperationTakenError``): no evidence about this payout. The row is set aside
    (``needs_attention``) and this drive sends nothing more; that operation is the
    other payout's, never this drive's to execute or delete."""


def _payout(key: str | None) -> str:
    return "another payout" if key is None else f"payout {key!r}"


class Run:
    """One drive's view of one row: ``move`` writes the next recovery point under the
    drive's lease (owner and fencing token), ``fence`` guards money-moving requests.

    What this drive believes about its own lease is never evidence: every
    money-moving request leaves only after ``fence`` has written to the ledger that the
    lease is still this drive's (a conditional write, on the ledger's clock), and once
    a renewal or a move has learnt that the lease is gone (``lost``) nothing more
    leaves. ``quiet_from`` (this process's monotonic clock) is when no request of an
    earlier holder of the row can still be in flight: the claim plus ``in_flight_bound``
    -- whatever the lease taken over still had to run, or whether its holder looked
    dead, since neither a stepped ledger clock nor a wrong verdict may shorten it.
    """

    def __init__(
        self,
        ledger: Ledger,
        claim: Claim,
        *,
        lease_seconds: float,
        request_timeout: float,
        claimed_after: float,
        attempts_before: int = 0,
        heartbeats: Heartbeats,
        before_send: BeforeSend | None = None,
        observer: Observer | None = None,
    ) -> None:
        record = claim.record
        assert record.lease_owner is not None, "a claimed row has a lease"
        self.ledger = ledger
        self.record = record
        self.owner = record.lease_owner
        self.token = record.lease_token
        self.lease_seconds = lease_seconds
        self.attempts_before = attempts_before
        self.in_flight_bound = in_flight_bound(request_timeout, lease_seconds)
        # A row this drive recorded itself had nothing sent before; any other may have
        # a request of its previous holder under way, fenced before this claim.
        self.quiet_from = claimed_after + (0.0 if claim.created else self.in_flight_bound)
        #: True until the drive's first step ends when this drive recorded the row's
        #: intent itself (``Claim.created``): nothing was sent for it yet.
        self.just_begun = claim.created
        #: From when (monotonic) the outcome of this drive's last lost money-moving
        #: request is waited out, if it lost one (``answer_lost``).
        self.unknown_from: float | None = None
        #: When this drive's last fence write was confirmed (monotonic), if one was.
        self.fenced_at: float | None = None
        self._heartbeats = heartbeats
        self._before_send = before_send
        self._observer = observer or Observer()
        #: True while ``before_send`` runs: a frozen process renews no lease either.
        self.frozen = False
        #: True once the last move gave the lease back (a final or releasing move).
        self.released = False
        #: True once a renewal, a move or a fence learnt that the lease is gone: no
        #: request may leave from this drive any more.
        self.lost = False

    @property
    def attempts_this_pass(self) -> int:
        """Money-moving requests sent since this pass began: ``reconcile()`` grants a
        parked row a fresh budget, so it counts from where it reopened the row."""
        return self.record.attempts - self.attempts_before

    def unknown_since(self) -> float:
        """The monotonic time from which an unknown outcome is being waited out: when
        this drive's lost request can no longer be under way, else when no earlier
        holder's request can."""
        return self.quiet_from if self.unknown_from is None else self.unknown_from

    def waiting(self, reason: str, window: float) -> AbstractContextManager[None]:
        """While the body runs this drive waits out ``window`` seconds counted from
        ``unknown_since`` (Enot's grace, IntellectMoney's settle window): told to the
        ``on_wait`` hook, if any. An Enot ``GRACE`` counted from a takeover's quiet
        period is told as ``TAKEN_OVER``."""
        if reason == GRACE and self.unknown_from is None:
            reason = TAKEN_OVER
        return self._observer.waiting(self.record, reason, window, self.unknown_since() + window)

    def answer_lost(self) -> None:
        """Note that the answer to this drive's money-moving request was lost. The
        request may still be under way -- a proxy that cut the connection early may
        pass it on later -- until ``in_flight_bound`` after its fence: the grace or
        settle window counts from then, or from now if that is later."""
        now = time.monotonic()
        sent_by = now if self.fenced_at is None else self.fenced_at + self.in_flight_bound
        self.unknown_from = max(now, sent_by)

    async def move(
        self,
        state: LedgerState,
        *,
        note: str | None = None,
        add_attempt: bool = False,
        release: bool = False,
        ours: bool = False,
        **changes: Any,
    ) -> PayoutRecord:
        """Durably move the row to ``state`` before anything else happens;
        ``release``: the drive ends there, and gives the lease back in the same write.

        An ``operation_id`` another row holds (``OperationTakenError``) sets the row
        aside: the answer that named it is about another payout. Unless ``ours``: the
        provider's answer names this payout's own reference, so the other row was
        answered about this one -- the move is made without the id.

        Every ledger finishes a transition it has started even when the caller is
        cancelled (the ``Ledger.transition`` contract), so no shield is needed here.
        A transition the ledger did not write raises (the drive stops at the last
        recovery point); one whose commit is unknown is read back (``_landed``).
        """
        before = self.record.state
        try:
            self.record = await self.ledger.transition(
                self.record.provider,
                self.record.key,
                owner=self.owner,
                token=self.token,
                state=state,
                lease_seconds=self.lease_seconds,
                note=note,
                add_attempt=add_attempt,
                release=release,
                **changes,
            )
        except LeaseLostError:
            self.lost = True
            raise
        except LedgerOutcomeUnknownError as error:
            self.record = await self._landed(state, error, released=release)
        except OperationTakenError as error:
            if not ours:
                await self._foreign(error)
            del changes["operation_id"]
            kept = f"{error.operation_id} is recorded for {_payout(error.holder)}: not here"
            return await self.move(
                state, note=kept if note is None else f"{note}; {kept}",
                add_attempt=add_attempt, release=release, **changes,
            )  # fmt: skip
        self.released = release or state.is_final
        told = self._observer.transitioned(before, self.record, note)  # the log line
        if told is not None:
            await told  # on_transition
        if self.record.untrusted is not None and not self.released:
            await self._set_aside(self.record.untrusted, UntrustedRowError)
        return self.record

    async def _foreign(self, error: OperationTakenError) -> NoReturn:
        """An answer named another row's operation: park the row, and send nothing
        more (``ForeignOperationError`` however it ends, the row taken over meanwhile
        too: that operation is never this drive's to delete)."""
        reason = (
            f"{error.provider} answered with {error.operation_id}, which "
            f"{_payout(error.holder)} holds: an answer about another payout (replayed by "
            "a gateway or proxy, or the provider's own) is no evidence about this one; "
            "nothing more was sent"
        )
        logger.warning("payout %s set aside: %s", self.record.key, reason)
        try:
            await self._set_aside(reason, ForeignOperationError)
        except LeaseLostError as lost:
            if isinstance(lost, ForeignOperationError):
                raise
            raise ForeignOperationError(f"{self.record.key}: {reason}") from lost

    async def _set_aside(self, reason: str, stop: type[LeaseLostError]) -> NoReturn:
        """Park the row for ``reason`` and send nothing more (``stop`` ends the
        drive): the row read back from a move fails its checks (altered outside
        payout-async while this drive held it: DESIGN rule 14), or a move would have
        recorded another row's operation."""
        self.lost = True
        await self.ledger.transition(
            self.record.provider, self.record.key, owner=self.owner, token=self.token,
            state=LedgerState.NEEDS_ATTENTION, lease_seconds=self.lease_seconds,
            reason=reason, release=True,
        )  # fmt: skip
        self.released = True
        raise stop(f"{self.record.key}: {reason}")

    async def _landed(
        self, state: LedgerState, error: LedgerOutcomeUnknownError, *, released: bool
    ) -> PayoutRecord:
        """The row, if it shows that this drive's transition to ``state`` committed
        after all; ``LeaseLostError`` if another drive has it now; else ``error``: the
        drive stops here, and should the write still land later, that is a commit
        followed by a crash, which ``resume()`` handles (and once the lease is given
        back or taken over, the fence turns such a late write away)."""
        try:
            row = await self.ledger.get(self.record.provider, self.record.key)
        except LedgerError:
            raise error from None
        if row is None:
            raise error
        # A final move, or one that released, ends the lease.
        ended = (state.is_final or released) and row.lease_owner is None
        taken = row.lease_token != self.token or (row.lease_owner != self.owner and not ended)
        if taken or (row.state.is_final and row.state is not state):
            self.lost = True
            raise LeaseLostError(f"{row.key} is not this drive's to move any more") from error
        if row.state is state and row.updated_at != self.record.updated_at:
            return row
        raise error

    async def give_up(
        self, reason: str, error: BaseException | None = None, **changes: Any
    ) -> PayoutRecord:
        """Park the row in ``needs_attention``: ``reason`` (and ``error``) say why;
        ``changes`` are set in the same write. The drive ends there: the lease is given
        back in the same write."""
        return await self._stop(LedgerState.NEEDS_ATTENTION, reason, error, **changes)

    async def refused(self, reason: str, error: BaseException) -> PayoutRecord:
        """The provider refused the payout and nothing exists there: the row ends
        ``refused`` (its lease given back), and the key may be paid again once the
        cause is fixed."""
        return await self._stop(LedgerState.REFUSED, reason, error)

    async def _stop(
        self, state: LedgerState, reason: str, error: BaseException | None, **changes: Any
    ) -> PayoutRecord:
        if error is None:
            return await self.move(state, reason=reason, release=True, **changes)
        return await self.move(
            state, reason=f"{reason}: {error}", last_error=str(error), release=True, **changes
        )

    async def renew(self, lease_seconds: float | None = None) -> None:
        """Extend the lease to ``lease_seconds`` (default: the drive's lease) from now
        on the ledger's clock, if this drive still holds it; ``LeaseLostError`` (and
        ``lost`` set) when it does not."""
        if self.lost:
            raise LeaseLostError(f"{self.record.key}: this drive's lease is gone")
        try:
            await self.ledger.renew(
                self.record.provider,
                self.record.key,
                owner=self.owner,
                token=self.token,
                lease_seconds=lease_seconds or self.lease_seconds,
            )
        except LeaseLostError:
            self.lost = True
            raise

    async def fence(self, request_timeout: float | None) -> None:
        """Let a money-moving request leave only once the ledger has confirmed, in one
        conditional write on its own clock, that this drive still holds the row and
        that its lease now outlives the request (its total timeout plus
        ``fence_margin``). Anything but a confirmed write sends nothing:
        ``LeaseLostError`` when the lease is gone, ``FenceNotConfirmedError`` when the
        ledger could not say."""
        if self._before_send is not None:
            self.frozen = True
            try:
                await self._before_send(self.record)
            finally:
                self.frozen = False
        if request_timeout is None:
            raise ConfigurationError("a money-moving request needs a total timeout")
        needed = in_flight_bound(request_timeout, self.lease_seconds)
        try:
            await self.renew(max(self.lease_seconds, needed))
        except LedgerError as error:
            raise FenceNotConfirmedError(
                f"{self.record.key}: the ledger did not confirm the lease ({error}); not sending"
            ) from error
        self.fenced_at = time.monotonic()

    def heartbeat(self) -> AbstractAsyncContextManager[None]:
        """``async with run.heartbeat():`` renews the lease every third of its length
        while the body runs (``Heartbeats``), so that a long poll or reconciliation
        keeps the row. A lost lease is noticed by the next ``move`` or ``fence``
        (``LeaseLostError``), which guard every step."""
        # Whoever listens to waits hears of this payout's Retry-After holds too.
        holds = None if self._observer.on_wait is None else self._held
        return self._heartbeats.beating(self, holds)

    def _held(self, seconds: float) -> AbstractContextManager[None]:
        """A provider's ``Retry-After`` hold of this payout, told as a wait."""
        return self._observer.waiting(self.record, RETRY_AFTER, seconds, time.monotonic() + seconds)

    async def release(self) -> None:
        """Give the row back (shielded: it must happen even when cancelled), unless
        the last move did already."""
        if self.released:
            return
        await shielded(
            self.ledger.release(
                self.record.provider, self.record.key, owner=self.owner, token=self.token
            )
        )

    async def release_quietly(self) -> None:
        """``release``, on the way out of a failed or cancelled drive: a ledger error
        here is logged, not raised over the error being handled (the lease then runs
        out on its own)."""
        try:
            await self.release()
        except Exception as error:
            logger.warning("could not give back the lease of %s: %s", self.record.key, error)
