"""Every fenced code block of README.md and docs/ runs as written, against the sandbox
(see tests/docs/runner.py for what "runs" means for each kind of block)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from ..ledger.support import drop_schema, require_postgres
from ..payouts.support import fast_config
from .blocks import ROOT, blocks, pages
from .runner import ThreadedSandbox, run_page, sandbox_environment

PAGES = [page for page in pages() if blocks(page)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_block_of_the_page_runs(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAYOUT_ASYNC_STATE_DIR", str(tmp_path / ".state"))
    for name in ("PAYOUT_ASYNC_LEDGER", "PAYOUT_ASYNC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    schema = f"docs_{uuid.uuid4().hex[:12]}"
    # ``export PAYOUT_ASYNC_LEDGER=...``: PostgreSQL (a schema of its own), as for workers.
    ledger = f"{require_postgres()}?schema={schema}" if page.name == "workers.md" else ""
    environment = dict(os.environ)  # the blocks' own ``export`` lines change it
    try:
        with ThreadedSandbox(fast_config()) as sandbox:
            provided = sandbox_environment(sandbox, ledger)
            for name, value in provided.items():
                if name != "PAYOUT_ASYNC_LEDGER":
                    monkeypatch.setenv(name, value)
            run_page(blocks(page), tmp_path, provided)
            assert sandbox.duplicates() == []
    finally:
        os.environ.clear()
        os.environ.update(environment)
        if ledger:
            asyncio.run(drop_schema(schema))


def test_a_block_without_a_runner_or_a_reason_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```text\nhello\n```\n\n<!-- docs-test: skip -->\n```text\nx\n```\n")
    found = blocks(page)
    with pytest.raises(AssertionError, match="cannot run"):
        run_page(found[:1], tmp_path, {})
    with pytest.raises(AssertionError, match="must say why"):
        run_page(found[1:], tmp_path, {})
