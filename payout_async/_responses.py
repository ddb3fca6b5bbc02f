"""The one place where an HTTP answer becomes decoded JSON or a typed error."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
from ._numbers import clip
from ._redact import Redactor
from ._retry import OperationKind
from ._summary import html_summary
from ._transport import HTTPResponse

__all__ = ["AnswerReader", "moves_money"]

T = TypeVar("T")
E = TypeVar("E", bound=APIError)

#: Answers that say nothing about whether the provider acted: a timeout (408, often
#: from a proxy or the provider's edge after the request was handed on) and gateway
#: errors. On a money-moving call they are *outcome unknown*, never a refusal.
_SILENT_ON_OUTCOME = frozenset({408, 502, 504})
#: The longest request id kept from an answer.
_MAX_REQUEST_ID = 100

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


#: How much of an error body is read into a message, and how much of it is kept.
_READ = 4096
_KEPT = 200


def _no_request_id(payload: Any) -> object:
    return None


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class AnswerReader:
    """Reads one provider's answers: decodes them and builds every error they stand
    for, each carrying the request's method and URL, the HTTP status, the raw body,
    ``Retry-After`` and the provider's request id, with secrets redacted.

    ``error_message`` pulls the provider's message out of a decoded error body;
    ``request_id`` pulls the provider's id of the exchange out of a decoded answer
    (IntellectMoney's ``OperationId``); both get whatever the body decoded to.
    """

    def __init__(
        self,
        redactor: Redactor,
        *,
        error_message: Callable[[Any], str | None],
        request_id: Callable[[Any], object] = _no_request_id,
    ) -> None:
        self.redactor = redactor
        self._error_message = error_message
        self._request_id = request_id

    def __repr__(self) -> str:
        return f"AnswerReader({self.redactor!r})"

    def masking(self, values: Iterable[str | None]) -> AnswerReader:
        """This reader for one call whose recipients ``values`` are masked wherever
        its answers echo them (see ``Redactor.masking``)."""
        return AnswerReader(
            self.redactor.masking(values),
            error_message=self._error_message,
            request_id=self._request_id,
        )

    def _clipped(self, text: str) -> str:
        """``text`` redacted, then cut to ``_KEPT`` characters (never inside a number:
        a card cut in two is no card any scrubber would see)."""
        return clip(self.redactor(text), _KEPT)

    def _snippet(self, body: bytes) -> str:
        """The start of an error body, on one line: an HTML page (a gateway's error) as
        its title and size (``html_summary``)."""
        text = body[:_READ].decode("utf-8", "replace").strip()
        page = html_summary(body, text)
        if page is not None:
            return self.redactor(page)
        return self._clipped(" ".join(text.split())) if text else "<empty body>"

    def request_id(self, response: HTTPResponse) -> str | None:
        """The provider's id of this exchange, if the body names one (redacted)."""
        try:
            value = self._request_id(loads(response.body))
        except UnreadableError:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        text = str(value).strip()
        if not text or len(text) > _MAX_REQUEST_ID or not text.isprintable():
            return None
        return self.redactor(text)

    def error(
        self,
        error_type: type[E],
        response: HTTPResponse,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
    ) -> E:
        """``error_type`` for ``response`` with the (redacted) ``message``; ``status``
        overrides the HTTP status (an Enot error envelope behind HTTP 200)."""
        return error_type(
            self.redactor(message),
            status=response.status if status is None else status,
            code=code,
            body=response.body,
            method=response.method,
            url=self.redactor(response.url),
            request_id=self.request_id(response),
            retry_after=response.retry_after,
        )

    def for_status(
        self, response: HTTPResponse, message: str, *, status: int | None = None
    ) -> APIError:
        """The ``APIError`` subclass for an HTTP error ``status`` (default: the
        answer's own): ``HTTP 503: message``."""
        status = response.status if status is None else status
        error_type = _BY_STATUS.get(status)
        if error_type is None:
            error_type = ServerError if status >= 500 else InvalidRequestError
        return self.error(error_type, response, f"HTTP {status}: {message}", status=status)

    def unreadable(
        self,
        response: HTTPResponse,
        kind: OperationKind,
        reason: str,
        *,
        provider_message: str | None = None,
    ) -> OutcomeUnknownError | InvalidResponseError:
        """The error for an answer that says nothing readable: ``OutcomeUnknownError``
        when the call moves money (the provider may have acted), else
        ``InvalidResponseError``.

        The message (redacted) names the reason and the provider's own message, or
        the start of the body.
        """
        body = response.body
        said = self._snippet(body) if provider_message is None else self._clipped(provider_message)
        why = self._clipped(reason)
        message = f"HTTP {response.status} answer cannot be read ({why}): {said}"
        if not moves_money(kind):
            return self.error(InvalidResponseError, response, message)
        return OutcomeUnknownError(
            self.redactor(message),
            method=response.method,
            url=self.redactor(response.url),
            status=response.status,
            body=response.body,
            request_id=self.request_id(response),
        )

    def decode(self, response: HTTPResponse, kind: OperationKind) -> dict[str, Any]:
        """Decode a JSON object answer, or raise the typed error it stands for.

        An HTTP error status raises ``for_status``, except that on a money-moving call
        a 408 timeout or a 502/504 gateway error is ``unreadable`` (*outcome unknown*). A 2xx answer
        that is not a JSON object within the decoder's bounds (see ``_decode``) is
        ``unreadable``. Money in the JSON is parsed as ``Decimal``.
        """
        status = response.status
        if moves_money(kind) and status in _SILENT_ON_OUTCOME:
            raise self.unreadable(
                response, kind, "a timeout or gateway error, silent on the outcome"
            )
        payload: Any = None
        problem: str | None = None
        try:
            payload = loads(response.body)
        except UnreadableError as error:
            problem = str(error)
        if status >= 300:
            said = self._error_message(payload) if problem is None else None
            raise self.for_status(response, said or self._snippet(response.body))
        if status < 200:
            raise self.unreadable(response, kind, "not a final HTTP status")
        if problem is not None:
            raise self.unreadable(response, kind, problem)
        if not isinstance(payload, dict):
            raise self.unreadable(response, kind, "not a JSON object")
        return payload

    def read(
        self, response: HTTPResponse, kind: OperationKind, read: Callable[[HTTPResponse], T]
    ) -> T:
        """``read(response)``, with the guarantee that only a ``PayoutError`` leaves it.

        ``read`` decodes and checks the answer and builds the model; any other
        exception it raises (a malformed field, a shape nobody foresaw) means the
        answer cannot be read and becomes ``unreadable``.
        """
        try:
            return read(response)
        except PayoutError:
            raise
        except Exception as error:
            reason = str(error) if isinstance(error, UnreadableError) else _describe(error)
            raise self.unreadable(response, kind, reason) from error
