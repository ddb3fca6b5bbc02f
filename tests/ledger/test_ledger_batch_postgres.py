"""PostgresLedger's batched writes (``ledger._postgres_batch``, ``ledger._postgres_writes``):
concurrent inserts, transitions and renewals share one statement, and yet each caller
gets its own outcome -- its row, ``LeaseLostError``, a broken constraint -- while a
failure of the statement itself is every caller's, classified as exactly as a single
statement's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from payout_async import IdempotencyConflictError
from payout_async.ledger import (
    LeaseLostError,
    LedgerError,
    LedgerNotWrittenError,
    LedgerOutcomeUnknownError,
    LedgerState,
    PostgresLedger,
)
from payout_async.ledger._patience import STRAINED, Patience, one_payout
from payout_async.ledger._postgres_batch import Batcher, Pending
from payout_async.ledger._postgres_calls import is_integrity_violation

from .proxy import FaultyProxy
from .support import PG_DSN, drop_schema, require_postgres

SENDING = LedgerState.SENDING


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_postgres()
    name = f"ledger_batch_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await drop_schema(name)


@pytest.fixture
async def ledger(schema: str) -> AsyncIterator[PostgresLedger]:
    async with PostgresLedger(PG_DSN, schema=schema, command_timeout=5.0) as opened:
        yield opened


async def begin(ledger: PostgresLedger, key: str, *, order_id: str | None = None) -> int:
    claim = await ledger.begin(
        "enot", key, "h", {"amount": "1.00"}, owner="w", lease_seconds=30, order_id=order_id
    )
    return claim.record.lease_token


def move(
    ledger: PostgresLedger, key: str, token: int, state: LedgerState = SENDING, **changes: Any
) -> asyncio.Task[Any]:
    return asyncio.create_task(
        ledger.transition(
            "enot", key, owner="w", token=token, state=state, lease_seconds=30, **changes
        )
    )


def batches(ledger: PostgresLedger) -> int:
    return 0 if ledger._writes is None else ledger._writes.batches


@pytest.mark.postgres
async def test_concurrent_transitions_share_statements_and_only_lost_leases_fail(
    ledger: PostgresLedger,
) -> None:
    keys = [f"k{n:02}" for n in range(40)]
    tokens = {key: await begin(ledger, key) for key in keys}
    lost = set(keys[::4])
    for key in lost:  # another drive claims these rows: the first one's token is stale
        claim = await ledger.begin(
            "enot",
            key,
            "h",
            {"amount": "1.00"},
            owner="other",
            lease_seconds=30,
            take_over=["w"],
        )
        assert claim.claimed
    before = batches(ledger)
    results = await asyncio.gather(
        *(move(ledger, key, tokens[key], last_error=f"e-{key}") for key in keys),
        return_exceptions=True,
    )
    assert batches(ledger) - before < len(keys) // 4  # they were written together
    for key, result in zip(keys, results, strict=True):
        row = await ledger.get("enot", key)
        assert row is not None
        if key in lost:
            assert isinstance(result, LeaseLostError)
            assert (row.state, row.last_error, row.lease_owner) == (
                LedgerState.PENDING,
                None,
                "other",
            )
            assert len(await ledger.history("enot", key)) == 1
        else:
            assert not isinstance(result, BaseException)
            assert (result.key, result.state, result.last_error) == (key, SENDING, f"e-{key}")
            assert result == row
            history = await ledger.history("enot", key)
            assert [(t.from_state, t.to_state, t.owner) for t in history] == [
                (None, LedgerState.PENDING, "w"),
                (LedgerState.PENDING, SENDING, "w"),
            ]


@pytest.mark.postgres
async def test_two_transitions_of_one_row_queued_at_once_are_written_in_order(
    ledger: PostgresLedger,
) -> None:
    token, other = await begin(ledger, "k"), await begin(ledger, "j")
    first = move(ledger, "k", token, operation_id="op-1")
    second = move(ledger, "k", token, LedgerState.EXECUTING, provider_status="Created")
    third = move(ledger, "j", other)
    before = batches(ledger)
    _, done, _ = await asyncio.gather(first, second, third)
    assert batches(ledger) - before == 2  # k's second write waited for the next batch
    assert (done.state, done.operation_id, done.provider_status) == (
        LedgerState.EXECUTING,
        "op-1",
        "Created",
    )
    history = await ledger.history("enot", "k")
    assert [(t.from_state, t.to_state) for t in history] == [
        (None, LedgerState.PENDING),
        (LedgerState.PENDING, SENDING),
        (SENDING, LedgerState.EXECUTING),
    ]


@pytest.mark.postgres
async def test_final_and_released_writes_in_one_batch_end_their_leases(
    ledger: PostgresLedger, schema: str
) -> None:
    tokens = []
    for key in ("a", "b", "c"):
        params = {"amount": "1.00", "account": "79990001122"}
        claim = await ledger.begin("enot", key, "h", params, owner="w", lease_seconds=30)
        tokens.append(claim.record.lease_token)
    before = batches(ledger)
    done = await asyncio.gather(
        move(ledger, "a", tokens[0], LedgerState.SUCCEEDED, provider_status="Paid"),
        asyncio.create_task(
            ledger.transition(
                "enot",
                "b",
                owner="w",
                token=tokens[1],
                state=SENDING,
                lease_seconds=30,
                release=True,
                add_attempt=True,
            )
        ),
        move(ledger, "c", tokens[2], unknown_since=12.5, reason="why"),
    )
    assert batches(ledger) - before == 1  # the batched statement, not three lone ones
    a, b, c = done
    assert (a.state, a.lease_owner, a.lease_expires_at, a.params_hash) == (
        LedgerState.SUCCEEDED,
        None,
        None,
        "masked",
    )
    assert (b.state, b.lease_owner, b.lease_expires_at, b.attempts) == (SENDING, None, None, 1)
    assert b.params_hash == "h"
    assert (c.lease_owner, c.unknown_since, c.reason, c.attempts) == ("w", 12.5, "why", 0)
    assert c.lease_expires_at is not None and c.lease_expires_at > c.updated_at + 29
    pool = await ledger._connection_pool()
    kept = await pool.fetch(f'SELECT key, recipient FROM "{schema}".payouts ORDER BY key')
    assert [(row[0], row[1] is None) for row in kept] == [("a", True), ("b", False), ("c", False)]
    assert "79990001122" not in str(a.params) and b.params["account"] == "79990001122"


@pytest.mark.postgres
async def test_a_broken_constraint_is_only_its_writers_error(ledger: PostgresLedger) -> None:
    tokens = {key: await begin(ledger, key, order_id=f"o-{key}") for key in ("a", "b", "c")}
    before = batches(ledger)
    results = await asyncio.gather(
        move(ledger, "a", tokens["a"], order_id="o-new"),
        move(ledger, "b", tokens["b"], order_id="o-new"),  # taken by a, in the same batch
        move(ledger, "c", tokens["c"]),
        return_exceptions=True,
    )
    assert batches(ledger) - before == 4  # together, then each alone
    assert results[0].order_id == "o-new"
    assert isinstance(results[1], asyncpg.UniqueViolationError)
    assert results[2].state is SENDING
    row = await ledger.get("enot", "b")
    assert row is not None and (row.state, row.order_id) == (LedgerState.PENDING, "o-b")


@pytest.mark.postgres
async def test_a_caller_cancelled_in_flight_does_not_take_its_write_back(
    ledger: PostgresLedger, schema: str
) -> None:
    tokens = {key: await begin(ledger, key) for key in ("a", "b")}
    before = batches(ledger)
    blocker = await asyncpg.connect(PG_DSN)
    try:
        async with blocker.transaction():
            await blocker.execute(f"SELECT 1 FROM \"{schema}\".payouts WHERE key = 'a' FOR UPDATE")
            a, b = move(ledger, "a", tokens["a"]), move(ledger, "b", tokens["b"])
            await asyncio.sleep(0.2)  # one batch, waiting for a's row
            b.cancel()
            with pytest.raises(asyncio.CancelledError):
                await b
            assert not a.done()
        assert (await a).state is SENDING
    finally:
        await blocker.close()
    assert batches(ledger) - before == 1
    row = await ledger.get("enot", "b")
    assert row is not None and row.state is SENDING  # b's write landed all the same
    assert len(await ledger.history("enot", "b")) == 2


@pytest.mark.postgres
async def test_a_row_locked_elsewhere_all_along_fails_only_its_own_write(schema: str) -> None:
    async with PostgresLedger(PG_DSN, schema=schema, command_timeout=2.0) as ledger:
        tokens = {key: await begin(ledger, key) for key in ("a", "b", "c")}
        blocker = await asyncpg.connect(PG_DSN)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    f"SELECT 1 FROM \"{schema}\".payouts WHERE key = 'b' FOR UPDATE"
                )
                moves = [move(ledger, key, tokens[key]) for key in ("a", "b", "c")]
                a, b, c = await asyncio.gather(*moves, return_exceptions=True)
                assert ledger._writes is not None
                await ledger._writes.aclose(5.0)  # b's last try has ended too
        finally:
            await blocker.close()
        # The lock timeout, or b's last try still waiting when b's time ran out.
        assert isinstance(b, LedgerNotWrittenError | LedgerOutcomeUnknownError)
        assert not isinstance(a, BaseException) and not isinstance(c, BaseException)
        assert (a.state, c.state) == (SENDING, SENDING)
        row = await ledger.get("enot", "b")
        assert row is not None
        if isinstance(b, LedgerNotWrittenError):  # else its last try may have landed
            assert row.state is LedgerState.PENDING


@pytest.mark.postgres
async def test_a_connection_cut_under_a_batch_leaves_every_caller_unknown(
    schema: str,
) -> None:
    async with (
        FaultyProxy(PG_DSN) as proxy,
        PostgresLedger(proxy.dsn, schema=schema, command_timeout=2.0, max_connections=4) as ledger,
    ):
        keys = [f"k{n}" for n in range(5)]
        tokens = {key: await begin(ledger, key) for key in keys}
        before = batches(ledger)
        blocker = await asyncpg.connect(PG_DSN)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    f"SELECT 1 FROM \"{schema}\".payouts WHERE key = 'k3' FOR UPDATE"
                )
                moves = [move(ledger, key, tokens[key]) for key in keys]
                await asyncio.sleep(0.2)  # the batch waits for k3's row
                proxy.cut()
                results = await asyncio.gather(*moves, return_exceptions=True)
        finally:
            await blocker.close()
        assert batches(ledger) - before == 1
        assert all(isinstance(result, LedgerOutcomeUnknownError) for result in results)
        assert len({id(result) for result in results}) == len(results)  # one each
        # The ledger writes again (on a new connection) once the proxy lets it.
        token = (await ledger.get("enot", "k0")).lease_token  # type: ignore[union-attr]
        with pytest.raises(LeaseLostError):
            await ledger.transition(
                "enot", "k0", owner="w", token=token + 1, state=SENDING, lease_seconds=30
            )


@pytest.mark.postgres
async def test_concurrent_begins_share_statements_and_each_gets_its_own_answer(
    ledger: PostgresLedger,
) -> None:
    await begin(ledger, "old", order_id="o-old")
    keys = [f"k{n:02}" for n in range(30)]

    def start(key: str, order_id: str) -> asyncio.Task[Any]:
        return asyncio.create_task(
            ledger.begin(
                "enot",
                key,
                "h",
                {"amount": "1.00"},
                owner="w",
                lease_seconds=30,
                order_id=order_id,
            )
        )

    calls = [start(key, f"o-{key}") for key in keys]
    calls += [start("k00", "o-k00"), start("old", "o-old")]
    before = batches(ledger)
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert batches(ledger) - before == 2  # k00's second begin waits for the next
    for key, claim in zip(keys, results, strict=False):
        assert not isinstance(claim, BaseException)
        assert (claim.record.key, claim.created, claim.claimed) == (key, True, True)
        assert claim.record.order_id == f"o-{key}"
    again, old = results[len(keys) :]
    assert not isinstance(again, BaseException) and not isinstance(old, BaseException)
    assert (again.created, again.claimed, old.created, old.claimed) == (False,) * 4
    # A batch that breaks the order_id index: only the begin that broke it fails.
    calls = [start("new1", "o-new1"), start("dup", "o-k01"), start("new2", "o-new2")]
    new1, dup, new2 = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(dup, IdempotencyConflictError)
    assert await ledger.get("enot", "dup") is None
    assert not isinstance(new1, BaseException) and not isinstance(new2, BaseException)
    assert new1.created and new2.created
    assert len(await ledger.history("enot", "k00")) == 1


@pytest.mark.postgres
async def test_inserts_transitions_and_renewals_share_one_statement(
    ledger: PostgresLedger,
) -> None:
    moving, renewing, lost = await begin(ledger, "moving"), await begin(ledger, "renewing"), 0
    await begin(ledger, "lost")
    before = batches(ledger)
    calls = [
        asyncio.create_task(
            ledger.begin("enot", "new", "h", {"amount": "1.00"}, owner="w", lease_seconds=30)
        ),
        move(ledger, "moving", moving, LedgerState.SUCCEEDED, provider_status="success"),
        asyncio.create_task(
            ledger.renew("enot", "renewing", owner="w", token=renewing, lease_seconds=600)
        ),
        asyncio.create_task(ledger.renew("enot", "lost", owner="w", token=lost, lease_seconds=600)),
    ]
    new, moved, renewed, refused = await asyncio.gather(*calls, return_exceptions=True)
    assert batches(ledger) - before == 1
    assert not isinstance(new, BaseException) and new.created
    assert not isinstance(moved, BaseException)
    assert (moved.state, moved.lease_owner, moved.params_hash) == (
        LedgerState.SUCCEEDED,
        None,
        "masked",
    )
    assert renewed is None
    assert isinstance(refused, LeaseLostError)
    row = await ledger.get("enot", "renewing")
    assert row is not None and row.lease_expires_at is not None
    assert row.lease_expires_at > row.updated_at + 500 and row.state is LedgerState.PENDING
    assert [t.to_state for t in await ledger.history("enot", "moving")] == [
        LedgerState.PENDING,
        LedgerState.SUCCEEDED,
    ]
    assert len(await ledger.history("enot", "renewing")) == 1
    assert len(await ledger.history("enot", "new")) == 1


@pytest.mark.postgres
async def test_a_write_the_statement_cannot_carry_fails_alone(ledger: PostgresLedger) -> None:
    tokens = {key: await begin(ledger, key) for key in ("a", "b")}
    before = batches(ledger)
    bad, good = await asyncio.gather(
        move(ledger, "a", tokens["a"], unknown_since=float("nan")),
        move(ledger, "b", tokens["b"]),
        return_exceptions=True,
    )
    assert isinstance(bad, ValueError)
    assert not isinstance(good, BaseException) and good.state is SENDING
    assert batches(ledger) - before == 1
    row = await ledger.get("enot", "a")
    assert row is not None and row.state is LedgerState.PENDING


# The batcher alone, with a fake statement.


class FakeStatement:
    """Writes batches of keys: waits for ``go`` when it is cleared (and fails with
    ``late`` when the batch's deadline passes first); ``fail`` makes the statement
    raise for a batch holding that key."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.go = asyncio.Event()
        self.go.set()
        self.fail: dict[str, BaseException] = {}
        self.late: LedgerError = LedgerOutcomeUnknownError("no answer in time")

    async def __call__(self, batch: Sequence[Pending[str]], until: float) -> list[Any]:
        keys = [pending.values for pending in batch]
        try:
            async with asyncio.timeout_at(until):
                await self.go.wait()
        except TimeoutError:
            raise self.late from None
        for key in keys:
            if key in self.fail:
                raise self.fail[key]
        self.batches.append(keys)
        return [f"row {key}" for key in keys]


def batcher(statement: FakeStatement, budget: float = 5.0) -> Batcher[str]:
    return Batcher(statement, Patience(budget), is_integrity_error=is_integrity_violation)


async def test_a_lone_write_is_taken_at_once_and_later_ones_queue_behind_a_batch() -> None:
    statement = FakeStatement()
    writes = batcher(statement)
    assert await writes.submit("a", "a") == "row a"
    statement.go.clear()
    first = asyncio.create_task(writes.submit("b", "b"))
    await asyncio.sleep(0.01)  # b's batch is in flight
    rest = [asyncio.create_task(writes.submit(key, key)) for key in ("c", "d", "c2")]
    await asyncio.sleep(0.01)
    statement.go.set()
    assert await asyncio.gather(first, *rest) == ["row b", "row c", "row d", "row c2"]
    assert statement.batches == [["a"], ["b"], ["c", "d", "c2"]]


async def test_a_batch_never_holds_two_writes_of_one_row_nor_more_than_its_cap() -> None:
    statement = FakeStatement()
    writes = Batcher(statement, Patience(5.0), cap=3, is_integrity_error=is_integrity_violation)
    items = [("k", "k1"), ("j", "j1"), ("k", "k2"), ("i", "i1"), ("h", "h1"), ("k", "k3")]
    done = await asyncio.gather(*(writes.submit(key, value) for key, value in items))
    assert done == [f"row {value}" for _, value in items]
    assert statement.batches == [["k1", "j1", "i1"], ["k2", "h1"], ["k3"]]


async def test_a_batch_ends_by_its_callers_deadline_with_the_statements_own_answer() -> None:
    statement = FakeStatement()
    statement.late = LedgerNotWrittenError("no PostgreSQL connection in time")
    writes = batcher(statement, budget=0.2)
    statement.go.clear()
    first, second = writes.submit("a", "a"), writes.submit("b", "b")
    results = await asyncio.gather(first, second, return_exceptions=True)
    # Not "unknown" from a timer of the callers': the statement ended first, and said
    # what happened (here: nothing was sent).
    assert all(isinstance(result, LedgerNotWrittenError) for result in results)
    statement.go.set()
    assert await writes.submit("c", "c") == "row c"
    assert statement.batches == [["c"]]


async def test_a_payout_with_less_patience_stops_waiting_first() -> None:
    statement = FakeStatement()
    patience = Patience(30.0)
    writes = Batcher(statement, patience, is_integrity_error=is_integrity_violation)
    statement.go.clear()
    sent = asyncio.create_task(writes.submit("a", "a"))  # waits up to 30 s
    await asyncio.sleep(0.01)
    with one_payout():  # a payout whose ledger call ran out already: 1 s at most
        patience.ran_out(patience.scope())
        assert patience.budget() == STRAINED
        with pytest.raises(LedgerNotWrittenError):
            await writes.submit("b", "b")
    assert not sent.done()
    statement.go.set()
    assert await sent == "row a"
    assert statement.batches == [["a"]]


async def test_a_failed_statement_is_every_callers_and_one_broken_constraint_is_its_own() -> None:
    statement = FakeStatement()
    writes = batcher(statement)
    violation = asyncpg.UniqueViolationError("duplicate key")
    statement.fail["b"] = violation
    results = await asyncio.gather(
        *(writes.submit(key, key) for key in "abc"), return_exceptions=True
    )
    assert results == ["row a", violation, "row c"]
    assert statement.batches == [["a"], ["c"]]
    statement.fail = {"e": LedgerOutcomeUnknownError("the write may have committed")}
    results = await asyncio.gather(
        *(writes.submit(key, key) for key in "def"), return_exceptions=True
    )
    assert all(isinstance(result, LedgerOutcomeUnknownError) for result in results)
    assert len({id(result) for result in results}) == 3


async def test_begins_racing_for_one_new_key_all_claim_or_see_it(schema: str) -> None:
    """Begins of one new key from several processes (pools) at once: one inserts it, and
    none fails with the key's own unique index -- a loser whose insert passed the
    ``ON CONFLICT (provider, key)`` check before the winner's row was there trips the
    live-key index instead, and must then see the row as any later begin does. The
    window is narrow: an idle machine seldom opens it (the conformance suite's
    concurrent-begins test hit it once under a load of 14 on two cores)."""
    ledgers = [
        await PostgresLedger(PG_DSN, schema=schema, command_timeout=5.0).__aenter__()
        for _ in range(6)
    ]
    try:
        for round_ in range(25):
            key = f"race-{round_}"
            begins = (
                ledger.begin("enot", key, "h", {"amount": "1.00"}, owner=f"w{i}", lease_seconds=30)
                for i, ledger in enumerate(ledgers * 2)
            )
            claims = await asyncio.gather(*begins)
            assert sum(claim.created for claim in claims) == 1
            assert sum(claim.claimed for claim in claims) == 1
    finally:
        for ledger in ledgers:
            await ledger.__aexit__(None, None, None)
