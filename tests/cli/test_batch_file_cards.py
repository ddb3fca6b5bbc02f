"""A card number in the wrong place of a batch file is never printed in clear
(issue 24): a CSV without a header, swapped columns, a key that is a card number, a
card in a header -- each error names the line and column with the card masked, in
text and in ``--json``; and a key that is a card number is refused."""

from __future__ import annotations

from pathlib import Path

from .support import cli_many

CARD = "5536912998877664"  # passes the Luhn check
SPACED = "5536 9129 9887 7664"
NEEDLES = (CARD, SPACED, "5536-9129-9887-7664", "9129 9887", "912998877664")
SBP_BANK = "100000000004"
#: Credentials for a dry run, which sends nothing (it reads the Enot balance: at a
#: closed loopback port here, a warning).
ENV = {
    "PAYOUT_ASYNC_ENOT_BASE_URL": "http://127.0.0.1:9/",
    "PAYOUT_ASYNC_IM_BASE_URL": "http://127.0.0.1:9/",
    "PAYOUT_ASYNC_IM_USER_TOKEN": "token",
    "PAYOUT_ASYNC_IM_SECRET_KEY": "secret",
    "PAYOUT_ASYNC_IM_BEARER_TOKEN": "bearer",
    "PAYOUT_ASYNC_ENOT_USER_ID": "user",
    "PAYOUT_ASYNC_ENOT_SECRET_KEY": "secret",
}


async def test_batch_file_errors_never_print_the_card(tmp_path: Path) -> None:
    files = {
        "no header": f"k1,enot,card,{SPACED},10.00\nk2,enot,card,{CARD},11.00\n",
        "swapped": f"key,provider,method,recipient,amount\nk3,enot,{CARD},card,10.00\n",
        "swapped spaced": f"key,provider,method,recipient,amount\nk4,enot,{SPACED},card,1.00\n",
        "card key": f"key,provider,method,recipient,amount\n{SPACED},enot,card,{CARD},1.00\n"
        f"{CARD},intellectmoney,card,{CARD},1.00\n",
        "card header": f"key,provider,method,recipient,amount,{CARD}\nk5,enot,card,{CARD},1\n",
        "card in sbp": f"key,provider,method,recipient,amount,bank_id\n"
        f"k6,enot,sbp,{SPACED},1.00,{SBP_BANK}\n",
    }
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    runs = []
    for name, text in files.items():
        path = tmp_path / f"{name.replace(' ', '-')}.csv"
        path.write_text(text)
        runs += [
            ["batch", str(path), "--ledger", ledger, "--dry-run"],
            ["batch", str(path), "--ledger", ledger, "--dry-run", "--json"],
        ]
    header = str(tmp_path / "card-header.csv")
    runs.append(["batch", header, "--ledger", ledger, "--dry-run", "--ignore-unknown-columns"])
    done = await cli_many(runs, env=ENV, state=tmp_path)
    for args, run in zip(runs, done, strict=True):
        assert run.code == (0 if run is done[-1] else 2), f"{args}: {run}"
        for needle in NEEDLES:
            assert needle not in run.out + run.err, f"{args}: {needle!r} printed: {run}"
    by_file = dict(zip(files, done[:-1:2], strict=True))
    no_header = by_file["no header"].err
    assert "unknown column(s) 'k1', 'enot', 'card', '5536 91** **** 7664'" in no_header
    assert "unknown service '553691******7664'" in by_file["swapped"].err
    assert "unknown service '5536 91** **** 7664'" in by_file["swapped spaced"].err
    refused = by_file["card key"].err
    assert "line 2: key: must not be a card number" in refused, refused
    assert "line 3: key: must not be a card number" in refused, refused
    assert "553691******7664" in by_file["card header"].err
    assert "ignoring column(s) '553691******7664'" in done[-1].err
