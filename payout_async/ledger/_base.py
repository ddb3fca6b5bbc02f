"""The idempotency ledger's contract: records, states, and the ``Ledger`` protocol.

Modelled on rocket-rides-atomic's ``idempotency_keys``: one row per (provider, key)
with the request's parameters and their hash, a lease (owner and expiry) so that one
worker at a time drives a row, and a state that names the last durable step -- the
recovery point from which ``Payouts.resume()`` re-drives the same code path. Every
change of state also appends a ``Transition`` to the row's history.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._errors import ConfigurationError, PayoutError
from ._pauses import ProviderPause
from ._recipient import plain_hash

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "PARKED_STATES",
    "Claim",
    "EnqueueOutcome",
    "Enqueued",
    "Intent",
    "LeaseHolder",
    "LeaseLostError",
    "Ledger",
    "LedgerIdentity",
    "LedgerState",
    "PayoutRecord",
    "Transition",
    "WorkListener",
    "params_hash",
]


class LedgerState(enum.StrEnum):
    """Recovery points of a payout, in the order a payout passes them."""

    PENDING = "pending"  # intent recorded; nothing sent
    SENDING = "sending"  # the create request may be in flight
    CREATED = "created"  # IntellectMoney: operation id recorded, not executed
    EXECUTING = "executing"  # IntellectMoney: the execute request may be in flight
    PROCESSING = "processing"  # money sent; waiting for the provider's final status
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # IntellectMoney operation deleted before execution
    NEEDS_ATTENTION = "needs_attention"  # no rule can settle it; ``reason`` says why
    REFUSED = "refused"  # the provider refused it and nothing exists: the key may pay again

    @functools.cached_property  # (read on every write: an attribute once read)
    def is_final(self) -> bool:
        """True for succeeded, failed and cancelled: nothing will change them."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({LedgerState.SUCCEEDED, LedgerState.FAILED, LedgerState.CANCELLED})
#: States ``resume()`` drives on; ``needs_attention`` waits for ``reconcile()``.
ACTIVE_STATES = frozenset(
    {
        LedgerState.PENDING,
        LedgerState.SENDING,
        LedgerState.CREATED,
        LedgerState.EXECUTING,
        LedgerState.PROCESSING,
    }
)
#: States ``reconcile()`` drives on: parked rows, and refused ones (the cause may be fixed).
PARKED_STATES = frozenset({LedgerState.NEEDS_ATTENTION, LedgerState.REFUSED})


class LeaseLostError(PayoutError):
    """The row is no longer leased to this drive (another claim took it, the lease
    expired, or the row is already final)."""

    @classmethod
    def not_held(cls, provider: str, key: str, owner: str, token: int) -> LeaseLostError:
        """The error of a write refused because ``provider/key`` is not held by
        ``owner`` under claim ``token``."""
        return cls(f"{provider}/{key} is not leased to {owner} (claim {token})")


def params_hash(params: Mapping[str, Any]) -> str:
    """A stable SHA-256 of a payout's parameters (JSON, sorted keys), in hex: the
    fingerprint a ledger without an encryption key records. A ledger with a key records
    a keyed one: ask the ledger (``Ledger.params_hash``)."""
    return plain_hash(params)


# Not slotted, as the other classes made per payout (a write's record, a result, an
# answer): a frozen slotted class's ``__init__`` sets each field through
# ``object.__setattr__``, a frozen one with a ``__dict__`` stores them straight into it
# (2.4 against 1.0 us for this class's 19 fields).
@attrs.frozen(slots=False)
class PayoutRecord:
    """One payout's row. Times are UNIX seconds.

    ``operation_id`` is IntellectMoney's PayoutOperationId or Enot's payoff_id;
    ``order_id`` is the Enot order_id (unique per provider). ``lease_token`` is the
    fencing token of the current claim: the ledger raises it on every claim, and every
    transition, renewal and release must present it. ``unknown_since`` records when a
    money-moving request of the row first had an unknown outcome (Enot: a payoff may
    exist); no decision compares it with a clock.

    ``params`` are the request's parameters as ``begin`` was given them -- but once the
    row is final, its recipient (``pan``, ``account``, ``wallet_to``) is masked (first
    six and last four characters of a card) and ``params_hash`` is ``"masked"``: a
    finished payout keeps nothing its full recipient can be recovered from. Compare
    parameters with ``Ledger.params_match``.

    ``untrusted`` says why a live row must not move money, or is None: the row was
    altered outside payout-async (it fails its signature or fingerprint, or is clear or
    unsigned in a ledger with a key), or its recipient cannot be read with this
    ledger's keys -- then ``params`` hold the recipient masked. ``Payouts`` sets such a
    row aside (``needs_attention``) instead of sending anything for it.
    """

    provider: str
    key: str
    params_hash: str
    params: Mapping[str, Any] = attrs.field(repr=False)
    state: LedgerState
    operation_id: str | None = None
    order_id: str | None = None
    provider_status: str | None = None
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    lease_token: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    last_error: str | None = None
    reason: str | None = None
    unknown_since: float | None = None
    #: Which API generation of the provider created the row's operation, where the
    #: provider has two (IntellectMoney: ``"legacy"`` or ``"current"``); None when
    #: nothing records it (no operation yet, or a row written before it was recorded).
    provider_api: str | None = None
    #: The provider account the row's money-moving request went through (Enot: the
    #: ``user_id``), recorded with it; None when nothing records it (IntellectMoney, no
    #: request yet, or a row written before it was recorded).
    provider_account: str | None = None
    untrusted: str | None = None


