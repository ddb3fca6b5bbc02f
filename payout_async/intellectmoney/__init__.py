"""IntellectMoney payouts: signing, the client, its models and requests."""

from ._client import DEFAULT_BASE_URL, IntellectMoneyClient, UserTokenSource
from ._models import MassPaymentOperationState, PayoutMethod, PayoutOperation
from ._poller import wait_for_final
from ._request import Api, OperationRequest
from ._signing import SIGN_FIELDS, sign

__all__ = [
    "DEFAULT_BASE_URL",
    "SIGN_FIELDS",
    "Api",
    "IntellectMoneyClient",
    "MassPaymentOperationState",
    "OperationRequest",
    "PayoutMethod",
    "PayoutOperation",
    "UserTokenSource",
    "sign",
    "wait_for_final",
]
