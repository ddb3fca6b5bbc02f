"""The IntellectMoney payout flow: create, record the id, execute, poll.

Creating moves no money; executing does. So the PayoutOperationId is in the ledger
(state ``created``) before execute, the row says ``executing`` while the execute
request may be in flight, and the execute leaves only through the lease's fence.

After an execute whose answer was lost or refused, ``GetOperationState`` decides --
but only one way at once: any state after ``Created`` means execute happened. The
provider may accept an execute ("processing") and still show ``Created`` for a while,
so ``Created`` is trusted to mean "it did not happen" only once it has held for the
settle window (``execute_settle``), counted from when the answer was lost (or, for a
row taken over, from when no earlier request can still be in flight). Only then is the
operation executed again, or -- after a refusal -- deleted. When the state cannot be
read for long enough, the row parks in ``needs_attention`` saying so.

A row goes from ``pending`` straight to ``created``: a create interrupted by a crash
or a lost answer leaves at most an operation in ``Created`` that nothing will ever
execute, so there is no need to record that a create may be in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .._errors import (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    ProviderRejectedError,
    RequestNotSentError,
    ValidationError,
)
from .._fence import guarded
from .._polling import PollPolicy
from ..intellectmoney import (
    IntellectMoneyClient,
    MassPaymentOperationState,
    OperationRequest,
    PayoutOperation,
)
from ..intellectmoney._poller import wait_for_final
from ..ledger import LeaseLostError, LedgerState, PayoutRecord
from ._result import Settings
from ._run import Run

__all__ = ["IntellectMoneyFlow"]

logger = logging.getLogger("payout_async")

_REFUSED = (
    AuthenticationError,
    ProviderRejectedError,
    InvalidRequestError,
    PermissionDeniedError,
    ValidationError,
)
_FINAL = {
    MassPaymentOperationState.COMPLETED: LedgerState.SUCCEEDED,
    MassPaymentOperationState.FAILED: LedgerState.FAILED,
    # Nothing was paid and that operation never will be: the key pays again after a top-up.
    MassPaymentOperationState.NOT_ENOUGH_MONEY: LedgerState.REFUSED,
    MassPaymentOperationState.DELETED: LedgerState.CANCELLED,
}


class IntellectMoneyFlow:
    """Drives an IntellectMoney row from its recovery point to a final state, or to
    ``processing`` at the poll deadline."""

    provider = "intellectmoney"

    def __init__(self, client: IntellectMoneyClient, settings: Settings, poll: PollPolicy) -> None:
        self.client = client
        self.settings = settings
        self.poll = poll

    async def drive(self, run: Run) -> None:
        """Run the state machine until the row is final or waiting on the provider."""
        request = OperationRequest(**run.record.params)
        while True:
            state = run.record.state
            if state in (LedgerState.PENDING, LedgerState.SENDING):
                await self._create(run, request)
            elif state is LedgerState.CREATED:
                await self._execute(run)
            elif state is LedgerState.EXECUTING:
                await self._check_execution(run, refusal=None)
            elif state is LedgerState.PROCESSING:
                if not await self._poll(run):
                    return
            else:
                return

    def reopen_at(self, stopped_at: LedgerState, record: PayoutRecord) -> LedgerState:
        """Where ``reconcile()`` resumes a parked row: where it stopped, as each
        recovery point is safe to go on from."""
        return stopped_at

    async def _create(self, run: Run, request: OperationRequest) -> None:
        # A create lost earlier left at most an orphan in ``Created``: harmless, as
        # nothing will ever execute it. Creating again is safe.
        try:
            operation = await self.client.create_operation_from(request)
        except _REFUSED as error:
            await run.refused("create refused", error)
            return
        except Exception as error:
            await run.give_up("create failed, nothing was paid", error)
            return
        if operation.operation_id is None:
            await run.give_up("create answer carried no PayoutOperationId")
            return
        try:
            await run.move(
                LedgerState.CREATED,
                operation_id=operation.operation_id,
                provider_status=operation.raw_state,
                note="operation created",
            )
        except LeaseLostError:
            # Someone else drives this payout now: the operation just created is an
            # orphan whose id we know, so delete it.
            await self._delete_quietly(operation.operation_id)
            raise

    async def _execute(self, run: Run) -> None:
        operation_id = self._operation_id(run)
        if run.attempts_this_pass >= self.settings.max_send_attempts:
            await run.give_up(f"execute did not take after {run.record.attempts} attempts")
            return
        await run.move(LedgerState.EXECUTING, add_attempt=True, note="executing")
        try:
            with guarded(run.fence):
                operation = await self.client.execute_operation(operation_id)
        except LeaseLostError:
            raise  # the fence kept the request from leaving: another drive has the row
        except RequestNotSentError as error:  # nothing reached the provider
            await run.move(LedgerState.CREATED, last_error=str(error), note="execute not sent")
            return
        except Exception as error:
            # Whatever happened, the operation's state says whether money moved.
            run.unknown_from = time.monotonic()
            await self._check_execution(run, refusal=error if isinstance(error, _REFUSED) else None)
            return
        if operation.accepted or operation.state is MassPaymentOperationState.UNKNOWN:
            await run.move(LedgerState.PROCESSING, provider_status=operation.raw_state)
            return
        await self._adopt(run, operation)

    async def _check_execution(self, run: Run, *, refusal: Exception | None) -> None:
        """Decide from the operation's state whether a lost or refused execute
        happened; ``Created`` counts only once it has held over the settle window."""
        operation_id = self._operation_id(run)
        settle = self.settings.execute_settle
        settled_at = run.unknown_since() + settle
        give_up_at = time.monotonic() + max(self.poll.deadline, settle)
        for delay in self.poll.delays():
            try:
                operation = await self.client.get_operation_state(operation_id)
            except Exception as error:
                if time.monotonic() >= give_up_at:
                    await run.give_up(
                        "execute may have happened and the operation's state could not be read",
                        error,
                    )
                    return
            else:
                if operation.state is not MassPaymentOperationState.CREATED:
                    await self._adopt(run, operation)  # it happened
                    return
                left = settled_at - time.monotonic()
                if left <= 0:
                    break
                delay = min(delay, left + 0.01)
            await asyncio.sleep(delay)
        held = f"the operation stayed Created for the {settle:g}s settle window"
        if refusal is not None:
            await self._delete_quietly(operation_id)
            await run.refused(f"execute refused and {held}", refusal)
            return
        await run.move(
            LedgerState.CREATED,
            provider_status=operation.raw_state,
            note=f"execute did not happen ({held}); executing again",
        )

    async def _poll(self, run: Run) -> bool:
        try:
            operation = await wait_for_final(self.client, self._operation_id(run), policy=self.poll)
        except Exception as error:
            await run.give_up("could not follow the operation", error)
            return True
        if operation.is_final:
            await self._adopt(run, operation)
            return True
        await run.move(
            LedgerState.PROCESSING, provider_status=operation.raw_state, note="poll deadline"
        )
        return False

    async def _adopt(self, run: Run, operation: PayoutOperation) -> None:
        final = _FINAL.get(operation.state)
        if final is None:
            await run.move(LedgerState.PROCESSING, provider_status=operation.raw_state)
            return
        reason = None
        if final is not LedgerState.SUCCEEDED:
            reason = operation.error_message or f"operation ended {operation.raw_state}"
        await run.move(final, provider_status=operation.raw_state, reason=reason)

    def _operation_id(self, run: Run) -> str:
        operation_id = run.record.operation_id
        assert operation_id is not None, "a created operation always has its id recorded"
        return operation_id

    async def _delete_quietly(self, operation_id: str) -> None:
        try:
            await self.client.delete_operation(operation_id)
        except Exception as error:
            logger.warning("could not delete unused operation %s: %s", operation_id, error)
