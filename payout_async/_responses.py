"""The one place where an HTTP answer becomes decoded JSON or a typed error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._decode import UnreadableError, loads
from ._errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    OutcomeUnknownError,
    PayoutError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from ._redact import Redactor
from ._retry import OperationKind
from ._transport import HTTPResponse

__all__ = ["decode_answer", "error_for_status", "moves_money", "read_answer", "unreadable"]

T = TypeVar("T")

#: Gateway answers that say nothing about whether the provider acted.
_AMBIGUOUS_GATEWAY = frozenset({502, 504})

_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


def moves_money(kind: OperationKind) -> bool:
    """Whether a call of ``kind`` moves money (IntellectMoney execute, Enot payoff
    create): then an answer that cannot be read means *outcome unknown*."""
    return kind is OperationKind.MONEY


def error_for_status(
    response: HTTPResponse, message: str, *, code: int | None = None, redactor: Redactor
) -> APIError:
    """The ``APIError`` subclass for an HTTP error status."""
    status = response.status
    text = redactor(f"HTTP {status}: {message}")
    if status == 429:
        return RateLimitError(
            text, status=status, code=code, body=response.body, retry_after=response.retry_after
        )
    error_type = _BY_STATUS.get(status)
    if error_type is None:
        error_type = ServerError if status >= 500 else InvalidRequestError
    return error_type(text, status=status, code=code, body=response.body)


def _snippet(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip() or "<empty body>"


def unreadable(
    response: HTTPResponse,
    kind: OperationKind,
    reason: str,
    *,
    redactor: Redactor,
    provider_message: str | None = None,
) -> OutcomeUnknownError | InvalidResponseError:
    """The error for an answer that cannot be read: ``OutcomeUnknownError`` when the
    call moves money (the provider may have acted), else ``InvalidResponseError``.

    Both carry the HTTP status and the raw body; the message (redacted) names the
    reason and the provider's own message, or the start of the body.
    """
    said = provider_message if provider_message is not None else _snippet(response.body)
    text = redactor(
        f"{response.method} {response.url}: HTTP {response.status} answer cannot be read "
        f"({reason}): {said[:200]}"
    )
    if moves_money(kind):
        return OutcomeUnknownError(
            text,
            method=response.method,
            url=response.url,
            status=response.status,
            body=response.body,
        )
    return InvalidResponseError(text, status=response.status, body=response.body)


def decode_answer(
    response: HTTPResponse,
    *,
    kind: OperationKind,
    error_message: Callable[[Any], str | None],
    redactor: Redactor,
) -> dict[str, Any]:
    """Decode a JSON object answer, or raise the typed error it stands for.

    ``error_message`` pulls the provider's message out of a decoded error body. An
    HTTP error status raises ``error_for_status``; on a money-moving call a 502/504
    gateway page raises ``OutcomeUnknownError``. A 2xx answer that is not a JSON
    object within the decoder's bounds (see ``_decode``) raises ``unreadable``.
    Money in the JSON is parsed as ``Decimal``.
    """
    status = response.status
    if moves_money(kind) and status in _AMBIGUOUS_GATEWAY:
        raise OutcomeUnknownError(
            redactor(f"{response.method} {response.url}: HTTP {status} from a gateway"),
            method=response.method,
            url=response.url,
            status=status,
            body=response.body,
        )
    payload: Any = None
    problem: str | None = None
    try:
        payload = loads(response.body)
    except UnreadableError as error:
        problem = str(error)
    if status >= 300:
        message = (error_message(payload) if problem is None else None) or _snippet(response.body)
        raise error_for_status(response, message, redactor=redactor)
    if status < 200:
        raise unreadable(response, kind, "not a final HTTP status", redactor=redactor)
    if problem is not None:
        raise unreadable(response, kind, problem, redactor=redactor)
    if not isinstance(payload, dict):
        raise unreadable(response, kind, "not a JSON object", redactor=redactor)
    return payload


def read_answer(
    response: HTTPResponse,
    kind: OperationKind,
    read: Callable[[HTTPResponse], T],
    *,
    redactor: Redactor,
) -> T:
    """``read(response)``, with the guarantee that only a ``PayoutError`` leaves it.

    ``read`` decodes and checks the answer and builds the model; any other exception
    it raises (a malformed field, a shape nobody foresaw) means the answer cannot be
    read and becomes ``unreadable`` -- ``OutcomeUnknownError`` on a money-moving call.
    """
    try:
        return read(response)
    except PayoutError:
        raise
    except Exception as error:
        reason = str(error) if isinstance(error, UnreadableError) else _describe(error)
        raise unreadable(response, kind, reason[:200], redactor=redactor) from error


def _describe(error: Exception) -> str:
    text = str(error)[:100]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
