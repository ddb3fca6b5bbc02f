"""Issue 24, "files, terminals and spreadsheets": text from outside (keys, order ids,
provider statuses, reasons, errors) reaches no output raw. ``export`` CSV cells that a
spreadsheet would run as formulas are neutralised (OWASP: a leading ``'``, quoted);
no command passes ESC, BEL, C1 controls (U+009B CSI) or bidi controls to stdout, in
text, CSV, ``--json`` or JSON Lines."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from payout_async.cli._escape import csv_cell, csv_line, json_text, literal
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.payouts._orchestrator import _request_params

from .support import CARD, cli_many

OSC8_LINK = "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
OSC52_CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"
SCREEN_CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\x9b31m"
BIDI = "\u202eevil\u202c \u2066isolate\u2069"
HOSTILE = f"declined {OSC8_LINK} {OSC52_CLIPBOARD} {SCREEN_CLEAR} {C1_CSI} {BIDI} \x07 \x7f"
#: Keys a spreadsheet would run as formulas (OWASP's list), one per row.
FORMULA_KEYS = {
    '=HYPERLINK("https://evil.example","pay")': "a",
    "+1+cmd|' /C calc'!A0": "b",
    "-2+3": "c",
    "@SUM(1+1)*cmd|' /C calc'!A0": "d",
}
ESCAPE_KEY = f"k-{SCREEN_CLEAR}-{C1_CSI}-\u202e"
#: What must never reach stdout raw: C0 but line feed, DEL, C1, bidi controls.
FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


async def _hostile_ledger(db: Path) -> None:
    """Rows whose keys, order ids, provider statuses, reasons and errors are hostile."""
    async with SQLiteLedger(db) as ledger:
        owner = "other-host:1:1:x"
        keys = [*FORMULA_KEYS, ESCAPE_KEY]
        for n, key in enumerate(keys):
            params = _request_params(OperationRequest(pan=CARD, amount="5.00", description="d"))
            claim = await ledger.begin(
                "intellectmoney", key, ledger.params_hash(params), params,
                owner=owner, lease_seconds=60, order_id=f"=cmd|{key}",
            )  # fmt: skip
            await ledger.transition(
                "intellectmoney", key, owner=owner, token=claim.record.lease_token,
                state=LedgerState.NEEDS_ATTENTION, lease_seconds=60, reason=HOSTILE,
                last_error=f"-{HOSTILE}", provider_status=f"@{OSC52_CLIPBOARD}",
                operation_id=f"+{SCREEN_CLEAR}{n}",
            )  # fmt: skip
    os.chmod(db, 0o600)


def _clean(text: str, where: str) -> None:
    found = FORBIDDEN.findall(text)
    assert not found, (where, sorted(set(found)))
    raw = text.encode()
    for sequence in (b"\x1b", b"\x07", b"\xc2\x9b", "\u202e".encode(), "\u2066".encode()):
        assert sequence not in raw, (where, sequence)


@pytest.fixture
async def hostile(tmp_path: Path) -> str:
    db = tmp_path / "ledger.db"
    await _hostile_ledger(db)
    return f"sqlite:///{db}"


async def test_no_command_prints_a_control_or_bidi_character(hostile: str, tmp_path: Path) -> None:
    out_csv, out_jsonl = tmp_path / "out.csv", tmp_path / "out.jsonl"
    commands = [
        ["status", "--ledger", hostile],
        ["status", "--ledger", hostile, "--json"],
        ["status", ESCAPE_KEY, "--ledger", hostile],
        ["status", ESCAPE_KEY, "--ledger", hostile, "--json"],
        ["export", "--ledger", hostile],
        ["export", "--ledger", hostile, "--format", "jsonl"],
        ["export", "--ledger", hostile, "-o", str(out_csv)],
        ["export", "--ledger", hostile, "--format", "jsonl", "-o", str(out_jsonl)],
        ["status", "no-such-" + SCREEN_CLEAR, "--ledger", hostile],
    ]
    runs = await cli_many(commands)
    for command, run in zip(commands, runs, strict=True):
        assert run.code == (2 if command[1].startswith("no-such") else 0), (command, run)
        _clean(run.out, f"stdout of {command}")
        _clean(run.err, f"stderr of {command}")
    for path in (out_csv, out_jsonl):
        _clean(path.read_text(encoding="utf-8"), str(path))

    # JSON keeps the value: the escapes are JSON's own \uXXXX, not lost text.
    rows = [json.loads(line) for line in runs[5].out.splitlines()]
    assert {row["reason"] for row in rows} == {HOSTILE}
    assert ESCAPE_KEY in {row["key"] for row in rows}
    assert json.loads(runs[3].out)["payouts"][0]["key"] == ESCAPE_KEY
    assert "\\u009b" in runs[5].out and "\\u202e" in runs[1].out
    # The text outputs show the escapes instead.
    assert "\\x1b]8;;https://evil.example/" in runs[0].out
    assert "\\x9b31m" in runs[2].out and "\\u202e" in runs[2].out


async def test_export_csv_neutralises_formulas(hostile: str, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    to_stdout, to_file = await cli_many([
        ["export", "--ledger", hostile],
        ["export", "--ledger", hostile, "--output", str(out)],
    ])  # fmt: skip
    assert to_stdout.code == 0 and to_file.code == 0, (to_stdout, to_file)
    assert out.read_text(encoding="utf-8") == to_stdout.out
    table = list(csv.DictReader(io.StringIO(to_stdout.out)))
    assert len(table) == len(FORMULA_KEYS) + 1
    for row in table:
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (name, cell)
    keys = {row["key"] for row in table}
    assert {"'" + key for key in FORMULA_KEYS} <= keys
    for row in table:
        assert row["order_id"].startswith("'=cmd|")
        assert row["last_error"].startswith("'-declined")
        assert row["provider_status"].startswith("'@")
        assert row["provider_id"].startswith("'+")
    # Each neutralised cell is also quoted, as OWASP advises.
    assert '"\'=HYPERLINK(""https://evil.example"",""pay"")"' in to_stdout.out


def test_one_escaping_rule() -> None:
    assert literal("a\x1b[2Jb\u202e\x9b") == "a\\x1b[2Jb\\u202e\\x9b"
    assert json.loads(json_text({"k": HOSTILE})) == {"k": HOSTILE}
    assert FORBIDDEN.search(json_text({"k": HOSTILE, "r": "Привет"})) is None
    assert "Привет" in json_text("Привет")  # non-ASCII text stays readable
    assert csv_cell("=1+2") == '"\'=1+2"'
    assert csv_cell("\t=1") == "\\t=1"  # escaped: no longer a tab, no formula
    assert csv_cell("a,b") == '"a,b"' and csv_cell(None) == "" and csv_cell(3) == "3"
    assert csv_cell(-3) == '"\'-3"'
    assert csv_line(["x", "@y", None]) == 'x,"\'@y",\n'
