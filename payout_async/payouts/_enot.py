"""The Enot payoff flow: create with the row's order_id, then poll.

``payoff/create`` moves money and has no other idempotency handle than our own
``order_id``, which Enot is not known to enforce. So the row says ``sending`` while a
create may be in flight, and the create leaves only through the lease's fence. Unless
order_ids are looked up before their first create, a new row's intent is recorded
already ``sending`` (one write: nothing happens in between). After
anything but a clean answer the payoff is looked up by ``order_id``: found (with this
payout's amount and recipient), it is adopted; created again, with the same order_id,
only after "not found" has held for the grace period -- measured on this process's
monotonic clock from when this drive lost the answer, or, for a row taken over, from
when no request of the previous holder can still be in flight. A refusal is doubted the
same way unless the documents place it before processing (``refused_unprocessed``),
and every create after a row's first looks its order_id up first.

With ``webhook_wait`` (opt-in), the drive that creates a payoff does not poll at first:
it waits up to that long (from when the create left) for ``Payouts.apply_webhook`` of
this process to settle the row by its order_id. When the wait runs out it reads the
row (a webhook handled by another process may have settled it), and only then polls,
on the schedule counted from the create. A row settled by a webhook is final and its
lease ended with that write: the drive writes nothing more to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from decimal import Decimal
from functools import partial

from .._errors import APIError, NotFoundError, RequestNotSentError, ValidationError
from .._fence import guarded
from .._polling import PollPolicy, is_inconclusive
from ..enot import EnotClient, Payoff, PayoffRequest, PayoffStatus, PayoffWebhook
from ..enot._poller import reconcile_payoff, wait_for_final
from ..ledger import LeaseLostError, LedgerError, LedgerState, PayoutRecord
from ._flow import REFUSED, Flow, IncompleteRowError, Reading, Step, other_account
from ._result import Settings
from ._run import Run
from ._waiting import GRACE
from ._webhook_wait import WebhookWaits

__all__ = ["EnotFlow", "payoff_mismatch", "refused_unprocessed", "webhook_mismatch"]

logger = logging.getLogger("payout_async")

_FINAL = {PayoffStatus.SUCCESS: LedgerState.SUCCEEDED, PayoffStatus.FAIL: LedgerState.FAILED}
#: Create refusals Enot's documents place before processing (see ``refused_unprocessed``).
_BEFORE_PROCESSING = frozenset({401, 403, 404})


def _plain(wallet: str) -> str:
    """A wallet without the punctuation people and providers put in card numbers and
    phones (spaces, dashes, brackets, a leading +)."""
    return "".join(ch for ch in wallet if ch not in " -()+\t").lower()


def _same_recipient(ours: str, reported: str) -> bool:
    """``reported`` (possibly masked with ``*``, as providers show card numbers) names
    the wallet ``ours``."""
    ours, reported = _plain(ours), _plain(reported)
    if "*" not in reported:
        return ours == reported
    head, tail = reported[: reported.index("*")], reported[reported.rindex("*") + 1 :]
    return len(ours) >= len(head) + len(tail) and ours.startswith(head) and ours.endswith(tail)


def refused_unprocessed(error: Exception) -> bool:
    """Whether a refused create is one the documents place before processing, so that
    it left nothing: a request that never left (``ValidationError``), or Enot's 401
    (bad user_id or key), 403 (payoffs disabled, inactive user, wrong key, amount off
    the tariff) or 404 on create (no tariff). A 422 and any other status may come from
    a proxy or Enot's edge after the payoff was created."""
    if isinstance(error, ValidationError):
        return True
    return isinstance(error, APIError) and error.status in _BEFORE_PROCESSING


def payoff_mismatch(request: PayoffRequest, payoff: Payoff | PayoffWebhook) -> str | None:
    """Why ``payoff`` (found by order_id, or reported by a webhook) is not this payout,
    or None when what Enot reports agrees with it: amount, recipient and service.
    Fields Enot leaves out are not held against it. The reason names no card number."""
    if payoff.amount is not None and Decimal(payoff.amount) != Decimal(request.amount):
        return f"its amount is {payoff.amount}, this payout's {request.amount}"
    wallet = request.wallet_to
    if payoff.wallet and wallet and not _same_recipient(wallet, payoff.wallet):
        return "its recipient is another wallet"
    if payoff.service and payoff.service.lower() != request.service.lower():
        return f"its service is {payoff.service!r}, this payout's {request.service!r}"
    return None


