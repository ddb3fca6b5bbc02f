"""Every exception payout-async raises, in one place.

The tree is organised by what the caller can do about a failure:

* ``ValidationError`` -- fix the input; nothing was sent.
* ``RequestNotSentError`` -- nothing reached the provider; any call is safe to repeat.
* ``OutcomeUnknownError`` -- the request may have been acted on; look the payout up
  before doing anything else (the reconciliation layer does this for you).
* ``APIError`` and its subclasses -- the provider answered; ``status``, ``code``,
  ``message`` and the raw ``body`` say how.

Transport and API errors alike carry the request's ``method`` and ``url`` and the
provider's ``request_id`` when its answer names one; ``str()`` shows them after the
message. Messages never contain secrets: the clients scrub them before raising.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConfigurationError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "InvalidResponseError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PayoutError",
    "PermissionDeniedError",
    "ProviderRejectedError",
    "RateLimitError",
    "RequestNotSentError",
    "ServerError",
    "SignatureError",
    "TransportError",
    "ValidationError",
]


class PayoutError(Exception):
    """Base class of every error raised by payout-async."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(PayoutError):
    """The client or orchestrator was set up wrongly (missing key, bad option)."""


class ValidationError(PayoutError, ValueError):
    """An argument broke a documented rule; raised before any network call."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class IdempotencyConflictError(PayoutError, ValueError):
    """An idempotency key was reused with different payout parameters; or an Enot
    ``order_id`` already belongs to another key (``order_id`` is then set); or the key
    already belongs to a payout through another provider (``provider`` and ``state``
    are then that payout's: a key is one payout, whatever the provider)."""

    def __init__(
        self,
        key: str,
        *,
        order_id: str | None = None,
        provider: str | None = None,
        state: str | None = None,
    ) -> None:
        if provider is not None:
            message = (
                f"idempotency key {key!r} already belongs to a payout through {provider} "
                f"(state {state}): a key is one payout, whatever the provider"
            )
            if state in ("refused", "failed", "cancelled"):
                message += "; to pay it through another provider, say so (switch_provider)"
            else:
                message += "; it may move to another provider only once refused or failed there"
        elif order_id is None:
            message = f"idempotency key {key!r} was already used for a payout with other parameters"
        else:
            message = f"order_id {order_id!r} already belongs to another key than {key!r}"
        super().__init__(message)
        self.key = key
        self.order_id = order_id
        self.provider = provider
        self.state = state


class SignatureError(PayoutError):
    """A webhook's signature did not match its body (or, signed, it cannot be read)."""


def _located(message: str, method: str, url: str, request_id: str | None) -> str:
    """``POST https://host/path: message (request id ID)``; absent parts left out."""
    where = " ".join(part for part in (method, url) if part)
    text = f"{where}: {message}" if where else message
    return f"{text} (request id {request_id})" if request_id else text


class TransportError(PayoutError):
    """The HTTP exchange failed before a readable answer arrived.

    ``method`` and ``url`` name the request (``str()`` shows them before the
    message), ``status`` and ``body`` what arrived, if anything.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        body: bytes = b"",
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.request_id = request_id

    def __str__(self) -> str:
        return _located(self.message, self.method, self.url, self.request_id)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, method={self.method!r}, url={self.url!r}, "
            f"status={self.status}, request_id={self.request_id!r})"
        )


class RequestNotSentError(TransportError):
    """Nothing reached the provider (refused, DNS, connect timeout): safe to retry."""


class OutcomeUnknownError(TransportError):
    """The request may have been processed; reconcile before acting again."""


class APIError(PayoutError):
    """The provider answered with an error.

    ``status`` is the HTTP status, ``code`` the provider's own code (if any),
    ``message`` the provider's text and ``body`` the raw response bytes.
    ``method`` and ``url`` name the request and ``request_id`` is the provider's id
    of the exchange where it gives one (IntellectMoney's ``OperationId``; Enot
    answers carry none); ``str()`` shows them with the message. ``retry_after`` is
    the answer's ``Retry-After`` in seconds, when it carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: int | None = None,
        body: bytes = b"",
        method: str = "",
        url: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body
        self.method = method
        self.url = url
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        return _located(self.message, self.method, self.url, self.request_id)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code}, "
            f"method={self.method!r}, url={self.url!r}, request_id={self.request_id!r})"
        )


class AuthenticationError(APIError):
    """Credentials were refused: HTTP 401, or IntellectMoney's ``Result.State.Code`` 2
    (NoAuth) with HTTP 200."""


class PermissionDeniedError(APIError):
    """The account may not do this (HTTP 403: payouts disabled, amount off tariff...)."""


class NotFoundError(APIError):
    """The object does not exist at the provider (HTTP 404)."""


class InvalidRequestError(APIError):
    """The provider refused the request's content (HTTP 400 / 422 and other 4xx)."""


class RateLimitError(APIError):
    """Too many requests (HTTP 429); ``retry_after`` is in seconds when given."""


class ServerError(APIError):
    """The provider failed internally (HTTP 5xx)."""


class InvalidResponseError(APIError):
    """The provider's answer could not be read (not JSON, wrong envelope)."""


class ProviderRejectedError(APIError):
    """IntellectMoney refused the call by its own code: ``OperationState.Code`` other
    than 0 or 1, or a ``Result.State.Code`` other than 0, 1 or 2 (2 is
    ``AuthenticationError``). ``status`` is then usually 200 -- the HTTP answer was
    fine, the provider's code said no; ``code`` is that code."""
