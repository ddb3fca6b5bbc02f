"""An nginx HTML page in answer is kept as one line: ``last_error``, ``reason`` and
every exported row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from payout_async._summary import LIMIT, one_line
from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import cli, cli_many, credentials, good_rows, write_csv


async def test_an_html_answer_is_stored_as_one_line(tmp_path: Path) -> None:
    async with Sandbox(config=fast_config()) as sandbox:
        # Every IntellectMoney create (and its retries) meets a gateway's HTML page.
        sandbox.script_error("im.create", 502, "Bad Gateway", times=50)
        ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        path = write_csv(tmp_path / "batch.csv", good_rows(4))
        run = await cli("batch", str(path), "--ledger", ledger, "--no-progress",
                        env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code != 0, run
    exported, shown = await cli_many(
        [["export", "--ledger", ledger], ["status", "--ledger", ledger, "b-0", "--json"]]
    )
    rows = list(csv.DictReader(io.StringIO(exported.out)))
    assert len(exported.out.splitlines()) == 1 + 4  # a header and one line per row
    failed = [row for row in rows if row["provider"] == "intellectmoney"]
    assert len(failed) == 2
    for row in failed:
        assert "<title>502 Bad Gateway</title> (HTML body, " in row["last_error"], row
        assert "\n" not in row["last_error"] and "<center>" not in row["last_error"]
        assert "<title>502 Bad Gateway</title>" in row["reason"], row
    view = json.loads(shown.out)["payouts"][0]
    assert view["last_error"].endswith(
        ": HTTP 502: <title>502 Bad Gateway</title> (HTML body, 150 bytes)"
    ), view


def test_one_line_is_bounded_and_never_cuts_a_number() -> None:
    assert one_line("a\r\n  b\tc") == "a b c"
    long = "word " * 400 + "4111 1111 1111 1111"
    folded = one_line(long)
    assert len(folded) <= LIMIT and "\n" not in folded and folded.endswith("…")
    page = "HTTP 503: <html><body><h1>Технические\nработы</h1><p>x</p></body></html>"
    size = len(page[10:].encode())
    assert one_line(page) == f"HTTP 503: <h1>Технические работы</h1> (HTML body, {size} bytes)"