def webhook_mismatch(
    record: PayoutRecord, webhook: PayoffWebhook, account: str | None
) -> str | None:
    """Why a webhook verified with ``account``'s key is no evidence about ``record``'s
    payout, or None when it is. It speaks of that account's payoffs only: a row sent
    through another account is not its business. A webhook is signed with the
    merchant's key, so another system on the same Enot account (or an order_id reused
    elsewhere) can send one for its own payoff: it counts only once the row has sent a
    create, when it names this row's payoff id or (before the row knows it) this
    payout's amount and recipient, and when nothing it says -- amount, recipient,
    service -- disagrees with the row."""
    if record.attempts == 0:
        return "nothing has been sent for this payout"
    if (sent_through := other_account(record, account)) is not None:
        return (
            f"it was verified with the key of account {account}, and this payout was "
            f"sent through account {sent_through}"
        )
    known = record.operation_id
    if known and webhook.payoff_id and webhook.payoff_id != known:
        return f"its payoff_id is {webhook.payoff_id}, this payout's {known}"
    mismatch = payoff_mismatch(PayoffRequest(**record.params), webhook)
    if mismatch is not None:
        return mismatch
    named = bool(known) and webhook.payoff_id == known
    if not named and (webhook.amount is None or not webhook.wallet):
        return "it names neither this payout's payoff id nor its amount and recipient"
    return None


