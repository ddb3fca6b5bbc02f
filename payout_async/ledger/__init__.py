"""Durable idempotency records: one protocol, three backends."""

from ._base import (
    ACTIVE_STATES,
    FINAL_STATES,
    Claim,
    LeaseLostError,
    Ledger,
    LedgerState,
    PayoutRecord,
    Transition,
    params_hash,
)
from ._memory import MemoryLedger

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "Claim",
    "LeaseLostError",
    "Ledger",
    "LedgerState",
    "MemoryLedger",
    "PayoutRecord",
    "Transition",
    "params_hash",
]
