"""The IntellectMoney payout flow: create, record the id with ``executing``, execute, poll.

Creating moves no money; executing does. So the PayoutOperationId is in the ledger
before execute, the row says ``executing`` while the execute request may be in
flight, and the execute leaves only through the lease's fence.

After an execute whose answer was lost or refused, ``GetOperationState`` decides --
but only one way at once: any state after ``Created`` means execute happened. The
provider may accept an execute ("processing") and still show ``Created`` for a while,
so ``Created`` is trusted to mean "it did not happen" only once a query sent after the
settle window (``execute_settle``) reads it -- the window counted from when the answer
was lost (or, for a row taken over, from when no earlier request can still be in
flight), and the evidence dated by when its query was sent, not when it arrived. Only then is the
operation executed again, or -- after a refusal -- deleted. When the state cannot be
read for long enough, the row parks in ``needs_attention`` saying so.

A row goes from ``pending`` straight to ``executing``, with the operation's id, in one
write: a create interrupted by a crash or a lost answer leaves at most an operation in
``Created`` that nothing will ever execute, so there is no need to record that a
create may be in flight, and nothing happens between learning the id and executing.
(``created`` is where a row waits to execute again: after an execute that was not
sent or did not happen.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from contextlib import nullcontext
from functools import partial

from .._errors import ProviderRejectedError, RequestNotSentError
from .._fence import guarded
from ..intellectmoney import (
    IntellectMoneyClient,
    MassPaymentOperationState,
    OperationRequest,
    PayoutOperation,
)
from ..intellectmoney._poller import wait_for_final
from ..ledger import LeaseLostError, LedgerState, PayoutRecord
from ._flow import REFUSED, Flow, IncompleteRowError, Reading, Step
from ._run import ForeignOperationError, Run
from ._waiting import SETTLE

__all__ = ["IntellectMoneyFlow"]

logger = logging.getLogger("payout_async")

_FINAL = {
    MassPaymentOperationState.COMPLETED: LedgerState.SUCCEEDED,
    MassPaymentOperationState.FAILED: LedgerState.FAILED,
    # Nothing was paid and that operation never will be: the key pays again after a top-up.
    MassPaymentOperationState.NOT_ENOUGH_MONEY: LedgerState.REFUSED,
    MassPaymentOperationState.DELETED: LedgerState.CANCELLED,
}


#: Recovery points whose step uses the row's recorded operation.
_USES_OPERATION = frozenset({LedgerState.CREATED, LedgerState.EXECUTING, LedgerState.PROCESSING})


class IntellectMoneyFlow(Flow[IntellectMoneyClient, OperationRequest, PayoutOperation]):
    """Drives an IntellectMoney row from its recovery point to a final state, or to
    ``processing`` at the poll deadline. Every recovery point is safe to go on from,
    so ``reconcile()`` resumes a parked row where it stopped."""

    provider = "intellectmoney"
    noun = "operation"
    request_type = OperationRequest
    refused = (*REFUSED, ProviderRejectedError)

    def steps(self) -> Mapping[LedgerState, Step[OperationRequest]]:
        return {
            LedgerState.PENDING: self._create,
            LedgerState.SENDING: self._create,
            LedgerState.CREATED: self._execute,
            LedgerState.EXECUTING: self._execution_lost,
        }

    async def drive(self, run: Run, request: OperationRequest | None = None) -> None:
        """Drive the row -- unless its operation was created through the other API
        generation (``provider_api``): the documents do not say that one API's execute,
        state or delete applies to the other's operations, so the row parks saying
        which worker can drive it."""
        record = run.record
        other = record.provider_api
        uses_operation = record.state in _USES_OPERATION and record.operation_id is not None
        if uses_operation and other is not None and other != self.client.api:
            await run.give_up(
                f"operation {record.operation_id} was created through the {other} "
                f"IntellectMoney API and this worker uses the {self.client.api} one: "
                f"drive it with a {other}-API worker (--im-api {other})"
            )
            return
        await super().drive(run, request)

    def reopen_at(self, record: PayoutRecord) -> LedgerState:
        """Where ``reconcile()`` resumes a parked row, from the row alone: ``pending``
        while it records no operation (creating moves no money); ``created`` when one
        is recorded but no execute was ever sent; else ``executing``: the operation's
        state decides, over the settle window, whether an execute happened."""
        if record.operation_id is None:
            return LedgerState.PENDING
        if not record.attempts:
            return LedgerState.CREATED
        return LedgerState.EXECUTING

    def follow(self, run: Run) -> Awaitable[PayoutOperation]:
        return wait_for_final(self.client, self._operation_id(run), policy=self.poll)

    def read(self, answer: PayoutOperation) -> Reading:
        return Reading(
            final=_FINAL.get(answer.state),
            provider_status=answer.raw_state,
            failure=answer.error_message or f"operation ended {answer.raw_state}",
        )

    async def _create(self, run: Run, request: OperationRequest) -> None:
        # A create lost earlier left at most an orphan in ``Created``: harmless, as
        # nothing will ever execute it. Creating again is safe.
        if run.record.operation_id is not None:
            # A refused row paid anew still names its refused operation: forget it
            # first, so that nothing (``reopen_at``) can take it for this attempt's.
            await run.move(
                LedgerState.PENDING,
                operation_id=None,
                provider_status=None,
                provider_api=None,
                note=f"creating anew; operation {run.record.operation_id} was refused",
            )
        operation = await self._created(run, request)
        if operation is None:
            return
        if operation.operation_id is None:
            await run.give_up("create answer carried no PayoutOperationId")
            return
        # Nothing happens between recording the id and executing: one write says both
        # (a row found ``executing`` is checked by the operation's state anyway).
        execute = run.attempts_this_pass < self.settings.max_send_attempts
        try:
            await run.move(
                LedgerState.EXECUTING if execute else LedgerState.CREATED,
                add_attempt=execute,
                operation_id=operation.operation_id,
                provider_status=operation.raw_state,
                provider_api=self.client.api,
                note="operation created; executing" if execute else "operation created",
            )
        except ForeignOperationError:
            raise  # that operation is another payout's: never this drive's to delete
        except LeaseLostError:
            # Someone else drives this payout now: the operation just created is an
            # orphan whose id only this drive knows, so delete it -- unless the row
            # names it (a write whose outcome was unknown landed after all, and the
            # drive that has the row now may execute it).
            if not await self._row_names(run, operation.operation_id):
                await self._delete_quietly(operation.operation_id)
            raise
        if execute:
            await self._send_execute(run, request)

    async def _created(self, run: Run, request: OperationRequest) -> PayoutOperation | None:
        """The operation a create made; None once the row is refused or parked. A
        create moves no money, so one failing for a transient reason is made again
        (``before_sending``): a lost one leaves at most an orphan nothing executes."""
        create = partial(self.client.create_operation_from, request)
        answer = await self.before_sending(run, "create", create)
        if isinstance(answer, self.refused):
            await run.refused("create refused", answer)
            return None
        if isinstance(answer, Exception):
            await run.give_up("create failed, nothing was paid", answer)
            return None
        return answer

    async def _execute(self, run: Run, request: OperationRequest) -> None:
        if run.attempts_this_pass >= self.settings.max_send_attempts:
            await run.give_up(f"execute did not take after {run.record.attempts} attempts")
            return
        await run.move(LedgerState.EXECUTING, add_attempt=True, note="executing")
        await self._send_execute(run, request)

    async def _send_execute(self, run: Run, request: OperationRequest) -> None:
        """Send the execute of a row just moved to ``executing``, and record its answer."""
        operation_id = self._operation_id(run)
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
            run.answer_lost()
            refusal = error if isinstance(error, self.refused) else None
            await self._check_execution(run, request, refusal=refusal)
            return
        if operation.accepted or operation.state is MassPaymentOperationState.UNKNOWN:
            await run.move(LedgerState.PROCESSING, provider_status=operation.raw_state)
            return
        await self.adopt(run, request, operation)

    async def _execution_lost(self, run: Run, request: OperationRequest) -> None:
        """A row found ``executing``: an execute may be in flight or may have landed."""
        await self._check_execution(run, request, refusal=None)

    async def _check_execution(
        self, run: Run, request: OperationRequest, *, refusal: Exception | None
    ) -> None:
        """Decide from the operation's state whether a lost or refused execute
        happened; ``Created`` counts only once a query *sent* after the settle window
        has passed still reads it (evidence is dated by its request)."""
        operation_id = self._operation_id(run)
        settle = self.settings.execute_settle
        with run.waiting(SETTLE, settle):
            await self._settle(run, request, operation_id, refusal=refusal)

    async def _settle(
        self, run: Run, request: OperationRequest, operation_id: str, *, refusal: Exception | None
    ) -> None:
        """``_check_execution`` over the settle window."""
        settle = self.settings.execute_settle
        settled_at = run.unknown_since() + settle
        give_up_at = time.monotonic() + max(self.poll.deadline, settle)
        for delay in self.poll.delays():
            # ``Created`` is only as new as the moment its query was sent.
            asked = time.monotonic()
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
                    await self.adopt(run, request, operation)  # it happened
                    return
                if asked >= settled_at:
                    break
                delay = min(delay, max(0.0, settled_at - time.monotonic()) + 0.01)
            await asyncio.sleep(delay)
        held = f"the operation stayed Created for the {settle:g}s settle window"
        if refusal is not None:
            await self._delete_quietly(operation_id, fenced_by=run)
            await run.refused(f"execute refused and {held}", refusal)
            return
        await run.move(
            LedgerState.CREATED,
            provider_status=operation.raw_state,
            note=f"execute did not happen ({held}); executing again",
        )

    def _operation_id(self, run: Run) -> str:
        operation_id = run.record.operation_id
        if operation_id is None:
            raise IncompleteRowError(
                f"the row is at {run.record.state.value} but holds no operation id "
                "(was the ledger restored or edited?); nothing was sent"
            )
        return operation_id

    @staticmethod
    async def _row_names(run: Run, operation_id: str) -> bool:
        """Whether the row names ``operation_id`` (True too when it cannot be read)."""
        try:
            row = await run.ledger.get(run.record.provider, run.record.key)
        except Exception:
            return True
        return row is not None and row.operation_id == operation_id

    async def _delete_quietly(self, operation_id: str, *, fenced_by: Run | None = None) -> None:
        """Delete an unused operation; a delete that fails is logged (the operation
        stays ``Created``, never executed). ``fenced_by``: the operation is the row's,
        so the delete decides the money as an execute does -- one that lands on an
        execute accepted but still reading ``Created`` (another drive's, should this
        drive have lost the row while it waited out the settle window) ends the row
        ``cancelled`` with the money sent -- and it leaves only through that drive's
        fence (``LeaseLostError`` otherwise; simulation seed 10227). Without it: an
        orphan whose id the row does not name."""
        fence = nullcontext() if fenced_by is None else guarded(fenced_by.fence)
        try:
            with fence:
                await self.client.delete_operation(operation_id)
        except LeaseLostError:
            raise
        except Exception as error:
            logger.warning("could not delete unused operation %s: %s", operation_id, error)
