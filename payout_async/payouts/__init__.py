"""The reliability layer: ``Payouts`` drives each payout through the ledger."""

from ._orchestrator import Payouts, intent_for, order_id_for
from ._result import PayoutResult, PayoutStatus
from ._worker import WorkerSummary

__all__ = ["PayoutResult", "PayoutStatus", "Payouts", "WorkerSummary", "intent_for", "order_id_for"]
