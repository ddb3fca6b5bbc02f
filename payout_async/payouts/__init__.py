"""The reliability layer: ``Payouts`` drives each payout through the ledger."""

from ._flow import UnknownRecoveryPointError
from ._observe import OnTransition
from ._orchestrator import Payouts, intent_for, order_id_for
from ._result import PayoutResult, PayoutStatus
from ._waiting import OnWait, Waiting
from ._worker import WorkerSummary

__all__ = [
    "OnTransition",
    "OnWait",
    "PayoutResult",
    "PayoutStatus",
    "Payouts",
    "UnknownRecoveryPointError",
    "Waiting",
    "WorkerSummary",
    "intent_for",
    "order_id_for",
]
