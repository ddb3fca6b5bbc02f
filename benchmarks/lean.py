"""The yardstick: a lean implementation of payout-async's guarantees (issue 26).

``overhead.py`` pairs every way of the library with this file's same way in the same
run: how far the library is from what this design costs on this machine. It does the
same work per payout, against the same sandbox:

* typed, validated requests (amount rules, Luhn digit, lengths), IntellectMoney's Sign,
  Enot's key header; answers read through a bounded JSON decoder (depth, number size,
  no NaN, no lone surrogate) into typed results; both codes of an IntellectMoney
  envelope, the status, ``status_check`` and ``error`` of an Enot one; every failure
  classified once as *not sent*, *outcome unknown* or an answer; reads retried on
  transient failures, money-moving calls only when not sent or on 429; one aiohttp
  session with the clients' default timeouts, the read timeout included;
* per payout: the intent recorded first, with a fingerprint of its parameters (plain
  SHA-256, or an HMAC with a ledger key) and the recipient kept apart (masked in the
  parameters, in clear or sealed with AES-GCM in its own column, dropped by the final
  write); one drive per key in this process, another ``pay`` of it joining; a unique
  Enot ``order_id``; every recovery point written under the drive's lease owner and
  fencing token, with its history row; before each money-moving request (each retry
  too) the FENCE: one conditional ledger write extending the lease past the request's
  timeout plus a margin, on the ledger's clock -- nothing leaves unless it landed;
  writes of concurrent payouts group-committed;
* three ledgers: in memory; SQLite (``synchronous=FULL``, ``secure_delete``, WAL,
  one fenced UPDATE per write, one ``executemany`` of history rows and one commit per
  batch, the WAL checkpointed and truncated at most once a second after a clear
  recipient was dropped, and at close); PostgreSQL (asyncpg, one statement per batch);
* what later issues added, folded into the statements above: one live row per key
  across providers (issue 23: the insert records a key only if no other provider's row
  has it, a unique index on ``key`` over the rows not failed, refused or cancelled, the
  primary key led by ``key`` for the lookup; in memory a key -> provider map); a count
  of the rows begun and of every change of state, kept by the database in the same
  transaction (issue 25, to notice a ledger restored from a backup: a ``rows_begun``
  row bumped by triggers in SQLite, a sequence in PostgreSQL, an int in memory); the
  live rows indexed by ``state`` (a partial index of the rows not final: crash
  anywhere, resume everywhere, stranded rows found without a scan); and the trust
  boundary (DESIGN rule 14): with a ledger key each row carries an HMAC of its
  provider, key, order_id and full parameters, one of its operation id once
  recorded, and one of the provider account it is sent through (protocol A14: each
  Enot row records its ``user_id``; a row another account sent is parked, not looked
  up); the fence UPDATE returns the row's fingerprint, recipient, order_id, operation
  id, account and signatures, and unless they are what this drive wrote (with or
  without a key) the row is parked ``needs_attention`` and nothing is sent (rows in
  memory cannot be altered from outside: not checked); and an operation id on one
  row of its provider (protocol A16: a unique index, a dict in memory), a move to
  another row's parking the row.

What a lost answer leaves is resolved on the safe side and never paid again here: an
IntellectMoney execute by the operation's state, an Enot create by its ``order_id``
(a matching payoff is adopted), anything still undecided parked in
``needs_attention``. A row taken over waits out the previous holder's request. The
library's settle windows, heartbeats, webhooks, workers and reports are left out:
none of them costs anything on the path ``overhead.py`` measures. Polls follow the
library's ``PollPolicy`` schedule (the first after a randomised first pause), so that
both send the same requests at the same times.

``python benchmarks/lean.py`` shows each guarantee the later issues added holding on
each ledger (clients answering at once, rows altered between begin and send), then
pays payouts on each ledger against a sandbox and checks the sandbox's books: each
key paid once.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import sqlite3
import sys
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

try:
    import msgspec

    _DECODER: Any = msgspec.json.Decoder(float_hook=Decimal)
    _DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, RecursionError)
except ImportError:  # the standard library, hooked
    msgspec = None
    _DECODER = json.JSONDecoder(parse_float=Decimal)
    _DECODE_ERRORS = (ValueError, RecursionError)

T = TypeVar("T")
FINAL = frozenset({"succeeded", "failed", "refused", "cancelled", "needs_attention"})
TIMEOUT = aiohttp.ClientTimeout(total=30.0, connect=10.0, sock_read=30.0)  # the clients'

# -- input rules ------------------------------------------------------------------------


class Invalid(ValueError):
    """A request that must not be sent."""


_CENT = Decimal("0.01")
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")


def amount(value: object) -> Decimal:
    """A positive amount, at most two decimals and 13 characters as formatted."""
    if isinstance(value, bool | float) or not isinstance(value, Decimal | int | str):
        raise Invalid("amount: a Decimal, str or int")
    if isinstance(value, str) and not (value.isascii() and _AMOUNT.fullmatch(value)):
        raise Invalid("amount: digits, an optional point and two decimals")
    number = Decimal(value)
    if not number.is_finite() or number <= 0 or number.adjusted() >= 10:
        raise Invalid("amount: positive and at most 13 characters")
    cents = number.quantize(_CENT)
    if cents != number:
        raise Invalid("amount: at most two decimal places")
    return cents


def check_pan(pan: object) -> str:
    """12 to 20 ASCII digits passing the Luhn check."""
    if not isinstance(pan, str) or not pan.isascii() or not pan.isdigit():
        raise Invalid("pan: digits")
    if not 12 <= len(pan) <= 20:
        raise Invalid("pan: 12 to 20 digits")
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = (ord(char) - 48) * (1 + index % 2)
        total += digit - 9 if digit > 9 else digit
    if total % 10:
        raise Invalid("pan: fails the Luhn check")
    return pan


def check_text(value: str | None, field: str, high: int) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > high):
        raise Invalid(f"{field}: a string of at most {high} characters")


def check_key(key: object) -> str:
    """A key fit to be recorded: printable, no edge spaces, NFC."""
    if not isinstance(key, str) or not key or not key.isprintable() or key != key.strip():
        raise Invalid("key: a non-empty printable string without edge spaces")
    if not unicodedata.is_normalized("NFC", key):
        raise Invalid("key: must be in NFC form")
    return key


@dataclass(frozen=True, slots=True)
class ImPayout:
    """An IntellectMoney card payout (the current API)."""

    pan: str
    amount: Decimal
    description: str | None = None
    currency: str = "RUB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", amount(self.amount))
        check_pan(self.pan)
        if self.currency not in ("RUB", "TST"):
            raise Invalid("currency: RUB or TST")
        check_text(self.description, "description", 255)

    def params(self) -> dict[str, Any]:
        return {
            "pan": self.pan,
            "amount": str(self.amount),
            "description": self.description,
            "currency": self.currency,
        }


@dataclass(frozen=True, slots=True)
class EnotPayoff:
    """An Enot payoff; its order_id comes from the key."""

    service: str
    wallet_to: str
    amount: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", amount(self.amount))
        if not isinstance(self.service, str) or not self.service.isprintable() or not self.service:
            raise Invalid("service: a service code")
        check_text(self.wallet_to, "wallet_to", 255)
        if not self.wallet_to:
            raise Invalid("wallet_to: required")
        if self.service.lower() == "card":
            check_pan(self.wallet_to)

    def params(self) -> dict[str, Any]:
        return {"service": self.service, "wallet_to": self.wallet_to, "amount": str(self.amount)}


def order_id_for(key: str) -> str:
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# -- answers: the bounded decoder and typed results --------------------------------------


class CallError(Exception):
    """A provider call that gave no usable answer."""


class Unreadable(CallError):
    """An answer that cannot be read within the bounds."""


MAX_DEPTH, MAX_DIGITS, MAX_EXPONENT = 32, 64, 64
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _depth_ok(body: bytes) -> bool:
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return True
    depth = 0
    for token in _TOKENS.findall(body):
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif token in (b"]", b"}"):
            depth -= 1
    return True


def _bounded(value: Any, surrogates: bool) -> None:
    """Numbers within the bounds; no lone surrogate (looked for when escaped)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
            stack.extend(item.keys() if surrogates else ())
        elif kind is list:
            stack.extend(item)
        elif kind is Decimal:
            if not item.is_finite() or abs(item.adjusted()) > MAX_EXPONENT:
                raise Unreadable("a number beyond the bounds")
        elif kind is int and item.bit_length() > 3 * MAX_DIGITS:
            raise Unreadable("a number beyond the bounds")
        elif kind is str and surrogates and _SURROGATE.search(item):
            raise Unreadable("a lone surrogate")


