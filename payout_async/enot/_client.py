"""``EnotClient``: one method per Enot payoff API call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import aiohttp

from .._decode import check_about
from .._errors import ValidationError
from .._numbers import clip
from .._rate import RateLimit, limiter_for
from .._redact import Redactor
from .._responses import AnswerReader
from .._retry import OperationKind, RetryPolicy, call_with_retry
from .._transport import (
    USER_AGENT,
    HTTPResponse,
    Timeouts,
    Transport,
    TransportClient,
    json_body,
)
from .._validation import check_credential
from ._models import Balance, CreatedPayoff, Payoff, SbpBank, parse_banks, structure
from ._request import PayoffRequest

__all__ = ["DEFAULT_BASE_URL", "EnotClient"]

DEFAULT_BASE_URL = "https://api.enot.io"

T = TypeVar("T")


def _error_text(envelope: Any) -> str | None:
    if isinstance(envelope, dict) and envelope.get("error") not in (None, "", False):
        return clip(str(envelope["error"]), 500)
    return None


def _claimed_status(envelope: dict[str, Any]) -> int | None:
    claimed = envelope.get("status")
    if isinstance(claimed, int) and not isinstance(claimed, bool):
        return claimed
    return None


class EnotClient(TransportClient):
    """Async client for Enot payoffs.

    Authenticates with ``user_id`` and the merchant's ``secret_key`` (sent in the
    ``x-api-signature-sha256`` header, as Enot's own SDK does). Use as ``async with``
    or call ``aclose()``; a caller-supplied ``session`` is never closed.
    ``rate_limit`` (a ``RateLimit``) paces every request of the client.
    """

    def __init__(
        self,
        user_id: str,
        secret_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        limit: int = 100,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.user_id = check_credential(user_id, "user_id")
        check_credential(secret_key, "secret_key")
        self.retry = retry or RetryPolicy()
        self._answers = AnswerReader(Redactor([secret_key]), error_message=_error_text)
        self._headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "x-api-signature-sha256": secret_key,
            # A read is the provider's answer now, never a copy a cache kept: a kept
            # "not found" names no payoff, and nothing could tell it apart (A15).
            "Cache-Control": "no-cache",
        }
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._transport = Transport(
            base_url,
            session=session,
            timeouts=timeouts,
            limit=limit,
            redactor=self._answers.redactor,
            limiter=limiter_for(rate_limit, "enot"),
            name="EnotClient",
        )

    def __repr__(self) -> str:
        return f"EnotClient(user_id={self.user_id!r}, base_url={self._transport.base_url!r})"

    async def create_payoff(
        self,
        *,
        service: str,
        amount: Decimal | str | int,
        order_id: str,
        wallet_to: str | None = None,
        comment: str | None = None,
        hook_url: str | None = None,
        subtract: int | None = None,
        sbp_bank_id: str | None = None,
    ) -> CreatedPayoff:
        """Create a payoff: this moves the money.

        Never retried after an unknown outcome: on ``OutcomeUnknownError`` look the
        payoff up by ``order_id`` before creating it again (``reconcile_payoff``).
        """
        request = PayoffRequest(
            service=service,
            wallet_to=wallet_to,
            amount=amount,
            order_id=order_id,
            comment=comment,
            hook_url=hook_url,
            subtract=subtract,
            sbp_bank_id=sbp_bank_id,
        )
        return await self.create_payoff_from(request)

    async def create_payoff_from(
        self, request: PayoffRequest, *, order_id: str | None = None
    ) -> CreatedPayoff:
        """Create a payoff from a prepared ``PayoffRequest`` (``order_id`` overrides
        the request's own)."""
        order_id = order_id or request.order_id
        if not order_id:
            raise ValidationError("order_id", "required: it is how a lost answer is found again")
        if len(order_id) > 255:
            raise ValidationError("order_id", "must be at most 255 characters")
        wire = request.to_wire(self.user_id, order_id)
        body = json_body(wire)
        return await self._call(
            OperationKind.MONEY,
            "POST",
            "payoff/create",
            _model(CreatedPayoff),
            body=body,
            log_fields=wire,
            recipient=request.wallet_to,
        )

    async def get_payoff(
        self, *, payoff_id: str | None = None, order_id: str | None = None
    ) -> Payoff:
        """A payoff by ``payoff_id`` or by ``order_id`` (exactly one);
        ``NotFoundError`` when Enot has no such payoff."""
        if (payoff_id is None) == (order_id is None):
            raise ValidationError("payoff_id", "give exactly one of payoff_id or order_id")
        params = {"user_id": self.user_id}
        if payoff_id is not None:
            params["id"] = payoff_id
        else:
            assert order_id is not None
            params["order_id"] = order_id
        return await self._call(
            OperationKind.READ,
            "GET",
            "payoff/info",
            _payoff_about(payoff_id, order_id),
            params=params,
        )

    async def list_sbp_banks(self) -> list[SbpBank]:
        """The banks reachable by SBP, with the ids ``sbp_bank_id`` takes."""
        return await self._call(
            OperationKind.READ,
            "GET",
            "payoff/get-sbp-bank-list",
            parse_banks,
            params={"user_id": self.user_id},
        )

    async def get_balance(self) -> Balance:
        """The merchant's balance."""
        return await self._call(
            OperationKind.READ, "GET", f"account/users/{self.user_id}/balance", _model(Balance)
        )

    async def _call(
        self,
        kind: OperationKind,
        method: str,
        path: str,
        read: Callable[[dict[str, Any]], T],
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        log_fields: Mapping[str, object] | None = None,
        recipient: str | None = None,
    ) -> T:
        """Send, then ``read`` the envelope's ``data`` into a result. Whatever the
        answer, only a ``PayoutError`` comes out (see ``AnswerReader.read``). The
        ``recipient`` is masked wherever the answer echoes it (logs, errors)."""
        headers = self._json_headers if body is not None else self._headers
        answers = self._answers if recipient is None else self._answers.masking([recipient])
        attempt = partial(
            self._attempt, method, path, headers, body, params, log_fields, kind, read, answers
        )
        return await call_with_retry(self.retry, kind, attempt)

    async def _attempt(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        params: Mapping[str, str] | None,
        log_fields: Mapping[str, object] | None,
        kind: OperationKind,
        read: Callable[[dict[str, Any]], T],
        answers: AnswerReader,
    ) -> T:
        """One try of ``_call`` (a method and a ``partial``, not a closure per call)."""
        response = await self._transport.send(
            method,
            path,
            headers=headers,
            body=body,
            params=params,
            log_fields=log_fields,
            redactor=answers.redactor,
        )
        return answers.read(response, kind, partial(self._read, kind, answers, read))

    def _read(
        self,
        kind: OperationKind,
        answers: AnswerReader,
        read: Callable[[dict[str, Any]], T],
        response: HTTPResponse,
    ) -> T:
        return read(self._data(response, kind, answers))

    def _data(
        self, response: HTTPResponse, kind: OperationKind, answers: AnswerReader
    ) -> dict[str, Any]:
        """The envelope's ``data`` object, once ``status_check``, ``status`` and
        ``error`` have said the call succeeded; an error envelope raises its error
        (built by ``answers``)."""
        envelope = answers.decode(response, kind)
        claimed = _claimed_status(envelope)
        message = _error_text(envelope)
        failed = (
            envelope.get("status_check") is False
            or (claimed is not None and claimed >= 400)
            or message is not None
        )
        if failed:
            if claimed is not None and claimed >= 400:
                # An error envelope behind HTTP 200: trust the envelope's own status.
                raise answers.for_status(response, message or "error", status=claimed)
            raise answers.unreadable(
                response,
                kind,
                "an error envelope without an error status",
                provider_message=message,
            )
        if claimed is not None and not 200 <= claimed < 300:
            raise answers.unreadable(response, kind, f"envelope status {claimed}")
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise answers.unreadable(response, kind, "no 'data' object")
        return data


def _payoff_about(
    payoff_id: str | None, order_id: str | None
) -> Callable[[dict[str, Any]], Payoff]:
    """Read a ``payoff/info`` answer to a read by ``payoff_id`` or ``order_id``: one
    that names another payoff is unreadable (``check_about``)."""

    def read(data: dict[str, Any]) -> Payoff:
        payoff: Payoff = structure(data, Payoff)
        if payoff_id is not None:
            check_about("payoff_id", payoff_id, payoff.payoff_id, any_case=True)
        if order_id is not None:
            check_about("order_id", order_id, payoff.order_id)
        return payoff

    return read


def _model(model: type[T]) -> Callable[[dict[str, Any]], T]:
    def read(data: dict[str, Any]) -> T:
        result: T = structure(data, model)
        return result

    return read
