"""Who hears of a provider's ``Retry-After`` hold: a context variable that
``Payouts`` sets for the drive of one payout when someone listens (``on_wait``), and
that the retry loop reads only when it is about to sit such a hold out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar

from ._errors import APIError

__all__ = ["ON_HOLD", "on_hold"]

#: How long a hold must be to be told (shorter ones pass unnoticed anyway).
_TOLD_FROM = 1.0
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()

#: ``hook(seconds)``: a context that lasts the hold. None: nobody listens.
ON_HOLD: ContextVar[Callable[[float], AbstractContextManager[None]] | None] = ContextVar(
    "payout_async_on_hold", default=None
)


def on_hold(seconds: float, error: BaseException | None) -> AbstractContextManager[None]:
    """The context to sleep ``seconds`` in before retrying after ``error``: told to
    the listener of this payout, if any, when the provider asked for the hold
    (``Retry-After``) and it lasts a second or more."""
    if seconds < _TOLD_FROM or not isinstance(error, APIError) or error.retry_after is None:
        return _NOTHING
    hook = ON_HOLD.get()
    return _NOTHING if hook is None else hook(seconds)