def decode(body: bytes) -> dict[str, Any]:
    """A JSON object within the bounds, fractions as ``Decimal``; else ``Unreadable``."""
    if body[:3] == b"\xef\xbb\xbf":
        body = body[3:]
    if not _depth_ok(body):
        raise Unreadable("nested too deep")
    try:
        value = _DECODER.decode(body if msgspec is not None else body.decode())
    except (*_DECODE_ERRORS, UnicodeDecodeError):
        raise Unreadable("not JSON") from None
    _bounded(value, _SURROGATE_ESCAPE.search(body) is not None)
    if not isinstance(value, dict):
        raise Unreadable("not a JSON object")
    return value


def money(value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal | int | str) and not isinstance(value, bool):
        try:
            number = Decimal(value)
        except ArithmeticError:
            number = Decimal("NaN")
        if number.is_finite() and abs(number.adjusted()) <= MAX_EXPONENT:
            return number
    raise Unreadable("a money field is not a finite number")


@dataclass(slots=True)
class Operation:
    operation_id: str
    state: str
    accepted: bool


@dataclass(slots=True)
class Payoff:
    payoff_id: str
    status: str
    amount: Decimal | None
    wallet: str | None
    service: str | None


IM_FINAL = {"Completed": "succeeded", "Failed": "failed", "NotEnoughMoney": "refused"}
IM_FINAL["Deleted"] = "cancelled"
ENOT_FINAL = {"success": "succeeded", "fail": "failed"}

# -- the HTTP layer: one session, failures classified once --------------------------------


class NotSent(CallError):
    """Nothing reached the provider."""


class Unknown(CallError):
    """The request may have reached the provider; its outcome is not known."""


class Busy(CallError):
    """429, 408 or 5xx, or an unreadable answer to a read: may pass."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(f"HTTP {status} {message}")
        self.status = status


class Refused(CallError):
    """The provider answered no: nothing happened."""


class LeaseLost(Exception):
    """This drive no longer holds the row: nothing more leaves from it."""


Fence = Callable[[float], Awaitable[None]]
_NOT_SENT = (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError, aiohttp.InvalidURL)


class Http:
    """One aiohttp session for both providers."""

    def __init__(self, limit: int = 100) -> None:
        self.total = TIMEOUT.total or 0.0
        connector = aiohttp.TCPConnector(limit=limit)
        self.session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None,
        params: dict[str, str] | None = None, fence: Fence | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        if fence is not None:
            await fence(self.total)  # raises unless the ledger confirmed the lease
        try:
            request = self.session.request(
                method, url, headers=headers, data=body, params=params, allow_redirects=False
            )
            async with request as response:
                return response.status, await response.read()
        except _NOT_SENT as error:
            raise NotSent(type(error).__name__) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise Unknown(type(error).__name__) from None

    async def aclose(self) -> None:
        await self.session.close()


def answered(status: int, body: bytes, money_moves: bool) -> dict[str, Any]:
    """The decoded answer of a final 2xx status; the error for anything else."""
    if money_moves and status in (502, 504):
        raise Unknown(f"HTTP {status}")
    if status in (408, 429) or status >= 500:
        raise Busy(status)
    try:
        envelope = decode(body)
    except Unreadable as error:
        if money_moves:
            raise Unknown(str(error)) from None
        raise (Refused(f"HTTP {status}") if status >= 300 else Busy(status, str(error))) from None
    if not 200 <= status < 300:
        raise Refused(f"HTTP {status}")
    return envelope


async def retrying(attempt: Callable[[], Awaitable[T]], money_moves: bool, tries: int = 4) -> T:
    """Reads retry transient failures; money-moving calls only when not sent or on 429."""
    for number in range(1, tries + 1):
        try:
            return await attempt()
        except (NotSent, Busy, Unknown) as error:
            throttled = isinstance(error, Busy) and error.status == 429
            if number == tries or (
                money_moves and not isinstance(error, NotSent) and not throttled
            ):
                raise
        await asyncio.sleep(min(5.0, 0.2 * 2 ** (number - 1)) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


class Intellect:
    """IntellectMoney's current API: create, execute, get-state."""

    def __init__(self, http: Http, url: str, user_token: str, secret: str, bearer: str) -> None:
        self.http, self.url, self.token, self.secret = http, url, user_token, secret
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        self.headers["Authorization"] = f"Bearer {bearer}"

    async def _call(
        self, method: str, body: dict[str, str], signed: Iterable[str], fence: Fence | None = None
    ) -> Operation:
        """Signed, sent, both codes checked, read into an ``Operation`` (retried)."""
        sign = hashlib.sha256("::".join((*signed, self.secret)).encode()).hexdigest()
        headers, data = {**self.headers, "Sign": sign}, json.dumps(body).encode()
        fallback, url = body.get("PayoutOperationId"), self.url + method

        async def attempt() -> Operation:
            status, raw = await self.http.send("POST", url, headers, data, None, fence)
            envelope = answered(status, raw, fence is not None)
            state = envelope.get("OperationState")
            code = state.get("Code") if isinstance(state, dict) else None
            if isinstance(code, bool) or code not in (0, 1):
                if code is None:
                    raise Unknown("no OperationState.Code") if fence else Busy(status, "no Code")
                raise Refused(f"OperationState.Code {code}")
            result = envelope.get("Result")
            fields = result if isinstance(result, dict) else {}
            inner = fields.get("State")
            if isinstance(inner, dict) and inner.get("Code") not in (None, 0, 1):
                raise Refused(f"Result.State.Code {inner.get('Code')}")
            operation_id = fields.get("PayoutOperationId") or fallback
            state = fields.get("PayoutOperationState")
            if not isinstance(operation_id, str) or not isinstance(state, str | None):
                raise Unknown("no PayoutOperationId") if fence else Busy(status, "no id")
            if fallback and operation_id.lower() != fallback.lower():  # about another (A15)
                raise Unknown("another operation") if fence else Busy(status, "another id")
            return Operation(operation_id, state or "", code == 1)

        return await retrying(attempt, fence is not None)

    async def create(self, payout: ImPayout) -> Operation:
        amount = f"{payout.amount:.2f}"
        body = {"UserToken": self.token, "PreferenceType": "OutBankCard", "Pan": payout.pan}
        body |= {"Amount": amount, "Currency": payout.currency}
        if payout.description is not None:
            body["Description"] = payout.description
        signed = (self.token, "OutBankCard", payout.pan, "", "", amount, payout.currency, "", "")
        return await self._call("createOperation", body, signed)

    async def execute(self, operation_id: str, fence: Fence) -> Operation:
        body = {"UserToken": self.token, "PayoutOperationId": operation_id}
        return await self._call("executeOperation", body, (self.token, operation_id), fence)

    async def state(self, operation_id: str) -> Operation:
        body = {"UserToken": self.token, "PayoutOperationId": operation_id}
        return await self._call("getOperationState", body, (self.token, operation_id))


