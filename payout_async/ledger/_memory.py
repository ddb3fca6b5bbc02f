"""``MemoryLedger``: the ledger contract in a dict, for tests and one-off scripts.

Nothing survives the process: use ``SQLiteLedger`` for anything that must resume.
Rows keep their recipient as the durable ledgers do (``ledger._recipient``): apart from
the parameters, sealed when there is an ``encryption_key``, dropped once final.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from .._errors import IdempotencyConflictError
from ._base import (
    ACTIVE_STATES,
    MUTABLE_FIELDS,
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
from ._keys import Other, live_elsewhere, moved_note, rows_to_cancel
from ._listen import ListenerHub
from ._pauses import ProviderPause
from ._recipient import MASKED_HASH, EncryptionKey, Recipients
from ._texts import kept_text, scrub, scrub_changes

__all__ = ["MemoryLedger"]


def _replacer() -> Callable[[PayoutRecord, dict[str, Any]], PayoutRecord]:
    """``attrs.evolve`` for ``PayoutRecord`` without its per-call look at the class:
    ``replace(record, changes)`` calls ``PayoutRecord(...)`` (so whatever ``__init__``
    checks is checked) with each field taken from ``changes`` or else from ``record``.
    Half the instructions of ``attrs.evolve``; the ledger makes one or two per call."""
    names = [field.name for field in attrs.fields(PayoutRecord)]
    fields = ", ".join(f"{name}=get({name!r}, record.{name})" for name in names)
    source = f"def replace(record, changes):\n    get = changes.get\n    return Record({fields})\n"
    namespace: dict[str, Any] = {"Record": PayoutRecord}
    exec(source, namespace)  # built from the class's own field names, nothing else
    replace: Callable[[PayoutRecord, dict[str, Any]], PayoutRecord] = namespace["replace"]
    return replace


_replace = _replacer()


class MemoryLedger(Ledger):
    """An in-process ``Ledger``. All operations are atomic because none awaits.

    ``encryption_key`` encrypts each row's recipient and keys its fingerprint, as
    ``SQLiteLedger``'s does."""

    def __init__(self, *, encryption_key: EncryptionKey | None = None) -> None:
        self._recipients = Recipients(encryption_key)
        #: Rows as kept: the recipient masked in ``params``, the full one in ``_kept``.
        self._rows: dict[tuple[str, str], PayoutRecord] = {}
        self._kept: dict[tuple[str, str], str | None] = {}
        #: The last parameters read back per row, with the masked params and kept text
        #: they were read from (``_out``: reading the recipient again for every call
        #: of a drive costs a ``json.loads``, or an unsealing, each time).
        self._read: dict[tuple[str, str], tuple[object, str, dict[str, Any]]] = {}
        self._history: dict[tuple[str, str], list[Transition]] = {}
        self._by_order_id: dict[tuple[str, str], str] = {}
        self._providers: dict[str, set[str]] = {}  # each key's providers
        self._id = uuid.uuid4().hex
        self._begun = 0  # rows inserted and changes of state (the identity's mark)
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

    def _out(self, record: PayoutRecord) -> PayoutRecord:
        """The row as callers see it: its recipient put back while it has one."""
        row = (record.provider, record.key)
        kept = self._kept.get(row)
        if kept is None:
            self._read.pop(row, None)
            return record
        read = self._read.get(row)
        if read is None or read[0] is not record.params or read[1] is not kept:
            params = self._recipients.load(record.provider, record.key, record.params, kept)
            read = self._read[row] = (record.params, kept, params)
        return _replace(record, {"params": dict(read[2])})

    def _drop_recipient(self, record: PayoutRecord) -> PayoutRecord:
        """A final row keeps only its masked recipient."""
        self._kept.pop((record.provider, record.key), None)
        return _replace(record, {"params_hash": MASKED_HASH})

    def _log(
        self,
        record: PayoutRecord,
        from_state: LedgerState | None,
        owner: str | None,
        note: str | None,
    ) -> None:
        if from_state is not None and from_state is not record.state:
            self._begun += 1
        self._history.setdefault((record.provider, record.key), []).append(
            Transition(
                provider=record.provider,
                key=record.key,
                from_state=from_state,
                to_state=record.state,
                at=record.updated_at,
                owner=owner,
                note=note,
            )
        )

    def _insert(
        self, record: PayoutRecord, recipient: str | None, owner: str | None, note: str
    ) -> PayoutRecord:
        """Store a new row, keep its recipient apart and log its first transition."""
        self._kept[(record.provider, record.key)] = recipient
        self._begun += 1
        stored = self._store(record)
        self._log(stored, None, owner, note)
        return stored

    def _store(self, record: PayoutRecord) -> PayoutRecord:
        previous = self._rows.get((record.provider, record.key))
        if previous is not None and previous.order_id not in (None, record.order_id):
            del self._by_order_id[(previous.provider, previous.order_id)]
        self._rows[(record.provider, record.key)] = record
        self._providers.setdefault(record.key, set()).add(record.provider)
        if record.order_id is not None:
            self._by_order_id[(record.provider, record.order_id)] = record.key
        return record

    @staticmethod
    def _lease_free(record: PayoutRecord, now: float) -> bool:
        return record.lease_owner is None or (record.lease_expires_at or 0.0) <= now

    def _claim(
        self, record: PayoutRecord, owner: str, lease_seconds: float, now: float, **changes: Any
    ) -> Claim:
        changes.update(
            lease_owner=owner,
            lease_expires_at=now + lease_seconds,
            lease_token=record.lease_token + 1,
        )
        claimed = self._store(_replace(record, changes))
        return Claim(record=self._out(claimed), claimed=True)

    def _others(self, provider: str, key: str, now: float) -> list[Other]:
        """The key's rows under other providers (``ledger._keys``)."""
        rows = [self._rows[(p, key)] for p in self._providers.get(key, ()) if p != provider]
        return [Other(r.provider, r.state, not self._lease_free(r, now)) for r in rows]

    def _take_key(
        self, provider: str, key: str, now: float, owner: str | None, switch_provider: bool
    ) -> None:
        """Let ``key`` be recorded under ``provider`` (``ledger._keys``): cancel the
        refused rows it moves from, or raise ``IdempotencyConflictError``."""
        others = self._others(provider, key, now)
        for other in rows_to_cancel(key, others, switch_provider=switch_provider):
            record = self._rows[(other, key)]
            moved = attrs.evolve(
                record,
                state=LedgerState.CANCELLED,
                reason=moved_note(provider),
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
                lease_token=record.lease_token + 1,
            )
            self._store(self._drop_recipient(moved))
            self._log(moved, record.state, owner, moved_note(provider))

    def _check_order_id(self, provider: str, key: str, order_id: str | None) -> None:
        if order_id is None:
            return
        holder = self._by_order_id.get((provider, order_id))
        if holder is not None and holder != key:
            raise IdempotencyConflictError(key, order_id=order_id)

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
    ) -> Claim:
        """See ``Ledger.begin``."""
        self._recipients.check_digest(params_hash)
        stored = self._recipients.store(provider, key, params, order_id=order_id)
        now = time.time()
        self._check_order_id(provider, key, order_id)
        record = self._rows.get((provider, key))
        if record is None:
            self._take_key(provider, key, now, owner, switch_provider)
            record = self._insert(
                PayoutRecord(
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
                ),
                stored.recipient,
                owner,
                "intent recorded",
            )
            return Claim(record=self._out(record), claimed=True, created=True)
        if record.state is LedgerState.REFUSED:
            live_elsewhere(key, self._others(provider, key, now))
            self._kept[(provider, key)] = stored.recipient
            claim = self._claim(
                record,
                owner,
                lease_seconds,
                now,
                state=LedgerState.PENDING,
                params_hash=params_hash,
                params=stored.params,
                order_id=order_id,
                reason=None,
                updated_at=now,
            )
            self._log(claim.record, record.state, owner, "intent recorded again after a refusal")
            return claim
        found = self._out(record)
        if not self._recipients.matches(
            found.params_hash, found.params, params, row=f"{provider}/{key}", digest=params_hash
        ):
            raise IdempotencyConflictError(key)
        free = self._lease_free(record, now) or record.lease_owner in take_over
        if record.state not in ACTIVE_STATES or not free:
            return Claim(record=found, claimed=False)
        return self._claim(record, owner, lease_seconds, now)

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
        unknown = set(changes) - MUTABLE_FIELDS
        if unknown:
            raise TypeError(f"cannot change {sorted(unknown)}")
        changes = scrub_changes(changes)
        now = time.time()
        record = self._held(provider, key, owner, token)
        final = state.is_final
        ends = final or release  # a final row is nobody's: its lease ends with it
        changes.update(
            state=state,
            attempts=record.attempts + 1 if add_attempt else record.attempts,
            lease_owner=None if ends else owner,
            lease_expires_at=None if ends else now + lease_seconds,
            updated_at=now,
        )
        if final:  # it keeps only its masked recipient
            self._kept.pop((provider, key), None)
            changes["params_hash"] = MASKED_HASH
        updated = _replace(record, changes)
        self._store(updated)
        self._log(updated, record.state, owner, note)
        return self._out(updated)

    def _held(self, provider: str, key: str, owner: str, token: int) -> PayoutRecord:
        record = self._rows.get((provider, key))
        if (
            record is None
            or record.state.is_final
            or record.lease_owner != owner
            or record.lease_token != token
        ):
            raise LeaseLostError(f"{provider}/{key} is not leased to {owner} (claim {token})")
        return record

    async def renew(
        self, provider: str, key: str, *, owner: str, token: int, lease_seconds: float
    ) -> None:
        """See ``Ledger.renew``."""
        now = time.time()
        record = self._held(provider, key, owner, token)
        self._store(_replace(record, {"lease_expires_at": now + lease_seconds}))

    async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
        """See ``Ledger.release``."""
        record = self._rows.get((provider, key))
        if record is not None and (record.lease_owner, record.lease_token) == (owner, token):
            self._store(_replace(record, {"lease_owner": None, "lease_expires_at": None}))

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
        now = time.time()
        excluded, dead = frozenset(exclude), frozenset(dead_owners)
        claims: list[Claim] = []
        for record in sorted(self._rows.values(), key=lambda r: r.created_at):
            if len(claims) >= limit:
                break
            if provider is not None and record.provider != provider:
                continue
            if record.state not in states or record.key in excluded:
                continue
            if not self._lease_free(record, now) and record.lease_owner not in dead:
                continue
            claims.append(self._claim(record, owner, lease_seconds, now))
        return claims

    async def lease_holders(self, *, provider: str | None = None) -> list[LeaseHolder]:
        """See ``Ledger.lease_holders``."""
        now = time.time()
        held: dict[str, tuple[int, float]] = {}
        for record in self._rows.values():
            if provider is not None and record.provider != provider:
                continue
            if record.state.is_final or self._lease_free(record, now):
                continue
            assert record.lease_owner is not None and record.lease_expires_at is not None
            rows, latest = held.get(record.lease_owner, (0, 0.0))
            held[record.lease_owner] = (rows + 1, max(latest, record.lease_expires_at))
        return [
            LeaseHolder(owner=owner, rows=rows, expires_at=expires)
            for owner, (rows, expires) in sorted(held.items())
        ]

    async def enqueue(
        self, provider: str, intents: Sequence[Intent], *, switch_provider: bool = False
    ) -> list[Enqueued]:
        """See ``Ledger.enqueue``."""
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
        record = self._rows.get((provider, key))
        holder = None
        if intent.order_id is not None:
            holder = self._by_order_id.get((provider, intent.order_id))
        if holder is not None and holder != key:
            state = None if record is None else record.state
            return Enqueued(key, EnqueueOutcome.CONFLICT, state)
        if record is None:
            try:
                self._take_key(provider, key, now, None, switch_provider)
            except IdempotencyConflictError as error:
                return _elsewhere(error)
            record = self._insert(
                PayoutRecord(
                    provider=provider,
                    key=key,
                    params_hash=digest,
                    params=stored.params,
                    state=LedgerState.PENDING,
                    order_id=intent.order_id,
                    created_at=now,
                    updated_at=now,
                ),
                stored.recipient,
                None,
                "intent recorded (enqueued)",
            )
            return Enqueued(key, EnqueueOutcome.NEW, record.state)
        if record.state is LedgerState.REFUSED:
            try:
                live_elsewhere(key, self._others(provider, key, now))
            except IdempotencyConflictError as error:
                return _elsewhere(error)
            self._kept[(provider, key)] = stored.recipient
            again = self._store(
                attrs.evolve(
                    record,
                    state=LedgerState.PENDING,
                    params_hash=digest,
                    params=stored.params,
                    order_id=intent.order_id,
                    reason=None,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_token=record.lease_token + 1,
                )
            )
            note = "intent recorded again after a refusal (enqueued)"
            self._log(again, record.state, None, note)
            return Enqueued(key, EnqueueOutcome.AGAIN, again.state)
        found = self._out(record)
        if not self._recipients.matches(
            found.params_hash, found.params, intent.params, row=f"{provider}/{key}", digest=digest
        ):
            return Enqueued(key, EnqueueOutcome.CONFLICT, record.state)
        return Enqueued(key, EnqueueOutcome.EXISTING, record.state)

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
        record = self._rows[(provider, key)]
        checked = params_hash is None or (record.params_hash == params_hash and record.attempts > 0)
        if record.state.is_final or not checked:
            return Settlement(self._out(record), None)
        updated = attrs.evolve(
            record,
            state=state,
            provider_status=provider_status,
            reason=record.reason if reason is None else scrub(reason),
            updated_at=time.time(),
            lease_owner=None,
            lease_expires_at=None,
        )
        if LedgerState(state).is_final:
            updated = self._drop_recipient(updated)
        self._store(updated)
        self._log(updated, record.state, None, note)
        return Settlement(self._out(updated), record.state)

    async def find_order(self, provider: str, order_id: str) -> PayoutRecord | None:
        """See ``Ledger.find_order``."""
        key = self._by_order_id.get((provider, order_id))
        return None if key is None else await self.get(provider, key)

    async def note(self, provider: str, key: str, note: str) -> None:
        """See ``Ledger.note``."""
        record = self._rows.get((provider, key))
        if record is not None:
            self._log(attrs.evolve(record, updated_at=time.time()), record.state, None, note)

    async def get(self, provider: str, key: str) -> PayoutRecord | None:
        """See ``Ledger.get``."""
        record = self._rows.get((provider, key))
        return None if record is None else self._out(record)

    async def history(self, provider: str, key: str) -> list[Transition]:
        """See ``Ledger.history``."""
        return list(self._history.get((provider, key), []))

    async def records(
        self,
        *,
        provider: str | None = None,
        state: LedgerState | None = None,
        limit: int | None = None,
    ) -> list[PayoutRecord]:
        """See ``Ledger.records``."""
        rows = [
            self._out(record)
            for record in sorted(self._rows.values(), key=lambda r: r.created_at)
            if (provider is None or record.provider == provider)
            and (state is None or record.state == state)
        ]
        return rows if limit is None else rows[:limit]

    async def counts(self, *, provider: str | None = None) -> dict[LedgerState, int]:
        """See ``Ledger.counts``."""
        result: dict[LedgerState, int] = {}
        for record in self._rows.values():
            if provider is None or record.provider == provider:
                result[record.state] = result.get(record.state, 0) + 1
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
