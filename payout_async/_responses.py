"""The one place where an HTTP answer becomes decoded JSON or a typed error."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ._errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from ._redact import Redactor
from ._transport import HTTPResponse

__all__ = ["decode_answer", "error_for_status"]

#: One decoder for every answer: money in the JSON becomes ``Decimal``.
_JSON = json.JSONDecoder(parse_float=Decimal)

#: Gateway answers that say nothing about whether the provider acted.
_AMBIGUOUS_GATEWAY = frozenset({502, 504})

_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}


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


def decode_answer(
    response: HTTPResponse,
    *,
    moves_money: bool,
    error_message: Callable[[Any], str | None],
    redactor: Redactor,
) -> Any:
    """Decode a JSON answer, or raise the typed error it stands for.

    ``error_message`` pulls the provider's message out of a decoded error body.
    On a money-moving call an answer that cannot be read (a 502/504 gateway page, a
    truncated or non-JSON 2xx body) raises ``OutcomeUnknownError``: the provider may
    have acted. Money in the JSON is parsed as ``Decimal``.
    """
    status = response.status
    if moves_money and status in _AMBIGUOUS_GATEWAY:
        raise OutcomeUnknownError(
            redactor(f"{response.method} {response.url}: HTTP {status} from a gateway"),
            method=response.method,
            url=response.url,
            status=status,
            body=response.body,
        )
    try:
        payload = _JSON.decode(response.body.decode("utf-8-sig"))  # tolerates a BOM
    except ValueError:  # UnicodeDecodeError included
        payload = None
        decoded = False
    else:
        decoded = True
    if status >= 300:
        message = (error_message(payload) if decoded else None) or _snippet(response.body)
        raise error_for_status(response, message, redactor=redactor)
    if not decoded or not isinstance(payload, dict):
        text = redactor(
            f"{response.method} {response.url}: HTTP {status} answer is not a JSON object: "
            f"{_snippet(response.body)}"
        )
        if moves_money:
            raise OutcomeUnknownError(
                text, method=response.method, url=response.url, status=status, body=response.body
            )
        raise InvalidResponseError(text, status=status, body=response.body)
    return payload
