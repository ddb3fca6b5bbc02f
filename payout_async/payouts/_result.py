"""What ``Payouts`` tells its caller about one payout."""

from __future__ import annotations

import enum

import attrs

from ..ledger import LedgerError, LedgerOutcomeUnknownError, LedgerState, PayoutRecord

__all__ = ["PayoutResult", "PayoutStatus", "Settings"]


class PayoutStatus(enum.StrEnum):
    """Where a payout stands, from the caller's point of view."""

    SUCCEEDED = "succeeded"  # the provider paid it
    FAILED = "failed"  # the provider refused or failed it (or it was deleted unpaid)
    PROCESSING = "processing"  # under way; ``resume()`` (or another worker) finishes it
    NEEDS_ATTENTION = "needs_attention"  # no rule can settle it; ``reason`` says why
    REJECTED = "rejected"  # refused, nothing sent or nothing exists: bad input, or the
    # provider refused it (then the key may be paid again once the cause is fixed)
    NOT_STARTED = "not_started"  # the ledger was unavailable: nothing recorded or sent


_BY_STATE = {
    LedgerState.SUCCEEDED: PayoutStatus.SUCCEEDED,
    LedgerState.FAILED: PayoutStatus.FAILED,
    LedgerState.CANCELLED: PayoutStatus.FAILED,
    LedgerState.NEEDS_ATTENTION: PayoutStatus.NEEDS_ATTENTION,
    LedgerState.REFUSED: PayoutStatus.REJECTED,
}


@attrs.frozen(slots=False)
class PayoutResult:
    """The outcome of ``pay()`` (or a snapshot from ``get()``).

    ``provider_id`` is IntellectMoney's PayoutOperationId or Enot's payoff_id;
    ``attempts`` counts the money-moving requests sent; ``state`` is the ledger's
    recovery point (``None`` when nothing was recorded).
    """

    key: str
    status: PayoutStatus
    provider: str
    provider_id: str | None = None
    provider_status: str | None = None
    order_id: str | None = None
    reason: str | None = None
    attempts: int = 0
    state: LedgerState | None = None

    @classmethod
    def from_record(cls, record: PayoutRecord, *, reason: str | None = None) -> PayoutResult:
        """The result a ledger row stands for."""
        status = _BY_STATE.get(record.state, PayoutStatus.PROCESSING)
        return cls(
            key=record.key,
            status=status,
            provider=record.provider,
            provider_id=record.operation_id,
            provider_status=record.provider_status,
            order_id=record.order_id,
            reason=reason or record.reason,
            attempts=record.attempts,
            state=record.state,
        )

    @classmethod
    def not_started(cls, key: str, provider: str, error: BaseException) -> PayoutResult:
        """The result of a payout whose intent could not be recorded, so nothing was
        sent: a re-run pays it. (When the ledger could not say whether the intent was
        recorded, a pending row may exist, leased to this worker for a while: the
        re-run, or ``resume()``, takes it up once that lease has run out.)"""
        what = "ledger unavailable" if isinstance(error, LedgerError) else "not recorded"
        maybe = ""
        if isinstance(error, LedgerOutcomeUnknownError):
            maybe = "; the intent may have been recorded, to be taken up once its lease ends"
        return cls(
            key=key,
            status=PayoutStatus.NOT_STARTED,
            provider=provider,
            reason=f"{what}: nothing was sent{maybe} ({type(error).__name__}: {error})",
        )


@attrs.frozen
class Settings:
    """Tuning of the payout flows (see ``Payouts``)."""

    lease_seconds: float = 120.0
    max_send_attempts: int = 3
    grace: float = 60.0
    execute_settle: float = 60.0
    lookup_before_create: bool = False
    #: Enot: how long a drive that created a payoff waits for its webhook before polling.
    webhook_wait: float = 0.0
