"""Enot's payoff API over HTTP: create, info, the SBP bank list and the balance.

Authentication: the ``x-api-signature-sha256`` header must hold the secret key and
``user_id`` (body, query or path) must be the merchant's, else 401. Answers use
Enot's envelope; errors carry the same status in the envelope and in HTTP. Money is
sometimes a JSON number and sometimes a string, as Enot's own answers are.
``payoff/info`` answers "not found" for a payoff younger than ``enot_info_lag``.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from ._enot_book import FAIL, SUCCESS, EnotBook, EnotPayoff, PayoffRefused
from ._enot_fields import SBP_BANKS, parse_payoff
from ._state import SandboxState
from ._wire import json_answer, money_number, money_text

__all__ = ["enot_error", "enot_processors"]

Processor = Callable[[web.Request], Awaitable[web.StreamResponse]]
_KEY_HEADER = "x-api-signature-sha256"
_BANKS = {"banks": [{"id": bank_id, "name": name} for bank_id, name in SBP_BANKS]}


def enot_error(status: int, message: str) -> web.Response:
    """An Enot error envelope."""
    return json_answer(
        {"data": None, "error": message, "status": status, "status_check": False}, status=status
    )


def _ok(data: Any) -> web.Response:
    return json_answer({"data": data, "status": 200, "status_check": True})


def _wall_time(timestamp: float) -> str:
    """A wall-clock time as Enot writes it (``2024-05-01 12:00:00``)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _info(book: EnotBook, payoff: EnotPayoff, final_after: float) -> dict[str, Any]:
    details = payoff.details
    status = book.status(payoff)
    return {
        "payoff_id": payoff.id,
        "order_id": details.order_id,
        "service": details.service,
        "wallet": details.wallet,
        "type": "api",
        "subtract": "balance" if details.subtract == 1 else "amount",
        "amount": money_number(details.amount),
        "amount_withdraw_rub": money_text(payoff.withdraw),
        "commission_rub": money_number(payoff.commission),
        "receive_currency": "RUB",
        "amount_receive": money_text(payoff.receive),
        "comment": details.comment,
        "created_at": _wall_time(payoff.created_wall),
        "paid_at": _wall_time(payoff.created_wall + final_after) if status == SUCCESS else None,
        "error_message": "Отказ платёжной системы." if status == FAIL else None,
        "status": status,
    }


class _Enot:
    """The four handlers, sharing the credential checks."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.user_id = state.credentials.enot_user_id
        self.key = state.credentials.enot_secret_key.encode()

    def key_ok(self, request: web.Request) -> bool:
        given = request.headers.get(_KEY_HEADER)
        return given is not None and hmac.compare_digest(given.encode(), self.key)

    def authorized(self, request: web.Request, user_id: object) -> bool:
        return user_id == self.user_id and self.key_ok(request)

    async def create(self, request: web.Request) -> web.StreamResponse:
        if not self.key_ok(request):
            return enot_error(401, "Ошибка авторизации.")
        try:
            body = json.loads(await request.read(), parse_float=Decimal)
        except ValueError:
            return enot_error(422, "Тело запроса должно быть JSON.")
        if not isinstance(body, dict):
            return enot_error(422, "Тело запроса должно быть объектом JSON.")
        if body.get("user_id") != self.user_id:
            return enot_error(401, "Ошибка авторизации.")
        book = self.state.enot
        try:
            payoff = book.create(parse_payoff(body))
        except PayoffRefused as refused:
            return enot_error(refused.status, refused.message)
        return _ok(
            {
                "payoff_id": payoff.id,
                "amount_withdraw_rub": money_text(payoff.withdraw),
                "balance": money_number(book.active),
            }
        )

    async def info(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if not self.authorized(request, query.get("user_id")):
            return enot_error(401, "Ошибка авторизации.")
        book = self.state.enot
        payoff_id, order_id = query.get("id"), query.get("order_id")
        if payoff_id:
            payoff = book.get(payoff_id)
        elif order_id:
            payoff = book.by_order_id(order_id)
        else:
            return enot_error(422, "Укажите id или order_id.")
        if payoff is None or not book.visible(payoff):  # enot_info_lag: not found yet
            return enot_error(404, "Вывод не найден.")
        return _ok(_info(book, payoff, self.state.config.enot_final_after))

    async def banks(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, request.query.get("user_id")):
            return enot_error(401, "Ошибка авторизации.")
        return _ok(_BANKS)

    async def balance(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request, request.match_info.get("user_id")):
            return enot_error(401, "Ошибка авторизации.")
        book = self.state.enot
        book.settle()
        return _ok(
            {
                "balance": money_number(book.active + book.frozen),
                "active_balance": money_text(book.active),
                "freeze_balance": money_number(book.frozen),
            }
        )


def enot_processors(state: SandboxState) -> list[tuple[str, str, str, Processor]]:
    """``(route name, HTTP method, path, processor)`` for the four calls."""
    handlers = _Enot(state)
    return [
        ("enot.create", "POST", "/payoff/create", handlers.create),
        ("enot.info", "GET", "/payoff/info", handlers.info),
        ("enot.banks", "GET", "/payoff/get-sbp-bank-list", handlers.banks),
        ("enot.balance", "GET", "/account/users/{user_id}/balance", handlers.balance),
    ]
