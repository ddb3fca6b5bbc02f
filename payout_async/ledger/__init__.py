"""Durable idempotency records: one protocol, three backends."""

from ._base import (
    ACTIVE_STATES,
    FINAL_STATES,
    PARKED_STATES,
    Claim,
    Enqueued,
    EnqueueOutcome,
    Intent,
    LeaseHolder,
    LeaseLostError,
    Ledger,
    LedgerState,
    PayoutRecord,
    Transition,
    WorkListener,
    params_hash,
)
from ._errors import LedgerError, LedgerNotWrittenError, LedgerOutcomeUnknownError
from ._memory import MemoryLedger
from ._postgres import PostgresLedger
from ._sqlite import SQLiteLedger
from ._url import ledger_from_url

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "PARKED_STATES",
    "Claim",
    "EnqueueOutcome",
    "Enqueued",
    "Intent",
    "LeaseHolder",
    "LeaseLostError",
    "Ledger",
    "LedgerError",
    "LedgerNotWrittenError",
    "LedgerOutcomeUnknownError",
    "LedgerState",
    "MemoryLedger",
    "PayoutRecord",
    "PostgresLedger",
    "SQLiteLedger",
    "Transition",
    "WorkListener",
    "ledger_from_url",
    "params_hash",
]