@attrs.frozen
class Transition:
    """One entry of a row's append-only history."""

    provider: str
    key: str
    from_state: LedgerState | None
    to_state: LedgerState
    at: float
    owner: str | None = None
    note: str | None = None


@attrs.frozen(slots=False)
class Claim:
    """What a claim found: the row, and whether this drive now holds it.

    When ``claimed``, ``record.lease_owner`` and ``record.lease_token`` are the lease to
    present to ``transition``/``renew``/``release``. ``created``: this call recorded
    the row (nothing was sent for it before).
    """

    record: PayoutRecord
    claimed: bool
    created: bool = False


@attrs.frozen
class Settlement:
    """What ``Ledger.settle_order`` found: the row, and the state this call moved it
    from (None when the row was final already and was left as it is)."""

    record: PayoutRecord
    moved_from: LedgerState | None


@attrs.frozen
class LedgerIdentity:
    """Which ledger this is, and how far it has got (``Ledger.identity``).

    ``ledger_id`` is made at random when the ledger is created (or first opened by a
    version that has identities): a ledger recreated at the same place has another.
    ``mark`` grows with every row begun and every change of a row's state, and never
    goes down while the ledger is used: a copy restored from a backup has a lower one
    than the ledger it was taken from had since -- also when the backup lacks only
    steps of rows it holds (an IntellectMoney row restored to ``pending`` after it was
    executed would be paid again)."""

    ledger_id: str
    mark: int


@attrs.frozen
class LeaseHolder:
    """Who holds leases on live rows, as ``Ledger.lease_holders`` reports it."""

    owner: str
    rows: int
    expires_at: float  # the latest expiry among its rows (ledger clock, UNIX seconds)


@attrs.frozen
class Intent:
    """A payout to record for workers (``Ledger.enqueue``): what ``begin`` records,
    without a lease. The ledger fingerprints ``params`` itself (``params_hash``)."""

    key: str
    params: Mapping[str, Any] = attrs.field(repr=False)
    order_id: str | None = None


class EnqueueOutcome(enum.StrEnum):
    """What ``Ledger.enqueue`` did with one intent."""

    NEW = "new"  # recorded: pending, leased to nobody
    AGAIN = "again"  # a refused row recorded again with these parameters (as ``begin`` does)
    EXISTING = "existing"  # already there with these parameters: left as it is
    CONFLICT = "conflict"  # the key has other parameters, or the order_id another key


@attrs.frozen
class Enqueued:
    """One intent's outcome; ``state`` is the row's state after the call (``None``
    when there is no row under this key: its order_id belongs to another key), or the
    state of the key's row under another ``provider``."""

    key: str
    outcome: EnqueueOutcome
    state: LedgerState | None
    #: For a ``CONFLICT`` over the provider: the provider the key already belongs to
    #: (``state`` is then that row's state).
    provider: str | None = None


class WorkListener(Protocol):
    """Wake-ups for an idle worker (``Ledger.listen_for_work``)."""

    async def wait(self, seconds: float) -> bool:
        """True as soon as work may have arrived since this listener was made or its
        previous ``wait`` returned True (an ``enqueue`` or ``announce_work``; a
        backend may also wake it for less); False after ``seconds`` without."""
        ...

    async def aclose(self) -> None:
        """Stop listening."""
        ...


#: Fields ``Ledger.transition`` may change besides ``state``.
MUTABLE_FIELDS = frozenset(
    {
        "operation_id",
        "order_id",
        "provider_status",
        "last_error",
        "reason",
        "unknown_since",
        "provider_api",
        "provider_account",
    }
)


def _no_pauses(ledger: object) -> ConfigurationError:
    """What a ledger without provider pauses raises when asked to keep one."""
    return ConfigurationError(f"{ledger!r} cannot keep provider pauses")


