"""``IntellectMoneyClient``: one method per IntellectMoney payout API call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

import aiohttp

from .._errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ProviderRejectedError,
    ValidationError,
)
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
from .._validation import check_credential, format_amount
from ._models import PayoutOperation, inner_state, operation_code, parse_operation
from ._request import Api, OperationRequest
from ._signing import ASSUMED_SIGN_METHODS, CURRENT_METHODS, LEGACY_METHODS, sign

__all__ = ["DEFAULT_BASE_URL", "IntellectMoneyClient", "UserTokenSource"]

DEFAULT_BASE_URL = "https://api.intellectmoney.ru/personal/payout/"

T = TypeVar("T")

logger = logging.getLogger("payout_async")

#: A UserToken, or an async callable returning a fresh one (UserTokens expire).
UserTokenSource = str | Callable[[], Awaitable[str]]

#: Words by which a rejection's ``Desc`` says the UserToken was refused; the provider
#: writes its messages in Russian ("Неверный токен") as well as naming the field.
_TOKEN_WORDS = ("token", "токен")
#: Words by which a ``Desc`` says the Sign was refused ("Неверная подпись").
_SIGN_WORDS = ("sign", "подпис")
#: ``Result.State.Code`` values: 0 Success, 1 WithWarn (done, with a warning), 2 NoAuth.
_INNER_WARNING = 1
_INNER_NO_AUTH = 2

_KINDS = {
    "create": OperationKind.SAFE_WRITE,
    "execute": OperationKind.MONEY,
    "state": OperationKind.READ,
    "delete": OperationKind.SAFE_WRITE,
}


def _desc(envelope: Any) -> str | None:
    if isinstance(envelope, dict):
        state = envelope.get("OperationState")
        if isinstance(state, dict) and state.get("Desc") is not None:
            return clip(str(state["Desc"]), 500)
    return None


def _operation_id(envelope: Any) -> object:
    """The envelope's ``OperationId``: IntellectMoney's id of this API call."""
    return envelope.get("OperationId") if isinstance(envelope, dict) else None


def _mentions_token(message: str) -> bool:
    text = message.casefold()
    return any(word in text for word in _TOKEN_WORDS)


def _mentions_sign(message: str) -> bool:
    text = message.casefold()
    return any(word in text for word in _SIGN_WORDS)


def _refuses_token(error: APIError) -> bool:
    """The provider's own code refused the call naming the UserToken: the outer
    ``OperationState.Code`` (``ProviderRejectedError``) or the inner
    ``Result.State.Code`` 2 (NoAuth, an ``AuthenticationError`` with that code; an
    HTTP 401 carries none). Nothing was done, so a fresh token may be tried."""
    refused_by_code = isinstance(error, ProviderRejectedError) or (
        isinstance(error, AuthenticationError) and error.code == _INNER_NO_AUTH
    )
    return refused_by_code and _mentions_token(error.message)


def _deleted(envelope: dict[str, Any]) -> bool:
    """``Result`` true, or a result object whose own ``State.Code`` says done (0 or 1)."""
    result = envelope.get("Result")
    if result is True:
        return True
    return isinstance(result, dict) and inner_state(envelope)[0] in (0, 1)


def _check_operation_id(operation_id: str) -> str:
    if not isinstance(operation_id, str) or not operation_id.strip() or len(operation_id) > 64:
        raise ValidationError("operation_id", "must be a non-empty string of at most 64 characters")
    return operation_id


class IntellectMoneyClient(TransportClient):
    """Async client for IntellectMoney payouts (``api="current"`` or ``"legacy"``).

    Every request is signed with ``secret_key`` (the SignSecretKey); the current API
    also needs ``bearer_token``. ``user_token`` is a string or an async callable
    returning a fresh UserToken: it is called before every request, and once more
    when the provider refuses the token (by ``OperationState.Code`` or by
    ``Result.State.Code`` 2, NoAuth), the call then being repeated once. Use as
    ``async with`` or call ``aclose()``; a caller-supplied ``session`` is never closed.
    ``rate_limit`` (a ``RateLimit``) paces every request of the client.
    """

    def __init__(
        self,
        user_token: UserTokenSource,
        secret_key: str,
        *,
        bearer_token: str | None = None,
        api: Api = "current",
        base_url: str = DEFAULT_BASE_URL,
        body_format: Literal["json", "form"] = "json",
        sign_in_body: bool | None = None,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        limit: int = 100,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if api not in ("current", "legacy"):
            raise ConfigurationError("api must be 'current' or 'legacy'")
        if body_format not in ("json", "form"):
            raise ConfigurationError("body_format must be 'json' or 'form'")
        check_credential(secret_key, "secret_key (the SignSecretKey)")
        if api == "current" and not bearer_token:
            raise ConfigurationError("bearer_token is required by the current IntellectMoney API")
        if bearer_token is not None:
            check_credential(bearer_token, "bearer_token")
        if not user_token:
            raise ConfigurationError("user_token is required (a string or an async callable)")
        if isinstance(user_token, str):
            check_credential(user_token, "user_token")
        self.api: Api = api
        self._methods = CURRENT_METHODS if api == "current" else LEGACY_METHODS
        self._user_token = user_token
        self._secret_key = secret_key
        self._form = body_format == "form"
        self._sign_in_body = api == "legacy" if sign_in_body is None else sign_in_body
        #: Every request's headers but its ``Sign``. ``no-cache``: an answer is the
        #: provider's now, never one a cache kept (a kept ``Created`` names the
        #: operation asked about, and would be believed: A15).
        self._headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Cache-Control": "no-cache",
        }
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._headers["Content-Type"] = (
            "application/x-www-form-urlencoded" if self._form else "application/json"
        )
        self.retry = retry or RetryPolicy()
        redactor = Redactor([secret_key, bearer_token])
        if isinstance(user_token, str):
            redactor.add(user_token)
        self._redactor = redactor
        self._answers = AnswerReader(redactor, error_message=_desc, request_id=_operation_id)
        self._transport = Transport(
            base_url,
            session=session,
            timeouts=timeouts,
            limit=limit,
            redactor=redactor,
            limiter=limiter_for(rate_limit, "intellectmoney"),
            name="IntellectMoneyClient",
        )

    def __repr__(self) -> str:
        return f"IntellectMoneyClient(api={self.api!r}, base_url={self._transport.base_url!r})"

    async def create_operation(
        self,
        *,
        amount: Decimal | str | int,
        pan: str | None = None,
        account: str | None = None,
        bank_id: str | None = None,
        currency: str = "RUB",
        recipient_name: str | None = None,
        eshop_id: str | int | None = None,
        description: str | None = None,
    ) -> PayoutOperation:
        """Create a payout operation (state ``Created``; no money moves yet).

        ``pan`` pays a card; ``account`` with ``bank_id`` pays by SBP; on the legacy
        API ``account`` alone pays a Qiwi wallet.
        """
        request = OperationRequest(
            amount=amount,
            pan=pan,
            account=account,
            bank_id=bank_id,
            currency=currency,
            recipient_name=recipient_name,
            eshop_id=eshop_id,
            description=description,
        )
        return await self.create_operation_from(request)

    async def create_operation_from(self, request: OperationRequest) -> PayoutOperation:
        """Create a payout operation from a prepared ``OperationRequest``."""
        request.validate_for(self.api)
        fields: dict[str, object] = {}
        if self.api == "current":
            fields["PreferenceType"] = request.method.value
        if request.pan is not None:
            fields["Pan"] = request.pan
        if request.account is not None:
            fields["Account"] = request.account
        if request.bank_id is not None:
            fields["BankId"] = request.bank_id
        fields["Amount"] = format_amount(request.amount)
        fields["Currency"] = request.currency
        if request.recipient_name is not None:
            fields["RecipientName"] = request.recipient_name
        if self.api == "current":
            if request.eshop_id is not None:
                fields["EshopId"] = request.eshop_id
            if request.description is not None:
                fields["Description"] = request.description
        else:
            fields["ProviderType"] = request.method.legacy_index
        recipients = (request.pan, request.account)
        return await self._call("create", fields, parse_operation, recipients=recipients)

    async def execute_operation(self, operation_id: str) -> PayoutOperation:
        """Execute a ``Created`` operation: this moves the money.

        Never retried after an unknown outcome: on ``OutcomeUnknownError`` ask
        ``get_operation_state`` (``Created`` means it did not happen).
        """
        operation_id = _check_operation_id(operation_id)
        return await self._call(
            "execute",
            {"PayoutOperationId": operation_id},
            lambda envelope: parse_operation(envelope, asked_id=operation_id),
        )

    async def get_operation_state(self, operation_id: str) -> PayoutOperation:
        """The operation's current state."""
        operation_id = _check_operation_id(operation_id)
        return await self._call(
            "state",
            {"PayoutOperationId": operation_id},
            lambda envelope: parse_operation(envelope, asked_id=operation_id),
        )

    async def delete_operation(self, operation_id: str) -> bool:
        """Delete an operation; allowed only while it is ``Created``. True when the
        provider says it is deleted (a warning, ``Result.State.Code`` 1, is logged)."""
        operation_id = _check_operation_id(operation_id)
        return await self._call(
            "delete",
            {"PayoutOperationId": operation_id},
            _deleted,
        )

    async def _fresh_user_token(self) -> str:
        assert not isinstance(self._user_token, str)
        token = await self._user_token()
        if isinstance(token, str) and token:
            self._redactor.add(token)  # (masked in what is said about it, whatever it is)
        check_credential(token, "the token the user_token callable returned")
        return token

    async def _call(
        self,
        operation: str,
        fields: Mapping[str, object],
        read: Callable[[dict[str, Any]], T],
        *,
        recipients: Sequence[str | None] = (),
    ) -> T:
        """Send, then ``read`` the envelope into a result. Whatever the answer, only a
        ``PayoutError`` comes out (see ``AnswerReader.read``). The request's own
        ``recipients`` are masked wherever the answer echoes them (logs, errors)."""
        kind = _KINDS[operation]
        method = self._methods[operation]
        answers = self._answers.masking(recipients) if any(recipients) else self._answers
        # A token given as text is never fetched anew: each try is one request.
        once = self._send if isinstance(self._user_token, str) else self._attempt
        attempt = partial(once, method, fields, kind, read, answers)
        return await call_with_retry(self.retry, kind, attempt)

    async def _attempt(
        self,
        method: str,
        fields: Mapping[str, object],
        kind: OperationKind,
        read: Callable[[dict[str, Any]], T],
        answers: AnswerReader,
    ) -> T:
        """One try of ``_call`` with a ``user_token`` callable (a method bound with
        ``partial``, not a closure per call). Should the provider refuse a token the
        callable gave, nothing happened: a fresh token is fetched and the request sent
        once more."""
        try:
            return await self._send(method, fields, kind, read, answers)
        except APIError as error:
            if not _refuses_token(error):
                raise
            return await self._send(method, fields, kind, read, answers)

    async def _send(
        self,
        method: str,
        fields: Mapping[str, object],
        kind: OperationKind,
        read: Callable[[dict[str, Any]], T],
        answers: AnswerReader,
    ) -> T:
        source = self._user_token
        token = source if isinstance(source, str) else await self._fresh_user_token()
        params: dict[str, object] = {"UserToken": token, **fields}
        signature = sign(method, params, self._secret_key)
        headers = {**self._headers, "Sign": signature}
        body_fields = {**params, "Sign": signature} if self._sign_in_body else params
        body = urlencode(body_fields).encode() if self._form else json_body(body_fields)
        response = await self._transport.send(
            "POST",
            method,
            headers=headers,
            body=body,
            log_fields=body_fields,
            redactor=answers.redactor,
        )
        return answers.read(response, kind, partial(self._read, kind, method, answers, read))

    def _read(
        self,
        kind: OperationKind,
        method: str,
        answers: AnswerReader,
        read: Callable[[dict[str, Any]], T],
        response: HTTPResponse,
    ) -> T:
        return read(self._envelope(response, kind, method, answers))

    def _envelope(
        self, response: HTTPResponse, kind: OperationKind, method: str, answers: AnswerReader
    ) -> dict[str, Any]:
        """The decoded envelope once both codes say it succeeded.

        ``OperationState.Code`` must be 0 or 1 (any other raises
        ``ProviderRejectedError``, a missing one is unreadable); then the result's own
        ``Result.State.Code``, when present, must be 0 or 1 (WithWarn: logged, and kept
        on the model as ``warning``): 2 (NoAuth) raises ``AuthenticationError``, any
        other value ``ProviderRejectedError``. A non-integer inner code is unreadable.
        """
        envelope = answers.decode(response, kind)
        code = operation_code(envelope)
        if code is None:
            raise answers.unreadable(
                response, kind, "no OperationState.Code", provider_message=_desc(envelope)
            )
        if code not in (0, 1):
            raise self._refusal(
                answers, ProviderRejectedError, response, method, code, _desc(envelope),
                f"OperationState.Code {code}",
            )  # fmt: skip
        inner, inner_desc = inner_state(envelope)
        if inner is None or inner == 0:
            return envelope
        if inner == _INNER_WARNING:
            logger.warning(
                "IntellectMoney %s answered with a warning (Result.State.Code 1): %s",
                method,
                answers.redactor(inner_desc or "no Desc"),
            )
            return envelope
        error_type = AuthenticationError if inner == _INNER_NO_AUTH else ProviderRejectedError
        raise self._refusal(
            answers, error_type, response, method, inner, inner_desc, f"Result.State.Code {inner}"
        )

    def _refusal(
        self,
        answers: AnswerReader,
        error_type: type[APIError],
        response: HTTPResponse,
        method: str,
        code: int,
        desc: str | None,
        fallback: str,
    ) -> APIError:
        """The provider's refusal as ``error_type``; a signature refusal of a method
        whose Sign pattern is assumed (``ASSUMED_SIGN_METHODS``) says so."""
        message = desc or fallback
        if code == _INNER_NO_AUTH and method in ASSUMED_SIGN_METHODS and _mentions_sign(message):
            message += (
                f" (the Sign pattern of {method} is not published; payout-async assumes the "
                "same fields as executeOperation, see ASSUMED_STATE_SIGN_FIELDS and the "
                "the documentation's known unknowns, docs/getting-started.md)"
            )
        return answers.error(error_type, response, message, code=code)
