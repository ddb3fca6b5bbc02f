"""Property: whatever a provider answers, every client method returns a well-formed
model or raises a ``PayoutError``; a money-moving method that cannot read its answer
raises ``OutcomeUnknownError``. Whatever bytes and header a webhook brings, the check
says yes or no and the handler answers 200, 400 or 401 (413 over 64 KiB), never 500.

One aiohttp.web server on 127.0.0.1 and one set of clients serve the whole module;
each example sets the answer the server gives. Retries are real but instant. The run
is derandomised, so CI sees the same examples every time; the number of HTTP calls
is printed at the end of the module. Each test draws ``FUZZ_EXAMPLES`` examples (100,
Hypothesis's own default; set the variable higher for a longer hunt).
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from payout_async import SignatureError
from payout_async._decode import UnreadableError, loads, money
from payout_async._transport import parse_retry_after
from payout_async.enot import PayoffWebhook, parse_webhook, verify_webhook

from .answers import HOOK_KEY, METHODS, REPORT, Answer, AnswerServer, Clients, check_contract

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@attrs.define
class Harness:
    loop: asyncio.AbstractEventLoop
    server: AnswerServer
    clients: Clients
    hook_posts: int = 0

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture(scope="module")
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    server = AnswerServer()
    loop.run_until_complete(server.start())
    made = Harness(loop, server, server.clients())
    started = time.perf_counter()
    yield made
    elapsed = time.perf_counter() - started
    loop.run_until_complete(made.clients.aclose())
    loop.run_until_complete(server.close())
    loop.close()
    request.config.stash.setdefault(REPORT, []).append(
        f"fuzz: {server.calls} provider HTTP calls and {made.hook_posts} webhook posts "
        f"in {elapsed:.1f} s"
    )


# --- JSON text, including what json.dumps will not write ------------------------------------


class Raw(str):
    """A piece of JSON text written as is (NaN, a huge number, deep nesting...)."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value)


