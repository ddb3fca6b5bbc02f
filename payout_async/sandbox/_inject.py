"""Carrying out a fault: wrapping a route's processor so that it misbehaves on demand.

Whether the effect commits, kind by kind (the processor is what commits):

* not processed -- ``CLOSE_BEFORE_READ``, ``RATE_LIMIT``, ``HTTP_500``, ``HTTP_502``,
  ``HTTP_503``, ``HTTP_504``;
* processed, then the answer is lost or spoiled -- ``COMMIT_THEN_CLOSE``,
  ``COMMIT_THEN_STALL``, ``TRUNCATED_JSON``, ``WRONG_CONTENT_TYPE``;
* processed, then answered with an error as if it had not been -- ``COMMIT_THEN_408``,
  ``COMMIT_THEN_422``;
* processed and answered, late -- ``LATENCY``.

Apart from faults, a route's answers may be held after processing
(``SandboxConfig.answer_delay``): the state is read when the request arrives, the
answer leaves later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from ._faults import FaultKind
from ._scripted_errors import html_error
from ._state import SandboxState
from ._wire import html_page

__all__ = ["ErrorAnswer", "Processor", "with_faults"]

Processor = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Builds the provider's own error answer: ``(HTTP status, message) -> response``.
ErrorAnswer = Callable[[int, str], web.Response]

_NOT_JSON = (
    "<html><body><h1>Технические работы</h1><p>Сервис временно недоступен.</p></body></html>"
)


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection; the answer returned is never written (aiohttp ignores the
    failed write of a closed transport)."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


async def _truncate(request: web.Request, answer: web.StreamResponse) -> web.StreamResponse:
    """Send the status, the full Content-Length and half the body, then close."""
    body = answer.body if isinstance(answer, web.Response) else None
    if not isinstance(body, bytes):
        return _drop(request)
    cut = web.StreamResponse(status=answer.status)
    cut.content_type = answer.content_type
    cut.content_length = len(body)
    await cut.prepare(request)
    await cut.write(body[: len(body) // 2])
    return _drop(request)


async def _stall(state: SandboxState, seconds: float | None = None) -> None:
    """Say nothing for ``seconds`` (``stall_seconds``), or until the sandbox closes."""
    seconds = state.config.stall_seconds if seconds is None else seconds
    with contextlib.suppress(TimeoutError):  # not ``wait_for``: see ``_webhooks._run``
        async with asyncio.timeout(seconds):
            await state.closing.wait()


async def _misbehave(
    kind: FaultKind,
    request: web.Request,
    process: Processor,
    state: SandboxState,
    error_answer: ErrorAnswer,
) -> web.StreamResponse:
    config = state.config
    if kind is FaultKind.CLOSE_BEFORE_READ:
        return _drop(request)
    if kind is FaultKind.RATE_LIMIT:
        limited = error_answer(429, "Слишком много запросов")
        limited.headers["Retry-After"] = f"{config.retry_after:g}"
        return limited
    if kind is FaultKind.HTTP_500:
        return error_answer(500, "Внутренняя ошибка сервера")
    if kind is FaultKind.HTTP_502:
        return html_page(502, "Bad Gateway")
    if kind is FaultKind.HTTP_503:
        return html_page(503, "Service Temporarily Unavailable")
    if kind is FaultKind.HTTP_504:
        return html_page(504, "Gateway Time-out")
    if kind is FaultKind.LATENCY:
        await asyncio.sleep(state.faults.uniform(*config.latency))
        return await process(request)
    answer = await process(request)  # the effect commits here
    if kind is FaultKind.COMMIT_THEN_CLOSE:
        return _drop(request)
    if kind is FaultKind.COMMIT_THEN_STALL:
        await _stall(state)
        return answer
    if kind is FaultKind.TRUNCATED_JSON:
        return await _truncate(request, answer)
    if kind is FaultKind.COMMIT_THEN_408:
        return error_answer(408, "Request Timeout")
    if kind is FaultKind.COMMIT_THEN_422:
        return error_answer(422, "Unprocessable Entity")
    assert kind is FaultKind.WRONG_CONTENT_TYPE
    return web.Response(text=_NOT_JSON, content_type="text/html", charset="utf-8")


def _rate_limited(retry_after: float, error_answer: ErrorAnswer) -> web.Response:
    limited = error_answer(429, "Превышен лимит запросов")
    limited.headers["Retry-After"] = f"{retry_after:g}"
    return limited


def with_faults(
    route: str, process: Processor, state: SandboxState, error_answer: ErrorAnswer
) -> Processor:
    """A handler that records each request of ``route``, answers 429 beyond the
    provider's rate limit (``_traffic``), counts the call, answers its scripted error
    (``_scripted_errors``) or applies its fault, if any, and holds the answer for the
    route's ``answer_delay``."""

    async def answer(request: web.Request) -> web.StreamResponse:
        retry_after = state.traffic.arrive(route)
        if retry_after is not None:
            return _rate_limited(retry_after, error_answer)
        kind = state.faults.pick(route)
        scripted = state.errors.pop(route)
        if scripted is not None:  # takes the place of any fault
            if scripted.as_html:
                return html_error(scripted)
            return error_answer(scripted.status, scripted.message)
        if kind is None:
            return await process(request)
        return await _misbehave(kind, request, process, state, error_answer)

    async def handle(request: web.Request) -> web.StreamResponse:
        response = await answer(request)  # the state is read (and committed) now
        delay = state.answer_delays.get(route, 0.0)
        if delay > 0:
            await _stall(state, delay)
        return response

    return handle