class Enot:
    """Enot's payoff/create and payoff/info."""

    def __init__(self, http: Http, url: str, user_id: str, secret: str) -> None:
        self.http, self.url, self.user_id = http, url.rstrip("/"), user_id
        self.headers = {"Accept": "application/json", "x-api-signature-sha256": secret}
        self.json_headers = {**self.headers, "Content-Type": "application/json"}

    async def _data(
        self, method: str, path: str, body: bytes | None, params: dict[str, str] | None,
        fence: Fence | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The envelope's ``data`` once status, ``status_check`` and ``error`` agree."""

        headers, url = (self.headers if body is None else self.json_headers), self.url + path

        async def attempt() -> dict[str, Any]:
            status, raw = await self.http.send(method, url, headers, body, params, fence)
            envelope = answered(status, raw, fence is not None)
            claimed, error = envelope.get("status"), envelope.get("error")
            if (
                envelope.get("status_check") is False
                or error
                or (isinstance(claimed, int) and not 200 <= claimed < 300)
            ):
                if isinstance(claimed, int) and (claimed in (408, 429) or claimed >= 500):
                    raise Busy(claimed)
                raise Refused(f"Enot status {claimed}: {str(error)[:100]}")
            data = envelope.get("data")
            if not isinstance(data, dict):
                raise Unknown("no data") if fence else Busy(status, "no data")
            return data

        return await retrying(attempt, fence is not None)

    async def create(self, payoff: EnotPayoff, order_id: str, fence: Fence) -> str:
        whole = payoff.amount == payoff.amount.to_integral_value()
        body = {"user_id": self.user_id, "service": payoff.service, "order_id": order_id}
        body |= {"wallet_to": payoff.wallet_to}
        wire = {**body, "amount": int(payoff.amount) if whole else float(payoff.amount)}
        data = await self._data("POST", "/payoff/create", json.dumps(wire).encode(), None, fence)
        payoff_id = data.get("payoff_id")
        if not isinstance(payoff_id, str) or not payoff_id:
            raise Unknown("no payoff_id")
        return payoff_id

    async def info(self, *, payoff_id: str | None = None, order_id: str | None = None) -> Payoff:
        params = {"user_id": self.user_id}
        params |= {"id": payoff_id} if payoff_id else {"order_id": order_id or ""}
        data = await self._data("GET", "/payoff/info", None, params)
        found, state = data.get("payoff_id"), data.get("status")
        if not isinstance(found, str) or not isinstance(state, str):
            raise Unreadable("no payoff_id or status")
        named = data.get("order_id")
        if (payoff_id and found.lower() != payoff_id.lower()) or (
            order_id and named is not None and named != order_id
        ):
            raise Unreadable("an answer about another payoff")  # (A15)
        wallet, service = data.get("wallet"), data.get("service")
        wallet, service = (None if v is None else str(v) for v in (wallet, service))
        return Payoff(found, state.lower(), money(data.get("amount")), wallet, service)


# -- the recipient: masked in params, kept apart, sealed with a key ------------------------


class Recipients:
    """Fingerprints and the stored recipient: plain, or keyed (HMAC, AES-GCM); with a
    key, row signatures (HMAC)."""

    def __init__(self, key: str | None = None) -> None:
        self.key = None if key is None else base64.urlsafe_b64decode(key)
        self._aead: Any = None
        if self.key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(hashlib.sha256(b"aead" + self.key).digest())
            self._mac = hashlib.sha256(b"mac" + self.key).digest()
            self._sign = hashlib.sha256(b"sign" + self.key).digest()

    def digest(self, params: dict[str, Any]) -> str:
        text = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
        if self.key is None:
            return hashlib.sha256(text).hexdigest()
        return "hmac:" + hmac.new(self._mac, text, hashlib.sha256).hexdigest()

    def store(self, recipient: str) -> str:
        if self._aead is None:
            return json.dumps(recipient)
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, recipient.encode(), None)
        return "enc:" + base64.b64encode(sealed).decode()

    def sign(self, *facts: Any) -> str | None:
        """An HMAC of ``facts`` (canonical JSON); None without a key."""
        if self.key is None:
            return None
        text = json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._sign, text, hashlib.sha256).hexdigest()

    def opens(self, stored: str | None, recipient: str) -> bool:
        """Whether a row's stored recipient is ``recipient`` (a row taken over)."""
        if self._aead is None:
            return stored == json.dumps(recipient)
        if stored is None or not stored.startswith("enc:"):
            return False
        try:
            sealed = base64.b64decode(stored[4:])
            return self._aead.decrypt(sealed[:12], sealed[12:], None) == recipient.encode()
        except Exception:  # not base64, or InvalidTag: not sealed with this key
            return False

    @staticmethod
    def masked(params: dict[str, Any], field: str) -> str:
        value = str(params[field])
        shown = {**params, field: value[:6] + "*" * max(0, len(value) - 10) + value[-4:]}
        return json.dumps(shown, sort_keys=True, separators=(",", ":"))


# -- the ledger: intent first, fenced recovery points, history, group commit -------------


@dataclass(slots=True)
class Write:
    """One ledger write: ``begin`` (insert or claim), ``move`` or ``renew`` (fenced)."""

    kind: str
    provider: str
    key: str
    owner: str
    token: int = 0
    state: str = ""
    before: str | None = None
    note: str | None = None
    attempt: int = 0
    operation_id: str | None = None
    status: str | None = None
    lease: float = 120.0
    digest: str = ""
    params: str = ""
    recipient: str | None = None
    order_id: str | None = None
    signature: str | None = None  # begin: the row's; move: its new operation id's
    account: str | None = None  # begin: the provider account it is sent through
    account_signature: str | None = None


@dataclass(slots=True)
class Claim:
    token: int
    created: bool
    state: str
    operation_id: str | None
    attempts: int
    recipient: str | None = None  # as stored, for a row taken over
    account: str | None = None  # the account it was sent through, for a row taken over


class Conflict(Exception):
    """The key (or its order_id) is recorded with other parameters or provider."""


class Ledger(abc.ABC):
    """Writes queue up; one commit takes every write queued meanwhile (group commit).
    ``begin`` gives a ``Claim``, ``None`` when another drive holds the row; ``renew``
    the row's checked columns (``SIGNED``; True in memory), falsy without the lease."""

    def __init__(self) -> None:
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flushing = False
        self._flusher: asyncio.Future[None] | None = None

    async def open(self) -> None:  # noqa: B027 (nothing to make in memory)
        """Make the tables."""

    async def aclose(self) -> None:  # noqa: B027
        """Finish and close."""

    @abc.abstractmethod
    async def _commit(self, writes: list[Write]) -> list[Any]:
        """Each write's outcome: a ``Claim``/None/``Conflict`` for begin, the checked
        columns or a falsy value for renew, bool for move."""

    async def submit(self, write: Write) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.ensure_future(self._flush())
        return await asyncio.shield(future)  # a write once queued is finished

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await self._commit([write for write, _ in batch])
                except Exception as error:
                    for _, future in batch:
                        future.set_exception(Unknown(f"ledger write: {error}"))
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    future.set_result(outcome)
        finally:
            self._flushing = False


