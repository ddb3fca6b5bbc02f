"""Every way a request can fail lands in the right class: *not sent*, *outcome unknown*
or an API error. Real sockets on 127.0.0.1 for the transport cases, and the
``classify_failure`` table exercised row by row.
"""

from __future__ import annotations

import asyncio
import json
import types
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

import payout_async
from payout_async import (
    EnotClient,
    IntellectMoneyClient,
    OutcomeUnknownError,
    RequestNotSentError,
    Timeouts,
    TransportError,
)
from payout_async._transport import _FAILURES, SendFailure, classify_failure

from .helpers import (
    CARD,
    ENOT_KEY,
    ENOT_USER,
    OP_ID,
    PAYOFF_ID,
    RawServer,
    closed_port,
    enot_ok,
    http_response,
    im_ok,
)

TIMEOUTS = Timeouts(total=5, connect=1, read=0.3)


def im_at(base: str, **kwargs: Any) -> IntellectMoneyClient:
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    kwargs.setdefault("timeouts", TIMEOUTS)
    return IntellectMoneyClient(
        "UT", "SECRET", bearer_token="B", base_url=base + "personal/payout/", **kwargs
    )


def enot_at(base: str, **kwargs: Any) -> EnotClient:
    kwargs.setdefault("retry", payout_async.NO_RETRY)
    kwargs.setdefault("timeouts", TIMEOUTS)
    return EnotClient(ENOT_USER, ENOT_KEY, base_url=base, **kwargs)


async def call(client: IntellectMoneyClient | EnotClient, name: str) -> Any:
    """The money-moving call and a read of each client."""
    if isinstance(client, IntellectMoneyClient):
        if name == "money":
            return await client.execute_operation(OP_ID)
        return await client.get_operation_state(OP_ID)
    if name == "money":
        return await client.create_payoff(
            service="card", wallet_to=CARD, amount=Decimal("10.00"), order_id="o-1"
        )
    return await client.get_payoff(payoff_id=PAYOFF_ID)


CLIENTS = [("im", "money"), ("im", "read"), ("enot", "money"), ("enot", "read")]


def make(kind: str, base: str, **kwargs: Any) -> IntellectMoneyClient | EnotClient:
    return im_at(base, **kwargs) if kind == "im" else enot_at(base, **kwargs)


def answer_for(kind: str, name: str) -> bytes:
    if kind == "im":
        return http_response(json.dumps(im_ok("InProcess")).encode())
    data = (
        {"payoff_id": PAYOFF_ID, "status": "wait"} if name == "read" else {"payoff_id": PAYOFF_ID}
    )
    return http_response(json.dumps(enot_ok(data)).encode())


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_healthy_server_answers(kind: str, name: str) -> None:
    """The fixture server itself works: the failures below come from its misbehaviour."""
    async with (
        RawServer("answer", answer_for(kind, name)) as server,
        make(kind, server.url) as client,
    ):
        result = await call(client, name)
    if kind == "im":
        assert result.operation_id == OP_ID
        assert result.raw_state == "InProcess"
    else:
        assert result.payoff_id == PAYOFF_ID
    assert len(server.requests) == 1


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_connection_refused_is_not_sent(kind: str, name: str) -> None:
    sock, port = closed_port()
    try:
        async with make(kind, f"http://127.0.0.1:{port}/") as client:
            with pytest.raises(RequestNotSentError) as caught:
                await call(client, name)
    finally:
        sock.close()
    assert "cannot connect" in caught.value.message
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_close_before_reading_is_outcome_unknown(kind: str, name: str) -> None:
    """The server drops the connection without reading the request.

    The client cannot tell this apart from a server that read the request, acted on
    it and then died: the TCP connection was established and the request bytes were
    handed to the kernel, so they may have been read. Only "could not connect at all"
    proves nothing was sent; this must be *outcome unknown*.
    """
    async with RawServer("close_before_read") as server, make(kind, server.url) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await call(client, name)
    assert server.connections >= 1
    assert server.requests == []
    assert not isinstance(caught.value, RequestNotSentError)


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_close_after_reading_is_outcome_unknown(kind: str, name: str) -> None:
    async with RawServer("close_after_read") as server, make(kind, server.url) as client:
        with pytest.raises(OutcomeUnknownError):
            await call(client, name)
    # The provider did get the whole request: treating this as "not sent" would pay twice.
    # (aiohttp itself repeats an idempotent GET once after a disconnect; never a POST.)
    assert len(server.requests) == (2 if (kind, name) == ("enot", "read") else 1)
    head, body = server.requests[0]
    assert head.startswith(b"POST " if name == "money" else (b"POST " if kind == "im" else b"GET "))
    if name == "money":
        assert (OP_ID if kind == "im" else "o-1").encode() in body


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_stall_past_read_timeout_is_outcome_unknown(kind: str, name: str) -> None:
    async with RawServer("stall") as server, make(kind, server.url) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await call(client, name)
    assert len(server.requests) == 1
    assert "timed out reading" in caught.value.message
    assert isinstance(caught.value.__cause__, aiohttp.SocketTimeoutError)


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_total_timeout_is_outcome_unknown(kind: str, name: str) -> None:
    async with RawServer("stall") as server:
        timeout = Timeouts(total=0.3, connect=1, read=None)
        async with make(kind, server.url, timeouts=timeout) as client:
            with pytest.raises(OutcomeUnknownError):
                await call(client, name)
    assert len(server.requests) == 1


