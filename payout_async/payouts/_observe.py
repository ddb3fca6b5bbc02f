"""What ``Payouts`` says about each durable ledger transition: one INFO log line, and
the ``on_transition`` callback (metrics, audit) -- whose failures never reach a payout.

A callback's failure is logged and dropped, ``CancelledError`` included unless it is
the cancellation of the payout's own task (told apart by ``Task.cancelling()``): a
callback that awaits a cancelled future must not strand a payout half-way. A coroutine
callback gets ``on_transition_timeout`` seconds (default ``HOOK_TIMEOUT``); one that
runs longer is cut short and logged, so that it cannot hold a payout, and its lease,
for ever. (A plain function cannot be interrupted: keep it short.)

``on_wait`` hears of the long waits a payout sits out (``_waiting``); without it,
``waiting`` hands out one shared context that does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager

from .._errors import ConfigurationError
from ..ledger import LedgerState, PayoutRecord, Transition
from ._waiting import OnWait, announce

__all__ = ["HOOK_TIMEOUT", "Observer", "OnTransition"]

logger = logging.getLogger("payout_async")
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()

#: How long a coroutine ``on_transition`` may run before it is cut short (seconds).
HOOK_TIMEOUT = 5.0

#: ``on_transition(record, transition)``: a plain function or a coroutine function.
OnTransition = Callable[[PayoutRecord, Transition], Awaitable[None] | None]


def _fields(
    before: LedgerState | None, record: PayoutRecord, note: str | None
) -> dict[str, object]:
    """A transition's fields for structured logs (``--log-format json``): never the
    parameters, so no recipient."""
    return {
        "key": record.key,
        "provider": record.provider,
        "from": None if before is None else before.value,
        "to": record.state.value,
        "attempt": record.attempts,
        "provider_id": record.operation_id,
        "note": note,
    }


class Observer:
    """Logs every transition once at INFO and hands it to ``on_transition``.

    The log line names the key, provider, ``from -> to``, the attempt count and the
    provider's id and status -- never the request's parameters (the recipient), so no
    card number or secret can reach it.
    """

    def __init__(
        self,
        on_transition: OnTransition | None = None,
        *,
        timeout: float = HOOK_TIMEOUT,
        on_wait: OnWait | None = None,
    ) -> None:
        if not math.isfinite(timeout) or timeout <= 0:
            raise ConfigurationError("on_transition_timeout must be a positive number of seconds")
        self.on_transition = on_transition
        self.timeout = timeout
        self.on_wait = on_wait

    def waiting(
        self, record: PayoutRecord, reason: str, window: float, until: float
    ) -> AbstractContextManager[None]:
        """While the body runs, ``record``'s payout waits out ``reason`` (a window of
        ``window`` seconds) until ``until`` (``time.monotonic()``): said to
        ``on_wait`` as it begins and ends (see ``_waiting``)."""
        if self.on_wait is None and not logger.isEnabledFor(logging.DEBUG):
            return _NOTHING
        return announce(self.on_wait, record.key, record.provider, reason, window, until)

    def transitioned(
        self, before: LedgerState | None, record: PayoutRecord, note: str | None
    ) -> Coroutine[None, None, None] | None:
        """Report that ``record`` durably moved from ``before`` (None: it was just
        created) to its current state: the log line now, and the ``on_transition``
        call as a coroutine to await, if there is a hook (no coroutine made per
        transition without one). Never raises (bar cancellation)."""
        if logger.isEnabledFor(logging.INFO):  # the line's fields cost more than the check
            logger.info(
                "payout %s (%s): %s -> %s, attempt %d, provider id %s, provider status %s%s",
                record.key,
                record.provider,
                "none" if before is None else before.value,
                record.state.value,
                record.attempts,
                record.operation_id or "-",
                record.provider_status or "-",
                f" ({note})" if note else "",
                extra={"transition": _fields(before, record, note)},
            )
        if self.on_transition is None:
            return None
        transition = Transition(
            provider=record.provider,
            key=record.key,
            from_state=before,
            to_state=record.state,
            at=record.updated_at,
            owner=record.lease_owner,
            note=note,
        )
        return self._call(self.on_transition, record, transition)

    async def _call(self, hook: OnTransition, record: PayoutRecord, transition: Transition) -> None:
        """Run ``hook``; whatever it raises, bar this task's own cancellation, is
        logged and dropped, and a coroutine is cut short after ``timeout``."""
        step = f"{transition.from_state or 'none'} -> {transition.to_state}"
        try:
            outcome = hook(record, transition)
            if inspect.isawaitable(outcome):
                async with asyncio.timeout(self.timeout):
                    await outcome
        except TimeoutError:
            logger.warning(
                "on_transition for payout %s (%s) ran over %gs and was cut short; "
                "the payout goes on",
                record.key,
                step,
                self.timeout,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the payout itself is being cancelled
            logger.warning(
                "on_transition for payout %s (%s) raised CancelledError though the payout "
                "was not cancelled; the payout goes on",
                record.key,
                step,
            )
        except Exception:
            logger.exception(
                "on_transition failed for payout %s (%s); the payout goes on", record.key, step
            )