class MemoryLedger(Ledger):
    """Rows in a dict, history in a list; each write applied at once."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.orders: dict[tuple[str, str], str] = {}
        self.operations: dict[tuple[str, str], str] = {}  # (provider, id): its row's key
        self.keys: dict[str, str] = {}  # each key's provider
        self.history: list[tuple[Any, ...]] = []
        self.begun = 0  # rows begun and changes of state

    async def submit(self, write: Write) -> Any:
        return self.apply(write, time.time())

    async def _commit(self, writes: list[Write]) -> list[Any]:
        now = time.time()
        return [self.apply(write, now) for write in writes]

    def apply(self, w: Write, now: float) -> Any:
        # row: state, digest, owner, token, lease_until, attempts, operation_id, status,
        #      params, recipient, order_id, account
        row = self.rows.get((w.provider, w.key))
        if w.kind == "begin":
            if row is None:
                if self.keys.get(w.key, w.provider) != w.provider:
                    return Conflict("key recorded under another provider")
                if w.order_id is not None:
                    if (w.provider, w.order_id) in self.orders:
                        return Conflict("order_id taken")
                    self.orders[w.provider, w.order_id] = w.key
                self.keys[w.key], self.begun = w.provider, self.begun + 1
                self.rows[w.provider, w.key] = [
                    w.state, w.digest, w.owner, 1, now + w.lease, w.attempt, None, None,
                    w.params, w.recipient, w.order_id, w.account,
                ]  # fmt: skip
                self.history.append((w.provider, w.key, None, w.state, now, w.owner, w.note))
                return Claim(1, True, w.state, None, w.attempt)
            if row[1] != w.digest and not (row[0] in FINAL and row[8] == w.params):
                return Conflict("recorded with other parameters")
            if row[0] in FINAL or (row[2] is not None and row[4] > now):
                return None if row[0] not in FINAL else Claim(0, False, row[0], row[6], row[5])
            row[2], row[3], row[4] = w.owner, row[3] + 1, now + w.lease
            return Claim(row[3], False, row[0], row[6], row[5], row[9], row[11])
        if row is None or row[2] != w.owner or row[3] != w.token or row[0] in FINAL:
            return False
        if w.kind == "renew":
            if row[4] <= now:
                return False
            row[4] = max(row[4], now + w.lease)
            return True
        if w.operation_id is not None and w.operation_id != row[6]:
            if (w.provider, w.operation_id) in self.operations:
                return Conflict("operation held by another payout")
            self.operations[w.provider, w.operation_id] = w.key
        self.begun += row[0] != w.state
        row[0], row[5] = w.state, row[5] + w.attempt
        row[6] = w.operation_id or row[6]
        row[7] = w.status or row[7]
        if w.state in FINAL:
            row[1], row[2], row[4], row[9] = "masked", None, None, None
        else:
            row[4] = max(row[4], now + w.lease)
        self.history.append((w.provider, w.key, w.before, w.state, now, w.owner, w.note))
        return True


# The primary key leads with ``key``: it also finds a key's rows under any provider.
_COLUMNS = """provider TEXT NOT NULL, key TEXT NOT NULL, params_hash TEXT NOT NULL,
    params TEXT NOT NULL, recipient TEXT, state TEXT NOT NULL, operation_id TEXT,
    order_id TEXT, provider_status TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_token INTEGER NOT NULL, lease_expires_at {real},
    created_at {real} NOT NULL, updated_at {real} NOT NULL, signature TEXT,
    operation_signature TEXT, provider_account TEXT, account_signature TEXT{begun},
    PRIMARY KEY (key, provider)"""
_FINAL_SQL = "('" + "','".join(sorted(FINAL)) + "')"  # (PostgreSQL)
# SQLite's statements (partial index predicates included) test states with ``!=``, and
# a write's finality comes as a parameter: SQLite builds an ``IN`` list of three or more
# values into a temporary B-tree on each run of a statement, and freeing its page cache
# could make glibc trim the SQLite thread's heap, faulted back in by the next statement
# (madvise, page faults: most of the keyed SQLite ledger's CPU without HTTP pacing).
_LIVE = " AND ".join(f"state != '{state}'" for state in sorted(FINAL))
# A row holds its key unless it ended with nothing paid: failed, cancelled, refused.
_HOLDS_KEY = "state != 'cancelled' AND state != 'failed' AND state != 'refused'"
# One live row per key (what two concurrent begins under two providers run into), an
# order_id per key, and the live rows by state: stranded ones found without a scan.
_INDEXES = f"""CREATE UNIQUE INDEX IF NOT EXISTS {{p}}payouts_live_key ON {{p}}payouts (key)
    WHERE {_HOLDS_KEY};
