"""``Payouts(on_wait=...)``: each long wait told as it begins (with its reason and
until when) and as it ends; a failing hook never breaks a payout."""

from __future__ import annotations

import time
from pathlib import Path

from payout_async import PayoutStatus
from payout_async.ledger import SQLiteLedger
from payout_async.payouts import Waiting
from payout_async.payouts._waiting import GRACE, SETTLE
from payout_async.sandbox import FaultKind, Sandbox

from .support import enot_client, enot_request, fast_config, im_client, im_request, payouts


async def test_lost_answers_are_waited_out_aloud(tmp_path: Path) -> None:
    told: list[tuple[float, Waiting]] = []
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        sandbox.faults.script("enot.create", kind=FaultKind.HTTP_502, nth=1)
        sandbox.faults.script("im.execute", kind=FaultKind.HTTP_502, nth=1)

        def on_wait(event: Waiting) -> None:
            told.append((time.time(), event))

        im_result = await payouts(im, ledger, on_wait=on_wait).pay("im-1", im_request("im-1"))
        en_result = await payouts(enot, ledger, on_wait=on_wait).pay("en-1", enot_request())
    assert (im_result.status, en_result.status) == (PayoutStatus.SUCCEEDED,) * 2
    by_key = {key: [(at, e) for at, e in told if e.key == key] for key in ("im-1", "en-1")}
    for key, reason in (("im-1", SETTLE), ("en-1", GRACE)):
        (began_at, began), (_, ended) = by_key[key]
        assert (began.reason, ended.reason) == (reason, reason)
        assert began.until is not None and began.until > began_at  # a time ahead
        assert began.until - began_at <= began.window + 30  # at most the window + in flight
        assert ended.over and not began.over


async def test_a_failing_hook_never_breaks_a_payout(tmp_path: Path) -> None:
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        enot_client(sandbox.enot_url) as enot,
    ):
        sandbox.faults.script("enot.create", kind=FaultKind.HTTP_502, nth=1)

        def on_wait(event: Waiting) -> None:
            raise RuntimeError("broken hook")

        result = await payouts(enot, ledger, on_wait=on_wait).pay("en-1", enot_request())
        assert result.status is PayoutStatus.SUCCEEDED
        assert sandbox.duplicates() == []
