"""The reliability layer: ``Payouts`` drives each payout through the ledger."""

from ._flow import UnknownRecoveryPointError
from ._observe import OnTransition
from ._orchestrator import Payouts, order_id_for
from ._result import PayoutResult, PayoutStatus

__all__ = [
    "OnTransition",
    "PayoutResult",
    "PayoutStatus",
    "Payouts",
    "UnknownRecoveryPointError",
    "order_id_for",
]