CREATE UNIQUE INDEX IF NOT EXISTS {{p}}payouts_order ON {{p}}payouts (provider, order_id)
    WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS {{p}}payouts_operation ON {{p}}payouts
    (provider, operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {{p}}payouts_live ON {{p}}payouts (state) WHERE {_LIVE};"""
# What the fence checks: the columns that decide money, as this drive wrote them.
SIGNED = (
    "params_hash, recipient, order_id, operation_id, signature, operation_signature, "
    "provider_account, account_signature"
)
_SQLITE_SCHEMA = f"""PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
PRAGMA secure_delete = ON; PRAGMA busy_timeout = 5000;
CREATE TABLE IF NOT EXISTS payouts ({_COLUMNS.format(real="REAL", begun="")});
{_INDEXES.format(p="")}
CREATE TABLE IF NOT EXISTS payout_transitions (id INTEGER PRIMARY KEY, provider TEXT,
    key TEXT, from_state TEXT, to_state TEXT, at REAL, owner TEXT, note TEXT);
CREATE INDEX IF NOT EXISTS transitions_key ON payout_transitions (provider, key, id);
CREATE TABLE IF NOT EXISTS payout_ledger (name TEXT PRIMARY KEY, value NOT NULL);
INSERT OR IGNORE INTO payout_ledger VALUES ('rows_begun', (SELECT count(*) FROM payouts));
CREATE TRIGGER IF NOT EXISTS payouts_begun AFTER INSERT ON payouts BEGIN
    UPDATE payout_ledger SET value = value + 1 WHERE name = 'rows_begun'; END;
CREATE TRIGGER IF NOT EXISTS payouts_moved AFTER UPDATE OF state ON payouts
    WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE payout_ledger SET value = value + 1 WHERE name = 'rows_begun'; END;"""
_SQLITE_MOVE = f"""UPDATE payouts SET state = ?1, attempts = attempts + ?2,
    operation_id = coalesce(?3, operation_id), provider_status = coalesce(?4, provider_status),
    operation_signature = coalesce(?11, operation_signature), updated_at = ?5,
    lease_owner = CASE WHEN ?12 THEN NULL ELSE lease_owner END,
    lease_expires_at = CASE WHEN ?12 THEN NULL ELSE max(lease_expires_at, ?5 + ?6) END,
    recipient = CASE WHEN ?12 THEN NULL ELSE recipient END,
    signature = CASE WHEN ?12 THEN NULL ELSE signature END,
    params_hash = CASE WHEN ?12 THEN 'masked' ELSE params_hash END
    WHERE provider = ?7 AND key = ?8 AND lease_owner = ?9 AND lease_token = ?10 AND {_LIVE}"""
_SQLITE_RENEW = f"""UPDATE payouts SET lease_expires_at = max(lease_expires_at, ?1 + ?2)
    WHERE provider = ?3 AND key = ?4 AND lease_owner = ?5 AND lease_token = ?6
    AND {_LIVE} AND lease_expires_at > ?1 RETURNING {SIGNED}"""
# Recorded unless the key is another provider's (or this provider's already).
_SQLITE_INSERT = """INSERT INTO payouts (provider, key, params_hash, params, recipient, state,
    order_id, attempts, lease_owner, lease_token, lease_expires_at, created_at, updated_at,
    signature, provider_account, account_signature)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?11, ?12, ?13, ?14
    WHERE NOT EXISTS (SELECT 1 FROM payouts WHERE key = ?2 AND provider != ?1)
    ON CONFLICT (provider, key) DO NOTHING"""
_HISTORY = """INSERT INTO payout_transitions (provider, key, from_state, to_state, at, owner,
    note) VALUES (?, ?, ?, ?, ?, ?, ?)"""


class SQLiteLedger(Ledger):
    """One connection owned by one thread; a batch is one transaction."""

    def __init__(self, path: Path, *, checkpoint_interval: float = 1.0) -> None:
        super().__init__()
        self.path, self.interval = path, checkpoint_interval
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "lean-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._scrub_at = 0.0
        self._dropped = False

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        # None bound as directly as an int, as the project's ledger has it bound
        # (payout_async.ledger._sqlite_none: sqlite3's adaptation search costs ~3,300
        # instructions per None).
        if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
            sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.executescript(_SQLITE_SCHEMA)
        self._conn = conn

    async def aclose(self) -> None:
        await self._run(self._close)
        self._thread.shutdown()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    async def _commit(self, writes: list[Write]) -> list[Any]:
        return await self._run(self._batch, writes)

    def _batch(self, writes: list[Write]) -> list[Any]:
        conn = self._conn
        assert conn is not None
        now = time.time()
        history: list[tuple[Any, ...]] = []
        outcomes: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for w in writes:
                if w.kind == "begin":
                    outcomes.append(self._begin(conn, w, now, history))
                    continue
                if w.kind == "renew":
                    args: tuple[Any, ...] = (now, w.lease, w.provider, w.key, w.owner, w.token)
                    found = conn.execute(_SQLITE_RENEW, args).fetchall()
                    outcomes.append(found[0] if found else None)
                    continue
                args = (w.state, w.attempt, w.operation_id, w.status, now, w.lease, w.provider)
                args += (w.key, w.owner, w.token, w.signature, w.state in FINAL)
                try:
                    landed = conn.execute(_SQLITE_MOVE, args)
                except sqlite3.IntegrityError:  # the operation is another row's
                    outcomes.append(Conflict("operation held by another payout"))
                    continue
                outcomes.append(landed.rowcount == 1)
                if landed.rowcount == 1:
                    history.append((w.provider, w.key, w.before, w.state, now, w.owner, w.note))
                    self._dropped |= w.state in FINAL and not (w.recipient or "").startswith("enc")
            if history:
                conn.executemany(_HISTORY, history)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if self._dropped and now >= self._scrub_at:  # no clear recipient left in the WAL
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._dropped, self._scrub_at = False, now + self.interval
        return outcomes

    @staticmethod
    def _begin(conn: sqlite3.Connection, w: Write, now: float, history: list[Any]) -> Any:
        row = (w.provider, w.key, w.digest, w.params, w.recipient, w.state, w.order_id)
        try:
            inserted = conn.execute(
                _SQLITE_INSERT,
                (*row, w.attempt, w.owner, now + w.lease, now, w.signature, w.account,
                 w.account_signature),
            )  # fmt: skip
        except sqlite3.IntegrityError:  # the order_id's, or a race to the key (not here)
            return Conflict("order_id taken")
        if inserted.rowcount == 1:
            history.append((w.provider, w.key, None, w.state, now, w.owner, w.note))
            return Claim(1, True, w.state, None, w.attempt)
        found = conn.execute(
            "SELECT state, params_hash, params, lease_owner, lease_expires_at, lease_token,"
            " operation_id, attempts, recipient, provider_account FROM payouts"
            " WHERE provider = ? AND key = ?",
            (w.provider, w.key),
        ).fetchone()
        if found is None:
            return Conflict("key recorded under another provider")
        state, digest, params, owner, until, token, operation_id, attempts, *taken = found
        if digest != w.digest and not (state in FINAL and params == w.params):
            return Conflict("recorded with other parameters")
        if state in FINAL:
            return Claim(0, False, state, operation_id, attempts)
        if owner is not None and until > now:
            return None
        conn.execute(
            "UPDATE payouts SET lease_owner = ?, lease_token = ?, lease_expires_at = ?"
            " WHERE provider = ? AND key = ? AND lease_token = ?",
            (w.owner, token + 1, now + w.lease, w.provider, w.key, token),
        )
        return Claim(token + 1, False, state, operation_id, attempts, *taken)


class PostgresLedger(Ledger):
    """asyncpg; a batch is one statement: inserts, fenced updates and history rows."""

    def __init__(self, dsn: str, prefix: str) -> None:
        super().__init__()
        self.dsn, self.p = dsn, prefix
        self._conn: Any = None

    async def open(self) -> None:
        import asyncpg

        self._conn = await asyncpg.connect(self.dsn)
        self._unique_violation = asyncpg.UniqueViolationError
        p = self.p
        # Rows begun and changes of state counted by a sequence: a new row's default,
        # and a trigger on each change of state.
        begun = f", begun int8 NOT NULL DEFAULT nextval('{p}begun')"
        columns = _COLUMNS.format(real="float8", begun=begun)
        await self._conn.execute(
            f"CREATE SEQUENCE IF NOT EXISTS {p}begun; CREATE OR REPLACE FUNCTION {p}moved()"
            f" RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('{p}begun');"
            f" RETURN NULL; END $$; CREATE TABLE IF NOT EXISTS {p}payouts ({columns});"
            f"{_INDEXES.format(p=p)} CREATE OR REPLACE TRIGGER {p}moved AFTER UPDATE OF state"
            f" ON {p}payouts FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)"
            f" EXECUTE FUNCTION {p}moved();"
            f"CREATE TABLE IF NOT EXISTS {p}payout_transitions (id bigserial PRIMARY KEY,"
            " provider text, key text, from_state text, to_state text, at float8, owner text,"
            f" note text); CREATE INDEX IF NOT EXISTS {p}tkey ON {p}payout_transitions"
            " (provider, key, id)"
        )
        self._batch_sql = _postgres_batch(p)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def drop(self) -> None:
        p = self.p
        await self._conn.execute(
            f"DROP TABLE IF EXISTS {p}payouts, {p}payout_transitions;"
            f"DROP SEQUENCE IF EXISTS {p}begun; DROP FUNCTION IF EXISTS {p}moved()"
        )

    async def _commit(self, writes: list[Write]) -> list[Any]:
        columns: list[list[Any]] = [[] for _ in range(20)]
        for n, w in enumerate(writes):
            for column, value in zip(columns, (
                n, w.kind, w.provider, w.key, w.owner, w.token, w.state, w.before, w.note,
                w.attempt, w.operation_id, w.status, w.lease, w.digest, w.params, w.recipient,
                w.order_id, w.signature, w.account, w.account_signature,
            ), strict=True):  # fmt: skip
                column.append(value)
        try:
            rows = await self._conn.fetch(self._batch_sql, *columns)
        except self._unique_violation:  # an operation another row holds: whose, alone
            if len(writes) == 1:
                return [Conflict("operation held by another payout")]
            return [(await self._commit([w]))[0] for w in writes]
        landed = {row[0]: row[1] for row in rows}
        outcomes: list[Any] = []
        for n, w in enumerate(writes):
            if w.kind == "renew":
                outcomes.append(n in landed and tuple(landed[n]))
            elif w.kind == "move":
                outcomes.append(n in landed)
            elif n in landed:
                outcomes.append(Claim(1, True, w.state, None, w.attempt))
            else:
                outcomes.append(await self._claim(w))
        return outcomes

    async def _claim(self, w: Write) -> Any:
        """A begin whose insert did not land: the row is there (or its order_id is)."""
        p = self.p
        async with self._conn.transaction():
            row = await self._conn.fetchrow(
                f"SELECT state, params_hash, params, lease_owner, lease_token, operation_id,"
                f" attempts, recipient, provider_account,"
                f" lease_expires_at > extract(epoch from now()) AS held"
                f" FROM {p}payouts WHERE provider = $1 AND key = $2 FOR UPDATE",
                w.provider, w.key,
            )  # fmt: skip
            if row is None:
                return Conflict("key recorded under another provider, or order_id taken")
            state = row["state"]
            if row["params_hash"] != w.digest and not (
                state in FINAL and row["params"] == w.params
            ):
                return Conflict("recorded with other parameters")
            if state in FINAL:
                return Claim(0, False, state, row["operation_id"], row["attempts"])
            if row["lease_owner"] is not None and row["held"]:
                return None
            await self._conn.execute(
                f"UPDATE {p}payouts SET lease_owner = $1, lease_token = lease_token + 1,"
                f" lease_expires_at = extract(epoch from now()) + $2"
                f" WHERE provider = $3 AND key = $4",
                w.owner, w.lease, w.provider, w.key,
            )  # fmt: skip
            token, operation_id = row["lease_token"] + 1, row["operation_id"]
            taken = (row["attempts"], row["recipient"], row["provider_account"])
            return Claim(token, False, state, operation_id, *taken)


def _postgres_batch(p: str) -> str:
    final = _FINAL_SQL
    return f"""
WITH w AS (
  SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
    $7::text[], $8::text[], $9::text[], $10::int[], $11::text[], $12::text[], $13::float8[],
    $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
    $20::text[])
    AS w(n, kind, provider, key, owner, token, state, before, note, attempt, operation_id,
         status, lease, digest, params, recipient, order_id, signature, account,
         account_signature)),
t AS (SELECT extract(epoch from now())::float8 AS now),
ins AS (
  INSERT INTO {p}payouts (provider, key, params_hash, params, recipient, state, order_id,
    attempts, lease_owner, lease_token, lease_expires_at, created_at, updated_at, signature,
    provider_account, account_signature)
  SELECT w.provider, w.key, w.digest, w.params, w.recipient, w.state, w.order_id, w.attempt,
    w.owner, 1, t.now + w.lease, t.now, t.now, w.signature, w.account, w.account_signature
    FROM w, t WHERE w.kind = 'begin'
    AND NOT EXISTS (SELECT 1 FROM {p}payouts o WHERE o.key = w.key AND o.provider <> w.provider)
  ON CONFLICT DO NOTHING RETURNING provider, key),
