"""The OLD exactly-once rules of issue 23, as named mutations of the new code.

Each mutation installs a copy of what main did before issue 23 (for the duration of
one run, through ``Patches``), so that the simulation can show it catches each one:
with the new rules in place, the unmutated code must pass every seed and each
mutation must fail some seed.

* ``old-fence``: ``Run.fence`` trusts the drive's remembered lease end (process
  clock) and writes to the ledger only when that looks too short;
* ``old-takeover``: a taker waits only what the previous lease still had to run (read
  on the ledger's clock; nothing when its holder looked dead);
* ``old-evidence``: Enot "not found" and IntellectMoney ``Created`` count from when
  the answer *arrived*;
* ``old-liveness``: a holder with our host name whose pid our ``/proc`` cannot match
  is dead (another PID namespace, unreadable) -- fails open;
* ``old-webhook``: ``apply_webhook`` settles the row by ``order_id`` alone;
* ``old-answers``: a read's answer is taken as being about what was asked, whatever
  payoff or operation it names;
* ``old-operations``: a row records whatever operation a create's answer names, though
  another row holds it (``MemoryLedger`` without its index of operations).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from payout_async._errors import ConfigurationError, NotFoundError
from payout_async._polling import PollPolicy, is_inconclusive
from payout_async.enot import EnotClient, Payoff, PayoffStatus, PayoffWebhook, _poller
from payout_async.enot import _client as _enot_client
from payout_async.intellectmoney import MassPaymentOperationState
from payout_async.intellectmoney import _models as _im_models
from payout_async.ledger import LeaseLostError, LedgerState, MemoryLedger
from payout_async.payouts import _enot, _run
from payout_async.payouts._intellectmoney import IntellectMoneyFlow
from payout_async.payouts._orchestrator import Payouts
from payout_async.payouts._result import PayoutResult
from payout_async.payouts._run import Run, fence_margin

if TYPE_CHECKING:
    from .clocks import Patches
    from .world import World

__all__ = ["MUTATIONS", "install", "old_owner_is_dead"]


def _now() -> float:
    clock: float = vars(_run)["time"].monotonic()  # the (patched) process clock, read now
    return clock


# -- old-fence ------------------------------------------------------------------------


def _old_fence(patches: Patches, world: World) -> None:
    init, move, renew = Run.__init__, Run.move, Run.renew

    def __init__(self: Run, ledger: Any, claim: Any, *args: Any, **kwargs: Any) -> None:
        init(self, ledger, claim, *args, **kwargs)
        # (It counted from just before the claim; the claim's end is as near as the
        # new ``Run`` is told.)
        self._old_valid_until = kwargs["claimed_after"] + kwargs["lease_seconds"]  # type: ignore[attr-defined]

    async def move_(self: Run, *args: Any, **kwargs: Any) -> Any:
        started = _now()
        record = await move(self, *args, **kwargs)
        self._old_valid_until = started + self.lease_seconds  # type: ignore[attr-defined]
        return record

    async def renew_(self: Run, *args: Any, **kwargs: Any) -> None:
        started = _now()
        await renew(self, *args, **kwargs)
        self._old_valid_until = started + self.lease_seconds  # type: ignore[attr-defined]

    async def fence(self: Run, request_timeout: float | None) -> None:
        # Today's Run.fence, reading the lease end this drive remembers.
        if self._before_send is not None:
            self.frozen = True
            try:
                await self._before_send(self.record)
            finally:
                self.frozen = False
        if request_timeout is None:
            raise ConfigurationError("a money-moving request needs a total timeout")
        needed = request_timeout + fence_margin(self.lease_seconds)
        if self._old_valid_until - _now() >= needed:  # type: ignore[attr-defined]
            return
        await self.renew()
        if self._old_valid_until - _now() < needed:  # type: ignore[attr-defined]
            raise LeaseLostError(
                f"{self.record.key}: the lease cannot outlive the request; not sending"
            )

    patches.set(Run, "__init__", __init__)
    patches.set(Run, "move", move_)
    patches.set(Run, "renew", renew_)
    patches.set(Run, "fence", fence)


# -- old-takeover ---------------------------------------------------------------------


def _old_takeover(patches: Patches, world: World) -> None:
    init = Run.__init__

    def __init__(self: Run, ledger: Any, claim: Any, *args: Any, **kwargs: Any) -> None:
        init(self, ledger, claim, *args, **kwargs)
        # What the lease taken over still had to run -- on the ledger's clock, and
        # nothing at all when its holder looked dead (a lease is taken before it ends
        # only from a holder taken for dead).
        self.quiet_from = kwargs["claimed_after"]

    patches.set(Run, "__init__", __init__)


# -- old-evidence ---------------------------------------------------------------------


async def old_reconcile_payoff(
    client: EnotClient,
    order_id: str,
    *,
    grace: float = 60.0,
    since: float | None = None,
    policy: PollPolicy | None = None,
    **_: Any,
) -> Payoff | None:
    """Today's ``reconcile_payoff``: "not found" counts from when the answer arrived."""
    policy = policy or PollPolicy(
        initial=0.5, multiplier=1.6, maximum=5.0, deadline=max(3 * grace, 30.0)
    )
    stop_at = policy.expires_at()
    for delay in policy.delays():
        try:
            return await client.get_payoff(order_id=order_id)
        except NotFoundError:
            now = _now()
            if since is None:
                since = now
            if now - since >= grace:
                return None
            delay = min(delay, max(0.0, since + grace - now) + 0.01)
        except Exception as error:
            if not is_inconclusive(error) or _now() >= stop_at:
                raise
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _old_check_execution(
    self: IntellectMoneyFlow, run: Run, request: Any, *, refusal: Exception | None
) -> None:
    """Today's ``IntellectMoneyFlow._check_execution``: ``Created`` counts from when
    the answer arrived."""
    operation_id = self._operation_id(run)
    settle = self.settings.execute_settle
    settled_at = run.unknown_since() + settle
    give_up_at = _now() + max(self.poll.deadline, settle)
    for delay in self.poll.delays():
        try:
            operation = await self.client.get_operation_state(operation_id)
        except Exception as error:
            if _now() >= give_up_at:
                await run.give_up(
                    "execute may have happened and the operation's state could not be read",
                    error,
                )
                return
        else:
            if operation.state is not MassPaymentOperationState.CREATED:
                await self.adopt(run, request, operation)
                return
            left = settled_at - _now()
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


