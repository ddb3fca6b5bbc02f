"""Scripted error answers: the next answers of a route are the provider's own error at
a given HTTP status, carrying a given message (an echo of a card number, say).

Nothing happens for such a call. 502, 503 and 504 answer an HTML page (as a gateway
does) with the message in it, written as it is (HTML allowed); any other status the
provider's JSON error envelope with the message as its text.
"""

from __future__ import annotations

from collections import deque

import attrs
from aiohttp import web

from ._faults import check_route
from ._wire import html_page

__all__ = ["ErrorScript", "ScriptedError"]

_HTML_STATUSES = frozenset({502, 503, 504})


@attrs.frozen
class ScriptedError:
    """One scripted answer: its HTTP ``status`` and ``message``."""

    status: int
    message: str

    @property
    def as_html(self) -> bool:
        """True when the answer is a gateway's HTML page, not the provider's JSON."""
        return self.status in _HTML_STATUSES


class ErrorScript:
    """Per route, the scripted error answers of its next calls, in order."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[ScriptedError]] = {}

    def script(self, route: str, status: int, message: str, *, times: int = 1) -> None:
        """Answer the next ``times`` not yet scripted calls of ``route`` with ``status``
        (400 to 599) and ``message``."""
        check_route(route)
        if isinstance(status, bool) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400 to 599)")
        if times < 1:
            raise ValueError("times must be at least 1")
        self._queues.setdefault(route, deque()).extend([ScriptedError(status, message)] * times)

    def pop(self, route: str) -> ScriptedError | None:
        """The scripted answer for this call of ``route``, or None."""
        queue = self._queues.get(route)
        return queue.popleft() if queue else None

    def clear(self) -> None:
        """Forget the answers not given yet."""
        self._queues.clear()


def html_error(error: ScriptedError) -> web.Response:
    """The gateway page a scripted 502, 503 or 504 answers with."""
    return html_page(error.status, error.message)