class EnotFlow(Flow[EnotClient, PayoffRequest, Payoff]):
    """Drives an Enot row from its recovery point to a final state, or to
    ``processing`` at the poll deadline."""

    provider = "enot"
    noun = "payoff"
    request_type = PayoffRequest
    refused = (*REFUSED, NotFoundError)

    def __init__(
        self,
        client: EnotClient,
        settings: Settings,
        poll: PollPolicy,
        webhooks: WebhookWaits | None = None,
    ) -> None:
        super().__init__(client, settings, poll)
        #: Drives waiting for a webhook (``settings.webhook_wait``), woken by
        #: ``Payouts.apply_webhook``.
        self.webhooks = webhooks or WebhookWaits()

    def steps(self) -> Mapping[LedgerState, Step[PayoffRequest]]:
        return {LedgerState.PENDING: self._create, LedgerState.SENDING: self._sending}

    def begins_sending(self) -> bool:
        """Unless each order_id is looked up first, a new row's intent is recorded
        already ``sending``: the create is the next thing that happens."""
        return not self.settings.lookup_before_create

    def account(self) -> str:
        """The Enot account (``user_id``) creates go through: an order_id is looked
        up within one account, so a row that may have a payoff is only ever looked up,
        created again or followed through the account that sent it."""
        return self.client.user_id

    async def drive(self, run: Run, request: PayoffRequest | None = None) -> None:
        """Drive the row -- unless a create of it may exist in another Enot account
        than this client's: looked up here it would not be found, and after the grace
        created here too. The row parks, naming the account to finish it with."""
        record = run.record
        sent_by = other_account(record, self.account())
        may_exist = record.state in (LedgerState.SENDING, LedgerState.PROCESSING)
        if may_exist and sent_by is not None:
            await run.give_up(
                f"its payoff was created, or may have been, through Enot account "
                f"{sent_by}, and this client is account {self.account()}: finish it with "
                f"that account's credentials (another account cannot find it by order_id, "
                "and would create it again)"
            )
            return
        try:
            await super().drive(run, request)
        finally:
            if self.settings.webhook_wait:
                self.webhooks.forget(self._order_id(run))

    def settled_elsewhere(self, run: Run) -> Awaitable[PayoutRecord | None] | None:
        """After this drive's create (``webhook_wait``): the wait for a webhook, which
        gives the row it settled, here or in another process; None to poll."""
        order_id = self._order_id(run)
        since = self.webhooks.since(order_id)
        if since is None:
            return None
        return self._settled_within(run, order_id, since + self.settings.webhook_wait)

    async def _settled_within(self, run: Run, order_id: str, until: float) -> PayoutRecord | None:
        settled = await self.webhooks.wait(order_id, until - time.monotonic())
        if settled is not None:
            return settled
        try:  # another process may have had the webhook
            row = await run.ledger.get(run.record.provider, run.record.key)
        except LedgerError as error:
            logger.warning("payout %s: could not read its row, polling: %s", run.record.key, error)
            return None
        return row if row is not None and row.state.is_final else None

    def follow(self, run: Run) -> Awaitable[Payoff]:
        payoff_id = run.record.operation_id
        order_id = None if payoff_id else self._order_id(run)
        # After a webhook waited for in vain, the schedule counts from the create.
        started = self.webhooks.forget(self._order_id(run))
        return wait_for_final(
            self.client,
            payoff_id=payoff_id,
            order_id=order_id,
            policy=self.poll,
            started=started,
        )

    def read(self, answer: Payoff) -> Reading:
        return Reading(
            final=_FINAL.get(answer.status),
            provider_status=answer.raw_status,
            failure=answer.error_message or "fail",
            provider_id=answer.payoff_id,
        )

    def reopen_at(self, record: PayoutRecord) -> LedgerState:
        """Where ``reconcile()`` resumes a parked row: ``pending`` when no create was
        ever sent; polling when the payoff's id is known; else the payoff is looked up
        by order_id first (a create may have landed, and appeared since)."""
        if not record.attempts:
            return LedgerState.PENDING
        if record.operation_id is not None:
            return LedgerState.PROCESSING
        return LedgerState.SENDING

    def _order_id(self, run: Run) -> str:
        order_id = run.record.order_id
        if order_id is None:
            raise IncompleteRowError(
                "the row holds no order_id (was the ledger restored or edited?); nothing was sent"
            )
        return order_id

    async def _create(self, run: Run, request: PayoffRequest) -> None:
        if run.attempts_this_pass >= self.settings.max_send_attempts:
            await run.give_up(f"payoff not confirmed after {run.record.attempts} create attempts")
            return
        # Every create after the first looks the order_id up first (whatever ended the
        # last one: a lost answer waited out, a refusal, a create not sent), and with
        # ``lookup_before_create`` the first one too.
        look = self.settings.lookup_before_create or run.record.attempts > 0
        if look and await self._found_before_create(run, request):
            return
        await run.move(
            LedgerState.SENDING,
            add_attempt=True,
            provider_account=self.account(),
            note="creating payoff",
        )
        await self._send(run, request)

    async def _sending(self, run: Run, request: PayoffRequest) -> None:
        """A row at ``sending``: one this drive has just begun there sends its create
        (nothing was sent yet); any other may have sent one, so it is looked up."""
        if run.just_begun:
            await self._send(run, request)
            return
        await self._reconcile(run, request)

    async def _send(self, run: Run, request: PayoffRequest) -> None:
        """Send the create of a row that says ``sending`` (this attempt counted).
        With ``webhook_wait`` its order_id waits for a webhook from before the create
        leaves (a webhook may beat the create's answer) until the row is followed --
        after a lost answer too, once the payoff is found -- unless nothing was
        created."""
        order_id = self._order_id(run)
        if self.settings.webhook_wait:
            self.webhooks.expect(order_id)
        try:
            with guarded(run.fence):
                created = await self.client.create_payoff_from(request, order_id=order_id)
        except LeaseLostError:
            raise  # the fence kept the request from leaving: another drive has the row
        except RequestNotSentError as error:  # nothing reached Enot: nothing to look up
            self.webhooks.forget(order_id)
            await run.move(LedgerState.PENDING, last_error=str(error), note="create not sent")
            return
        except self.refused as error:
            self.webhooks.forget(order_id)
            await self._confirm_refusal(run, request, error)
            return
        except Exception as error:  # the create may have happened (its webhook may come)
            await self._outcome_unknown(run, error, "create outcome unknown")
            return
        await run.move(
            LedgerState.PROCESSING, operation_id=created.payoff_id, note="payoff created"
        )

    async def _outcome_unknown(self, run: Run, error: BaseException, what: str) -> None:
        # ``unknown_since`` stays set for good: a create of this row may exist.
        run.answer_lost()
        await run.move(
            LedgerState.SENDING,
            unknown_since=run.record.unknown_since or time.time(),
            last_error=str(error),
            note=f"{what}; looking the payoff up by order_id",
        )

    async def _found_before_create(self, run: Run, request: PayoffRequest) -> bool:
        """Look the order_id up before a create (again, while the lookup fails saying
        nothing: ``before_sending``, ``is_inconclusive``): True when a payoff was found
        and adopted, or the lookup failed (parked)."""
        lookup = partial(self.client.get_payoff, order_id=self._order_id(run))
        what = "order_id lookup before creating"
        answer = await self.before_sending(run, what, lookup, again=is_inconclusive)
        if isinstance(answer, NotFoundError):
            return False
        if isinstance(answer, Exception):
            await run.give_up("could not look the order_id up before creating", answer)
            return True
        await self.adopt(run, request, answer, looked_up=True)
        return True

    async def _confirm_refusal(self, run: Run, request: PayoffRequest, refusal: Exception) -> None:
        """A refused create. Only a refusal the documents place before processing
        (``refused_unprocessed``), of a row no create of which may exist already, is
        taken at once, after one look by order_id. Any other -- a 422 or other 4xx
        from a proxy or Enot's edge may come after the payoff was created, and an
        earlier lost create may be the "duplicate order_id" refused now -- is an
        unknown outcome: the payoff is looked up by order_id until "not found" has
        held for the grace period, and only then does the row end ``refused``."""
        if refused_unprocessed(refusal) and run.record.unknown_since is None:
            try:
                payoff = await self.client.get_payoff(order_id=self._order_id(run))
            except NotFoundError:
                await run.refused("create refused", refusal)
                return
            except Exception as error:
                logger.warning(
                    "payout %s: lookup after a refused create failed: %s", run.record.key, error
                )
            else:
                await self.adopt(run, request, payoff, looked_up=True)
                return
        await self._outcome_unknown(run, refusal, f"create refused ({refusal}), may be processed")
        await self._reconcile(run, request, refusal=refusal)

    async def _reconcile(
        self, run: Run, request: PayoffRequest, *, refusal: Exception | None = None
    ) -> None:
        """Look the payoff up by order_id until found or "not found" has held for the
        grace period: then the row goes back to ``pending`` to be created again -- or,
        after a ``refusal``, ends ``refused``."""
        try:
            with run.waiting(GRACE, self.settings.grace):
                payoff = await reconcile_payoff(
                    self.client,
                    self._order_id(run),
                    grace=self.settings.grace,
                    since=run.unknown_since(),
                )
        except Exception as error:
            await run.give_up("could not learn whether the payoff exists", error)
            return
        if payoff is not None:
            await self.adopt(run, request, payoff, looked_up=True)
            return
        held = f"not found for {self.settings.grace:g}s after sending"
        if refusal is not None:
            await run.refused(f"create refused and {held}", refusal)
            return
        await run.move(LedgerState.PENDING, note=f"{held}; creating again")

    async def adopt(
        self,
        run: Run,
        request: PayoffRequest,
        answer: Payoff,
        *,
        looked_up: bool = False,
        ours: bool = False,
    ) -> None:
        """Record what ``answer`` says -- after checking that it is this payout's
        payoff: one of another order_id is not (whoever asked by its payoff id), nor one
        found by order_id that disagrees with this payout (``payoff_mismatch``); then
        the row parks, forgetting that payoff's id (``reconcile()`` looks its own
        order_id up). A payoff that names this payout's order_id is its own, even if a
        create answered with it was replayed to another row first."""
        order_id = answer.order_id
        if order_id is not None and order_id != (own := self._order_id(run)):
            await run.give_up(
                f"the payoff {answer.payoff_id} is not this payout: its order_id is "
                f"{order_id!r}, this payout's {own!r}",
                operation_id=None,
            )
            return
        if looked_up and (mismatch := payoff_mismatch(request, answer)) is not None:
            await run.give_up(f"the payoff found by order_id is not this payout: {mismatch}")
            return
        ours = ours or order_id is not None
        await super().adopt(run, request, answer, looked_up=looked_up, ours=ours)
