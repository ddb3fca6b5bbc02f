"""Issue 14, "the operator's view": ``status`` shows the oldest unfinished row and the
``needs_attention`` reasons grouped; ``export`` writes ledger rows as CSV or JSON Lines;
``status --json`` and ``export --format jsonl`` match the schema docs/batches.md documents."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from payout_async.cli._export import EXPORT_FIELDS, parse_since
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.payouts._orchestrator import _request_params
from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import CARD, cli, cli_many, credentials, good_rows, write_csv

README = Path(__file__).resolve().parents[2] / "docs" / "batches.md"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def documented(heading: str) -> dict[str, str]:
    """The ``| `field` | type | ... |`` table under the docs/batches.md heading ``heading``:
    field name -> type, in the table's order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {heading}\n")
    fields: dict[str, str] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.strip() and fields:
            break
        match = re.match(r"^\| `([a-z_]+)` \| ([a-z ]+?) \|", line)
        if match:
            fields[match[1]] = match[2]
    assert fields, f"no field table under {heading!r}"
    return fields


def check(value: dict[str, Any], heading: str) -> None:
    """``value`` has exactly the fields documented under ``heading``, of their types."""
    fields = documented(heading)
    assert list(value) == list(fields) or set(value) == set(fields), (heading, list(value))
    for name, kind in fields.items():
        allowed = tuple(t for part in kind.split(" or ") for t in _JSON_TYPES[part])
        ok = isinstance(value[name], allowed) and not (
            isinstance(value[name], bool) and bool not in allowed
        )
        assert ok, (heading, name, kind, value[name])


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


async def _crafted_ledger(db: Path) -> None:
    """A ledger with an old released ``pending`` row, a row leased to another worker,
    three ``needs_attention`` rows under two reasons, and a succeeded one."""
    async with SQLiteLedger(db) as ledger:

        async def row(key: str, lease: float = 60.0) -> tuple[str, int]:
            request = OperationRequest(pan=CARD, amount="12.50", description=key)
            params = _request_params(request)
            owner = "other-host:4242:1:x"
            claim = await ledger.begin(
                "intellectmoney", key, ledger.params_hash(params), params,
                owner=owner, lease_seconds=lease,
            )  # fmt: skip
            return owner, claim.record.lease_token

        owner, token = await row("a-oldest")
        await ledger.release("intellectmoney", "a-oldest", owner=owner, token=token)
        await row("b-leased", lease=600)
        reasons = {
            "c-1": "could not follow the operation: ServerError: 502 one",
            "c-2": "could not follow the operation: TransportError: reset two",
            "c-3": "create failed, nothing was paid: InvalidRequestError: bad",
        }
        for key, reason in reasons.items():
            owner, token = await row(key)
            await ledger.transition(
                "intellectmoney", key, owner=owner, token=token,
                state=LedgerState.NEEDS_ATTENTION, lease_seconds=60, reason=reason,
            )  # fmt: skip
        owner, token = await row("d-done")
        await ledger.transition(
            "intellectmoney", "d-done", owner=owner, token=token, state=LedgerState.SUCCEEDED,
            lease_seconds=60, operation_id="op-77", provider_status="Completed",
        )  # fmt: skip
    os.chmod(db, 0o600)


