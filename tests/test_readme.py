"""The README as a newcomer reads it: short, its test command the one CI runs, its
links alive, and its web-app example (docs/examples/web_app.py, shown verbatim: see
tests/docs/) serving withdrawals against the sandbox as the prose says. Every other
block is run by tests/docs/test_code_blocks.py."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from payout_async.ledger import new_encryption_key
from payout_async.sandbox import Sandbox, SandboxCredentials

from .docs.blocks import ROOT, blocks
from .ledger.at_rest import sqlite_hits
from .payouts.support import fast_config

README = ROOT / "README.md"
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest -q"


def test_the_readme_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    commands = [b.code.strip() for b in blocks(README) if b.language == "sh"]
    assert TEST_COMMAND in commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = ci.index("# The README's test command, verbatim:")
    assert ci[marker + 1] == TEST_COMMAND


def test_the_readme_links_lead_somewhere() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target


def test_the_readme_web_app_is_the_tested_example() -> None:
    [example] = [b for b in blocks(README) if b.language == "python"]
    assert example.title == "docs/examples/web_app.py"
    assert example.code == (ROOT / "docs" / "examples" / "web_app.py").read_text("utf-8")


async def test_the_web_app_as_run_from_the_environment_pays_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python docs/examples/web_app.py`` after the sandbox's ``export`` lines: a
    double click pays once, other details are 409, a bad card 422, and the card is
    never written in clear."""
    monkeypatch.chdir(tmp_path)  # the example's SQLite ledger lands here
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    sys.modules.pop("web_app", None)
    import web_app

    credentials = SandboxCredentials()
    async with Sandbox(config=fast_config()) as sandbox:
        for name, value in (
            ("PAYOUT_ASYNC_LEDGER_KEY", new_encryption_key()),
            ("PAYOUT_ASYNC_ENOT_USER_ID", credentials.enot_user_id),
            ("PAYOUT_ASYNC_ENOT_SECRET_KEY", credentials.enot_secret_key),
            ("PAYOUT_ASYNC_ENOT_BASE_URL", sandbox.enot_url),
        ):
            monkeypatch.setenv(name, value)
        form = {"card": "4111111111111111", "amount": "150.00"}
        app = await web_app.app_from_environment()
        async with TestClient(TestServer(app)) as http:
            clicks = [http.post("/withdrawals/42", data=form) for _ in range(2)]
            answers = await asyncio.gather(*clicks)
            first, second = [await r.json() for r in answers]
            other = await http.post("/withdrawals/42", data={**form, "amount": "99.00"})
            bad = await http.post("/withdrawals/43", data={**form, "card": "1234"})
            assert (other.status, bad.status) == (409, 422)
            assert {r.status for r in answers} <= {200, 202}
            assert first["payout"] == second["payout"] == "withdrawal-42"
        assert sandbox.stats().enot.created == 1
        assert sandbox.duplicates() == []
    assert (tmp_path / "payouts.db").exists()
    assert sqlite_hits(tmp_path / "payouts.db", "4111111111111111") == []
