"""Issue 27, items 3-7: what operators do over days -- re-run refused rows, prune the
history, retry refusals that were not -- through the installed ``payout-async`` command,
on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import LedgerState
from payout_async.payouts import intent_for
from payout_async.sandbox import FaultKind, Sandbox

from ..ledger.support import DURABLE, PG_DSN, Backend, backend_of
from ..payouts.support import fast_config, im_client, im_request
from .support import CARD, assert_paid_once, cli, credentials, write_csv

FAST = [
    "--request-timeout", "1", "--lease-seconds", "5", "--grace", "1.5", "--execute-settle", "1",
]  # fmt: skip


@pytest.fixture(params=DURABLE)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A durable store the command is pointed at (``place.url``) and the test opens."""
    async for backend in backend_of(request.param, tmp_path, Backend):
        yield backend


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def enot_row(key: str, amount: str) -> dict[str, str]:
    return {"key": key, "provider": "enot", "method": "card", "recipient": CARD,
            "amount": amount}  # fmt: skip


# 6. A corrected re-run of a refused row is refused by the CLI. --------------------------


@pytest.mark.parametrize("command", ["batch", "enqueue"])
async def test_6_a_refused_row_is_paid_again_with_corrected_parameters(
    sandbox: Sandbox, place: Backend, tmp_path: Path, command: str
) -> None:
    over = write_csv(tmp_path / "over.csv", [enot_row("r6-1", "700000.00")])  # off the tariff
    run = await cli("batch", str(over), "--ledger", place.url, "--no-progress", *FAST,
                    env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 1, run
    ledger = await place.new()
    record = await ledger.get("enot", "r6-1")
    assert record is not None and record.state is LedgerState.REFUSED, record

    fixed = write_csv(tmp_path / "fixed.csv", [enot_row("r6-1", "700.00")])
    tuning = FAST if command == "batch" else []
    run = await cli(command, str(fixed), "--ledger", place.url, *tuning,
                    env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    assert "other parameters" not in run.err
    if command == "enqueue":
        assert "1 refused earlier and recorded again" in run.out, run
        record = await ledger.get("enot", "r6-1")
        assert record is not None and record.state is LedgerState.PENDING, record
        run = await cli("resume", "--ledger", place.url, "--no-progress", *FAST,
                        env=credentials(sandbox))  # fmt: skip
        assert run.code == 0, run
    record = await ledger.get("enot", "r6-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record
    assert_paid_once(sandbox, ["r6-1"])


# 4. IntellectMoney reconcile() decided where to resume from the audit history. ----------


async def prune_history(place: Backend) -> None:
    """What a retention job does: delete every ``payout_transitions`` row (the README's
    SQL)."""
    if place.kind == "sqlite":
        with sqlite3.connect(place.path) as conn:
            conn.execute("DELETE FROM payout_transitions")
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DELETE FROM "{place.schema}".payout_transitions')
    finally:
        await conn.close()


async def test_4_reconcile_resumes_from_the_row_with_the_history_pruned(
    sandbox: Sandbox, place: Backend, tmp_path: Path
) -> None:
    ledger = await place.new()
    request = im_request("h4-1")
    async with im_client(sandbox.intellectmoney_url, sandbox.credentials) as im:
        created = await im.create_operation_from(request)
        assert created.operation_id is not None
        await im.execute_operation(created.operation_id)  # performed; its answer "lost"
    # The row as a drive leaves it when the operation's state could not be read after.
    intent = intent_for("h4-1", request)
    digest = ledger.params_hash(intent.params)
    claim = await ledger.begin(
        "intellectmoney", "h4-1", digest, intent.params, owner="w", lease_seconds=30
    )
    lease = {"owner": "w", "token": claim.record.lease_token, "lease_seconds": 30}
    await ledger.transition("intellectmoney", "h4-1", state=LedgerState.EXECUTING,
                            add_attempt=True, operation_id=created.operation_id,
                            provider_status="Created", **lease)  # fmt: skip
    await ledger.transition("intellectmoney", "h4-1", state=LedgerState.NEEDS_ATTENTION,
                            reason="execute may have happened and the operation's state "
                            "could not be read", release=True, **lease)  # fmt: skip
    await prune_history(place)
    assert await ledger.history("intellectmoney", "h4-1") == []

    run = await cli("reconcile", "--ledger", place.url, "--no-progress", *FAST,
                    env=credentials(sandbox))  # fmt: skip
    assert run.code == 0, run
    record = await ledger.get("intellectmoney", "h4-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record
    assert record.operation_id == created.operation_id
    assert_paid_once(sandbox, ["h4-1"])
    assert sandbox.faults.calls("im.create") == 1  # no second operation either


# 3. An Enot refusal rested on one immediate lookup, and the next send skipped it. -------


@pytest.mark.parametrize(
    ("kind", "then"),
    [
        (FaultKind.COMMIT_THEN_408, "reconcile"),
        (FaultKind.COMMIT_THEN_408, "batch"),
        (FaultKind.COMMIT_THEN_422, "reconcile"),
    ],
    ids=["408-reconcile", "408-batch", "422-reconcile"],
)
async def test_3_a_refusal_after_processing_is_not_paid_again(
    place: Backend, tmp_path: Path, kind: FaultKind, then: str
) -> None:
    # payoff/info lags 1 s
    lagging = ["--request-timeout", "1", "--lease-seconds", "5", "--grace", "3"]
    async with Sandbox(config=fast_config(enot_info_lag=1.0)) as sandbox:
        sandbox.faults.script("enot.create", kind=kind, nth=1)
        path = write_csv(tmp_path / "batch.csv", [enot_row("e3-1", "10.00")])
        env = credentials(sandbox)
        first = await cli("batch", str(path), "--ledger", place.url, "--no-progress", *lagging,
                          env=env, state=tmp_path)  # fmt: skip
        again = [str(path)] if then == "batch" else []
        second = await cli(then, *again, "--ledger", place.url, "--no-progress", *lagging,
                           env=env, state=tmp_path)  # fmt: skip
        assert_paid_once(sandbox, ["e3-1"])  # before: refused, then paid a second time
        assert sandbox.faults.calls("enot.create") == 1
        assert first.code == 0, first  # the payoff was found and adopted within the grace
        assert second.code == 0, second
    ledger = await place.new()
    record = await ledger.get("enot", "e3-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record


# 7. resume and reconcile built Payouts without lookup_before_create. --------------------


@pytest.mark.parametrize("command", ["resume", "reconcile"])
async def test_7_resume_and_reconcile_look_an_order_id_up_before_its_first_create(
    sandbox: Sandbox, place: Backend, tmp_path: Path, command: str
) -> None:
    path = write_csv(tmp_path / "batch.csv", [enot_row("l7-1", "10.00")])
    env = credentials(sandbox)
    run = await cli("enqueue", str(path), "--ledger", place.url, env=env, state=tmp_path)
    assert run.code == 0, run
    # The payoff exists already (paid through a ledger since restored, say).
    async with sandbox.enot_client() as enot:
        await enot.create_payoff(service="card", wallet_to=CARD, amount=10, order_id="l7-1")
    run = await cli(command, "--ledger", place.url, "--no-progress", *FAST, env=env)
    assert run.code == 0, run
    assert_paid_once(sandbox, ["l7-1"])
    ledger = await place.new()
    record = await ledger.get("enot", "l7-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record


async def test_7_an_operation_is_driven_only_through_the_api_that_created_it(
    sandbox: Sandbox, place: Backend, tmp_path: Path
) -> None:
    ledger = await place.new()
    request = OperationRequest(pan=CARD, amount=Decimal("10.00"), recipient_name="Иван Петров")
    async with sandbox.intellectmoney_client(api="legacy") as legacy:
        created = await legacy.create_operation_from(request)
        assert created.operation_id is not None
        await legacy.execute_operation(created.operation_id)  # sent; its answer "lost"
    # The row as a legacy-API drive leaves it when it dies with that execute in flight.
    intent = intent_for("a7-1", request)
    claim = await ledger.begin(
        "intellectmoney", "a7-1", ledger.params_hash(intent.params), intent.params,
        owner="w", lease_seconds=30,
    )  # fmt: skip
    await ledger.transition("intellectmoney", "a7-1", owner="w", lease_seconds=30,
                            token=claim.record.lease_token, state=LedgerState.EXECUTING,
                            add_attempt=True, operation_id=created.operation_id,
                            provider_api="legacy")  # fmt: skip
    await ledger.release("intellectmoney", "a7-1", owner="w", token=claim.record.lease_token)
    reads = sandbox.faults.calls("im.state")

    env = credentials(sandbox)
    run = await cli("resume", "--ledger", place.url, "--no-progress", *FAST, env=env)
    assert run.code != 0, run
    record = await ledger.get("intellectmoney", "a7-1")
    assert record is not None and record.state is LedgerState.NEEDS_ATTENTION, record
    assert "created through the legacy IntellectMoney API" in (record.reason or "")
    assert "--im-api legacy" in (record.reason or "")
    assert sandbox.faults.calls("im.state") == reads  # the current API asked nothing
    assert sandbox.faults.calls("im.execute") == 1

    run = await cli("reconcile", "--ledger", place.url, "--no-progress", *FAST,
                    "--im-api", "legacy", env=env)  # fmt: skip
    assert run.code == 0, run
    record = await ledger.get("intellectmoney", "a7-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED, record
    assert sandbox.faults.calls("im.execute") == 1
    assert sandbox.faults.calls("im.create") == 1
