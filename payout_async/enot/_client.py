"""``EnotClient``: one method per Enot payoff API call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import attrs

from .._errors import ConfigurationError, InvalidResponseError, OutcomeUnknownError, ValidationError
from .._redact import Redactor
from .._responses import decode_answer, error_for_status
from .._retry import OperationKind, RetryPolicy, call_with_retry
from .._transport import HTTPResponse, Timeouts, Transport, TransportClient
from ._models import Balance, CreatedPayoff, Payoff, SbpBank, structure
from ._request import PayoffRequest

__all__ = ["DEFAULT_BASE_URL", "EnotClient"]

DEFAULT_BASE_URL = "https://api.enot.io"


def _error_text(envelope: Any) -> str | None:
    if isinstance(envelope, dict) and envelope.get("error") is not None:
        return str(envelope["error"])
    return None


class EnotClient(TransportClient):
    """Async client for Enot payoffs.

    Authenticates with ``user_id`` and the merchant's ``secret_key`` (sent in the
    ``x-api-signature-sha256`` header, as Enot's own SDK does). Use as ``async with``
    or call ``aclose()``; a caller-supplied ``session`` is never closed.
    """

    def __init__(
        self,
        user_id: str,
        secret_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        timeout: Timeouts | None = None,
        limit: int = 100,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not user_id:
            raise ConfigurationError("user_id is required")
        if not secret_key:
            raise ConfigurationError("secret_key is required")
        self.user_id = user_id
        self.retry = retry or RetryPolicy()
        self._redactor = Redactor([secret_key])
        self._headers = {
            "Accept": "application/json",
            "x-api-signature-sha256": secret_key,
        }
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._transport = Transport(
            base_url, session=session, timeouts=timeout, limit=limit, redactor=self._redactor
        )

    def __repr__(self) -> str:
        return f"EnotClient(user_id={self.user_id!r}, base_url={self._transport.base_url!r})"

    async def create_payoff(
        self,
        service: str,
        wallet_to: str | None,
        amount: Decimal | str | int,
        *,
        order_id: str,
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
        body = json.dumps(wire, ensure_ascii=False).encode()
        data = await self._call(
            OperationKind.MONEY, "POST", "payoff/create", body=body, log_fields=wire
        )
        result: CreatedPayoff = structure(data, CreatedPayoff)
        return result

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
        data = await self._call(OperationKind.READ, "GET", "payoff/info", params=params)
        result: Payoff = structure(data, Payoff)
        return result

    async def list_sbp_banks(self) -> list[SbpBank]:
        """The banks reachable by SBP, with the ids ``sbp_bank_id`` takes."""
        data = await self._call(
            OperationKind.READ, "GET", "payoff/get-sbp-bank-list", params={"user_id": self.user_id}
        )
        banks = data.get("banks", data.get("items", []))
        if not isinstance(banks, list) or not all(isinstance(bank, dict) for bank in banks):
            raise InvalidResponseError("bank list is not a list of objects", status=200)
        return [SbpBank(id=str(bank.get("id")), name=str(bank.get("name"))) for bank in banks]

    async def get_balance(self) -> Balance:
        """The merchant's balance."""
        data = await self._call(OperationKind.READ, "GET", f"account/users/{self.user_id}/balance")
        result: Balance = structure(data, Balance)
        return result

    async def _call(
        self,
        kind: OperationKind,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        log_fields: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        headers = self._json_headers if body is not None else self._headers

        async def attempt() -> dict[str, Any]:
            response = await self._transport.send(
                method, path, headers=headers, body=body, params=params, log_fields=log_fields
            )
            return self._interpret(response, kind)

        return await call_with_retry(self.retry, kind, attempt)

    def _interpret(self, response: HTTPResponse, kind: OperationKind) -> dict[str, Any]:
        moves_money = kind is OperationKind.MONEY
        envelope = decode_answer(
            response, moves_money=moves_money, error_message=_error_text, redactor=self._redactor
        )
        data = envelope.get("data")
        if isinstance(data, dict):
            return data
        claimed = envelope.get("status")
        if envelope.get("status_check") is False and isinstance(claimed, int) and claimed >= 400:
            # An error envelope behind HTTP 200: trust the envelope's own status.
            raise error_for_status(
                attrs.evolve(response, status=claimed),
                _error_text(envelope) or "error",
                redactor=self._redactor,
            )
        message = self._redactor(f"{response.url}: answer has no 'data' object")
        if moves_money:
            raise OutcomeUnknownError(
                message,
                method=response.method,
                url=response.url,
                status=response.status,
                body=response.body,
            )
        raise InvalidResponseError(message, status=response.status, body=response.body)
