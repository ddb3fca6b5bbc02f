"""The HTTP layer: one aiohttp session per client, timeouts, and the single place
that classifies every failure as *not sent* or *outcome unknown*.

A provider's answer, whatever its status, comes back as an ``HTTPResponse``; turning
it into a model or an ``APIError`` is the job of ``_responses``.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import re
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
import attrs
import msgspec

from ._errors import OutcomeUnknownError, RequestNotSentError, TransportError
from ._fence import current_guard
from ._loops import LoopBinding, Moved, keep
from ._rate import RateLimiter
from ._redact import Redactor, redact_fields
from ._version import __version__

__all__ = [
    "USER_AGENT",
    "HTTPResponse",
    "SendFailure",
    "Timeouts",
    "Transport",
    "TransportClient",
    "classify_failure",
    "json_body",
    "logger",
    "parse_retry_after",
]

logger = logging.getLogger("payout_async")

#: Sent with every request of every client.
USER_AGENT = f"payout-async/{__version__}"


def json_body(value: object) -> bytes:
    """``value`` as a compact UTF-8 JSON request body (non-ASCII text written as is;
    msgspec's C encoder: ``json.dumps`` costs eight times as much)."""
    return msgspec.json.encode(value)


@attrs.frozen
class Timeouts:
    """Per-request limits in seconds (``None`` disables one).

    ``connect`` covers getting a connection (with a session the client made itself,
    not the wait for a free one in its pool: that comes first, unbounded, since nothing
    has been sent); ``read`` is the longest silence while reading the answer; ``total``
    bounds it all.
    """

    total: float | None = 30.0
    connect: float | None = 10.0
    read: float | None = 30.0

    def to_aiohttp(self) -> aiohttp.ClientTimeout:
        """The equivalent ``aiohttp.ClientTimeout``."""
        return aiohttp.ClientTimeout(total=self.total, connect=self.connect, sock_read=self.read)


@attrs.frozen(slots=False)
class HTTPResponse:
    """An answer as it arrived: status, headers and the whole body."""

    method: str
    url: str
    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)

    @property
    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds: the header's number of seconds or the time left
        until its HTTP date (RFC 9110 allows both). Always a finite number >= 0, or
        ``None`` when the header is absent or unreadable (garbage, NaN, a date no
        calendar holds); a date in the past or a negative number gives 0."""
        value = self.headers.get("Retry-After")
        if not isinstance(value, str):
            return None
        return parse_retry_after(value)


def parse_retry_after(value: str) -> float | None:
    """A ``Retry-After`` value in seconds (see ``HTTPResponse.retry_after``)."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    seconds: float
    try:
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        else:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    except (ArithmeticError, LookupError, TypeError, ValueError):  # OverflowError included
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


#: delay-seconds: digits, with a sign and a fraction tolerated ("-5" gives 0).
_SECONDS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


#: What ``Transport.send`` hands to ``classify_failure``: ``asyncio.CancelledError`` is
#: re-raised before, and nothing else can come out of aiohttp's request.
SendFailure = TimeoutError | aiohttp.ClientError | OSError

# Most specific class first: ClientConnectorError is a ClientOSError, the two timeout
# errors share ServerTimeoutError, ClientHttpProxyError is a ClientResponseError.
_FAILURES: tuple[tuple[type[SendFailure], type[TransportError], str], ...] = (
    (aiohttp.InvalidURL, RequestNotSentError, "invalid URL"),
    (aiohttp.NonHttpUrlClientError, RequestNotSentError, "not an HTTP URL"),
    (aiohttp.ConnectionTimeoutError, RequestNotSentError, "timed out connecting"),
    (aiohttp.ClientConnectorError, RequestNotSentError, "cannot connect"),
    (aiohttp.ServerFingerprintMismatch, RequestNotSentError, "server fingerprint mismatch"),
    (aiohttp.ClientHttpProxyError, RequestNotSentError, "proxy refused the request"),
    (aiohttp.SocketTimeoutError, OutcomeUnknownError, "timed out reading the answer"),
    (aiohttp.ServerDisconnectedError, OutcomeUnknownError, "server disconnected"),
    (aiohttp.ClientPayloadError, OutcomeUnknownError, "answer body truncated or malformed"),
    (aiohttp.ClientResponseError, OutcomeUnknownError, "answer could not be read"),
    (aiohttp.ClientConnectionError, OutcomeUnknownError, "connection failed mid-request"),
    (TimeoutError, OutcomeUnknownError, "total timeout expired"),
    (OSError, OutcomeUnknownError, "connection failed mid-request"),
)


def classify_failure(exc: SendFailure, *, method: str = "", url: str = "") -> TransportError:
    """Map an exception raised while sending a request to ``RequestNotSentError``
    (nothing reached the provider) or ``OutcomeUnknownError`` (it may have).

    Anything unrecognised (a bare ``aiohttp.ClientError``) counts as *outcome
    unknown*: the safe assumption.
    """
    error_type: type[TransportError] = OutcomeUnknownError
    reason = "unexpected failure"
    for exc_type, mapped_type, mapped_reason in _FAILURES:
        if isinstance(exc, exc_type):
            error_type, reason = mapped_type, mapped_reason
            break
    return error_type(f"{reason} ({type(exc).__name__})", method=method, url=url)


