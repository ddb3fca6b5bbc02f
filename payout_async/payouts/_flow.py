"""What the two payout flows share: the drive loop over recovery points, polling,
adopting a provider's answer, and the errors that count as a refusal.

A flow names the steps it knows -- one per recovery point (ledger state) it can go on
from -- and how to read its provider's answers. The loop runs the step for the row's
state until the row is final, parked, or still under way at the poll deadline. A state
the flow has no step for is a bug (or a row written by another provider's flow): it
raises ``UnknownRecoveryPointError``, as rocket-rides' "Bug!" does, instead of
returning as if the row were done.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from .._errors import (
    AuthenticationError,
    InvalidRequestError,
    PayoutError,
    PermissionDeniedError,
    ValidationError,
)
from .._polling import PollPolicy, is_transient
from ..ledger import PARKED_STATES, LedgerState, PayoutRecord
from ._result import Settings
from ._run import Run

__all__ = [
    "REFUSED",
    "Flow",
    "IncompleteRowError",
    "Reading",
    "UnknownRecoveryPointError",
    "other_account",
]

T = TypeVar("T")
ClientT = TypeVar("ClientT")
RequestT = TypeVar("RequestT")
AnswerT = TypeVar("AnswerT")

#: One step of a flow: go on from one recovery point (and durably name the next).
Step = Callable[[Run, RequestT], Awaitable[None]]

#: Answers by which either provider refuses a request: it left nothing behind.
REFUSED: tuple[type[Exception], ...] = (
    AuthenticationError,
    InvalidRequestError,
    PermissionDeniedError,
    ValidationError,
)


def other_account(record: PayoutRecord, account: str | None) -> str | None:
    """The provider account ``record`` was sent through, when it is not ``account``
    (``Flow.account``): its payoff is that account's business -- found, settled or
    created again only through it (protocol A14). None when they are the same, or
    either is unknown."""
    sent = record.provider_account
    return sent if sent is not None and account is not None and sent != account else None


class UnknownRecoveryPointError(PayoutError):
    """A ledger row is at a recovery point its provider's flow has no step for: a bug,
    or a row another flow wrote. Nothing was sent for it; the row is left as it was."""

    def __init__(self, provider: str, key: str, state: LedgerState) -> None:
        super().__init__(
            f"{provider} payout {key!r} is at recovery point {state.value!r}, which the "
            f"{provider} flow does not know; nothing was sent"
        )
        self.provider = provider
        self.key = key
        self.state = state


class IncompleteRowError(PayoutError):
    """A row lacks what its recovery point implies it holds (an IntellectMoney row past
    ``pending`` without its operation id, an Enot row without its order_id): it was
    written or restored outside this library's steps. The drive parks it, sending
    nothing."""


@attrs.frozen(slots=False)
class Reading:
    """A provider's answer about one payout, in the ledger's terms."""

    #: The final state the answer names, or None while the payout is under way.
    final: LedgerState | None
    provider_status: str | None
    #: Why the payout ended, when ``final`` is not ``SUCCEEDED``.
    failure: str
    #: The provider's id of the payout, when the answer carries one to record.
    provider_id: str | None = None


class Flow(abc.ABC, Generic[ClientT, RequestT, AnswerT]):
    """Drives one provider's rows from their recovery point to a final state, or to
    ``processing`` at the poll deadline.

    A subclass names its ``provider``, its ``request_type``, the errors that mean its
    provider refused (``refused``), the ``steps`` it knows besides ``processing``
    (polling, shared), and how to ``follow`` a payout and ``read`` an answer.
    """

    provider: str
    #: What the provider calls a payout, in messages ("operation", "payoff").
    noun: str
    request_type: type[RequestT]
    #: Answers that say the provider refused a request (nothing exists there).
    refused: tuple[type[Exception], ...] = REFUSED

    def __init__(self, client: ClientT, settings: Settings, poll: PollPolicy) -> None:
        self.client = client
        self.settings = settings
        self.poll = poll
        self._steps = self.steps()

    @abc.abstractmethod
    def steps(self) -> Mapping[LedgerState, Step[RequestT]]:
        """The step for each active recovery point this flow knows, ``processing``
        aside (every flow polls there)."""

    @abc.abstractmethod
    def follow(self, run: Run) -> Awaitable[AnswerT]:
        """Poll the row's payout until it is final or the poll deadline passes (the
        poller's coroutine, awaited by the caller)."""

    @abc.abstractmethod
    def read(self, answer: AnswerT) -> Reading:
        """What ``answer`` says about the payout."""

    def account(self) -> str | None:
        """The provider account this flow's client sends through, recorded with each
        money-moving request (``PayoutRecord.provider_account``); None where a row
        needs none (a provider that cannot be asked about another account's payouts
        by our reference)."""
        return None

    def begins_sending(self) -> bool:
        """Whether a new row's intent is recorded already ``sending`` (one attempt):
        only a flow whose first step sends a money-moving request, with nothing in
        between, may say so. The step for ``sending`` then tells such a row by
        ``Run.just_begun``."""
        return False

    @abc.abstractmethod
    def reopen_at(self, record: PayoutRecord) -> LedgerState:
        """Where ``reconcile()`` resumes a ``needs_attention`` row: a step that is safe
        whatever the row last did, decided from the row alone (its operation id and
        attempts), never from its history."""

    async def drive(self, run: Run, request: RequestT | None = None) -> None:
        """Run the state machine until the row is final, parked, or waiting on the
        provider. Raises ``UnknownRecoveryPointError`` at a state with no step.

        ``request``: the row's request as ``pay()`` was given it (checked then; an
        Enot request's ``order_id`` may be unset: the row's is the one sent); else it
        is built from the row."""
        if request is None:
            request = self.request_type(**run.record.params)
        while not (state := run.record.state).is_final and state not in PARKED_STATES:
            if state is LedgerState.PROCESSING:
                if not await self._poll(run, request):
                    return
                continue
            step = self._steps.get(state)
            if step is None:
                raise UnknownRecoveryPointError(self.provider, run.record.key, state)
            try:
                await step(run, request)
            except IncompleteRowError as error:
                await run.give_up(str(error))
                return
            run.just_begun = False

    async def before_sending(
        self,
        run: Run,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        again: Callable[[BaseException], bool] = is_transient,
    ) -> T | Exception:
        """The answer of ``call()`` -- a request that moves no money, made from a
        ``pending`` row -- or the failure that ends it. A failure for which ``again``
        holds (default ``is_transient``: the network, 5xx, 429, an unreadable answer)
        through all of the client's retries is tried again, up to
        ``max_send_attempts`` rounds; between rounds one write records it on the row,
        still ``pending``. A payout that can still be settled is not parked for a
        provider's bad minute."""
        rounds = self.settings.max_send_attempts
        for done in range(1, rounds + 1):
            try:
                return await call()
            except Exception as error:
                if done == rounds or not again(error):
                    return error
                await run.move(
                    LedgerState.PENDING,
                    last_error=str(error),
                    note=f"{what} failed ({done} of {rounds}); trying again",
                )
        raise AssertionError("max_send_attempts is at least 1")

    def settled_elsewhere(self, run: Run) -> Awaitable[PayoutRecord | None] | None:
        """None to poll at once; else a wait instead of polling (an Enot webhook's),
        which gives the row when something other than this drive has settled it, or
        None to poll then."""
        return None

    async def _poll(self, run: Run, request: RequestT) -> bool:
        """Follow a ``processing`` row: False when it is still under way at the poll
        deadline (the drive ends there), True when it moved on."""
        waiting = self.settled_elsewhere(run)
        settled = None if waiting is None else await waiting
        if settled is not None:
            # Final, written by whoever settled it, and its lease ended with that write:
            # this drive writes nothing more (as when a move finds the lease gone).
            run.record = settled
            run.released = True
            return True
        looked_up = run.record.operation_id is None
        try:
            answer = await self.follow(run)
        except Exception as error:
            await run.give_up(f"could not follow the {self.noun}", error)
            return True
        reading = self.read(answer)
        if reading.final is not None:
            await self.adopt(run, request, answer, looked_up=looked_up)
            return True
        await run.move(
            LedgerState.PROCESSING,
            provider_status=reading.provider_status,
            note="poll deadline",
            release=True,  # the drive ends here: resume() goes on
        )
        return False

    async def adopt(
        self,
        run: Run,
        request: RequestT,
        answer: AnswerT,
        *,
        looked_up: bool = False,
        ours: bool = False,
    ) -> None:
        """Record what ``answer`` says: its final state, or ``processing``.
        ``looked_up``: the payout was found by this row's own reference, not by the
        provider's id (a flow that can be shown another payout checks it first).
        ``ours``: the answer names this payout's own reference, so its id is this
        payout's even where another row recorded it (``Run.move``)."""
        reading = self.read(answer)
        changes: dict[str, Any] = {"provider_status": reading.provider_status}
        if reading.provider_id:
            changes["operation_id"] = reading.provider_id
        if reading.final is None:
            note = f"{self.noun} found" if looked_up else None
            await run.move(LedgerState.PROCESSING, note=note, ours=ours, **changes)
            return
        reason = None if reading.final is LedgerState.SUCCEEDED else reading.failure
        # The drive ends at any such state (``refused`` too): the lease goes with it.
        await run.move(reading.final, reason=reason, release=True, ours=ours, **changes)
