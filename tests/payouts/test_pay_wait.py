"""``pay(..., wait=seconds)``: a web request never waits for a payout longer than it
chose, and every payout still ends paid exactly once -- through the docs' example app
(docs/examples/web_app.py), served on loopback against a slow, lagging and lossy
sandbox."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from payout_async import PayoutStatus, Timeouts, ValidationError
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import FaultKind, Sandbox

from .support import CARD, enot_client, enot_request, fast_config, payouts

sys.path.insert(0, str(Path(__file__).parents[2] / "docs" / "examples"))
import web_app

#: What a request may take beyond its ``wait``: reading the row, the event loop, a
#: loaded machine. Far below what the payouts themselves take here.
SLACK = 3.0


async def test_pay_with_a_wait_returns_in_time_and_the_payout_goes_on(tmp_path: Path) -> None:
    async with (
        Sandbox(config=fast_config(enot_final_after=4.0)) as sandbox,
        enot_client(sandbox.enot_url) as client,
        SQLiteLedger(tmp_path / "p.db") as ledger,
    ):
        flow = payouts(client, ledger)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A wait of 2 s leaves half a second to read the row (``min(1, wait / 4)``): on
        # a loaded machine a SQLite read queued behind the drive's commits took longer
        # than the eighth of a second a 0.5 s wait leaves (the answer then says so,
        # without a state).
        early = await flow.pay("k", enot_request(), wait=2.0)
        assert loop.time() - started < 2.0 + SLACK
        assert early.status is PayoutStatus.PROCESSING
        assert early.state in (LedgerState.SENDING, LedgerState.PROCESSING)
        final = await flow.pay("k", enot_request())  # joins the drive going on
        assert final.status is PayoutStatus.SUCCEEDED
        await flow.aclose()
    assert sandbox.paid_per_payout() == Counter({("enot", "k"): 1})


async def test_a_burst_larger_than_the_clients_pool_is_paid_without_parking(
    tmp_path: Path,
) -> None:
    """A web app's burst: 20 payouts handed to a client with 2 connections, its
    providers answering in a tenth of a second -- far longer than ``connect``. Each
    request waits its turn for a connection (before its fence), so none is failed
    unsent and no payout spends its tries and send budget on the client's own queue."""
    config = fast_config(answer_delay={"enot.create": 0.1, "enot.info": 0.1})
    short_connect = Timeouts(total=2.0, connect=0.02, read=1.0)
    keys = [f"burst-{n}" for n in range(20)]
    async with (
        Sandbox(config=config) as sandbox,
        enot_client(sandbox.enot_url, timeouts=short_connect, limit=2) as client,
        SQLiteLedger(tmp_path / "p.db") as ledger,
    ):
        flow = payouts(client, ledger)
        for key in keys:
            early = await flow.pay(key, enot_request(), wait=0.05)
            assert early.status is PayoutStatus.PROCESSING
        await flow.aclose(drain=60.0)
        results = [await flow.get(key) for key in keys]
    assert [r.status if r else None for r in results] == [PayoutStatus.SUCCEEDED] * len(keys)
    assert sandbox.paid_per_payout() == Counter({("enot", key): 1 for key in keys})


async def test_aclose_hands_back_the_payouts_still_driven(tmp_path: Path) -> None:
    async with (
        Sandbox(config=fast_config(enot_final_after=30.0)) as sandbox,
        enot_client(sandbox.enot_url) as client,
        SQLiteLedger(tmp_path / "p.db") as ledger,
    ):
        flow = payouts(client, ledger)
        early = await flow.pay("k", enot_request(), wait=0.2)
        assert early.status is PayoutStatus.PROCESSING
        await flow.aclose(drain=0.1)
        record = await ledger.get("enot", "k")
        assert record is not None and not record.state.is_final
        assert record.lease_owner is None  # handed back: resume() or a worker goes on
        with pytest.raises(ValidationError):
            await flow.pay("k", enot_request(), wait=-1)


async def test_the_example_web_app_answers_in_time_and_pays_each_withdrawal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten withdrawals, each posted three times at once, plus a conflicting and an
    invalid one, against a sandbox that loses and delays answers and hides new payoffs
    for a while: every request is answered within the app's wait, 409 and 422 where
    due, and in the end each withdrawal is paid exactly once."""
    monkeypatch.setattr(web_app, "WAIT", 1.0)
    config = fast_config(
        enot_final_after=1.5,
        enot_info_lag=0.5,
        fault_rate=0.3,
        fault_kinds=[FaultKind.COMMIT_THEN_CLOSE, FaultKind.HTTP_502, FaultKind.LATENCY],
        fault_routes=["enot.create", "enot.info"],
        duplicate_order_id="accept",
        seed=11,
    )
    async with (
        Sandbox(config=config) as sandbox,
        enot_client(sandbox.enot_url) as client,
        SQLiteLedger(tmp_path / "p.db") as ledger,
    ):
        flow = payouts(client, ledger)
        server = TestServer(web_app.make_app(flow), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as http:
                loop = asyncio.get_running_loop()

                async def post(withdrawal: str, **form: str) -> tuple[int, dict[str, Any], float]:
                    started = loop.time()
                    url = server.make_url(f"/withdrawals/{withdrawal}")
                    async with http.post(url, data=form) as response:
                        body = await response.json()
                        return response.status, body, loop.time() - started

                good = {"card": CARD, "amount": "10.00"}
                posts = [post(str(n), **good) for n in range(10) for _ in range(3)]
                posts.append(post("0", card=CARD, amount="99.00"))  # other details: 409
                posts.append(post("x", card="1234", amount="10.00"))  # a bad card: 422
                posts.append(post("y", card=CARD, amount="ten"))  # a bad amount: 422
                answers = await asyncio.gather(*posts)
            for _, _, took in answers:
                assert took < web_app.WAIT + SLACK
            statuses = [status for status, _, _ in answers]
            assert statuses[-3:] == [409, 422, 422]
            assert set(statuses[:-3]) <= {200, 202}
            # The outcome: ask again (no wait) for each withdrawal.
            for n in range(10):
                result = await flow.pay(f"withdrawal-{n}", enot_request())
                if result.status is PayoutStatus.PROCESSING:
                    result = (await flow.resume() or [result])[0]
            rows = {r.key: r.state for r in await ledger.records(provider="enot")}
        finally:
            await server.close()
        assert rows == {f"withdrawal-{n}": LedgerState.SUCCEEDED for n in range(10)}
        paid = sandbox.paid_per_payout()
        assert {key: paid[("enot", key)] for key in rows} == dict.fromkeys(rows, 1)
        assert sandbox.duplicates() == []
