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
    LedgerIdentity,
    LedgerState,
    PayoutRecord,
    Settlement,
    Transition,
    WorkListener,
    params_hash,
)
from ._errors import (
    LedgerError,
    LedgerKeyError,
    LedgerNotWrittenError,
    LedgerOutcomeUnknownError,
    LedgerOutdatedError,
    LedgerTooNewError,
    OperationTakenError,
)
from ._memory import MemoryLedger
from ._pauses import ProviderPause
from ._postgres import PostgresLedger
from ._recipient import ALTERED as ROW_ALTERED
from ._recipient import new_encryption_key
from ._rotate import KeyUse, RotationReport
from ._rotate import rotate as rotate_keys
from ._sqlite import SQLiteLedger
from ._url import BuiltInLedger, ledger_from_url

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "PARKED_STATES",
    "ROW_ALTERED",
    "BuiltInLedger",
    "Claim",
    "EnqueueOutcome",
    "Enqueued",
    "Intent",
    "KeyUse",
    "LeaseHolder",
    "LeaseLostError",
    "Ledger",
    "LedgerError",
    "LedgerIdentity",
    "LedgerKeyError",
    "LedgerNotWrittenError",
    "LedgerOutcomeUnknownError",
    "LedgerOutdatedError",
    "LedgerState",
    "LedgerTooNewError",
    "MemoryLedger",
    "OperationTakenError",
    "PayoutRecord",
    "PostgresLedger",
    "ProviderPause",
    "RotationReport",
    "SQLiteLedger",
    "Settlement",
    "Transition",
    "WorkListener",
    "ledger_from_url",
    "new_encryption_key",
    "params_hash",
    "rotate_keys",
]