class Transport:
    """Sends requests over one lazily created ``aiohttp.ClientSession``.

    A caller-supplied ``session`` is used as is and never closed here. With a session
    of its own, a request first waits for one of the pool's ``limit`` connections
    (however long: nothing has been sent). A ``limiter`` then paces every request (its
    wait comes before the lease fence is checked) and is told of each 429.

    A session belongs to the event loop it was made in (``_loops``): once that loop
    has closed (an ``asyncio.run()`` per job), a session of its own is made anew in the
    next one; a given session is refused there, and so is any use from a second loop
    while the first is still open -- ``ConfigurationError``, before anything is sent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts | None = None,
        limit: int = 100,
        redactor: Redactor | None = None,
        limiter: RateLimiter | None = None,
        name: str = "this client",
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.limiter = limiter
        self.timeouts = timeouts or Timeouts()
        self.redactor = redactor or Redactor()
        self._client_timeout = self.timeouts.to_aiohttp()
        self._session = session
        self._owns_session = session is None
        self._limit = limit
        #: A request waits here for one of the pool's connections, before the limiter
        #: and the fence, and for as long as it takes: aiohttp would count that wait
        #: against ``connect`` and fail it, unsent, when many payouts share a client.
        #: (A given session's pool is not ours to count: waits for it stay aiohttp's.)
        self._slots = asyncio.Semaphore(limit) if self._owns_session and limit > 0 else None
        #: A session made here carries our timeouts already; a given one gets them with
        #: each request (one object made once, never one per request).
        self._per_request: dict[str, Any] = (
            {} if self._owns_session else {"timeout": self._client_timeout}
        )
        #: The event loop the session (and the slots' waiters) belong to.
        given = None if self._owns_session else f"the session given to {name}"
        self.loop = LoopBinding(name, given=given)

    async def _moved(self, why: Moved) -> None:
        """What belonged to the last event loop this transport ran in goes, and is made
        anew here: a session of its own is closed (a formality once its loop has
        closed), or, in a child process, kept as it is -- its connections are the
        parent's. (A given session ties the transport to its loop.)"""
        old, self._session = self._session, None
        if self._slots is not None:
            self._slots = asyncio.Semaphore(self._limit)
        if self.limiter is not None:
            self.limiter.moved()
        if old is None:
            return
        if why is Moved.FORKED:
            keep(old)
        elif not old.closed:
            await old.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            connector = aiohttp.TCPConnector(limit=self._limit)  # one host per client
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._client_timeout)
        return self._session

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        if not self._owns_session:
            return
        if moved := self.loop.moved():
            await self._moved(moved)
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        log_fields: Mapping[str, object] | None = None,
        redactor: Redactor | None = None,
    ) -> HTTPResponse:
        """Send one request (with ``User-Agent: payout-async/<version>``) and read
        the whole answer.

        Raises ``RequestNotSentError`` or ``OutcomeUnknownError`` when no complete
        answer arrives (see ``classify_failure``); ``asyncio.CancelledError``
        propagates unchanged (``Payouts`` treats a cancelled money-moving call as
        *outcome unknown*). A fence installed by ``Payouts`` (``_fence``) may refuse
        to send at all. ``redactor`` replaces the transport's own for this request's
        log lines and errors.
        """
        if moved := self.loop.moved():
            await self._moved(moved)
        slots = self._slots
        if slots is not None:  # our turn for one of the pool's connections
            await slots.acquire()
        try:
            redact = redactor or self.redactor
            limiter = self.limiter
            granted_at = await limiter.acquire() if limiter is not None else 0.0
            guard = current_guard()
            if guard is not None:  # after the limiter's wait
                await guard(self.timeouts.total)
            url = self.base_url + path
            debug = logger.isEnabledFor(logging.DEBUG)
            if debug:
                logger.debug(
                    "%s %s %s",
                    method,
                    url,
                    redact(repr(redact_fields(log_fields or params or {}))),
                )
                started = time.perf_counter()
            if "User-Agent" not in headers:  # the clients' own headers carry it already
                headers = {**headers, "User-Agent": USER_AGENT}
            try:
                resp = await self._get_session().request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    params=params,
                    allow_redirects=False,
                    **self._per_request,
                )
                try:  # what ``async with`` on the response does, without its three frames
                    payload = await resp.read()
                finally:
                    resp.release()
                    await resp.wait_for_close()
                status = resp.status
                resp_headers = resp.headers
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = classify_failure(exc, method=method, url=redact(url))
                logger.info("%s", redact(str(error)))
                raise error from exc
            if debug:
                logger.debug(
                    "%s %s -> %d in %.1f ms: %s",
                    method,
                    url,
                    status,
                    (time.perf_counter() - started) * 1000,
                    # Redact before cutting, so that no secret or card number is half cut.
                    redact(payload[:65536].decode("utf-8", "replace"))[:2000],
                )
            response = HTTPResponse(
                method=method, url=url, status=status, headers=resp_headers, body=payload
            )
            if status == 429 and limiter is not None:
                limiter.throttled(response.retry_after, granted_at)
            return response
        finally:
            if slots is not None:
                slots.release()


class TransportClient:
    """Base of the provider clients: owns a ``Transport``; ``async with`` closes it."""

    _transport: Transport

    @property
    def timeouts(self) -> Timeouts:
        """The per-request time limits this client sends with."""
        return self._transport.timeouts

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The limiter pacing this client's requests (``rate_limit=``), if any."""
        return self._transport.limiter

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if the client created it."""
        await self._transport.aclose()

    def _check_event_loop(self) -> None:
        """``ConfigurationError`` when this client may not send from the running event
        loop (``_loops``): ``Payouts`` asks before it records anything."""
        self._transport.loop.check()
