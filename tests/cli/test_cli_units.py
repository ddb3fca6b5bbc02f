"""In-process checks of the command line's building blocks (fast; no subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from payout_async import ConfigurationError
from payout_async.cli._columns import canonical, read_records
from payout_async.cli._console import Column, literal, render_table
from payout_async.cli._setup import _endpoint
from payout_async.cli._views import mask_wallet
from payout_async.ledger._url import parse_ledger_url

COLUMNS = (
    Column("key"),
    Column("provider"),
    Column("status"),
    Column("provider id", "shrink", minimum=10),
    Column("reason", "wrap", minimum=24),
)
UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@given(
    key=st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1,
                max_size=40),
    reason=st.text(min_size=1, max_size=200),
)  # fmt: skip
def test_the_reason_column_never_drops_out_at_80_columns(key: str, reason: str) -> None:
    rows = [(key, "intellectmoney", "needs_attention", UUID, reason), ("k", "enot", "ok", "", "")]
    lines = render_table(COLUMNS, rows, width=80)
    assert lines[0].rstrip().endswith("reason")
    start = lines[0].index("reason")  # the header is ASCII: characters are cells
    shown = "".join(_from_cell(line, start) for line in lines[2:-1])
    assert "".join(shown.split()) == "".join(literal(reason).split())
    assert all(cell_len(line) <= 80 for line in lines)


def _from_cell(line: str, column: int) -> str:
    """What ``line`` shows from screen column ``column`` on."""
    for index in range(len(line) + 1):
        if cell_len(line[:index]) >= column:
            return line[index:]
    return ""


def test_render_table_cuts_the_id_not_the_key_and_prints_markup_literally() -> None:
    rows = [("[bold red]mk-2[/bold red]", "enot", "failed", UUID, "err [code 5] \x1b[31m")]
    _, rule, row = render_table(COLUMNS, rows, width=80)
    assert row.startswith("[bold red]mk-2[/bold red]  enot")
    assert "3fa85f64-" in row and UUID not in row and "…" in row
    assert "err [code 5] \\x1b[31m" in row
    assert len(rule) <= 80
    unlimited = render_table(COLUMNS, rows, width=None)
    assert UUID in unlimited[2]


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("sqlite:///payouts.db", "{cwd}/payouts.db"),
        ("sqlite:////var/lib/p.db?synchronous=normal", "/var/lib/p.db"),
        ("ledger.db", "{cwd}/ledger.db"),
        ("postgresql://pay:secret@db.example:5433/pay?schema=s&sslmode=require",
         "postgresql://pay@db.example:5433/pay?sslmode=require&schema=s"),
        ("postgres://db.example/pay?password=secret", "postgresql://db.example/pay"),
    ],
)  # fmt: skip
def test_ledger_locations_are_absolute_and_hide_passwords(url: str, location: str) -> None:
    parsed = parse_ledger_url(url)
    assert parsed.location == location.format(cwd=Path.cwd())
    assert "secret" not in parsed.location and "secret" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    ["sqlite:payouts.db", "memory:", "postgresql:db", "memory://x", "sqlite:///x.db#f", " p.db",
     "sqlite:///x.db?busy_timeout=nan", "postgresql://h:99999/db"],
)  # fmt: skip
def test_malformed_ledger_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_ledger_url(url)


def test_column_names_match_loosely() -> None:
    assert canonical("\ufeff Bank ID ") == "bank_id"
    assert canonical("Recipient-Name") == "recipient_name"
    assert canonical("HOOK__URL") == "hook_url"


def test_json_lines_keep_numbers_as_written(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"Key": "k", "provider": "enot", "method": "card", "amount": 1e3}\n')
    (record,) = read_records(path).records
    assert record.cells["amount"] == "1e3"  # refused by the amount rules, not read as 1000


def test_mask_wallet() -> None:
    assert mask_wallet("4111111111111111") == "411111******1111"
    assert mask_wallet("79001234567") == "7900*****67"
    assert mask_wallet("7900*****67") == "7900*****67"  # masking twice changes nothing
    assert mask_wallet("short") == "***"
    assert mask_wallet(None) is None


def test_the_endpoint_said_out_loud_hides_a_password_and_names_a_sandbox() -> None:
    sandbox = " (on this machine: a sandbox, not the provider)"
    assert _endpoint("https://user:secret@enot.io/base?token=t#x") == "https://enot.io/base"
    assert _endpoint("https://api.intellectmoney.ru/personal/payout/").endswith("/payout/")
    assert _endpoint("http://127.0.0.1:8080/personal/payout/") == (
        "http://127.0.0.1:8080/personal/payout/" + sandbox
    )
    assert _endpoint("http://[::1]:9/") == "http://[::1]:9/" + sandbox
    assert _endpoint("http://localhost") == "http://localhost" + sandbox