upd AS (
  UPDATE {p}payouts AS r SET
    state = CASE WHEN w.kind = 'move' THEN w.state ELSE r.state END,
    attempts = r.attempts + w.attempt,
    operation_id = coalesce(w.operation_id, r.operation_id),
    provider_status = coalesce(w.status, r.provider_status),
    operation_signature = coalesce(w.signature, r.operation_signature),
    updated_at = t.now,
    lease_owner = CASE WHEN w.state IN {final} THEN NULL ELSE r.lease_owner END,
    lease_expires_at = CASE WHEN w.state IN {final} THEN NULL
      ELSE greatest(r.lease_expires_at, t.now + w.lease) END,
    recipient = CASE WHEN w.state IN {final} THEN NULL ELSE r.recipient END,
    signature = CASE WHEN w.state IN {final} THEN NULL ELSE r.signature END,
    params_hash = CASE WHEN w.state IN {final} THEN 'masked' ELSE r.params_hash END
  FROM w, t
  WHERE w.kind IN ('move', 'renew') AND r.provider = w.provider AND r.key = w.key
    AND r.lease_owner = w.owner AND r.lease_token = w.token AND r.state NOT IN {final}
    AND (w.kind = 'move' OR r.lease_expires_at > t.now)
  RETURNING w.n, CASE WHEN w.kind = 'renew' THEN ARRAY[r.params_hash, r.recipient,
    r.order_id, r.operation_id, r.signature, r.operation_signature, r.provider_account,
    r.account_signature] END),
landed AS (
  SELECT w.n, NULL::text[] FROM w JOIN ins ON ins.provider = w.provider AND ins.key = w.key
  WHERE w.kind = 'begin' UNION ALL SELECT * FROM upd),
hist AS (
  INSERT INTO {p}payout_transitions (provider, key, from_state, to_state, at, owner, note)
  SELECT w.provider, w.key, w.before, w.state, t.now, w.owner, w.note
  FROM w JOIN landed ON landed.n = w.n, t WHERE w.kind <> 'renew')
SELECT * FROM landed"""


# -- the orchestration: one drive per key, recovery points, the fence ----------------------


class SetAside(Exception):
    """The row is not as this drive wrote it: parked, nothing sent."""


class Run:
    """One claimed row being driven under (owner, token); ``signed``: its ``SIGNED``
    columns as this drive wrote them."""

    __slots__ = ("key", "lease", "ledger", "lost", "margin", "operation_id", "owner")
    __slots__ += ("provider", "recipients", "signed", "state", "token")

    def __init__(self, payouts: Payouts, key: str, claim: Claim, signed: list[Any]) -> None:
        self.ledger, self.provider, self.key = payouts.ledger, payouts.provider, key
        self.owner, self.token, self.state = payouts.owner, claim.token, claim.state
        self.operation_id, self.lease = claim.operation_id, payouts.lease
        self.margin, self.signed, self.lost = payouts.lease / 10, signed, False
        self.recipients = payouts.recipients

    async def move(self, state: str, note: str | None = None, **changes: Any) -> None:
        operation_id = changes.get("operation_id")
        if operation_id is not None and operation_id != self.operation_id:
            changes["signature"] = self.recipients.sign(self.provider, self.key, operation_id)
        write = Write(
            "move", self.provider, self.key, self.owner, self.token, state, self.state, note,
            lease=self.lease, recipient=self.signed[1], **changes,
        )  # fmt: skip
        landed = await self.ledger.submit(write)
        if isinstance(landed, Conflict):  # an answer about another payout's operation
            await self.move("needs_attention", "the operation is another payout's")
            raise SetAside(self.key)
        if not landed:
            self.lost = True
            raise LeaseLost(self.key)
        self.state = state
        if operation_id is not None and operation_id != self.operation_id:
            self.signed[3], self.signed[5] = operation_id, changes["signature"]
            self.operation_id = operation_id

    async def fence(self, seconds: float) -> None:
        """The lease outlives the request, on the ledger's clock, and the row is as this
        drive wrote it, or nothing leaves."""
        lease = max(self.lease, seconds + self.margin)
        write = Write("renew", self.provider, self.key, self.owner, self.token, lease=lease)
        found = None if self.lost else await self.ledger.submit(write)
        if not found:
            self.lost = True
            raise LeaseLost(self.key)
        if found is not True and list(found) != self.signed:
            await self.move("needs_attention", "altered outside the ledger: nothing sent")
            raise SetAside(self.key)


class Payouts:
    """Pays each key at most once: ``pay``, ``pay_many``."""

    def __init__(
        self,
        client: Intellect | Enot,
        ledger: Ledger,
        recipients: Recipients,
        *,
        lease: float = 120.0,
        poll: tuple[float, float, float, float] = (1.0, 1.2, 30.0, 60.0),
    ) -> None:
        self.client, self.ledger, self.recipients, self.lease = client, ledger, recipients, lease
        self.provider = "intellectmoney" if isinstance(client, Intellect) else "enot"
        #: The provider account rows are sent through (A14): Enot's ``user_id``.
        self.account = client.user_id if isinstance(client, Enot) else None
        self.poll = poll  # first pause, factor, longest pause, deadline
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.in_flight = (TIMEOUT.total or 0.0) + lease / 10
        self._driving: dict[str, tuple[str, asyncio.Future[str]]] = {}

    async def pay(self, key: str, request: ImPayout | EnotPayoff) -> str:
        """The payout's state when the drive ends (or another's drive of it ends)."""
        check_key(key)
        params = request.params()
        if isinstance(request, EnotPayoff):
            params["order_id"] = order_id_for(key)
        digest = self.recipients.digest(params)
        joined = self._driving.get(key)
        if joined is not None:
            if joined[0] != digest:
                raise Conflict(key)
            return await asyncio.shield(joined[1])
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._driving[key] = (digest, future)
        try:
            state = await self._begin(key, request, params, digest)
            future.set_result(state)
            return state
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: joiners get it, nobody else must
            raise
        finally:
            del self._driving[key]

    async def pay_many(
        self, items: Iterable[tuple[str, ImPayout | EnotPayoff]], concurrency: int
    ) -> AsyncIterator[tuple[str, str]]:
        """Each payout's key and end state as it ends, at most ``concurrency`` at once."""
        source = iter(items)
        done: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def worker() -> None:
            try:
                for key, request in source:
                    try:
                        done.put_nowait((key, await self.pay(key, request)))
                    except (Invalid, Conflict, LeaseLost) as error:
                        done.put_nowait((key, f"error: {type(error).__name__}"))
            finally:
                done.put_nowait(None)

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        try:
            running = len(workers)
            while running:
                item = await done.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            for task in workers:
                task.cancel()

    async def _begin(
        self, key: str, request: ImPayout | EnotPayoff, params: dict[str, Any], digest: str
    ) -> str:
        enot = isinstance(request, EnotPayoff)
        field, order_id = "wallet_to" if enot else "pan", params.get("order_id")
        recipient = self.recipients.store(str(params[field]))
        signature = self.recipients.sign(self.provider, key, order_id, params)
        account = self.account
        account_signature = self.recipients.sign("account", self.provider, key, account)
        write = Write(
            "begin", self.provider, key, self.owner, state="sending" if enot else "pending",
            note="intent recorded", attempt=int(enot), lease=self.lease, digest=digest,
            params=Recipients.masked(params, field), recipient=recipient,
            order_id=order_id, signature=signature, account=account,
            account_signature=account_signature,
        )  # fmt: skip
        claim = await self.ledger.submit(write)
        if isinstance(claim, Conflict):
            raise claim
        if claim is None or claim.state in FINAL:
            return "busy" if claim is None else claim.state  # busy: another drive has it
        operation_id = claim.operation_id
        signed = [digest, recipient, order_id, operation_id, signature, None]
        signed += [account, account_signature]
        run = Run(self, key, claim, signed)
        try:
            if not claim.created:  # taken over: the row's recipient must be this payout's
                if not self.recipients.opens(claim.recipient, str(params[field])):
                    await run.move("needs_attention", "the row's recipient is not the payout's")
                    return run.state
                if claim.account != account:  # looked up elsewhere it would not be found
                    await run.move("needs_attention", "sent through another account")
                    return run.state
                signed[1] = claim.recipient
                signed[5] = operation_id and self.recipients.sign(self.provider, key, operation_id)
            if not claim.created and claim.state in ("sending", "executing"):
                await asyncio.sleep(self.in_flight)  # the previous holder's request may land
                await self._reconcile(run, request)
            elif run.state == "processing":
                await self._poll(run, request, "", None)
            elif isinstance(request, EnotPayoff):
                await self._enot(run, request, params["order_id"])
            else:
                await self._intellect(run, request)
        except SetAside:
            pass  # parked by the fence
        return run.state

    async def _intellect(self, run: Run, request: ImPayout) -> None:
        client = self.client
        assert isinstance(client, Intellect)
        try:
            created = await client.create(request)
        except CallError as error:
            return await run.move(
                "refused" if isinstance(error, Refused) else "needs_attention", f"create: {error}"
            )
        note = "operation created; executing"
        await run.move("executing", note, attempt=1, operation_id=created.operation_id)
        try:
            operation = await client.execute(created.operation_id, run.fence)
        except NotSent as error:
            return await run.move("needs_attention", f"execute not sent: {error}")
        except CallError:
            return await self._reconcile(run, request)
        final = IM_FINAL.get(operation.state)
        if final is not None and not operation.accepted:
            return await run.move(final, status=operation.state)
        await self._poll(run, request, operation.state, None)

    async def _enot(self, run: Run, request: EnotPayoff, order_id: str) -> None:
        client = self.client
        assert isinstance(client, Enot)
        try:
            payoff_id = await client.create(request, order_id, run.fence)
        except (Refused, NotSent) as error:
            state = "refused" if isinstance(error, Refused) else "needs_attention"
            return await run.move(state, f"create: {error}")
        except CallError:
            return await self._reconcile(run, request)
        await self._poll(run, request, None, payoff_id)

    async def _poll(
        self, run: Run, request: ImPayout | EnotPayoff, status: str | None, payoff_id: str | None
    ) -> None:
        """Record ``processing``, then ask until final (or park at the deadline).
        An Enot payoff found by order_id must be this payout's."""
        await run.move("processing", status=status or None, operation_id=payoff_id)
        pause, factor, longest, deadline = self.poll
        give_up = time.monotonic() + deadline
        # The library's schedule: the first look after a randomised first pause.
        await asyncio.sleep(random.uniform(pause / factor, pause))
        while True:
            try:
                final, status, found = await self._look(run, request, payoff_id)
            except CallError as error:
                return await run.move("needs_attention", f"state unreadable: {error}")
            if final is not None:
                return await run.move(final, status=status, operation_id=found)
            if time.monotonic() + pause > give_up:
                return await run.move("needs_attention", "poll deadline")
            await asyncio.sleep(pause)
            pause = min(longest, pause * factor)

    async def _look(
        self, run: Run, request: ImPayout | EnotPayoff, payoff_id: str | None
    ) -> tuple[str | None, str, str | None]:
        client = self.client
        if isinstance(client, Intellect):
            assert run.operation_id is not None
            operation = await client.state(run.operation_id)
            return IM_FINAL.get(operation.state), operation.state, None
        assert isinstance(request, EnotPayoff)
        order_id = None if payoff_id else order_id_for(run.key)
        payoff = await client.info(payoff_id=payoff_id, order_id=order_id)
        if (payoff.amount is not None and payoff.amount != request.amount) or (
            payoff.service and payoff.service.lower() != request.service.lower()
        ):
            return "needs_attention", "the payoff found is not this payout", None
        return ENOT_FINAL.get(payoff.status), payoff.status, payoff.payoff_id

    async def _reconcile(self, run: Run, request: ImPayout | EnotPayoff) -> None:
        """After a lost answer the provider's books decide, never a second send: an
        operation still ``Created`` or a payoff not found by its order_id parks."""
        client = self.client
        if isinstance(client, Enot):
            return await self._poll(run, request, "looking up the order_id", None)
        assert run.operation_id is not None
        try:
            operation = await client.state(run.operation_id)
        except CallError as error:
            return await run.move("needs_attention", f"execute unknown: {error}")
        if operation.state == "Created":
            return await run.move("needs_attention", "execute unknown, operation Created")
        await self._poll(run, request, operation.state, None)