HOSTILE_TOKENS = [
    Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e999999999999999999999999"),
    Raw("1e400"), Raw("-1e-400"), Raw("1" * 80), Raw("9" * 5000), Raw("-0"), Raw("0e99999"),
    Raw("[" * 40 + "]" * 40), Raw("[" * 1200 + "]" * 1200), Raw('{"a":' * 50 + "1" + "}" * 50),
    Raw('"\\ud800"'), Raw('"\\udfff\\ud800x"'), Raw('"\\ud83d\\ude00"'),
    "NaN", "sNaN", "-sNaN", "Infinity", "-inf", "1e999999", "1,50", "1 000.00", "0x10", "",
    " ", "x" * 5000, "<html>", "\u202e\u0000", "100.00", "-5", "1E+3", True, False, None, 0,
    -1, 2**70, 1.5, 1e300, [], {}, [None], {"": None},
]  # fmt: skip
hostile = st.sampled_from(HOSTILE_TOKENS).map(copy.deepcopy)  # mutations must not leak
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | hostile
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict) and not isinstance(value, Raw):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with one to three of its parts replaced, removed or added to."""
    value = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(value))))
        if not path:
            value = draw(json_values) if draw(st.integers(0, 9)) == 0 else value
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "hostile", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "hostile":
            parent[path[-1]] = draw(hostile)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return value


def _envelope_variants(document: Any) -> st.SearchStrategy[Any]:
    """Documented error envelopes and envelope fields set to every kind of value."""
    variants = [
        st.just({"data": None, "error": "Вывод не найден.", "status": 404, "status_check": False}),
        st.fixed_dictionaries(
            {
                "data": st.one_of(st.just(document.get("data")).map(copy.deepcopy), json_values),
                "status": st.one_of(st.sampled_from([200, 201, 302, 404, 429, 500]), json_values),
                "status_check": st.one_of(st.booleans(), json_values),
            },
            optional={"error": json_values},
        ),
        st.fixed_dictionaries(
            {
                "OperationState": st.fixed_dictionaries(
                    {"Code": st.one_of(st.sampled_from([0, 1, 2, 3, -1]), json_values)},
                    optional={"Desc": json_values},
                )
            },
            optional={
                "Result": st.one_of(st.just(document.get("Result")).map(copy.deepcopy), json_values)
            },
        ),
    ]
    return st.one_of(variants)


@st.composite
def bodies(draw: st.DrawFn, document: Any) -> bytes:
    kind = draw(st.sampled_from(
        ["mutated", "mutated", "mutated", "envelope", "any json", "documented", "bytes",
         "truncated", "encoded", "html", "deep", "bom"]
    ))  # fmt: skip
    if kind == "mutated":
        return dump(draw(mutated(document))).encode()
    if kind == "envelope":
        return dump(draw(_envelope_variants(document))).encode()
    if kind == "any json":
        return dump(draw(json_values)).encode()
    if kind == "documented":
        return dump(document).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    text = dump(document)
    if kind == "truncated":
        return text.encode()[: draw(st.integers(0, max(0, len(text.encode()) - 1)))]
    if kind == "encoded":
        encoding = draw(st.sampled_from(["utf-16", "utf-32", "cp1251", "koi8-r", "utf-16-le"]))
        return text.encode(encoding, "replace")
    if kind == "html":
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    if kind == "deep":
        depth = draw(st.sampled_from([33, 100, 1000, 70_000]))
        return (draw(st.sampled_from(["[", '{"a":'])) * depth).encode()
    return b"\xef\xbb\xbf" + text.encode()


_FRAMING = {"content-length", "transfer-encoding", "connection", "upgrade", "trailer", "date"}
header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda name: name.lower() not in _FRAMING
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éжЖ€"),
    max_size=40,
)
retry_after = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(str),
    st.datetimes(timezones=st.just(UTC)).map(lambda when: email.utils.format_datetime(when)),
    st.sampled_from(
        [
            "Wed, 21 Oct 99999999999999999999 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 -2359",
            "Mon, 01 Jan 0001 00:00:00 +2359",
            "1e400",
            "nan",
            "",
            "soon",
        ]
    ),
    header_text,
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-16", "text/html", "text/plain", "x/y"]
)
content_encodings = st.sampled_from(["gzip", "deflate", "br", "identity", "x-garbage", "zstd"])
statuses = st.one_of(
    st.just(200),
    st.sampled_from([201, 202, 204, 299, 301, 304, 400, 401, 403, 404, 408, 422, 429, 500, 502,
                     503, 504, 599]),
    st.integers(200, 599),
)  # fmt: skip


@st.composite
def answers(draw: st.DrawFn, document: Any) -> Answer:
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Content-Type"] = draw(content_types)
    if draw(st.integers(0, 3)) == 0:
        headers["Retry-After"] = draw(retry_after)
    if draw(st.integers(0, 7)) == 0:
        headers["Content-Encoding"] = draw(content_encodings)
    headers.update(draw(st.dictionaries(header_names, header_text, max_size=2)))
    return Answer(draw(statuses), headers, draw(bodies(document)))


# --- the pieces, without HTTP ----------------------------------------------------------------


@FUZZ
@given(value=retry_after | st.text())
def test_retry_after_is_a_finite_non_negative_number_or_none(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or (isinstance(seconds, float) and 0.0 <= seconds < float("inf"))


@FUZZ
@given(body=bodies(METHODS["enot-info-by-id"].success) | st.text().map(str.encode))
def test_the_decoder_returns_json_or_raises_unreadable(body: bytes) -> None:
    try:
        loads(body)
        loads(body, numbers=float)
    except UnreadableError:
        pass


@FUZZ
@given(value=json_values | st.decimals() | st.floats())
def test_money_is_a_finite_decimal_none_or_unreadable(value: Any) -> None:
    try:
        amount = money(value)
    except UnreadableError:
        return
    assert amount is None or (isinstance(amount, Decimal) and amount.is_finite())
    if amount is not None:
        assert hash(amount) == hash(amount) and format(amount, ".2f")


# --- the clients -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(METHODS))
@FUZZ
@given(data=st.data())
def test_every_answer_ends_in_a_model_or_a_payout_error(
    harness: Harness, name: str, data: st.DataObject
) -> None:
    method = METHODS[name]
    answer = data.draw(answers(method.success), label="answer")
    harness.server.answer = answer
    outcome = harness.run(check_contract(method, harness.clients, answer))
    event(type(outcome).__name__)


def test_the_documented_answers_are_read(harness: Harness) -> None:
    clients = harness.server.clients()  # fresh connections, whatever the fuzz left behind
    try:
        for method in METHODS.values():
            harness.server.answer = Answer(200, {}, json.dumps(method.success).encode())
            result = harness.run(check_contract(method, clients, harness.server.answer))
            assert not isinstance(result, Exception), (method.name, result)
    finally:
        harness.run(clients.aclose())


# --- the webhook ------------------------------------------------------------------------------

VECTOR = {
    "amount": "100.00", "credited": "95.50", "custom_fields": {"user": 1},
    "invoice_id": "a3e9ff6f-c5c1-3bcd-854e-4bc995b1ae7a",
    "order_id": "c78d8fe9-ab44-3f21-a37a-ce4ca269cb47", "pay_service": "card",
    "pay_time": "2023-04-06 16=>27=>59", "payer_details": "553691******1279",
    "status": "success", "type": 1,
}  # fmt: skip


def php_signature(body: bytes) -> bytes | None:
    """What Enot would sign for ``body``, when plain ``json`` can read it at all."""
    try:
        payload = json.loads(body)
        text = json.dumps(dict(sorted(payload.items())), separators=(",", ":"))
    except Exception:
        return None
    message = text.replace("/", "\\/").encode()
    return hmac.new(HOOK_KEY.encode(), message, hashlib.sha256).hexdigest().encode()


@st.composite
def webhooks(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A body and the raw bytes of its signature header (``None``: no header)."""
    body = draw(bodies(VECTOR))
    signed = php_signature(body)
    choice = draw(st.sampled_from(["signed", "signed", "random", "bytes", "none", "case"]))
    if choice == "signed" and signed is not None:
        return body, signed
    if choice == "case" and signed is not None:
        return body, b"  " + signed.upper() + b" "
    if choice == "bytes":
        octets = st.integers(0x20, 0xFF).filter(lambda octet: octet != 0x7F)
        return body, bytes(draw(st.lists(octets, max_size=70)))
    if choice == "none":
        return body, None
    return body, draw(header_text).encode()


