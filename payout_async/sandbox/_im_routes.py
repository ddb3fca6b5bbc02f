"""IntellectMoney's payout API over HTTP: the four legacy and the four current methods.

Each request is checked in the provider's order as far as it is known: the Bearer
token (current API; HTTP 401 without it), the body (JSON or form), the ``Sign``
(header, or on the legacy API also a ``Sign`` body field), the UserToken, then the
fields. Refusals are answered in the real envelope, ``OperationState.Code`` 2 with a
``Desc`` and ``Result: false``, under HTTP 200. An execute accepted inside
``im_execute_lag`` is answered ``OperationState.Code`` 1 ("accepted, still processing")
with the operation's state as it reads then (``Created``). A scripted inner code
(``Sandbox.script_inner_code``) answers ``OperationState.Code`` 0 with that
``Result.State``: 1 after carrying the request out, any other instead of it.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ..intellectmoney._signing import CURRENT_METHODS, LEGACY_METHODS, sign
from ._im_book import BookError, ImOperation, IntellectMoneyBook
from ._im_fields import parse_create
from ._im_inner import InnerAnswer
from ._state import SandboxState
from ._wire import json_answer

__all__ = ["IM_PREFIX", "TOKEN_DESC", "im_error", "intellectmoney_processors"]

IM_PREFIX = "/personal/payout/"
TOKEN_DESC = "UserToken недействителен или истёк"
SIGN_DESC = "Неверная подпись"
_OK = {"Code": 0, "Desc": "Успешно обработана"}
_RESULT_OK = {"Code": 0, "Desc": "Успешно обработан"}
_ACCEPTED = {"Code": 1, "Desc": "Операция принята в обработку"}
_FORM = "application/x-www-form-urlencoded"

Processor = Callable[[web.Request], Awaitable[web.StreamResponse]]


def im_error(status: int, message: str) -> web.Response:
    """An IntellectMoney error envelope."""
    return json_answer(
        {"OperationState": {"Code": 2, "Desc": message}, "Result": False}, status=status
    )


async def _read_fields(request: web.Request) -> dict[str, str | None]:
    if request.content_type == _FORM:
        form = await request.post()
        return {name: value for name, value in form.items() if isinstance(value, str)}
    try:
        data = json.loads(await request.read(), parse_float=str, parse_int=str)
    except ValueError:
        raise BookError("Некорректный формат запроса: ожидается JSON или форма") from None
    if not isinstance(data, dict):
        raise BookError("Некорректный формат запроса: ожидается объект JSON")
    for name, value in data.items():
        if value is not None and not isinstance(value, str):
            raise BookError(f"Некорректное значение поля {name}")
    return data


def _inner_state(inner: InnerAnswer) -> dict[str, Any]:
    return {"Code": inner.code, "Desc": inner.desc}


class _Api:
    """The handlers of one API generation (``"legacy"`` or ``"current"``)."""

    def __init__(self, state: SandboxState, api: str) -> None:
        self.state = state
        self.api = api
        credentials = state.credentials
        self.bearer = f"Bearer {credentials.im_bearer_token}"
        self.secret = credentials.im_secret_key

    def envelope(
        self,
        result: Any,
        operation: ImOperation | None = None,
        *,
        outer: Mapping[str, Any] = _OK,
    ) -> web.Response:
        payload: dict[str, Any] = {"OperationState": outer, "OperationId": str(uuid.uuid4())}
        if self.api == "current":
            eshop_id = operation.details.eshop_id if operation is not None else None
            payload["EshopId"] = int(eshop_id) if eshop_id else self.state.config.im_eshop_id
        payload["Result"] = result
        return json_answer(payload)

    def operation_answer(
        self,
        book: IntellectMoneyBook,
        operation: ImOperation,
        *,
        accepted: bool = False,
        inner: InnerAnswer | None = None,
    ) -> web.Response:
        state = book.state(operation)
        result: dict[str, Any] = {
            "State": _RESULT_OK if inner is None else _inner_state(inner),
            "PayoutOperationId": operation.id,
            "PayoutOperationState": state,
        }
        error = book.error_message(state)
        if error is not None:
            result["ErrorMessage"] = error
        return self.envelope(result, operation, outer=_ACCEPTED if accepted else _OK)

    def processor(self, operation: str, method: str) -> Processor:
        async def process(request: web.Request) -> web.StreamResponse:
            if self.api == "current" and request.headers.get("Authorization") != self.bearer:
                return im_error(401, "Не авторизован: неверный или отсутствующий Bearer токен")
            try:
                fields = await _read_fields(request)
                self.check_sign(request, method, fields)
                if not self.state.tokens.is_valid(fields.get("UserToken")):
                    raise BookError(TOKEN_DESC)
                inner = self.state.im_inner.pop(f"im.{operation}")
                if inner is not None and not inner.performs:
                    return self.envelope({"State": _inner_state(inner)})
                return self.act(operation, fields, inner)
            except BookError as error:
                return im_error(200, str(error))

        return process

    def check_sign(self, request: web.Request, method: str, fields: dict[str, str | None]) -> None:
        given = request.headers.get("Sign")
        if given is None and self.api == "legacy":
            given = fields.get("Sign")
        expected = sign(method, fields, self.secret).encode()
        if not given or not hmac.compare_digest(given.lower().encode(), expected):
            raise BookError(SIGN_DESC)

    def act(
        self, operation: str, fields: dict[str, str | None], inner: InnerAnswer | None = None
    ) -> web.Response:
        book = self.state.intellectmoney
        if operation == "create":
            created = book.create(parse_create(self.api, fields))
            return self.operation_answer(book, created, inner=inner)
        operation_id = fields.get("PayoutOperationId")
        if not operation_id:
            raise BookError("Не передан идентификатор операции (PayoutOperationId)")
        found = book.find(operation_id)
        if operation == "execute":
            book.execute(found)
            accepted = book.processing(found)
            return self.operation_answer(book, found, accepted=accepted, inner=inner)
        if operation == "delete":
            book.delete(found)
            return self.envelope(True if inner is None else {"State": _inner_state(inner)}, found)
        return self.operation_answer(book, found, inner=inner)


def intellectmoney_processors(state: SandboxState) -> list[tuple[str, str, str, Processor]]:
    """``(route name, HTTP method, path, processor)`` for all eight methods."""
    routes: list[tuple[str, str, str, Processor]] = []
    for api, methods in (("legacy", LEGACY_METHODS), ("current", CURRENT_METHODS)):
        handlers = _Api(state, api)
        for operation, method in methods.items():
            process = handlers.processor(operation, method)
            routes.append((f"im.{operation}", "POST", IM_PREFIX + method, process))
    return routes
