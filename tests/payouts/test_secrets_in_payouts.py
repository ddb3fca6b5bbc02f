"""Through the whole reliability layer, with faults and DEBUG logging, no secret or
card number shows up in logs, results or ledger reasons."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import SQLiteLedger
from payout_async.sandbox import FaultKind, Sandbox, SandboxCredentials

from .support import SHORT_TIMEOUTS, enot_client, fast_config, im_client, payouts

MARKERS = SandboxCredentials(
    im_user_token="CANARY-USER-TOKEN-7f3a",
    im_secret_key="CANARY-SIGN-SECRET-7f3a",
    im_bearer_token="CANARY-BEARER-7f3a",
    enot_secret_key="CANARY-ENOT-SECRET-7f3a",
)
PAN = "5536913776151249"


async def test_no_secret_in_logs_results_or_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="payout_async")
    async with (
        Sandbox(config=fast_config(failure_ratio=0.5), credentials=MARKERS) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        # Lost answers are waited out for 0.6 s + a tenth of the 1.5 s lease, not 2.5 s.
        im_client(sandbox.intellectmoney_url, MARKERS, timeouts=SHORT_TIMEOUTS) as im,
        enot_client(sandbox.enot_url, MARKERS, timeouts=SHORT_TIMEOUTS) as enot,
    ):
        for route in ("im.create", "im.execute", "im.state", "enot.create", "enot.info"):
            sandbox.faults.script(route, nth=1, kind=FaultKind.COMMIT_THEN_CLOSE)
            sandbox.faults.script(route, nth=2, kind=FaultKind.HTTP_502)
        results = []
        for n in range(4):
            results.append(
                await payouts(im, ledger, lease_seconds=1.5).pay(
                    f"im-{n}", OperationRequest(pan=PAN, amount="10.00", description=f"im-{n}")
                )
            )
            results.append(
                await payouts(enot, ledger, lease_seconds=1.5).pay(
                    f"en-{n}", PayoffRequest("card", PAN, "10.00")
                )
            )
        records = await ledger.records()

    texts = [caplog.text, repr(im), repr(enot)]
    texts += [repr(result) for result in results]
    texts += [repr(record) + str(record.reason) + str(record.last_error) for record in records]
    texts += [repr(OperationRequest(pan=PAN, amount="1")), repr(PayoffRequest("card", PAN, "1"))]
    blob = "\n".join(texts)
    assert "DEBUG" in caplog.text or caplog.records, "the test must capture debug logs"
    for secret in (
        MARKERS.im_user_token,
        MARKERS.im_secret_key,
        MARKERS.im_bearer_token,
        MARKERS.enot_secret_key,
        PAN,
    ):
        assert secret not in blob, secret
    assert "553691******1249" in blob  # masked card numbers are fine


PHONE = "+79161234567"
SBP_BANK = "100000000004"


async def test_transition_logs_hold_no_card_phone_or_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The INFO line logged for every transition (and the on_transition callback's
    records) of payouts by card and by phone, through both providers, with faults:
    no full card number, phone or secret anywhere."""
    caplog.set_level(logging.INFO, logger="payout_async")
    seen: list[str] = []
    async with (
        Sandbox(config=fast_config(), credentials=MARKERS) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url, MARKERS) as im,
        enot_client(sandbox.enot_url, MARKERS) as enot,
    ):
        for route in ("im.create", "im.execute", "enot.create"):
            sandbox.faults.script(route, nth=1, kind=FaultKind.COMMIT_THEN_CLOSE)
        hook = lambda record, transition: seen.append(repr(record) + repr(transition))  # noqa: E731
        im_payouts = payouts(im, ledger, on_transition=hook)
        enot_payouts = payouts(enot, ledger, on_transition=hook)
        card = OperationRequest(pan=PAN, amount="10.00", description="im-card")
        phone = OperationRequest(account=PHONE, bank_id=SBP_BANK, amount="10.00")
        results = [
            await im_payouts.pay("im-card", card),
            await im_payouts.pay("im-phone", phone),
            await enot_payouts.pay("en-card", PayoffRequest("card", PAN, "10.00")),
            await enot_payouts.pay(
                "en-phone", PayoffRequest("sbp", PHONE, "10.00", sbp_bank_id=SBP_BANK)
            ),
        ]
    transitions = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and " -> " in r.getMessage()
    ]
    for key in ("im-card", "im-phone", "en-card", "en-phone"):
        assert any(line.startswith(f"payout {key} ") for line in transitions), key
    assert all(result.provider_id for result in results), results
    blob = "\n".join([caplog.text, *seen])
    for secret in (
        MARKERS.im_user_token,
        MARKERS.im_secret_key,
        MARKERS.im_bearer_token,
        MARKERS.enot_secret_key,
        PAN,
        PHONE,
        PHONE[1:],
    ):
        assert secret not in blob, secret