class Ledger(Protocol):
    """Durable idempotency records. Every method is atomic on its own.

    A ledger given an ``encryption_key`` keeps each row's recipient encrypted (AES-GCM)
    and fingerprints parameters with an HMAC keyed by it; without one the recipient is
    kept in clear until the row is final. Either way a final row keeps only the masked
    recipient. A row written with a key cannot be read without it: ``LedgerKeyError``.
    """

    def params_hash(self, params: Mapping[str, Any]) -> str:
        """The fingerprint ``begin`` records for ``params``: an HMAC-SHA256 keyed by
        this ledger's encryption key (``hmac-sha256:<key id>:<hex>``), or a plain
        SHA-256 in hex when it has none. Pass it to ``begin``."""
        ...

    def params_match(self, record: PayoutRecord, params: Mapping[str, Any]) -> bool:
        """Whether ``record`` was begun with ``params``: by its fingerprint (a plain one
        written before the ledger had its key still compares), or for a final row by
        its masked parameters. ``LedgerKeyError`` when the row was fingerprinted with
        a key this ledger does not have."""
        ...

    async def open(self) -> None:
        """Create the schema if needed and connect. Idempotent."""

    async def aclose(self) -> None:
        """Release connections."""

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
        """Record a payout's intent, or find the existing row.

        ``params_hash`` is ``self.params_hash(params)``. A new row starts ``pending``,
        leased to ``owner`` with a new token -- or, with ``sending``, ``sending`` with
        one attempt: the caller sends its first money-moving request next, with nothing
        in between, so the intent and that recovery point are one write (an existing
        row is never moved by it). An existing row begun with other parameters
        (``params_match``) raises ``IdempotencyConflictError`` -- unless it is
        ``refused`` (nothing exists at the provider), whose parameters are then
        replaced. An ``order_id`` already recorded for another key raises
        ``IdempotencyConflictError``. An existing ``refused`` row, or an active one whose
        lease is free or expired, is claimed (``claimed`` True, a new token); a final or
        ``needs_attention`` row, or one whose lease is live -- whoever holds it, this
        ``owner`` included, unless it is one of ``take_over`` (owners known to be dead)
        -- is returned unclaimed.

        A key is one payout, whatever the provider (``ledger._keys``): a key that has
        a row under another provider raises ``IdempotencyConflictError`` (its
        ``provider`` and ``state`` are that row's) -- unless ``switch_provider`` and
        that row is ``failed``, ``cancelled``, or ``refused`` and not leased (it is then
        cancelled in the same write). Of two concurrent begins of one key under two
        providers, one records it and the other raises.

        ``provider_account`` is recorded on a row this call creates, or begins again
        after a refusal (``PayoutRecord.provider_account``).
        """
        ...

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
        """Move a row leased to (``owner``, ``token``) to ``state``, set ``changes``
        (names from ``MUTABLE_FIELDS``), extend the lease (end it, for a final state or
        with ``release``: the drive gives the row back in the same write) and append a
        ``Transition``. A final state masks the row's recipient in the same
        write (see ``PayoutRecord``).

        Raises ``LeaseLostError`` when the row's lease is not (``owner``, ``token``)
        -- released, or claimed again since -- or the row is final. A lease that expired
        but that nobody has claimed since is still its holder's: fencing is by token.
        ``add_attempt`` adds one to ``attempts`` (a money-moving request is about to be
        sent). Raises ``OperationTakenError``, writing nothing, when ``operation_id``
        names an operation another row of the provider holds -- also to a caller whose
        lease is gone: an operation or payoff is one payout's, whatever an answer says.

        A transition that has started completes even if the caller is cancelled
        meanwhile: the recovery point it writes (an operation id just learnt, say) is
        not lost with the cancelled task.
        """
        ...

    async def renew(
        self, provider: str, key: str, *, owner: str, token: int, lease_seconds: float
    ) -> None:
        """Extend the lease (``owner``, ``token``) to ``lease_seconds`` from now, also
        when it has expired but nobody claimed the row since; ``LeaseLostError`` if it
        is no longer held."""
        ...

    async def release(self, provider: str, key: str, *, owner: str, token: int) -> None:
        """Give up the lease (``owner``, ``token``) (no-op when not held)."""
        ...

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
        """Lease to ``owner`` up to ``limit`` rows in ``states`` whose lease is free or
        expired -- or held by one of ``dead_owners`` -- oldest first, skipping keys in
        ``exclude``; each claim gets a new token, and each row goes to at most one
        caller."""
        ...

    async def lease_holders(self, *, provider: str | None = None) -> list[LeaseHolder]:
        """Owners of live (unexpired) leases on non-final rows, with how many rows each
        holds and when the last of them expires."""
        ...

    async def enqueue(
        self, provider: str, intents: Sequence[Intent], *, switch_provider: bool = False
    ) -> list[Enqueued]:
        """Record intents for workers to claim (``claim_stranded``), one outcome per
        intent, in order; nothing is sent.

        The rules are ``begin``'s, without a lease and without raising: a new key is
        recorded ``pending`` (its recipient kept as ``begin`` keeps it, its parameters
        fingerprinted with ``params_hash``) and leased to nobody (``NEW``); a
        ``refused`` row is recorded again with these parameters, unleased, its old
        claim fenced off (``AGAIN``); a row begun with these parameters
        (``params_match``) is left as it is (``EXISTING``); other parameters, an
        ``order_id`` that belongs to another key, or a key under another provider
        (``begin``'s rule, with ``switch_provider``) record nothing (``CONFLICT``). A key
        given twice counts as given twice, in order. Intents are written in a few
        transactions (each intent atomic on its own), and listeners
        (``listen_for_work``) are woken once they have committed.
        """
        ...

    async def listen_for_work(self, provider: str | None = None) -> WorkListener:
        """Start listening for work on ``provider``'s rows (all when None): intents
        enqueued or rows handed back (``announce_work``) from now on -- by this
        ledger object, and by other processes where the backend can tell (PostgreSQL:
        ``LISTEN``; SQLite: any commit to the file). Close the listener when done."""
        ...

    async def announce_work(self, provider: str) -> None:
        """Wake the listeners for ``provider`` (e.g. after rows were handed back)."""
        ...

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
        """Record a final provider status reported out of band (a webhook), whoever
        holds the lease (the lease ends; the recipient is masked; ``reason``, when
        given, is recorded with it). A row already final is left as is (repeated and
        out-of-order deliveries are harmless): its ``moved_from`` is None. With
        ``params_hash``, only a row that still has that fingerprint and has sent a
        money-moving request (``attempts`` > 0) is settled -- the row the caller
        checked the report against; any other is left as is (``moved_from`` None).
        None if the order_id is unknown."""
        ...

    async def find_order(self, provider: str, order_id: str) -> PayoutRecord | None:
        """The row that holds ``order_id`` (the latest, should there be several), or
        None."""
        ...

    async def note(self, provider: str, key: str, note: str) -> None:
        """Append ``note`` to the row's history without changing the row (a
        ``Transition`` from its state to its state): what was learnt about it and not
        acted on, such as a webhook that did not match it. No-op for an unknown row."""
        ...

    async def settle_by_order_id(
        self,
        provider: str,
        order_id: str,
        *,
        state: LedgerState,
        provider_status: str,
        note: str | None = None,
    ) -> PayoutRecord | None:
        """``settle_order``'s row, or None if the order_id is unknown."""
        settled = await self.settle_order(
            provider, order_id, state=state, provider_status=provider_status, note=note
        )
        return None if settled is None else settled.record

    async def get(self, provider: str, key: str) -> PayoutRecord | None:
        """The row for (provider, key), if any."""
        ...

    async def history(self, provider: str, key: str) -> list[Transition]:
        """The row's transitions, oldest first."""
        ...

    async def records(
        self,
        *,
        provider: str | None = None,
        state: LedgerState | None = None,
        limit: int | None = None,
    ) -> list[PayoutRecord]:
        """Rows, oldest first, optionally filtered."""
        ...

    async def counts(self, *, provider: str | None = None) -> dict[LedgerState, int]:
        """How many rows are in each state."""
        ...

    async def identity(self) -> LedgerIdentity:
        """This ledger's identity and high-water mark (see ``LedgerIdentity``)."""
        ...

    async def shared_keys(self, *, limit: int = 100) -> list[str]:
        """Up to ``limit`` keys (in order) that more than one provider's row still holds
        (none is failed or cancelled): only a ledger written before a key was one payout
        whatever the provider can hold them. Settle them by hand: a key held twice may
        have been paid twice."""
        ...

    async def pauses(self) -> list[ProviderPause]:
        """Every provider paused now (see ``ledger._pauses``), by provider."""
        raise _no_pauses(self)

    async def pause_of(self, provider: str) -> ProviderPause | None:
        """``provider``'s pause, or None when it is not paused."""
        return next((pause for pause in await self.pauses() if pause.provider == provider), None)

    async def pause_provider(
        self, provider: str, *, reason: str, by: str
    ) -> tuple[ProviderPause, bool]:
        """Pause ``provider`` unless it is paused already: every worker sharing this
        ledger stops sending to it. Returns the pause in force and whether this call
        made it (False: an earlier pause is kept as it was). ``reason`` is kept as one
        line of at most 500 characters."""
        raise _no_pauses(self)

    async def lift_pause(self, provider: str) -> ProviderPause | None:
        """End ``provider``'s pause; returns the pause it ended (None: it was not paused)."""
        raise _no_pauses(self)
