"""The Enot payoff flow: create with a deterministic order_id, then poll.

``payoff/create`` moves money and has no other idempotency handle than our own
``order_id``, which Enot is not known to enforce. So the row says ``sending`` while a
create may be in flight; after anything but a clean answer the payoff is looked up by
``order_id``: found, it is adopted; created again only after "not found" has held for
the grace period (counted from when the create was sent), with the same order_id.
"""

from __future__ import annotations

import time
from typing import Any

from .._errors import (
    InvalidRequestError,
    NotFoundError,
    PayoutError,
    PermissionDeniedError,
    ValidationError,
)
from .._polling import PollPolicy
from ..enot import EnotClient, Payoff, PayoffRequest, PayoffStatus
from ..enot._poller import reconcile_payoff, wait_for_final
from ..ledger import LedgerState, PayoutRecord
from ._result import Settings
from ._run import Run

__all__ = ["EnotFlow"]

# Answers that say the provider refused the create (nothing should exist).
_REFUSED = (InvalidRequestError, PermissionDeniedError, NotFoundError, ValidationError)
_FINAL = {PayoffStatus.SUCCESS: LedgerState.SUCCEEDED, PayoffStatus.FAIL: LedgerState.FAILED}


class EnotFlow:
    """Drives an Enot row from its recovery point to a final state, or to
    ``processing`` at the poll deadline."""

    provider = "enot"

    def __init__(self, client: EnotClient, settings: Settings, poll: PollPolicy) -> None:
        self.client = client
        self.settings = settings
        self.poll = poll

    async def drive(self, run: Run) -> None:
        """Run the state machine until the row is final or waiting on the provider."""
        request = PayoffRequest(**run.record.params)
        while True:
            state = run.record.state
            if state is LedgerState.PENDING:
                await self._create(run, request)
            elif state is LedgerState.SENDING:
                await self._reconcile(run)
            elif state is LedgerState.PROCESSING:
                if not await self._poll(run):
                    return
            else:
                return

    def reopen_at(self, stopped_at: LedgerState, record: PayoutRecord) -> LedgerState:
        """Where ``reconcile()`` resumes a parked row: a row that had sent creates is
        looked up by order_id again first (a payoff may have appeared since)."""
        if stopped_at is LedgerState.PENDING and record.attempts:
            return LedgerState.SENDING
        return stopped_at

    def _order_id(self, run: Run) -> str:
        order_id = run.record.order_id
        assert order_id is not None, "an Enot row always carries its order_id"
        return order_id

    async def _create(self, run: Run, request: PayoffRequest) -> None:
        if run.attempts_this_pass >= self.settings.max_send_attempts:
            await run.give_up(f"payoff not confirmed after {run.record.attempts} create attempts")
            return
        await run.move(
            LedgerState.SENDING, add_attempt=True, unknown_since=None, note="creating payoff"
        )
        try:
            created = await self.client.create_payoff_from(request, order_id=self._order_id(run))
        except _REFUSED as error:
            await self._confirm_refusal(run, error)
            return
        except PayoutError as error:
            await run.move(
                LedgerState.SENDING,
                unknown_since=time.time(),
                last_error=str(error),
                note="create outcome unknown; looking the payoff up by order_id",
            )
            return
        await run.move(
            LedgerState.PROCESSING, operation_id=created.payoff_id, note="payoff created"
        )

    async def _confirm_refusal(self, run: Run, refusal: PayoutError) -> None:
        """A refused create should have left nothing; one look by order_id makes sure
        (a duplicate-order_id refusal may hide an earlier, successful create)."""
        try:
            payoff = await self.client.get_payoff(order_id=self._order_id(run))
        except NotFoundError:
            await run.move(
                LedgerState.FAILED, reason=f"create refused: {refusal}", last_error=str(refusal)
            )
            return
        except PayoutError as error:
            await run.move(
                LedgerState.SENDING,
                unknown_since=time.time(),
                last_error=str(error),
                note=f"create refused ({refusal}) but the lookup failed",
            )
            return
        await self._adopt(run, payoff)

    async def _reconcile(self, run: Run) -> None:
        if run.record.unknown_since is None:
            # Resumed after a crash mid-create: start the grace period now, on this
            # host's clock (later than the send, so only ever longer than needed).
            await run.move(
                LedgerState.SENDING, unknown_since=time.time(), note="resumed mid-create"
            )
        since = run.record.unknown_since
        try:
            payoff = await reconcile_payoff(
                self.client, self._order_id(run), grace=self.settings.grace, since=since
            )
        except PayoutError as error:
            await run.give_up("could not learn whether the payoff exists", error)
            return
        if payoff is None:
            await run.move(
                LedgerState.PENDING,
                note=f"not found for {self.settings.grace:g}s after sending; creating again",
            )
            return
        await self._adopt(run, payoff)

    async def _poll(self, run: Run) -> bool:
        payoff_id = run.record.operation_id
        order_id = None if payoff_id else self._order_id(run)
        try:
            payoff = await wait_for_final(
                self.client,
                payoff_id=payoff_id,
                order_id=order_id,
                policy=self.poll,
            )
        except PayoutError as error:
            await run.give_up("could not follow the payoff", error)
            return True
        if payoff.is_final:
            await self._adopt(run, payoff)
            return True
        await run.move(
            LedgerState.PROCESSING, provider_status=payoff.raw_status, note="poll deadline"
        )
        return False

    async def _adopt(self, run: Run, payoff: Payoff) -> None:
        final = _FINAL.get(payoff.status)
        changes: dict[str, Any] = {"provider_status": payoff.raw_status}
        if payoff.payoff_id:
            changes["operation_id"] = payoff.payoff_id
        if final is None:
            await run.move(LedgerState.PROCESSING, note="payoff found", **changes)
            return
        reason = None if final is LedgerState.SUCCEEDED else (payoff.error_message or "fail")
        await run.move(final, reason=reason, **changes)
