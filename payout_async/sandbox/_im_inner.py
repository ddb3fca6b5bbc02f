"""Scripted IntellectMoney result codes: the next answer of a route carries an inner
``Result.State.Code`` other than 0 under an envelope whose ``OperationState.Code`` is 0.

Code 1 (WithWarn) is answered after the request is carried out (the warning is the
``Desc``); any other code (2 NoAuth, or an undocumented one) refuses it: nothing happens.
"""

from __future__ import annotations

from collections import deque

import attrs

from ._faults import check_route

__all__ = ["InnerAnswer", "InnerAnswers", "default_desc"]

_DEFAULT_DESC = {1: "Операция выполнена с предупреждением", 2: "Неверная подпись"}


def default_desc(code: int) -> str:
    """The ``Desc`` sent with ``code`` when the script gives none."""
    return _DEFAULT_DESC.get(code, f"Ошибка обработки (код {code})")


@attrs.frozen
class InnerAnswer:
    """One scripted inner ``State``: its ``code`` and ``desc``."""

    code: int
    desc: str

    @property
    def performs(self) -> bool:
        """True when the request is carried out (a warning), False when refused."""
        return self.code == 1


class InnerAnswers:
    """Per IntellectMoney route, the scripted inner states of its next answers, in order."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[InnerAnswer]] = {}

    def script(self, route: str, code: int, desc: str | None = None) -> None:
        """Make the next not yet scripted answer of ``route`` (``"im.create"``,
        ``"im.execute"``, ``"im.state"`` or ``"im.delete"``) carry ``Result.State``
        ``{"Code": code, "Desc": desc}``; ``desc`` defaults to a warning for 1 and
        ``"Неверная подпись"`` for 2."""
        if not check_route(route).startswith("im."):
            raise ValueError(f"inner result codes are IntellectMoney's: {route!r} is not")
        if not isinstance(code, int) or isinstance(code, bool) or code == 0:
            raise ValueError("code must be a non-zero integer (0 is the normal answer)")
        answer = InnerAnswer(code, default_desc(code) if desc is None else desc)
        self._queues.setdefault(route, deque()).append(answer)

    def pop(self, route: str) -> InnerAnswer | None:
        """The scripted inner state for this answer of ``route``, or None."""
        queue = self._queues.get(route)
        return queue.popleft() if queue else None