def _outcome(body: bytes, header: str) -> str:
    """ "verified", "unreadable" (verified, fields unreadable) or "refused"; checks
    that ``verify_webhook`` and ``parse_webhook`` agree."""
    verified = verify_webhook(body, header, HOOK_KEY)
    assert isinstance(verified, bool)
    try:
        hook = parse_webhook(body, header, HOOK_KEY)
    except SignatureError as error:
        if verified:
            assert "cannot be read" in str(error)
            return "unreadable"
        return "refused"
    assert verified
    assert isinstance(hook, PayoffWebhook)
    assert hook == hook and isinstance(hash(hook), int)
    return "verified"


@FUZZ
@given(hook=webhooks())
def test_webhook_check_is_yes_or_no_for_any_bytes(hook: tuple[bytes, bytes | None]) -> None:
    body, header = hook
    _outcome(body, "" if header is None else header.decode("utf-8", "surrogateescape"))


@FUZZ
@given(hook=webhooks())
def test_webhook_handler_answers_200_400_401_or_413(
    harness: Harness, hook: tuple[bytes, bytes | None]
) -> None:
    body, header = hook
    text = "" if header is None else header.decode("utf-8", "surrogateescape").strip()
    expected = {"verified": 200, "unreadable": 400, "refused": 401}[_outcome(body, text)]
    if len(body) > 64 * 1024:
        expected = 413
    harness.hook_posts += 1
    assert harness.run(harness.server.post_hook(body, header)) == expected