# -- the standalone check: payouts settle, each key once -------------------------------------


class _Crash(Exception):
    """A drive that stops half-way (its row left live: stranded)."""


class _InstantIntellect(Intellect):
    """Answers at once; ``before_fence`` runs between the recorded step and the fence."""

    def __init__(self, before_fence: Callable[[str], Awaitable[None]], sent: list[str]) -> None:
        self.before_fence, self.sent, self.crash = before_fence, sent, False

    async def create(self, payout: ImPayout) -> Operation:
        if self.crash:
            raise _Crash
        return Operation(f"op-{uuid.uuid4().hex[:8]}", "Created", False)

    async def execute(self, operation_id: str, fence: Fence) -> Operation:
        await self.before_fence(operation_id)
        await fence(30.0)
        self.sent.append(operation_id)
        return Operation(operation_id, "InProcess", True)

    async def state(self, operation_id: str) -> Operation:
        return Operation(operation_id, "Completed", False)


class _InstantEnot(Enot):
    def __init__(self, before_fence: Callable[[str], Awaitable[None]], sent: list[str]) -> None:
        self.before_fence, self.sent, self.user_id = before_fence, sent, "lean-account"

    async def create(self, payoff: EnotPayoff, order_id: str, fence: Fence) -> str:
        await self.before_fence(order_id)
        await fence(30.0)
        self.sent.append(order_id)
        return f"po-{order_id}"

    async def info(self, *, payoff_id: str | None = None, order_id: str | None = None) -> Payoff:
        return Payoff(payoff_id or "po", "success", None, None, None)


async def _sql(ledger: Ledger, text: str) -> list[Any]:
    """A statement on the ledger's own connection, between its batches."""
    if isinstance(ledger, SQLiteLedger):
        conn = ledger._conn
        assert conn is not None
        return await ledger._run(lambda: conn.execute(text).fetchall())
    assert isinstance(ledger, PostgresLedger)
    return list(await ledger._conn.fetch(text.replace("payouts", f"{ledger.p}payouts")))


async def _begun(ledger: Ledger) -> int:
    """The count of rows begun and changes of state (issue 25)."""
    if isinstance(ledger, MemoryLedger):
        return ledger.begun
    if isinstance(ledger, SQLiteLedger):
        return (await _sql(ledger, "SELECT value FROM payout_ledger"))[0][0]
    assert isinstance(ledger, PostgresLedger)
    seq = f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {ledger.p}begun"
    return int(await ledger._conn.fetchval(seq))


