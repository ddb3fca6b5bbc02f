"""payout-async: IntellectMoney and Enot payouts over asyncio, each sent at most once
and driven to a known final state."""

from ._errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    OutcomeUnknownError,
    PayoutError,
    PermissionDeniedError,
    ProviderRejectedError,
    RateLimitError,
    RequestNotSentError,
    ServerError,
    SignatureError,
    TransportError,
    ValidationError,
)
from ._polling import PollPolicy
from ._rate import RateLimit
from ._retry import NO_RETRY, OperationKind, RetryPolicy
from ._transport import Timeouts
from ._version import __version__
from .enot import EnotClient
from .intellectmoney import IntellectMoneyClient
from .payouts import PayoutResult, Payouts, PayoutStatus

__all__ = [
    "NO_RETRY",
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "EnotClient",
    "IdempotencyConflictError",
    "IntellectMoneyClient",
    "InvalidRequestError",
    "InvalidResponseError",
    "NotFoundError",
    "OperationKind",
    "OutcomeUnknownError",
    "PayoutError",
    "PayoutResult",
    "PayoutStatus",
    "Payouts",
    "PermissionDeniedError",
    "PollPolicy",
    "ProviderRejectedError",
    "RateLimit",
    "RateLimitError",
    "RequestNotSentError",
    "RetryPolicy",
    "ServerError",
    "SignatureError",
    "Timeouts",
    "TransportError",
    "ValidationError",
    "__version__",
]
