"""``MemoryLedger``: the ledger contract in a dict, for tests and one-off scripts.

Nothing survives the process: use ``SQLiteLedger`` for anything that must resume.
Rows keep their recipient as the durable ledgers do (``ledger._recipient``): apart from
the parameters, sealed when there is an ``encryption_key``, dropped once final.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from .._errors import IdempotencyConflictError
from .._loops import LoopBinding
from ._base import (
    ACTIVE_STATES,
    Claim,
    Enqueued,
    EnqueueOutcome,
    Intent,
    LeaseHolder,
    LeaseLostError,
    Ledger,
    LedgerIdentity,
    LedgerState,
    PayoutRecord,
    Settlement,
    Transition,
    WorkListener,
)
from ._errors import OperationTakenError
from ._keys import Other, live_elsewhere, moved_note, rows_to_cancel
from ._listen import ListenerHub
from ._pauses import ProviderPause
from ._recipient import MASKED_HASH, EncryptionKey, Recipients, Stored
from ._rows import check_changes
from ._texts import kept_text, scrub

__all__ = ["MemoryLedger"]


#: ``PayoutRecord``'s fields, in order; a row keeps them all but ``untrusted`` (nothing
#: outside this object can alter a row of it).
_FIELDS = tuple(field.name for field in attrs.fields(PayoutRecord))
_KEPT = tuple(name for name in _FIELDS if name != "untrusted")
_DEFAULTS = {
    field.name: field.default
    for field in attrs.fields(PayoutRecord)
    if field.default is not attrs.NOTHING and field.name in _KEPT
}


class _Row:
    """One row as kept: ``PayoutRecord``'s fields, changed in place by each write --
    ``params`` with the recipient masked, the recipient apart in ``recipient`` (None
    once final) -- and ``full``, the parameters last read back with the recipient
    (None until read, and again whenever ``params`` or ``recipient`` change)."""

    __slots__ = (*_KEPT, "recipient", "full")

    provider: str
    key: str
    params_hash: str
    params: dict[str, Any]
    state: LedgerState
    operation_id: str | None
    order_id: str | None
    provider_status: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    lease_token: int
    created_at: float
    updated_at: float
    last_error: str | None
    reason: str | None
    unknown_since: float | None
    provider_api: str | None
    provider_account: str | None

    def __init__(  # PayoutRecord's fields and defaults (checked below the class)
        self,
        recipient: str | None,
        *,
        provider: str,
        key: str,
        params_hash: str,
        params: dict[str, Any],
        state: LedgerState,
        operation_id: str | None = None,
        order_id: str | None = None,
        provider_status: str | None = None,
        attempts: int = 0,
        lease_owner: str | None = None,
        lease_expires_at: float | None = None,
        lease_token: int = 0,
        created_at: float = 0.0,
        updated_at: float = 0.0,
        last_error: str | None = None,
        reason: str | None = None,
        unknown_since: float | None = None,
        provider_api: str | None = None,
        provider_account: str | None = None,
    ) -> None:
        self.provider, self.key, self.params_hash = provider, key, params_hash
        self.params, self.state, self.operation_id = params, state, operation_id
        self.order_id, self.provider_status, self.attempts = order_id, provider_status, attempts
        self.lease_owner, self.lease_expires_at = lease_owner, lease_expires_at
        self.lease_token, self.created_at, self.updated_at = lease_token, created_at, updated_at
        self.last_error, self.reason = last_error, reason
        self.unknown_since, self.provider_api = unknown_since, provider_api
        self.provider_account = provider_account
        self.recipient: str | None = recipient
        self.full: dict[str, Any] | None = None

    def copy(self) -> _Row:
        """A copy that later writes of this row leave as it is (a snapshot's)."""
        copied = _Row(self.recipient, **{name: getattr(self, name) for name in _KEPT})
        copied.full = self.full
        copied.params = dict(self.params)
        return copied

    def keep(self, params: dict[str, Any], recipient: str | None) -> None:
        """Keep ``params`` (the recipient masked) and ``recipient`` apart."""
        self.params, self.recipient, self.full = params, recipient, None

    def drop_recipient(self) -> None:
        """A final row keeps only its masked recipient."""
        self.recipient, self.full, self.params_hash = None, None, MASKED_HASH


assert {
    name: parameter.default
    for name, parameter in inspect.signature(_Row.__init__).parameters.items()
    if parameter.default is not inspect.Parameter.empty
} == _DEFAULTS, "_Row's fields and defaults are PayoutRecord's"
assert list(inspect.signature(_Row.__init__).parameters)[2:] == list(_KEPT)


def _record_maker() -> Callable[[_Row, dict[str, Any]], PayoutRecord]:
    """``record(row, params)``: the ``PayoutRecord`` of ``row`` with ``params``, its
    fields passed in order (the class's own ``__init__`` checks them)."""
    values = ", ".join("params" if name == "params" else f"row.{name}" for name in _KEPT)
    source = f"def record(row, params):\n    return Record({values})\n"
    namespace: dict[str, Any] = {"Record": PayoutRecord}
    exec(source, namespace)  # built from the class's own field names, nothing else
    record: Callable[[_Row, dict[str, Any]], PayoutRecord] = namespace["record"]
    return record


_record = _record_maker()
_Step = tuple[LedgerState | None, LedgerState, float, str | None, str | None]


class MemoryLedger(Ledger):
    """An in-process ``Ledger``. All operations are atomic because none awaits -- in
    one event loop at a time: a second loop, while the first is still open (another
    thread's), is refused the calls that create rows or hand out leases
    (``ConfigurationError``).

    ``encryption_key`` encrypts each row's recipient and keys its fingerprint, as
    ``SQLiteLedger``'s does."""

    def __init__(self, *, encryption_key: EncryptionKey | None = None) -> None:
        self._recipients = Recipients(encryption_key)
        self._rows: dict[tuple[str, str], _Row] = {}
        #: Each row's history: (from_state, to_state, at, owner, note), oldest first.
        self._history: dict[tuple[str, str], list[_Step]] = {}
        self._by_order_id: dict[tuple[str, str], str] = {}
        #: The key of the row that holds each (provider, operation_id).
        self._by_operation: dict[tuple[str, str], str] = {}
        self._providers: dict[str, set[str]] = {}  # each key's providers
        self._id = uuid.uuid4().hex
        self._begun = 0  # rows inserted and changes of state (the identity's mark)
        #: The one event loop that takes leases here (threads would race between the
        #: check and the claim).
        self._loop = LoopBinding("MemoryLedger")
        self._listeners = ListenerHub()
        self._pauses: dict[str, ProviderPause] = {}

    def __repr__(self) -> str:
        return f"MemoryLedger({len(self._rows)} rows)"

    async def __aenter__(self) -> MemoryLedger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to close."""

    def params_hash(self, params: Mapping[str, Any]) -> str:
        """See ``Ledger.params_hash``."""
        return self._recipients.params_hash(params)

    async def pauses(self) -> list[ProviderPause]:
        """See ``Ledger.pauses``."""
        return sorted(self._pauses.values(), key=lambda pause: pause.provider)

    async def pause_provider(
        self, provider: str, *, reason: str, by: str
    ) -> tuple[ProviderPause, bool]:
        """See ``Ledger.pause_provider``."""
        if (held := self._pauses.get(provider)) is not None:
            return held, False
        made = ProviderPause(provider, time.time(), kept_text(reason), by)
        self._pauses[provider] = made
        return made, True

    async def lift_pause(self, provider: str) -> ProviderPause | None:
        """See ``Ledger.lift_pause``."""
        return self._pauses.pop(provider, None)

    def params_match(self, record: PayoutRecord, params: Mapping[str, Any]) -> bool:
        """See ``Ledger.params_match``."""
        row = f"{record.provider}/{record.key}"
        return self._recipients.matches(record.params_hash, record.params, params, row=row)

    def _out(self, row: _Row) -> PayoutRecord:
        """The row as callers see it: its recipient put back while it has one (read
        once per change of its parameters), in a record of its own."""
        if row.recipient is None:
            return _record(row, dict(row.params))
        if row.full is None:
            row.full = self._recipients.load(row.provider, row.key, row.params, row.recipient)
        return _record(row, dict(row.full))

    def _log(
        self,
        row: _Row,
        from_state: LedgerState | None,
        owner: str | None,
        note: str | None,
        at: float | None = None,
    ) -> None:
        """Append the row's move from ``from_state`` to its state now (``at``: when,
        its ``updated_at`` unless given), as ``history`` gives it back."""
        if from_state is not None and from_state is not row.state:
            self._begun += 1
        at = row.updated_at if at is None else at
        self._history.setdefault((row.provider, row.key), []).append(
            (from_state, row.state, at, owner, note)
        )

    def _insert(self, row: _Row, owner: str | None, note: str) -> None:
        """Store a new row and log its first transition."""
        self._begun += 1
        self._rows[(row.provider, row.key)] = row
        self._providers.setdefault(row.key, set()).add(row.provider)
        self._set_order_id(row, row.order_id)
        self._log(row, None, owner, note)

    def _set_order_id(self, row: _Row, order_id: str | None) -> None:
        """Give the row ``order_id``, and the index its new holder."""
        if row.order_id is not None and row.order_id != order_id:
            self._by_order_id.pop((row.provider, row.order_id), None)
        row.order_id = order_id
        if order_id is not None:
            self._by_order_id[(row.provider, order_id)] = row.key

    def _set_operation_id(self, row: _Row, operation_id: str | None) -> None:
        """Give the row ``operation_id`` -- unless another row of its provider holds
        it (``OperationTakenError``, before anything of the transition is written)."""
        if operation_id == row.operation_id:
            return
        self._check_operation(row.provider, row.key, operation_id)
        if row.operation_id is not None:
            self._by_operation.pop((row.provider, row.operation_id), None)
        if operation_id is not None:
            self._by_operation[(row.provider, operation_id)] = row.key
        row.operation_id = operation_id

    def _check_operation(self, provider: str, key: str, operation_id: str | None) -> None:
        """``OperationTakenError`` when another row of ``provider`` holds
        ``operation_id`` (whether or not the caller still holds its own row)."""
        if operation_id is None:
            return
        holder = self._by_operation.get((provider, operation_id))
        if holder is not None and holder != key:
            raise OperationTakenError(provider, key, operation_id, holder)

    @staticmethod
    def _lease_free(row: _Row, now: float) -> bool:
        return row.lease_owner is None or (row.lease_expires_at or 0.0) <= now

    def _claim(self, row: _Row, owner: str, lease_seconds: float, now: float) -> Claim:
        row.lease_owner = owner
        row.lease_expires_at = now + lease_seconds
        row.lease_token += 1
        return Claim(record=self._out(row), claimed=True)

    def _others(self, provider: str, key: str, now: float) -> list[Other]:
        """The key's rows under other providers (``ledger._keys``)."""
        rows = [self._rows[(p, key)] for p in self._providers.get(key, ()) if p != provider]
        return [Other(r.provider, r.state, not self._lease_free(r, now)) for r in rows]

    def _take_key(
        self, provider: str, key: str, now: float, owner: str | None, switch_provider: bool
    ) -> None:
        """Let ``key`` be recorded under ``provider`` (``ledger._keys``): cancel the
        refused rows it moves from, or raise ``IdempotencyConflictError``."""
        if key not in self._providers:  # a key seen under no provider yet
            return
        others = self._others(provider, key, now)
        for other in rows_to_cancel(key, others, switch_provider=switch_provider):
            row = self._rows[(other, key)]
            from_state = row.state
            row.state = LedgerState.CANCELLED
            row.reason = moved_note(provider)
            row.updated_at = now
            row.lease_owner = row.lease_expires_at = None
            row.lease_token += 1
            row.drop_recipient()
            self._log(row, from_state, owner, moved_note(provider))

    def _check_order_id(self, provider: str, key: str, order_id: str | None) -> None:
        if order_id is None:
            return
        holder = self._by_order_id.get((provider, order_id))
        if holder is not None and holder != key:
            raise IdempotencyConflictError(key, order_id=order_id)

    def _begin_again(
        self,
        row: _Row,
        params_hash: str,
        stored: Stored,
        order_id: str | None,
        now: float,
    ) -> LedgerState:
        """A refused row recorded again with ``stored``, pending (its caller claims it,
        or leaves it to a worker). Returns the state it left."""
        from_state = row.state
        row.keep(stored.params, stored.recipient)
        row.state = LedgerState.PENDING
        row.params_hash = params_hash
        self._set_order_id(row, order_id)
        row.reason = None
        row.updated_at = now
        return from_state

    async def begin(
        self,
        provider: str,
        key: str,
        params_hash: str,
        params: Mapping[str, Any],
        *,
        owner: str,
        lease_seconds: float,
        order_id: str | None = None,
        take_over: Collection[str] = (),
        sending: bool = False,
        switch_provider: bool = False,
        provider_account: str | None = None,
    ) -> Claim:
        """See ``Ledger.begin``."""
        self._loop.moved()
        self._recipients.check_digest(params_hash)
        stored = self._recipients.store(provider, key, params, order_id=order_id)
        now = time.time()
        self._check_order_id(provider, key, order_id)
        row = self._rows.get((provider, key))
        if row is None:
            self._take_key(provider, key, now, owner, switch_provider)
            row = _Row(
                stored.recipient,
                provider=provider,
                key=key,
                params_hash=params_hash,
                params=stored.params,
                state=LedgerState.SENDING if sending else LedgerState.PENDING,
                order_id=order_id,
                attempts=int(sending),
                lease_owner=owner,
                lease_expires_at=now + lease_seconds,
                lease_token=1,
                created_at=now,
                updated_at=now,
                provider_account=provider_account,
            )
            row.full = dict(params)  # what load() would put back: the params given
            self._insert(row, owner, "intent recorded")
            return Claim(record=self._out(row), claimed=True, created=True)
        if row.state is LedgerState.REFUSED:
            live_elsewhere(key, self._others(provider, key, now))
            from_state = self._begin_again(row, params_hash, stored, order_id, now)
            row.provider_account = provider_account
            claim = self._claim(row, owner, lease_seconds, now)
            self._log(row, from_state, owner, "intent recorded again after a refusal")
            return claim
        found = self._out(row)
        if not self._recipients.matches(
            found.params_hash, found.params, params, row=f"{provider}/{key}", digest=params_hash
        ):
            raise IdempotencyConflictError(key)
        free = self._lease_free(row, now) or row.lease_owner in take_over
        if row.state not in ACTIVE_STATES or not free:
            return Claim(record=found, claimed=False)
        return self._claim(row, owner, lease_seconds, now)

    async def transition(
        self,
        provider: str,
        key: str,
        *,
        owner: str,
        token: int,
        state: LedgerState,
        lease_seconds: float,
        note: str | None = None,
        add_attempt: bool = False,
        release: bool = False,
        **changes: Any,
    ) -> PayoutRecord:
        """See ``Ledger.transition``."""
        changes = check_changes(changes)
        now = time.time()
        try:
            row = self._held(provider, key, owner, token)
        except LeaseLostError:
            self._check_operation(provider, key, changes.get("operation_id"))
            raise
        from_state = row.state
        if type(state) is not LedgerState:
            state = LedgerState(state)
        ends = state.is_final or release  # a final row is nobody's: its lease ends with it
        if "operation_id" in changes:
            self._set_operation_id(row, changes.pop("operation_id"))
        if "order_id" in changes:
            self._set_order_id(row, changes.pop("order_id"))
        for name, value in changes.items():
            setattr(row, name, value)
        row.state = state
        if add_attempt:
            row.attempts += 1
        row.lease_owner = None if ends else owner
        row.lease_expires_at = None if ends else now + lease_seconds
        row.updated_at = now
        if state.is_final:  # it keeps only its masked recipient
            row.drop_recipient()
        self._log(row, from_state, owner, note)
        return self._out(row)

    def _held(self, provider: str, key: str, owner: str, token: int) -> _Row:
        row = self._rows.get((provider, key))
        held = row is not None and (row.lease_owner, row.lease_token) == (owner, token)
        if row is None or not held or row.state.is_final:
            raise LeaseLostError.not_held(provider, key, owner, token)
        return row

    async def renew(
        self, provider: str, key: str, *, owner: str, token: int, lease_seconds: float
    ) -> None:
        """See ``Ledger.renew``."""
        now = time.time()
        self._held(provider, key, owner, token).lease_expires_at = now + lease_seconds

    async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
        """See ``Ledger.release``."""
        row = self._rows.get((provider, key))
        if row is not None and (row.lease_owner, row.lease_token) == (owner, token):
            row.lease_owner = row.lease_expires_at = None

    async def claim_stranded(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        provider: str | None = None,
        states: frozenset[LedgerState] = ACTIVE_STATES,
        exclude: Collection[str] = (),
        dead_owners: Collection[str] = (),
    ) -> list[Claim]:
        """See ``Ledger.claim_stranded``."""
        self._loop.moved()
        now = time.time()
        excluded, dead = frozenset(exclude), frozenset(dead_owners)
        claims: list[Claim] = []
        for row in sorted(self._rows.values(), key=lambda r: r.created_at):
            if len(claims) >= limit:
                break
            if provider is not None and row.provider != provider:
                continue
            if row.state not in states or row.key in excluded:
                continue
            if not self._lease_free(row, now) and row.lease_owner not in dead:
                continue
            claims.append(self._claim(row, owner, lease_seconds, now))
        return claims

    async def lease_holders(self, *, provider: str | None = None) -> list[LeaseHolder]:
        """See ``Ledger.lease_holders``."""
        now = time.time()
        held: dict[str, tuple[int, float]] = {}
        for row in self._rows.values():
            if provider is not None and row.provider != provider:
                continue
            if row.state.is_final or self._lease_free(row, now):
                continue
            assert row.lease_owner is not None and row.lease_expires_at is not None
            rows, latest = held.get(row.lease_owner, (0, 0.0))
            held[row.lease_owner] = (rows + 1, max(latest, row.lease_expires_at))
        return [
            LeaseHolder(owner=owner, rows=rows, expires_at=expires)
            for owner, (rows, expires) in sorted(held.items())
        ]

    async def enqueue(
        self, provider: str, intents: Sequence[Intent], *, switch_provider: bool = False
    ) -> list[Enqueued]:
        """See ``Ledger.enqueue``."""
        self._loop.moved()
        now = time.time()
        results = [self._enqueue_one(provider, i, now, switch_provider) for i in intents]
        if any(r.outcome in (EnqueueOutcome.NEW, EnqueueOutcome.AGAIN) for r in results):
            self._listeners.wake(provider)
        return results

    def _enqueue_one(
        self, provider: str, intent: Intent, now: float, switch_provider: bool
    ) -> Enqueued:
        """``begin``'s rules for one intent, without a lease."""
        key = intent.key
        digest = self._recipients.params_hash(intent.params)
        stored = self._recipients.store(provider, key, intent.params, order_id=intent.order_id)
        row = self._rows.get((provider, key))
        holder = None
        if intent.order_id is not None:
            holder = self._by_order_id.get((provider, intent.order_id))
        if holder is not None and holder != key:
            state = None if row is None else row.state
            return Enqueued(key, EnqueueOutcome.CONFLICT, state)
        if row is None:
            try:
                self._take_key(provider, key, now, None, switch_provider)
            except IdempotencyConflictError as error:
                return _elsewhere(error)
            row = _Row(
                stored.recipient,
                provider=provider,
                key=key,
                params_hash=digest,
                params=stored.params,
                state=LedgerState.PENDING,
                order_id=intent.order_id,
                created_at=now,
                updated_at=now,
            )
            self._insert(row, None, "intent recorded (enqueued)")
            return Enqueued(key, EnqueueOutcome.NEW, row.state)
        if row.state is LedgerState.REFUSED:
            try:
                live_elsewhere(key, self._others(provider, key, now))
            except IdempotencyConflictError as error:
                return _elsewhere(error)
            from_state = self._begin_again(row, digest, stored, intent.order_id, now)
            row.lease_owner = row.lease_expires_at = None
            row.lease_token += 1
            note = "intent recorded again after a refusal (enqueued)"
            self._log(row, from_state, None, note)
            return Enqueued(key, EnqueueOutcome.AGAIN, row.state)
        found = self._out(row)
        if not self._recipients.matches(
            found.params_hash, found.params, intent.params, row=f"{provider}/{key}", digest=digest
        ):
            return Enqueued(key, EnqueueOutcome.CONFLICT, row.state)
        return Enqueued(key, EnqueueOutcome.EXISTING, row.state)

    async def listen_for_work(self, provider: str | None = None) -> WorkListener:
        """See ``Ledger.listen_for_work`` (this object's ``enqueue`` and
        ``announce_work`` only: nothing else can reach it)."""
        return self._listeners.listener(provider)

    async def announce_work(self, provider: str) -> None:
        """See ``Ledger.announce_work``."""
        self._listeners.wake(provider)

    async def settle_order(
        self,
        provider: str,
        order_id: str,
        *,
        state: LedgerState,
        provider_status: str,
        note: str | None = None,
        reason: str | None = None,
        params_hash: str | None = None,
    ) -> Settlement | None:
        """See ``Ledger.settle_order``."""
        key = self._by_order_id.get((provider, order_id))
        if key is None:
            return None
        row = self._rows[(provider, key)]
        checked = params_hash is None or (row.params_hash == params_hash and row.attempts > 0)
        if row.state.is_final or not checked:
            return Settlement(self._out(row), None)
        from_state = row.state
        row.state = LedgerState(state)
        row.provider_status = provider_status
        if reason is not None:
            row.reason = scrub(reason)
        row.updated_at = time.time()
        row.lease_owner = row.lease_expires_at = None
        if row.state.is_final:
            row.drop_recipient()
        self._log(row, from_state, None, note)
        return Settlement(self._out(row), from_state)

    async def find_order(self, provider: str, order_id: str) -> PayoutRecord | None:
        """See ``Ledger.find_order``."""
        key = self._by_order_id.get((provider, order_id))
        return None if key is None else await self.get(provider, key)

    async def note(self, provider: str, key: str, note: str) -> None:
        """See ``Ledger.note``."""
        row = self._rows.get((provider, key))
        if row is not None:
            self._log(row, row.state, None, note, at=time.time())

    async def get(self, provider: str, key: str) -> PayoutRecord | None:
        """See ``Ledger.get``."""
        row = self._rows.get((provider, key))
        return None if row is None else self._out(row)

    async def history(self, provider: str, key: str) -> list[Transition]:
        """See ``Ledger.history``."""
        return [
            Transition(provider, key, from_state, to_state, at, owner, note)
            for from_state, to_state, at, owner, note in self._history.get((provider, key), [])
        ]

    async def records(
        self,
        *,
        provider: str | None = None,
        state: LedgerState | None = None,
        limit: int | None = None,
    ) -> list[PayoutRecord]:
        """See ``Ledger.records``."""
        rows = [
            self._out(row)
            for row in sorted(self._rows.values(), key=lambda r: r.created_at)
            if (provider is None or row.provider == provider)
            and (state is None or row.state == state)
        ]
        return rows if limit is None else rows[:limit]

    async def counts(self, *, provider: str | None = None) -> dict[LedgerState, int]:
        """See ``Ledger.counts``."""
        result: dict[LedgerState, int] = {}
        for row in self._rows.values():
            if provider is None or row.provider == provider:
                result[row.state] = result.get(row.state, 0) + 1
        return result

    async def identity(self) -> LedgerIdentity:
        """See ``Ledger.identity`` (made with this object; the mark counts its rows)."""
        return LedgerIdentity(self._id, self._begun)

    async def shared_keys(self, *, limit: int = 100) -> list[str]:
        """See ``Ledger.shared_keys`` (a ``MemoryLedger`` never holds one)."""
        return []


def _elsewhere(error: IdempotencyConflictError) -> Enqueued:
    """``enqueue``'s outcome for a key that belongs to another provider."""
    state = None if error.state is None else LedgerState(error.state)
    return Enqueued(error.key, EnqueueOutcome.CONFLICT, state, provider=error.provider)
