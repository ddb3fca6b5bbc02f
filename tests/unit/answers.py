"""A loopback server that answers whatever a test tells it to, the client methods of
both providers in one table, and the contract every answer must end in.

Used by ``test_hostile_answers`` (one case per test) and ``test_fuzz_answers``
(hypothesis draws the answer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest
from aiohttp import web

import payout_async
from payout_async import (
    APIError,
    EnotClient,
    IntellectMoneyClient,
    InvalidResponseError,
    OutcomeUnknownError,
    PayoutError,
    ProviderRejectedError,
    Timeouts,
)
from payout_async.enot import Balance, CreatedPayoff, Payoff, SbpBank, webhook_handler
from payout_async.intellectmoney import PayoutOperation
from payout_async.ledger import MemoryLedger

from .helpers import BEARER, CARD, ENOT_KEY, ENOT_USER, OP_ID, PAYOFF_ID, SECRET, USER_TOKEN

#: Retries are real but instant: every retryable answer is asked for twice.
RETRY = payout_async.RetryPolicy(attempts=2, initial=0.0, maximum=0.0, max_retry_after=0.0)
# The server answers at once or never: a stalled answer is given up quickly.
TIMEOUTS = Timeouts(total=2.0, connect=1.0, read=0.5)
HOOK_KEY = "payoffExample"
HOOK_PATH = "/hook"
#: Lines for the end of the test run (the fuzz's call count), see ``conftest``.
REPORT = pytest.StashKey[list[str]]()


@attrs.frozen
class Answer:
    """One HTTP answer: status, headers and body exactly as the server should send them."""

    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""


def json_answer(payload: Any, status: int = 200, **headers: str) -> Answer:
    body = json.dumps(payload).encode()
    return Answer(status, {"Content-Type": "application/json", **headers}, body)


class AnswerServer:
    """aiohttp.web on 127.0.0.1: every provider request gets ``answer``; ``HOOK_PATH``
    is the Enot webhook handler (over a real ``Payouts`` with a ``MemoryLedger``)."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.calls = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.enot: EnotClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(HOOK_PATH, self._hook)
        app.router.add_route("*", "/{tail:.*}", self._provider)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # The handler records through a real Payouts; its client is never called here.
        self.enot = EnotClient(ENOT_USER, ENOT_KEY, base_url=self.url, retry=RETRY)
        payouts = payout_async.Payouts(self.enot, MemoryLedger())
        self._handler = webhook_handler(payouts.apply_webhook, HOOK_KEY)

    async def close(self) -> None:
        if self.enot is not None:
            await self.enot.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        return await self._handler(request)

    async def _provider(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.calls += 1
        answer = self.answer
        return web.Response(status=answer.status, headers=dict(answer.headers), body=answer.body)

    def clients(self) -> Clients:
        im_base = self.url + "personal/payout/"
        common: dict[str, Any] = {"base_url": im_base, "timeouts": TIMEOUTS, "retry": RETRY}
        return Clients(
            im_current=IntellectMoneyClient(
                USER_TOKEN, SECRET, bearer_token=BEARER, api="current", **common
            ),
            im_legacy=IntellectMoneyClient(USER_TOKEN, SECRET, api="legacy", **common),
            enot=EnotClient(ENOT_USER, ENOT_KEY, base_url=self.url, timeouts=TIMEOUTS, retry=RETRY),
        )

    async def post_hook(self, body: bytes, signature: bytes | None) -> int:
        """POST ``body`` to the webhook handler with the signature header's raw bytes
        (a raw socket, so that the bytes need not be text); the answer's status."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            head = [
                f"POST {HOOK_PATH} HTTP/1.1",
                f"Host: 127.0.0.1:{self.port}",
                "Content-Type: application/json",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            raw = "\r\n".join(head).encode() + b"\r\n"
            if signature is not None:
                raw += b"x-api-sha256-signature: " + signature + b"\r\n"
            writer.write(raw + b"\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            return int(status_line.split()[1])
        finally:
            writer.close()


@attrs.frozen
class Clients:
    im_current: IntellectMoneyClient
    im_legacy: IntellectMoneyClient
    enot: EnotClient

    async def aclose(self) -> None:
        for client in (self.im_current, self.im_legacy, self.enot):
            await client.aclose()


# --- the documented answers (API.md) ----------------------------------------------------------


def im_envelope(state: str = "InProcess", code: int = 0) -> dict[str, Any]:
    return {
        "OperationState": {"Code": code, "Desc": "Операция выполнена"},
        "OperationId": "a654fe39-42eb-4ac3-a3ec-76d148b2ba3a",
        "EshopId": 123,
        "Result": {
            "State": {"Code": 0, "Desc": "ok"},
            "PayoutOperationId": OP_ID,
            "PayoutOperationState": state,
            "ErrorMessage": "",
        },
    }


IM_ERROR = {
    "OperationState": {"Code": 2, "Desc": "Не переданы реквизиты для выплаты"},
    "Result": False,
}
IM_DELETED = {"OperationState": {"Code": 0, "Desc": "ok"}, "Result": True}


def enot_envelope(data: Any) -> dict[str, Any]:
    return {"data": data, "status": 200, "status_check": True}


ENOT_ERROR = {"data": None, "error": "Вывод не найден.", "status": 404, "status_check": False}
ENOT_PAYOFF = {
    "payoff_id": PAYOFF_ID,
    "order_id": "o-1",
    "service": "card",
    "wallet": CARD,
    "type": "api",
    "subtract": "amount",
    "amount": "100.00",
    "amount_withdraw_rub": 103.0,
    "commission_rub": "3.00",
    "receive_currency": "RUB",
    "amount_receive": "100.00",
    "comment": "x",
    "created_at": "2024-01-01 00:00:00",
    "paid_at": None,
    "error_message": None,
    "status": "success",
}


# --- every client method --------------------------------------------------------------------


def _operation(result: Any) -> None:
    assert isinstance(result, PayoutOperation)
    assert result.operation_id is None or isinstance(result.operation_id, str)
    assert result.raw_state is None or isinstance(result.raw_state, str)
    assert isinstance(result.accepted, bool)
    result.state  # noqa: B018 - reading it must not raise


def _money_model(model: type[Any]) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        assert type(result) is model
        for field in attrs.fields(model):
            value = getattr(result, field.name)
            if field.type in ("Decimal | None", Decimal | None):
                assert value is None or (isinstance(value, Decimal) and value.is_finite())
                if value is not None:
                    format(value, ".2f")  # usable as money
            elif field.name != "raw":
                assert value is None or isinstance(value, str), (field.name, value)

    return check


def _banks(result: Any) -> None:
    assert isinstance(result, list)
    for bank in result:
        assert isinstance(bank, SbpBank)
        assert isinstance(bank.id, str) and bank.id
        assert isinstance(bank.name, str)


def _deleted(result: Any) -> None:
    assert isinstance(result, bool)


@attrs.frozen
class Method:
    """One client method: how to call it, whether it moves money, the documented
    success answer, and what a well-formed result looks like."""

    name: str
    moves_money: bool
    call: Callable[[Clients], Awaitable[Any]]
    success: Any
    check: Callable[[Any], None]
    is_enot: bool = False


def _im(api: str, operation: str) -> Callable[[Clients], Awaitable[Any]]:
    async def call(clients: Clients) -> Any:
        client = clients.im_current if api == "current" else clients.im_legacy
        if operation == "create":
            return await client.create_operation(
                amount=Decimal("100.00"), pan=CARD, recipient_name="Ivan Petrov"
            )
        if operation == "execute":
            return await client.execute_operation(OP_ID)
        if operation == "state":
            return await client.get_operation_state(OP_ID)
        return await client.delete_operation(OP_ID)

    return call


async def _create(clients: Clients) -> Any:
    return await clients.enot.create_payoff(
        service="card", wallet_to=CARD, amount=Decimal("100.00"), order_id="o-1"
    )


async def _info_by_id(clients: Clients) -> Any:
    return await clients.enot.get_payoff(payoff_id=PAYOFF_ID)


async def _info_by_order(clients: Clients) -> Any:
    return await clients.enot.get_payoff(order_id="o-1")


async def _banks_call(clients: Clients) -> Any:
    return await clients.enot.list_sbp_banks()


async def _balance(clients: Clients) -> Any:
    return await clients.enot.get_balance()


def _im_methods(api: str) -> list[Method]:
    return [
        Method(f"im-{api}-create", False, _im(api, "create"), im_envelope("Created"), _operation),
        Method(f"im-{api}-execute", True, _im(api, "execute"), im_envelope(), _operation),
        Method(f"im-{api}-state", False, _im(api, "state"), im_envelope(), _operation),
        Method(f"im-{api}-delete", False, _im(api, "delete"), IM_DELETED, _deleted),
    ]


METHODS: dict[str, Method] = {
    method.name: method
    for method in [
        *_im_methods("current"),
        *_im_methods("legacy"),
        Method(
            "enot-create",
            True,
            _create,
            enot_envelope(
                {"payoff_id": PAYOFF_ID, "amount_withdraw_rub": "101.50", "balance": 898.5}
            ),
            _money_model(CreatedPayoff),
            is_enot=True,
        ),
        Method(
            "enot-info-by-id",
            False,
            _info_by_id,
            enot_envelope(ENOT_PAYOFF),
            _money_model(Payoff),
            is_enot=True,
        ),
        Method(
            "enot-info-by-order",
            False,
            _info_by_order,
            enot_envelope(ENOT_PAYOFF),
            _money_model(Payoff),
            is_enot=True,
        ),
        Method(
            "enot-banks",
            False,
            _banks_call,
            enot_envelope({"banks": [{"id": "100000000004", "name": "Т-Банк"}]}),
            _banks,
            is_enot=True,
        ),
        Method(
            "enot-balance",
            False,
            _balance,
            enot_envelope({"balance": "1000.00", "active_balance": 900, "freeze_balance": "100"}),
            _money_model(Balance),
            is_enot=True,
        ),
    ]
}
MONEY_METHODS = [name for name, method in METHODS.items() if method.moves_money]


# --- the contract -----------------------------------------------------------------------------


def _lenient(body: bytes) -> Any:
    """The body as plain ``json`` reads it (``None`` when it cannot)."""
    try:
        return json.loads(body)
    except Exception:
        return None


def _declared_error(method: Method, body: bytes) -> bool:
    """Whether a readable-enough body declares an error of its own (IntellectMoney
    ``OperationState.Code`` other than 0/1, an Enot envelope with an error status)."""
    payload = _lenient(body)
    if not isinstance(payload, dict):
        return False
    if method.is_enot:
        claimed = payload.get("status")
        return isinstance(claimed, int) and not isinstance(claimed, bool) and claimed >= 400
    state = payload.get("OperationState")
    code = state.get("Code") if isinstance(state, dict) else None
    return isinstance(code, int) and not isinstance(code, bool) and code not in (0, 1)


async def check_contract(method: Method, clients: Clients, answer: Answer) -> Any:
    """Call ``method`` against ``answer``: the result is a well-formed model or a
    ``PayoutError``; on a money-moving call an answer it cannot read is
    ``OutcomeUnknownError``. Returns the result or the error."""
    try:
        result = await method.call(clients)
    except PayoutError as error:
        repr(error), str(error)  # never raise either
        if method.moves_money:
            assert not isinstance(error, InvalidResponseError), error
            if answer.status in (502, 504) or (
                200 <= answer.status < 300 and not _declared_error(method, answer.body)
            ):
                assert isinstance(error, OutcomeUnknownError), error
        if isinstance(error, ProviderRejectedError):
            assert not method.is_enot and _declared_error(method, answer.body), error
        elif isinstance(error, APIError) and not isinstance(error, InvalidResponseError):
            if 200 <= answer.status < 300:
                assert _declared_error(method, answer.body), error
            else:
                assert error.status == answer.status, (error, answer.status)
        return error
    assert 200 <= answer.status < 300, (answer.status, result)
    method.check(result)
    hash(result) if not isinstance(result, list) else [hash(bank) for bank in result]
    assert result == result
    repr(result)
    return result
