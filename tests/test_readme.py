"""The README's Python examples run as a newcomer would paste them, pointed at the
sandbox (the only edit: a ``base_url=``), so that the README cannot drift from the
library."""

from __future__ import annotations

import asyncio
import re
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from payout_async.ledger import new_encryption_key
from payout_async.sandbox import Sandbox, SandboxCredentials

from .ledger.at_rest import sqlite_hits
from .payouts.support import books, fast_config

README = Path(__file__).resolve().parents[1] / "README.md"


def example(heading: str, old: str, new: str) -> str:
    """The first ```python block after ``heading`` in README.md, with ``old`` (which
    must be there) replaced by ``new``: the one edit that points it at the sandbox."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    match = re.search(r"```python\n(.*?)```", text[start:], re.DOTALL)
    assert match is not None, f"no Python example under {heading!r}"
    code = match.group(1)
    assert old in code, f"the README example no longer contains {old!r}"
    return code.replace(old, new)


async def test_the_web_handler_example_pays_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's SQLite ledger lands here
    credentials = SandboxCredentials()
    for name, value in (
        ("PAYOUT_ASYNC_LEDGER_KEY", new_encryption_key()),
        ("IM_USER_TOKEN", credentials.im_user_token),
        ("IM_SIGN_SECRET_KEY", credentials.im_secret_key),
        ("IM_BEARER_TOKEN", credentials.im_bearer_token),
    ):
        monkeypatch.setenv(name, value)
    async with Sandbox(config=fast_config()) as sandbox:
        code = example(
            "One payout from a web handler",
            'bearer_token=os.environ["IM_BEARER_TOKEN"],',
            'bearer_token=os.environ["IM_BEARER_TOKEN"], base_url=base_url,',
        )
        namespace: dict[str, Any] = {
            "__name__": "readme_example",  # as a module of the reader's would have
            "base_url": sandbox.intellectmoney_url,
        }
        exec(compile(code, str(README), "exec"), namespace)
        form = {"card": "4111111111111111", "amount": "150.00"}
        async with TestClient(TestServer(namespace["app"])) as http:
            # A double click: two requests at once, then one more.
            clicks = [http.post("/withdrawals/42", data=form) for _ in range(2)]
            answers = await asyncio.gather(*clicks)
            first, second = [await r.json() for r in answers]
            again = await (await http.post("/withdrawals/42", data=form)).json()
            other = await http.post("/withdrawals/42", data={**form, "amount": "99.00"})
            bad = await http.post("/withdrawals/43", data={**form, "card": "1234"})
            assert (other.status, bad.status) == (409, 422)

        assert [r.status for r in answers] == [200, 200]
        assert first["status"] == "succeeded" and first["operation"]
        assert second == first and again == first
        assert len([op for op in sandbox.state.intellectmoney if op.executed_at]) == 1
        assert sandbox.duplicates() == []
    assert (tmp_path / "payouts.db").exists()
    # The example gives its ledger a key: the card was never written in clear.
    assert sqlite_hits(tmp_path / "payouts.db", "4111111111111111") == []


async def test_the_clients_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    credentials = SandboxCredentials()
    async with Sandbox(config=fast_config()) as sandbox:
        code = example(
            "The clients on their own",
            "EnotClient(user_id, secret_key)",
            "EnotClient(user_id, secret_key, base_url=base_url)",
        )
        namespace: dict[str, Any] = {
            "user_id": credentials.enot_user_id,
            "secret_key": credentials.enot_secret_key,
            "base_url": sandbox.enot_url,
        }
        body = textwrap.indent(code, "    ")
        exec(compile(f"async def main():\n{body}", str(README), "exec"), namespace)
        await namespace["main"]()

        assert books(sandbox.state)[1]["o-1"] == 1
    status, amount = capsys.readouterr().out.split()
    assert status in {"wait", "success"}  # as the comment in the example says
    assert Decimal(amount) == Decimal("100.00")  # as the provider wrote it (here: 100)


async def test_the_worker_example_pays_what_the_app_enqueued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from payout_async import EnotClient, Payouts
    from payout_async.ledger import LedgerState, SQLiteLedger

    credentials = SandboxCredentials()
    db = tmp_path / "payouts.db"
    async with Sandbox(config=fast_config()) as sandbox:
        code = example(
            "Running workers",
            "EnotClient(user_id, secret_key)",
            "EnotClient(user_id, secret_key, base_url=base_url)",
        )
        namespace: dict[str, Any] = {
            "__name__": "readme_example",
            "user_id": credentials.enot_user_id,
            "secret_key": credentials.enot_secret_key,
            "base_url": sandbox.enot_url,
            "ledger_url": f"sqlite:///{db}",
        }
        exec(compile(code, str(README), "exec"), namespace)
        async with (
            EnotClient(
                credentials.enot_user_id, credentials.enot_secret_key, base_url=sandbox.enot_url
            ) as enot,
            SQLiteLedger(db) as ledger,
        ):
            app = Payouts(enot, ledger)
            for _ in range(2):  # a double click records it once
                await namespace["record_withdrawal"](app, 42, "4111111111111111", "100.00")
            stop = asyncio.Event()
            worker = asyncio.create_task(namespace["worker"](stop))
            for _ in range(1500):
                record = await ledger.get("enot", "withdrawal-42")
                if record is not None and record.state is LedgerState.SUCCEEDED:
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(worker, 30)
        assert books(sandbox.state)[1]["withdrawal-42"] == 1
        assert sandbox.duplicates() == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["new", "existing"]
    assert lines[2] == "1 payouts driven, 0 handed back unfinished"


async def test_the_prometheus_example_counts_every_transition(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from payout_async import IntellectMoneyClient
    from payout_async.intellectmoney import OperationRequest
    from payout_async.ledger import SQLiteLedger

    credentials = SandboxCredentials()
    code = example("Metrics and audit: `on_transition`", "(client, ledger,", "(client, ledger,")
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        IntellectMoneyClient(
            credentials.im_user_token,
            credentials.im_secret_key,
            bearer_token=credentials.im_bearer_token,
            base_url=sandbox.intellectmoney_url,
        ) as client,
    ):
        namespace: dict[str, Any] = {"client": client, "ledger": ledger}
        exec(compile(code, str(README), "exec"), namespace)
        request = OperationRequest(pan="4111111111111111", amount="10.00", description="m-1")
        result = await namespace["payouts"].pay("m-1", request)
        history = await ledger.history("intellectmoney", "m-1")
    assert result.provider_id
    for step in history:
        labels = {"provider": "intellectmoney", "to_state": step.to_state.value}
        expected = sum(1 for s in history if s.to_state is step.to_state)
        assert REGISTRY.get_sample_value("payout_transitions_total", labels) == expected