def _old_evidence(patches: Patches, world: World) -> None:
    patches.set(_poller, "reconcile_payoff", old_reconcile_payoff)
    patches.set(_enot, "reconcile_payoff", old_reconcile_payoff)
    patches.set(IntellectMoneyFlow, "_check_execution", _old_check_execution)


# -- old-liveness ---------------------------------------------------------------------


def old_owner_is_dead(owner: str, host: str, start_time: Callable[[int], str | None]) -> bool:
    """Today's ``owner_is_dead``, asked by a process whose host name is ``host`` and
    whose ``/proc`` gives ``start_time(pid)`` (None: no such process)."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != host or not parts[1].isdigit() or parts[2] == "?":
        return False
    return start_time(int(parts[1])) != parts[2]


def _old_liveness(patches: Patches, world: World) -> None:
    world.old_liveness = True


# -- old-webhook ----------------------------------------------------------------------


async def _old_apply_webhook(self: Payouts[Any], webhook: PayoffWebhook) -> PayoutResult | None:
    """Today's ``Payouts.apply_webhook``: settles by ``order_id`` alone."""
    if self.provider != "enot":
        raise ConfigurationError("webhooks are an Enot feature")
    final = {PayoffStatus.SUCCESS: LedgerState.SUCCEEDED, PayoffStatus.FAIL: LedgerState.FAILED}
    state = final.get(webhook.status)
    if webhook.order_id is None or state is None:
        return None
    status = webhook.raw_status or webhook.status.value
    settled = await self.ledger.settle_order(
        self.provider,
        webhook.order_id,
        state=state,
        provider_status=status,
        note="webhook",
        reason=f"{status} (reported by webhook)" if state is LedgerState.FAILED else None,
    )
    if settled is None:
        return None
    record = settled.record
    if settled.moved_from is not None:
        told = self._observer.transitioned(settled.moved_from, record, "webhook")
        if told is not None:
            await told
    self._webhook_waits.settled(record)
    return PayoutResult.from_record(record)


def _old_webhook(patches: Patches, world: World) -> None:
    patches.set(Payouts, "apply_webhook", _old_apply_webhook)


# -- old-answers -----------------------------------------------------------------------


def _taken_as_asked(field: str, asked: str, named: str | None, *, any_case: bool = False) -> None:
    return None


async def _old_adopt(
    self: _enot.EnotFlow, run: Run, request: Any, answer: Payoff, *, looked_up: bool = False
) -> None:
    if looked_up and (mismatch := _enot.payoff_mismatch(request, answer)) is not None:
        await run.give_up(f"the payoff found by order_id is not this payout: {mismatch}")
        return
    await super(_enot.EnotFlow, self).adopt(run, request, answer, looked_up=looked_up)


def _old_answers(patches: Patches, world: World) -> None:
    patches.set(_enot_client, "check_about", _taken_as_asked)
    patches.set(_im_models, "check_about", _taken_as_asked)
    patches.set(_enot.EnotFlow, "adopt", _old_adopt)


# -- old-operations --------------------------------------------------------------------


def _any_operation(self: MemoryLedger, row: Any, operation_id: str | None) -> None:
    row.operation_id = operation_id


def _old_operations(patches: Patches, world: World) -> None:
    patches.set(MemoryLedger, "_set_operation_id", _any_operation)


MUTATIONS: dict[str, Callable[[Patches, World], None]] = {
    "old-fence": _old_fence,
    "old-takeover": _old_takeover,
    "old-evidence": _old_evidence,
    "old-liveness": _old_liveness,
    "old-webhook": _old_webhook,
    "old-answers": _old_answers,
    "old-operations": _old_operations,
}


def install(names: tuple[str, ...], patches: Patches, world: World) -> None:
    """Install the named mutations for one run."""
    for name in names:
        MUTATIONS[name](patches, world)