@pytest.mark.parametrize(("kind", "name"), CLIENTS)
async def test_truncated_body_is_outcome_unknown(kind: str, name: str) -> None:
    async with RawServer("truncated") as server, make(kind, server.url) as client:
        with pytest.raises(OutcomeUnknownError) as caught:
            await call(client, name)
    assert len(server.requests) == 1
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)


@pytest.mark.parametrize("kind", ["im", "enot"])
async def test_a_request_waits_its_turn_for_a_pool_connection_and_is_sent(kind: str) -> None:
    """One connection allowed and it busy for longer than ``connect``: the second request
    waits for it (nothing has been sent, so the wait is no failure) and then goes.
    aiohttp alone would count the wait against ``connect`` and fail it unsent: with many
    payouts sharing a client, each would burn its tries and its send budget on the
    client's own queue."""
    async with RawServer("hold", answer_for(kind, "read")) as server:
        timeout = Timeouts(total=5, connect=0.05, read=2)
        async with make(kind, server.url, timeouts=timeout, limit=1) as client:
            first = asyncio.create_task(call(client, "read"))
            await asyncio.wait_for(server.got_request.wait(), 2)
            second = asyncio.create_task(call(client, "read"))
            await asyncio.sleep(0.2)  # four connect timeouts
            assert not second.done() and len(server.requests) == 1
            server.release.set()
            await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert len(server.requests) == 2


async def test_waiting_for_a_given_sessions_pool_past_connect_timeout_is_not_sent() -> None:
    """A session the caller gives keeps aiohttp's rule (its pool is not the client's
    to count): with its one connection busy, the second request never leaves."""
    async with (
        RawServer("stall") as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
    ):
        timeout = Timeouts(total=5, connect=0.2, read=2)
        async with enot_at(server.url, timeouts=timeout, session=session) as client:
            first = asyncio.create_task(call(client, "money"))
            await asyncio.wait_for(server.got_request.wait(), 2)
            with pytest.raises(RequestNotSentError):
                await call(client, "read")
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
    assert len(server.requests) == 1


async def test_reads_are_retried_against_a_real_server() -> None:
    async with RawServer("close_after_read") as server:
        policy = payout_async.RetryPolicy(attempts=3, initial=0.001, maximum=0.002)
        async with im_at(server.url, retry=policy) as client:
            with pytest.raises(OutcomeUnknownError):
                await call(client, "read")  # GetOperationState is a POST: no aiohttp repeat
    assert len(server.requests) == 3


async def test_money_is_not_retried_against_a_real_server() -> None:
    async with RawServer("close_after_read") as server:
        policy = payout_async.RetryPolicy(attempts=3, initial=0.001, maximum=0.002)
        async with im_at(server.url, retry=policy) as client:
            with pytest.raises(OutcomeUnknownError):
                await call(client, "money")
    assert len(server.requests) == 1


async def test_cancellation_mid_request_propagates() -> None:
    patient = Timeouts(total=30, connect=1, read=30)
    async with RawServer("stall") as server, im_at(server.url, timeouts=patient) as client:
        task = asyncio.create_task(call(client, "money"))
        await asyncio.wait_for(server.got_request.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)


# --- the classification table, row by row --------------------------------------------------
# Only what ``Transport.send`` can hand over (``SendFailure``): cancellation is re-raised
# before the table and has no row.

KEY = types.SimpleNamespace(host="api.enot.io", port=443, ssl=True)


def _proxy_error() -> aiohttp.ClientHttpProxyError:
    return aiohttp.ClientHttpProxyError(None, (), status=407, message="Proxy Auth")  # type: ignore[arg-type]


