"""The ledger's encryption key on the command line: ``ledger-key`` makes one; ``batch``,
``status`` and the others take it from ``PAYOUT_ASYNC_LEDGER_KEY``,
``--ledger-key-file``, the config file's ``ledger_key`` or the URL's ``key_env``; a
ledger written with it keeps no card number, and shows only masked ones."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.ledger import new_encryption_key
from payout_async.sandbox import Sandbox

from ..ledger.at_rest import luhn_card, sqlite_hits
from ..payouts.support import fast_config
from .support import cli, cli_many, credentials, write_csv

RNG = random.Random(1212)
CARDS = {"k-im": luhn_card(RNG), "k-enot": luhn_card(RNG), "k-refused": luhn_card(RNG)}


def masked(card: str) -> str:
    return f"{card[:6]}******{card[-4:]}"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def batch_file(path: Path) -> Path:
    def row(key: str, provider: str, amount: str) -> dict[str, str]:
        return {"key": key, "provider": provider, "method": "card", "recipient": CARDS[key],
                "amount": amount, "bank_id": "",
                "description": key if provider == "intellectmoney" else ""}  # fmt: skip

    rows = [
        row("k-im", "intellectmoney", "10.00"),
        row("k-enot", "enot", "11.00"),
        row("k-refused", "enot", "999999.00"),  # refused by the provider: kept to pay again
    ]
    return write_csv(path, rows)


async def test_ledger_key_prints_a_new_key() -> None:
    first, second = await cli_many([["ledger-key"], ["ledger-key"]])
    assert first.code == 0 and second.code == 0, first
    key = first.out.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32 and key != second.out.strip()
    assert "PAYOUT_ASYNC_LEDGER_KEY" in first.err


async def test_a_batch_with_a_key_keeps_no_card_and_shows_them_masked(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    key = new_encryption_key()
    env = {**credentials(sandbox), "PAYOUT_ASYNC_LEDGER_KEY": key}
    run = await cli(
        "batch", str(batch_file(tmp_path / "batch.csv")), "--ledger", ledger, "--no-progress",
        "--json", "--allow-partial", env=env, state=tmp_path,
    )  # fmt: skip
    assert run.code == 1, run  # one refused by the provider
    report = {p["key"]: p for p in json.loads(run.out)["payouts"]}
    assert report["k-im"]["status"] == report["k-enot"]["status"] == "succeeded"
    assert report["k-refused"]["state"] == "refused"
    for name, card in CARDS.items():
        assert report[name]["recipient"] == masked(card)
        assert sqlite_hits(db, card) == [], name  # not even the refused row's
        assert card not in run.out and card not in run.err

    key_file = tmp_path / "ledger.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(f'ledger = "{ledger}"\nledger_key = "{key}"\n')
    config.chmod(0o600)
    url_env = {"MY_LEDGER_KEY": key}
    runs = await cli_many(
        [
            ["status", "k-refused", "--ledger", ledger],  # PAYOUT_ASYNC_LEDGER_KEY
            ["status", "k-refused", "--ledger", ledger, "--json"],
            ["status", "k-refused", "--ledger", ledger, "--ledger-key-file", str(key_file)],
            ["status", "k-refused", "--config", str(config)],
            ["status", "--ledger", f"{ledger}?key_env=MY_LEDGER_KEY", "--json"],
        ],
        env={**env, **url_env},
    )
    key_file_run, config_run, url_run = runs[2:]
    for status in runs:
        assert status.code == 0, status
        assert CARDS["k-refused"] not in status.out + status.err
    assert masked(CARDS["k-refused"]) in runs[0].out
    assert json.loads(runs[1].out)["payouts"][0]["recipient"] == masked(CARDS["k-refused"])
    assert masked(CARDS["k-refused"]) in key_file_run.out + config_run.out
    listed = json.loads(url_run.out)["payouts"]
    assert [p["recipient"] for p in listed] == [masked(CARDS["k-refused"])]

    without, final_without, two_keys = await cli_many(
        [
            ["status", "--ledger", ledger],
            ["status", "k-im", "--ledger", ledger],
            ["status", "--ledger", f"{ledger}?key_env=MY_LEDGER_KEY"],
        ],
        env={"MY_LEDGER_KEY": new_encryption_key(), "PAYOUT_ASYNC_LEDGER_KEY": key},
    )
    assert final_without.code == 0, final_without  # a final row is readable without it
    assert masked(CARDS["k-im"]) in final_without.out
    assert two_keys.code == 2 and "two different encryption keys" in two_keys.err, two_keys
    assert without.code == 0  # (it had the key from the environment)
    # Read-only commands need no key: the masked recipient is kept beside the sealed one.
    missing = await cli("status", "k-refused", "--ledger", ledger)
    assert missing.code == 0, missing
    assert masked(CARDS["k-refused"]) in missing.out
    assert CARDS["k-refused"] not in missing.out + missing.err


async def test_without_a_key_the_final_payouts_leave_no_card(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    run = await cli(
        "batch", str(batch_file(tmp_path / "batch.csv")), "--ledger", f"sqlite:///{db}",
        "--no-progress", "--allow-partial", env=credentials(sandbox), state=tmp_path,
    )  # fmt: skip
    assert run.code == 1, run  # one refused by the provider
    assert sqlite_hits(db, CARDS["k-im"]) == [] and sqlite_hits(db, CARDS["k-enot"]) == []
    # The refused row keeps its recipient in clear, so that reconcile can pay it again.
    assert sqlite_hits(db, CARDS["k-refused"])
