"""Issue 14: production batches. ``--rate`` as the sandbox measures it, and money that
runs out: an underfunded Enot file refused before anything is sent, and a provider's
refusal for want of money mid-batch stopping new payouts until a top-up and a re-run.
Each test drives the installed ``payout-async`` command against a sandbox in this
process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from payout_async import PayoutResult, PayoutStatus
from payout_async.cli._funds import out_of_funds
from payout_async.cli._report import EXIT_FUNDS
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import Sandbox, peak_rate

from ..payouts.support import fast_config
from .support import CARD, Run, cli, cli_many, credentials, write_csv

#: Seconds a request may spend on its way (the sandbox timestamps it when its handler
#: runs): a stall of either process on a loaded machine moves requests to a later window.
SLACK = 0.2


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def rows(provider: str, amounts: list[str], prefix: str) -> list[dict[str, str]]:
    """Card payouts of ``amounts`` (IntellectMoney rows carry their key as Description)."""
    return [
        {"key": f"{prefix}-{n}", "provider": provider, "method": "card", "recipient": CARD,
         "amount": amount, "bank_id": "",
         "description": f"{prefix}-{n}" if provider == "intellectmoney" else ""}
        for n, amount in enumerate(amounts)
    ]  # fmt: skip


def one_error(run: Run) -> str:
    assert run.code == 2, run
    assert len(run.errors) == 1 and "Traceback" not in run.err, run
    return run.errors[0]


def paid_once(sandbox: Sandbox, keys: list[str]) -> None:
    """Every key paid exactly once (the books' payments, by Description or order_id)."""
    assert sandbox.duplicates() == []
    paid = sandbox.paid_per_payout()
    assert {key: paid[provider, key] for provider, key in paid} == dict.fromkeys(keys, 1)


# -- rate limits -------------------------------------------------------------------------


async def test_rate_options_are_checked_before_anything_is_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "b.csv", rows("enot", ["5.00"], "ro"))
    config = tmp_path / "c.toml"
    config.write_text('[enot]\nrate = "fast"\n')
    config.chmod(0o600)
    runs = await cli_many(
        [["batch", str(path), "--rate", "enot=0"],
         ["batch", str(path), "--rate", "paypal=5"],
         ["batch", str(path), "--rate", "nan"],
         ["batch", str(path), "--rate-burst", "enot=3"],
         ["batch", str(path), "--rate", "5", "--rate-burst", "enot=1.5"],
         ["batch", str(path), "--config", str(config)]],
        env=credentials(sandbox), cwd=tmp_path, state=tmp_path,
    )  # fmt: skip
    problems = [one_error(run) for run in runs]
    assert "--rate" in problems[0] and "above 0" in problems[0]
    assert "unknown provider 'paypal'" in problems[1]
    assert "--rate" in problems[2]
    assert "a burst for enot needs a rate" in problems[3]
    assert "--rate-burst" in problems[4]
    assert "enot rate must be a number" in problems[5] and "'fast'" in problems[5]
    assert sum(sandbox.faults.call_counts.values()) == 0


async def test_batch_keeps_to_the_rate_set_per_provider(sandbox: Sandbox, tmp_path: Path) -> None:
    """``--rate`` per provider (flag for one, config file for the other), measured on
    the sandbox's clock: never more than rate x (window + SLACK) + burst in any window
    (unlimited, each provider's 36 or more requests would come in well under a second)."""
    file = rows("intellectmoney", ["1.00"] * 12, "ri") + rows("enot", ["1.00"] * 12, "re")
    path = write_csv(tmp_path / "b.csv", file)
    config = tmp_path / "c.toml"
    config.write_text("[enot]\nrate = 15\nrate_burst = 2\n")
    config.chmod(0o600)
    run = await cli(
        "batch", str(path), "--no-progress", "--rate", "intellectmoney=20", "--rate", "5",
        "--config", str(config), env=credentials(sandbox), cwd=tmp_path, state=tmp_path,
    )  # fmt: skip
    assert run.code == 0, run
    paid_once(sandbox, [row["key"] for row in file])
    traffic = sandbox.state.traffic
    im_times, enot_times = traffic.provider_times("intellectmoney"), traffic.provider_times("enot")
    assert len(im_times) >= 36 and len(enot_times) >= 12  # create+execute+state; create(+info)
    for times, per_second, burst in ((im_times, 20, 1), (enot_times, 15, 2)):
        for window in (0.5, 1.0):
            most = round(peak_rate(times, window) * window)
            assert most <= per_second * (window + SLACK) + burst, (per_second, window, most)


# -- funds -------------------------------------------------------------------------------