async def _guarantees(ledger: Ledger, recipients: Recipients) -> str:
    """Without a sandbox: what issues 23 and 25 and the trust boundary added, each
    shown to hold; a failed check raises ``AssertionError``."""
    from _common import PAN

    tag, durable = uuid.uuid4().hex[:6], not isinstance(ledger, MemoryLedger)
    sent: list[str] = []
    alter: dict[str, str] = {}  # key: the UPDATE run on its row right before the fence

    async def before_fence(operation_id: str) -> None:
        for key, change in list(alter.items()):
            await _sql(ledger, change.format(key=key, operation_id=operation_id))

    im_client, poll = _InstantIntellect(before_fence, sent), (0.001, 2.0, 0.01, 5.0)
    im = Payouts(im_client, ledger, recipients, poll=poll)
    enot = Payouts(_InstantEnot(before_fence, sent), ledger, recipients, poll=poll)
    card, payoff = ImPayout(PAN, Decimal(1)), EnotPayoff("card", PAN, Decimal(1))

    async def strand(key: str) -> None:
        """A drive of ``key`` stops after its intent is recorded; its lease lapses."""
        im_client.crash, im.lease = True, 0.05
        with contextlib.suppress(_Crash):
            await im.pay(key, card)
        im_client.crash, im.lease = False, 120.0
        await asyncio.sleep(0.06)

    await ledger.open()
    try:
        # Issue 23: a key live under one provider is refused under the other -- in one
        # batch (PostgreSQL: one statement, the unique index decides), in the next, by
        # the live-key index itself -- and so is a key paid, or failed, under another.
        key = f"{tag}-live"
        begin = Write("begin", "intellectmoney", key, "o", state="pending", params="{}")
        rival = Write("begin", "enot", key, "o", state="sending", params="{}")
        first, second = await ledger._commit([begin, rival])
        assert isinstance(first, Claim) and isinstance(second, Conflict), (first, second)
        assert isinstance(await ledger.submit(rival), Conflict)
        if durable:
            insert = "INSERT INTO payouts (provider, key, params_hash, params, state,"
            insert += f" lease_token, created_at, updated_at) VALUES ('enot', '{key}', '',"
            try:
                await _sql(ledger, insert + " '{}', 'sending', 1, 0, 0)")
                error: Exception | None = None
            except Exception as refused:  # sqlite3's or asyncpg's unique violation
                error = refused
            assert "unique" in str(error).lower(), f"a second live row of a key: {error}"
        assert await im.pay(f"{tag}-paid", card) == "succeeded" and len(sent) == 1
        try:
            await enot.pay(f"{tag}-paid", payoff)
            raise AssertionError("a paid key was begun under another provider")
        except Conflict:
            pass
        key = f"{tag}-failed"
        claim = await ledger.submit(Write("begin", "intellectmoney", key, "o", state="pending"))
        failed = Write("move", "intellectmoney", key, "o", claim.token, "failed", "pending")
        assert await ledger.submit(failed)
        assert isinstance(await ledger.submit(Write("begin", "enot", key, "o")), Conflict)
        # An operation is one row's: another row's move to it is refused, in a batch
        # with others too (PostgreSQL: the statement fails, each write again alone).
        ops = [f"{tag}-op1", f"{tag}-op2"]
        claims = [
            await ledger.submit(Write("begin", "intellectmoney", k, "o", state="pending"))
            for k in ops
        ]
        moves = [
            Write("move", "intellectmoney", k, "o", c.token, "executing", "pending",
                  operation_id=f"{tag}-X")
            for k, c in zip(ops, claims, strict=True)
        ]  # fmt: skip
        landed = await ledger._commit(moves)
        assert landed[0] is True and isinstance(landed[1], Conflict), landed
        # Issue 25: one more on each insert and each change of state, not on a renewal.
        count, key = await _begun(ledger), f"{tag}-count"
        claim = await ledger.submit(Write("begin", "enot", key, "o", state="sending"))
        steps = [await _begun(ledger)]
        for write in (
            Write("renew", "enot", key, "o", claim.token),
            Write("move", "enot", key, "o", claim.token, "processing", "sending"),
            Write("move", "enot", key, "o", claim.token, "succeeded", "processing"),
        ):
            assert await ledger.submit(write)
            steps.append(await _begun(ledger))
        assert steps == [count + 1, count + 1, count + 2, count + 3], (count, steps)
        # Stranded rows: the live ones, found through the index on state.
        stranded = f"SELECT key FROM payouts WHERE {_LIVE} AND lease_expires_at < "
        if isinstance(ledger, SQLiteLedger):
            plan = await _sql(ledger, f"EXPLAIN QUERY PLAN {stranded} 1e12")
            assert "payouts_live" in str(plan), plan
        elif isinstance(ledger, PostgresLedger):
            async with ledger._conn.transaction():
                await ledger._conn.execute("SET LOCAL enable_seqscan = off")
                plan = await _sql(ledger, f"EXPLAIN {stranded} 1e12")
            assert "payouts_live" in str(plan), plan
        # A drive that stopped half-way is taken over once its lease lapses, and pays.
        await strand(f"{tag}-stranded")
        if durable:
            found = await _sql(ledger, f"{stranded} {time.time()}")
            assert (f"{tag}-stranded",) in [tuple(row) for row in found], found
        again = Payouts(im_client, ledger, recipients, poll=poll)
        assert await again.pay(f"{tag}-stranded", card) == "succeeded" and len(sent) == 2
        if not durable:
            return (
                f"ok: one live row per key and operation, {steps[-1]} counted, a stranded"
                " row taken over"
            )
        # The trust boundary: a row altered between its begin and the money-moving
        # request is parked and nothing is sent (taken over too).
        sealed = recipients.store("5555555555554444")  # another card
        changes = [
            (im, card, f"recipient = '{sealed}'"),
            (im, card, "operation_id = 'op-other'"),
            (enot, payoff, f"recipient = '{sealed}'"),
            (enot, payoff, "order_id = 'other'"),
            (enot, payoff, "provider_account = 'another-account'"),
            (im, card, "signature = 'forged'"),
        ]
        for number, (payouts, request, change) in enumerate(changes):
            key = f"{tag}-altered-{number}"
            alter.clear()
            alter[key] = f"UPDATE payouts SET {change} WHERE key = '{{key}}'"
            assert await payouts.pay(key, request) == "needs_attention", change
        alter.clear()
        await strand(key := f"{tag}-stranded-altered")
        await _sql(ledger, f"UPDATE payouts SET recipient = '{sealed}' WHERE key = '{key}'")
        assert await again.pay(key, card) == "needs_attention"
        assert len(sent) == 2, sent
        assert await enot.pay(f"{tag}-untouched", payoff) == "succeeded"
        assert len(sent) == 3
        return (
            f"ok: one live row per key and operation, {steps[-1]} counted, stranded rows"
            f" by index and taken over, {len(changes) + 1} altered rows parked unsent"
        )
    finally:
        if isinstance(ledger, PostgresLedger):
            await ledger.drop()
        await ledger.aclose()


async def _check(sandbox: Any, ledger: Ledger, n: int, recipients: Recipients) -> str:
    from _common import PAN

    creds, http, tag = sandbox.credentials, Http(), uuid.uuid4().hex[:6]
    url, token, secret = sandbox.intellectmoney_url, creds.im_user_token, creds.im_secret_key
    im = Intellect(http, url, token, secret, creds.im_bearer_token)
    enot = Enot(http, sandbox.enot_url, creds.enot_user_id, creds.enot_secret_key)
    await ledger.open()
    states: dict[str, int] = {}
    try:
        for client in (im, enot):
            payouts = Payouts(client, ledger, recipients, poll=(0.001, 2.0, 0.01, 60.0))
            one, im_payout = Decimal(1), client is im
            items = [
                (f"{tag}-{payouts.provider}-{i}", ImPayout(PAN, one, f"{tag}{i}"))
                if im_payout
                else (f"{tag}-{payouts.provider}-{i}", EnotPayoff("card", PAN, one))
                for i in range(n)
            ]
            async for _, state in payouts.pay_many(items * 2, concurrency=64):  # each key twice
                states[state] = states.get(state, 0) + 1
    finally:
        await http.aclose()
        if isinstance(ledger, PostgresLedger):
            await ledger.drop()
        await ledger.aclose()
    stats = await asyncio.to_thread(sandbox.stats)
    paid = stats["intellectmoney"]["executed"] + stats["enot"]["created"]
    await asyncio.to_thread(sandbox.reset)
    ok = paid == 2 * n and not stats["duplicates"] and states.get("succeeded") == 4 * n
    return f"{'ok' if ok else 'FAILED'}: {paid} paid for {2 * n} keys, ends {states}"


def main() -> int:
    import argparse
    import tempfile

    from _common import SandboxProcess

    parser = argparse.ArgumentParser(description="Pay with the lean version, check the books.")
    parser.add_argument("--n", type=int, default=500, help="payouts per provider and ledger")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    options: dict[str, object] = {
        "seed": 1, "im_in_process_after": 0, "im_final_after": 0.0005, "enot_final_after": 0,
        "im_balance": Decimal(10**9), "enot_balance": Decimal(10**9),
    }  # fmt: skip
    key, prefix = base64.urlsafe_b64encode(os.urandom(32)).decode(), f"lean_{uuid.uuid4().hex[:8]}_"
    failed = False
    with tempfile.TemporaryDirectory() as directory, SandboxProcess(**options) as sandbox:
        ledgers: list[tuple[str, Callable[[], Ledger], Recipients]] = [
            ("memory", MemoryLedger, Recipients()),
            ("sqlite", lambda: SQLiteLedger(Path(directory) / "plain.db"), Recipients()),
            ("sqlite+key", lambda: SQLiteLedger(Path(directory) / "key.db"), Recipients(key)),
            ("postgres", lambda: PostgresLedger(args.postgres, prefix), Recipients()),
        ]
        ledgers = ledgers[: 4 if args.postgres else 3]
        if args.postgres:
            with_key = ("postgres+key", lambda: PostgresLedger(args.postgres, prefix + "k_"))
            ledgers.append((*with_key, Recipients(key)))
        for name, make, recipients in ledgers:
            try:
                verdict = asyncio.run(_guarantees(make(), recipients))
            except AssertionError as error:
                verdict = f"FAILED: {error!r}"
            failed |= not verdict.startswith("ok")
            print(f"{name:<12} {verdict}", flush=True)
        for name, make, recipients in ledgers:
            verdict = asyncio.run(_check(sandbox, make(), args.n, recipients))
            failed |= not verdict.startswith("ok")
            print(f"{name:<12} {verdict}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
