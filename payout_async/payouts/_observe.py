"""What ``Payouts`` says about each durable ledger transition: one INFO log line, and
the ``on_transition`` callback (metrics, audit) -- whose failures never reach a payout.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from ..ledger import LedgerState, PayoutRecord, Transition

__all__ = ["Observer", "OnTransition"]

logger = logging.getLogger("payout_async")

#: ``on_transition(record, transition)``: a plain function or a coroutine function.
OnTransition = Callable[[PayoutRecord, Transition], Awaitable[None] | None]


class Observer:
    """Logs every transition once at INFO and hands it to ``on_transition``.

    The log line names the key, provider, ``from -> to``, the attempt count and the
    provider's id and status -- never the request's parameters (the recipient), so no
    card number or secret can reach it.
    """

    def __init__(self, on_transition: OnTransition | None = None) -> None:
        self.on_transition = on_transition

    async def transitioned(
        self, before: LedgerState | None, record: PayoutRecord, note: str | None
    ) -> None:
        """Report that ``record`` durably moved from ``before`` (None: it was just
        created) to its current state. Never raises (bar cancellation)."""
        transition = Transition(
            provider=record.provider,
            key=record.key,
            from_state=before,
            to_state=record.state,
            at=record.updated_at,
            owner=record.lease_owner,
            note=note,
        )
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
        )
        if self.on_transition is None:
            return
        try:
            outcome = self.on_transition(record, transition)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception(
                "on_transition failed for payout %s (%s -> %s); the payout goes on",
                record.key,
                "none" if before is None else before.value,
                record.state.value,
            )