async def test_an_underfunded_enot_file_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    async with Sandbox(config=fast_config(enot_balance="50.00")) as sandbox:
        file = rows("enot", ["30.00", "30.00", "30.00"], "uf")
        path = write_csv(tmp_path / "b.csv", file)
        env = credentials(sandbox)
        ledger = f"sqlite:///{tmp_path / 'l.db'}"
        run = await cli("batch", str(path), "--ledger", ledger, env=env, state=tmp_path)
        problem = one_error(run)
        assert "50.00" in problem and "90.00" in problem and "nothing was sent" in problem
        assert "--allow-partial" in problem
        assert sandbox.stats().enot.created == 0
        assert set(sandbox.faults.call_counts) == {"enot.balance"}  # one read, no payout

        # --allow-partial: pays what the balance covers, stops at the first refusal.
        run = await cli(
            "batch", str(path), "--ledger", ledger, "--allow-partial", "--concurrency", "1",
            "--no-progress", "--json", env=env, state=tmp_path,
        )  # fmt: skip
        assert run.code == EXIT_FUNDS, run
        assert "does not cover" in run.err and "Top up and re-run" in run.err
        statuses = {p["key"]: p["status"] for p in json.loads(run.out)["payouts"]}
        assert statuses == {"uf-0": "succeeded", "uf-1": "rejected", "uf-2": "not_started"}
        assert sandbox.stats().enot.created == 1
        async with SQLiteLedger(tmp_path / "l.db") as book:
            refused = await book.get("enot", "uf-1")
            assert refused is not None and refused.state is LedgerState.REFUSED
            assert await book.get("enot", "uf-2") is None  # never started

        sandbox.top_up("enot", Decimal("100.00"))
        run = await cli("batch", str(path), "--ledger", ledger, "--no-progress", env=env,
                        state=tmp_path)  # fmt: skip
        assert run.code == 0, run
        paid_once(sandbox, [row["key"] for row in file])
        assert sandbox.stats().enot.created == 3


async def test_not_enough_money_mid_batch_stops_new_payouts_until_a_top_up(
    tmp_path: Path,
) -> None:
    """IntellectMoney answers NotEnoughMoney per operation: after the first, no new
    IntellectMoney payout starts (Enot goes on), the run exits EXIT_FUNDS saying "top up
    and re-run", and the re-run after a top-up pays the rest, nothing twice."""
    async with Sandbox(config=fast_config(im_balance="55.00")) as sandbox:
        im_rows = rows("intellectmoney", ["10.00"] * 20, "nm")
        enot_rows = rows("enot", ["10.00"] * 4, "ne")
        path = write_csv(tmp_path / "b.csv", im_rows + enot_rows)
        env = credentials(sandbox)
        ledger = f"sqlite:///{tmp_path / 'l.db'}"
        run = await cli(
            "batch", str(path), "--ledger", ledger, "--concurrency", "3", "--no-progress",
            "--json", env=env, state=tmp_path,
        )  # fmt: skip
        assert run.code == EXIT_FUNDS, run
        assert "Top up and re-run" in run.err and "intellectmoney" in run.err
        payouts = json.loads(run.out)["payouts"]
        im = [p for p in payouts if p["provider"] == "intellectmoney"]
        by_status = {s: [p for p in im if p["status"] == s] for s in {p["status"] for p in im}}
        assert len(by_status["succeeded"]) == 5  # 55.00 covers five
        assert by_status["rejected"], run
        assert all(p["state"] == "refused" for p in by_status["rejected"])
        assert all("top up and re-run" in p["reason"] for p in by_status["not_started"])
        assert len(by_status["not_started"]) >= 20 - 5 - len(by_status["rejected"]) - 4
        stats = sandbox.stats()
        assert stats.intellectmoney.created < 20  # no new payout after the first refusal
        assert stats.enot.paid + stats.enot.waiting == 4  # Enot went on

        sandbox.top_up("intellectmoney", Decimal("500.00"))
        run = await cli("batch", str(path), "--ledger", ledger, "--no-progress", env=env,
                        state=tmp_path)  # fmt: skip
        assert run.code == 0, run
        paid_once(sandbox, [row["key"] for row in im_rows + enot_rows])
        assert sandbox.stats().intellectmoney.balance == Decimal("555.00") - Decimal("200.00")


@pytest.mark.parametrize(
    ("provider", "provider_status", "reason", "expected"),
    [
        ("intellectmoney", "NotEnoughMoney", "Недостаточно средств на балансе", True),
        ("intellectmoney", "Failed", "Недостаточно средств на балансе", False),
        ("enot", None, "create refused: HTTP 403: Недостаточно средств на балансе.", True),
        ("enot", None, "create refused: HTTP 403: Insufficient funds", True),
        ("enot", None, "create refused: HTTP 403: Сумма вывода больше доступной", False),
    ],
)
def test_what_counts_as_a_refusal_for_want_of_money(
    provider: str, provider_status: str | None, reason: str, expected: bool
) -> None:
    refused = PayoutResult(
        key="k", status=PayoutStatus.REJECTED, provider=provider, reason=reason,
        provider_status=provider_status, state=LedgerState.REFUSED,
    )  # fmt: skip
    assert out_of_funds(refused) is expected
    failed = attrs.evolve(refused, status=PayoutStatus.FAILED, state=LedgerState.FAILED)
    assert out_of_funds(failed) is False  # final rows are never paid again
