"""``Payouts(on_transition=...)``: called once per durable transition, with the row and
the transition the ledger's history holds; a failing callback never breaks a payout;
every transition is logged once at INFO."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from payout_async import ConfigurationError, PayoutStatus
from payout_async.ledger import LedgerState, PayoutRecord, SQLiteLedger, Transition
from payout_async.sandbox import Sandbox

from ..ledger.support import Backend
from .support import enot_client, enot_request, fast_config, im_client, im_request, payouts


def _steps(transitions: list[Transition]) -> list[tuple[LedgerState | None, LedgerState]]:
    return [(t.from_state, t.to_state) for t in transitions]


async def test_sync_callback_sees_every_transition_of_the_history(tmp_path: Path) -> None:
    seen: list[tuple[PayoutRecord, Transition]] = []
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        on = lambda record, transition: seen.append((record, transition))  # noqa: E731
        im_result = await payouts(im, ledger, on_transition=on).pay("im-1", im_request("im-1"))
        en_result = await payouts(enot, ledger, on_transition=on).pay("en-1", enot_request())
        assert im_result.status is PayoutStatus.SUCCEEDED
        assert en_result.status is PayoutStatus.SUCCEEDED
        for provider, key in (("intellectmoney", "im-1"), ("enot", "en-1")):
            history = await ledger.history(provider, key)
            reported = [t for _, t in seen if t.key == key]
            assert _steps(reported) == _steps(history)
            assert [t.note for t in reported] == [t.note for t in history]
            assert reported[0].from_state is None
            assert reported[-1].to_state is LedgerState.SUCCEEDED
            last_record = [r for r, t in seen if t.key == key][-1]
            assert last_record == await ledger.get(provider, key)
    for record, transition in seen:
        assert (record.provider, record.key, record.state) == (
            transition.provider,
            transition.key,
            transition.to_state,
        )
        assert transition.at == record.updated_at


async def test_failing_callbacks_are_logged_and_never_break_a_payout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def broken_async(record: PayoutRecord, transition: Transition) -> None:
        calls.append(record.key)
        raise RuntimeError("metrics backend is down")

    def broken_sync(record: PayoutRecord, transition: Transition) -> None:
        calls.append(record.key)
        raise ValueError("audit log is full")

    caplog.set_level(logging.INFO, logger="payout_async")
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        result = await payouts(im, ledger, on_transition=broken_async).pay(
            "im-1", im_request("im-1")
        )
        assert result.status is PayoutStatus.SUCCEEDED
        result = await payouts(enot, ledger, on_transition=broken_sync).pay("en-1", enot_request())
        assert result.status is PayoutStatus.SUCCEEDED
        im_steps = len(await ledger.history("intellectmoney", "im-1"))
        en_steps = len(await ledger.history("enot", "en-1"))
    assert calls.count("im-1") == im_steps
    assert calls.count("en-1") == en_steps
    failures = [r for r in caplog.records if "on_transition failed" in r.getMessage()]
    assert len(failures) == im_steps + en_steps
    assert all(r.levelno >= logging.WARNING and r.exc_info for r in failures)
    assert {type(r.exc_info[1]) for r in failures if r.exc_info} == {RuntimeError, ValueError}


async def test_each_transition_is_logged_once_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_async")
    async with (
        Sandbox(config=fast_config()) as sandbox,
        SQLiteLedger(tmp_path / "ledger.db") as ledger,
        im_client(sandbox.intellectmoney_url) as im,
    ):
        result = await payouts(im, ledger).pay("im-log", im_request("im-log"))
        history = await ledger.history("intellectmoney", "im-log")
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.getMessage().startswith("payout im-log ")
    ]
    expected = [
        f"{'none' if t.from_state is None else t.from_state.value} -> {t.to_state.value}"
        for t in history
    ]
    assert [line.split(": ", 1)[1].split(",", 1)[0] for line in lines] == expected
    assert "(intellectmoney)" in lines[-1]
    assert f"provider id {result.provider_id}" in lines[-1]
    assert "attempt 1" in lines[-1]


# Issue 27, item 5: a callback's CancelledError, or a callback that never returns. -----


@pytest.mark.parametrize("provider", ["intellectmoney", "enot"])
async def test_a_callback_raising_cancelled_error_never_strands_a_payout(
    backend: Backend, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def awaits_a_cancelled_future(record: PayoutRecord, transition: Transition) -> None:
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled  # what a metrics client whose own task was cancelled may do

    ledger = await backend.new()
    async with Sandbox(config=fast_config()) as sandbox:
        if provider == "intellectmoney":
            async with im_client(sandbox.intellectmoney_url) as im:
                flow = payouts(im, ledger, on_transition=awaits_a_cancelled_future)
                result = await flow.pay("c5-1", im_request("c5-1"))
        else:
            async with enot_client(sandbox.enot_url) as enot:
                flow = payouts(enot, ledger, on_transition=awaits_a_cancelled_future)
                result = await flow.pay("c5-1", enot_request())
        assert sandbox.duplicates() == []
    assert result.status is PayoutStatus.SUCCEEDED, result
    record = await ledger.get(provider, "c5-1")
    assert record is not None and record.state is LedgerState.SUCCEEDED
    assert record.lease_owner is None
    assert result.attempts == 1
    warned = [r for r in caplog.records if "raised CancelledError" in r.getMessage()]
    assert len(warned) == len(await ledger.history(provider, "c5-1"))


async def test_a_callback_that_never_returns_is_cut_short(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def hangs(record: PayoutRecord, transition: Transition) -> None:
        await asyncio.Event().wait()

    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url) as enot,
    ):
        flow = payouts(enot, ledger, on_transition=hangs, on_transition_timeout=0.05)
        result = await flow.pay("h5-1", enot_request())
    assert result.status is PayoutStatus.SUCCEEDED, result
    cut = [r for r in caplog.records if "was cut short" in r.getMessage()]
    assert len(cut) == len(await ledger.history("enot", "h5-1"))
    assert all(r.levelno == logging.WARNING for r in cut)
    with pytest.raises(ConfigurationError):
        payouts(enot, ledger, on_transition=hangs, on_transition_timeout=0)


async def test_cancelling_a_payout_inside_its_callback_still_cancels_it(backend: Backend) -> None:
    entered = asyncio.Event()

    async def slow(record: PayoutRecord, transition: Transition) -> None:
        if transition.to_state is LedgerState.PROCESSING:  # the drive's own move
            entered.set()
            await asyncio.Event().wait()

    ledger = await backend.new()
    async with (
        Sandbox(config=fast_config()) as sandbox,
        enot_client(sandbox.enot_url) as enot,
    ):
        flow = payouts(enot, ledger, on_transition=slow, on_transition_timeout=60)
        paying = asyncio.create_task(flow.pay("x5-1", enot_request()))
        await entered.wait()
        paying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await paying
        await flow.aclose()
    record = await ledger.get("enot", "x5-1")
    assert record is not None and record.state is LedgerState.PROCESSING
    assert record.lease_owner is None  # given back: resume() goes on at once