async def test_status_shows_the_oldest_unfinished_row_and_reasons_by_count(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    await _crafted_ledger(db)
    ledger = f"sqlite:///{db}"
    text, as_json = await cli_many(
        [["status", "--ledger", ledger], ["status", "--ledger", ledger, "--json"]]
    )
    assert text.code == 0 and as_json.code == 0, (text, as_json)
    assert "oldest unfinished payout: a-oldest (intellectmoney, pending), created" in text.out
    assert "needs_attention by reason:" in text.out
    lines = text.out.split("needs_attention by reason:", 1)[1].splitlines()
    follow = next(line for line in lines if "could not follow the operation" in line)
    create = next(line for line in lines if line.strip().endswith("nothing was paid"))
    assert follow.split()[0] == "2" and create.split()[0] == "1", text
    assert "other-host:4242:1:x" in text.out  # the lease table is still there

    report = json.loads(as_json.out)
    assert report["attention"] == [
        {"reason": "could not follow the operation", "count": 2},
        {"reason": "create failed, nothing was paid", "count": 1},
    ]
    oldest = report["oldest_unfinished"]
    assert (oldest["key"], oldest["provider"], oldest["state"]) == (
        "a-oldest", "intellectmoney", "pending",
    )  # fmt: skip
    assert oldest["age_seconds"] >= 0
    assert [p["key"] for p in report["leased"]] == ["b-leased"]


async def test_status_json_matches_the_documented_schema(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await _crafted_ledger(db)
    run = await cli("status", "--ledger", f"sqlite:///{db}", "--json")
    assert run.code == 0, run
    report = json.loads(run.out)
    check(report, "status --json")
    assert report["schema"] == 1 and report["command"] == "status"
    assert report["payouts"] and report["leased"] and report["attention"]
    for payout in report["payouts"] + report["leased"]:
        check(payout, "Payout object")
    check(report["oldest_unfinished"], "oldest_unfinished")
    for group in report["attention"]:
        check(group, "attention")
    for provider, states in report["counts"].items():
        assert provider in ("intellectmoney", "enot")
        assert set(states) == {state.value for state in LedgerState}


async def test_status_of_an_empty_backlog_says_so_in_json(sandbox: Sandbox, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(2))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = await cli("batch", str(path), "--ledger", ledger, env=credentials(sandbox),
                    state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    text, as_json = await cli_many(
        [["status", "--ledger", ledger], ["status", "--ledger", ledger, "--json"]]
    )
    report = json.loads(as_json.out)
    assert report["oldest_unfinished"] is None and report["attention"] == []
    assert "oldest unfinished" not in text.out and "by reason" not in text.out


async def test_export_writes_paid_rows_as_csv_and_jsonl(sandbox: Sandbox, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(6))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = await cli("batch", str(path), "--ledger", ledger, env=credentials(sandbox),
                    state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    out_csv = tmp_path / "out.csv"
    as_csv, as_jsonl, enot_only, future, failed = await cli_many([
        ["export", "--ledger", ledger, "--format", "csv", "--output", str(out_csv)],
        ["export", "--ledger", ledger, "--format", "jsonl"],
        ["export", "--ledger", ledger, "--format", "jsonl", "--provider", "enot",
         "--state", "succeeded", "--since", "2000-01-01"],
        ["export", "--ledger", ledger, "--format", "jsonl", "--since", "2999-01-01T00:00:00Z"],
        ["export", "--ledger", ledger, "--format", "csv", "--state", "failed"],
    ])  # fmt: skip
    for run in (as_csv, as_jsonl, enot_only, future, failed):
        assert run.code == 0, run
    assert "exported 6 payout(s)" in as_csv.out  # a result: on stdout
    assert oct(out_csv.stat().st_mode & 0o777) == "0o600"

    rows = [json.loads(line) for line in as_jsonl.out.splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(f"b-{n}" for n in range(6))
    by_key = {r["key"]: r for r in rows}
    for n in range(6):
        row = by_key[f"b-{n}"]
        assert row["schema"] == 1
        assert row["provider"] == ("intellectmoney" if n % 2 == 0 else "enot")
        assert (row["state"], row["status"]) == ("succeeded", "succeeded")
        assert row["amount"] == f"{10 + n}.00"
        assert row["recipient"] == "411111******1111"
        assert row["provider_id"] and row["provider_status"]
        assert ISO_UTC.match(row["created_at"]) and ISO_UTC.match(row["updated_at"])
        # The Enot account each payoff was created through (IntellectMoney: none).
        account = None if n % 2 == 0 else sandbox.credentials.enot_user_id
        assert row["provider_account"] == account
    assert CARD not in as_jsonl.out and CARD not in out_csv.read_text()

    table = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert [dict(r) for r in table] == [
        {k: "" if v is None else str(v) for k, v in row.items()} for row in rows
    ]
    assert [json.loads(line)["key"] for line in enot_only.out.splitlines()] == [
        "b-1", "b-3", "b-5",
    ]  # fmt: skip
    assert future.out == ""
    assert failed.out.strip() == ",".join(EXPORT_FIELDS)  # the header alone


async def test_export_jsonl_matches_the_documented_schema(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await _crafted_ledger(db)
    as_jsonl, as_csv = await cli_many([
        ["export", "--ledger", f"sqlite:///{db}", "--format", "jsonl"],
        ["export", "--ledger", f"sqlite:///{db}", "--format", "csv"],
    ])  # fmt: skip
    assert as_jsonl.code == 0 and as_csv.code == 0, (as_jsonl, as_csv)
    fields = documented("export")
    assert list(fields) == list(EXPORT_FIELDS)
    assert as_csv.out.splitlines()[0] == ",".join(fields)
    rows = [json.loads(line) for line in as_jsonl.out.splitlines()]
    assert [r["key"] for r in rows] == ["a-oldest", "b-leased", "c-1", "c-2", "c-3", "d-done"]
    for row in rows:
        check(row, "export")
        assert list(row) == list(fields)
        assert row["amount"] == "12.50" and row["currency"] == "RUB"
        assert row["recipient"] == "411111******1111"
    done = rows[-1]
    assert (done["provider_id"], done["provider_status"]) == ("op-77", "Completed")
    assert rows[2]["reason"].startswith("could not follow the operation")


def test_since_is_utc_unless_it_names_an_offset() -> None:
    assert parse_since("2026-11-30").isoformat() == "2026-11-30T00:00:00+00:00"
    assert (
        parse_since("2026-11-30T12:00:00+03:00").timestamp()
        == parse_since("2026-11-30T09:00:00Z").timestamp()
    )


async def test_export_refuses_a_missing_ledger_and_a_bad_since(tmp_path: Path) -> None:
    missing, bad = await cli_many([
        ["export", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", "--format", "csv"],
        ["export", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", "--since", "yesterday"],
    ])  # fmt: skip
    assert missing.code == 2 and missing.errors, missing
    assert "no ledger at" in missing.err
    assert bad.code == 2 and "not an ISO 8601 time" in bad.err, bad
    assert not (tmp_path / "none.db").exists()