NOT_SENT: list[SendFailure] = [
    aiohttp.InvalidURL("not a url"),
    aiohttp.InvalidUrlClientError("http://"),
    aiohttp.NonHttpUrlClientError("ftp://x"),
    aiohttp.ConnectionTimeoutError("connect timed out"),
    aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),  # type: ignore[arg-type]
    aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "Name or service not known")),  # type: ignore[arg-type]
    aiohttp.ClientConnectorSSLError(KEY, OSError(1, "ssl")),
    aiohttp.ClientConnectorCertificateError(KEY, Exception("bad cert")),  # type: ignore[arg-type]
    aiohttp.ClientProxyConnectionError(KEY, OSError(111, "proxy refused")),  # type: ignore[arg-type]
    aiohttp.ServerFingerprintMismatch(b"a" * 32, b"b" * 32, "api.enot.io", 443),
    _proxy_error(),
]

OUTCOME_UNKNOWN: list[SendFailure] = [
    aiohttp.SocketTimeoutError("read timed out"),
    aiohttp.ServerTimeoutError("timeout"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("Response payload is not completed"),
    aiohttp.ClientResponseError(None, (), status=400, message="bad status line"),  # type: ignore[arg-type]
    aiohttp.ClientOSError(104, "reset"),
    aiohttp.ClientConnectionResetError("reset"),
    aiohttp.ClientConnectionError("broken"),
    aiohttp.ServerConnectionError("broken"),
    aiohttp.ClientError("generic, unrecognised"),
    TimeoutError(),
    ConnectionResetError(104, "reset"),
    BrokenPipeError(32, "pipe"),
    OSError("os"),
]


@pytest.mark.parametrize("exc", NOT_SENT, ids=lambda e: type(e).__name__)
def test_classify_not_sent(exc: SendFailure) -> None:
    error = classify_failure(exc, method="POST", url="https://api.enot.io/payoff/create")
    assert type(error) is RequestNotSentError
    assert error.method == "POST"
    assert error.url == "https://api.enot.io/payoff/create"
    assert str(error).startswith("POST https://api.enot.io/payoff/create: ")
    assert type(exc).__name__ in error.message


@pytest.mark.parametrize("exc", OUTCOME_UNKNOWN, ids=lambda e: type(e).__name__)
def test_classify_outcome_unknown(exc: SendFailure) -> None:
    error = classify_failure(exc, method="GET", url="https://x/y")
    assert type(error) is OutcomeUnknownError
    assert isinstance(error, TransportError)
    assert error.method == "GET" and error.url == "https://x/y"
    assert type(exc).__name__ in error.message
    assert str(error) == f"GET https://x/y: {error.message}"


def test_classify_reasons() -> None:
    assert "unexpected failure" in classify_failure(aiohttp.ClientError()).message
    assert "total timeout" in classify_failure(TimeoutError()).message
    assert "timed out reading" in classify_failure(aiohttp.SocketTimeoutError()).message
    assert "timed out connecting" in classify_failure(aiohttp.ConnectionTimeoutError()).message


# --- who closes the session -----------------------------------------------------------------


async def test_caller_session_is_never_closed() -> None:
    async with RawServer("answer", answer_for("enot", "read")) as server:
        async with aiohttp.ClientSession() as session:
            client = enot_at(server.url, session=session)
            await call(client, "read")
            await client.aclose()
            assert not session.closed
            async with enot_at(server.url, session=session) as other:
                await call(other, "read")
            assert not session.closed
        assert session.closed
    assert len(server.requests) == 2


@pytest.mark.parametrize("kind", ["im", "enot"])
async def test_client_created_session_is_closed_by_aclose(kind: str) -> None:
    async with RawServer("answer", answer_for(kind, "read")) as server:
        client = make(kind, server.url)
        await call(client, "read")
        session = client._transport._session
        assert session is not None and not session.closed
        await client.aclose()
        assert session.closed
        await client.aclose()  # twice is harmless


@pytest.mark.parametrize("kind", ["im", "enot"])
async def test_async_with_closes_the_client_session(kind: str) -> None:
    async with RawServer("answer", answer_for(kind, "read")) as server:
        async with make(kind, server.url) as client:
            await call(client, "read")
            session = client._transport._session
            assert session is not None and not session.closed
        assert session.closed


async def test_aclose_without_any_request_creates_nothing() -> None:
    client = enot_at("http://127.0.0.1:9/")
    await client.aclose()
    assert client._transport._session is None


def test_every_row_of_the_table_is_reached() -> None:
    """No row is dead: each one (and the fallback, -1) is the first match of some
    failure ``Transport.send`` can see."""
    rows = [row[0] for row in _FAILURES]
    first = {
        next((n for n, exc_type in enumerate(rows) if isinstance(exc, exc_type)), -1)
        for exc in [*NOT_SENT, *OUTCOME_UNKNOWN]
    }
    assert first == {-1, *range(len(rows))}
