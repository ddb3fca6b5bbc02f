"""Issue 17: an operator-proof ``batch``. One test per numbered finding, each driving the
installed ``payout-async`` command as a subprocess against a sandbox in this process.
Independent runs of one test go at once (``cli_many``): start-up is most of their cost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from payout_async.cli._report import NOT_STARTED
from payout_async.ledger import LedgerState, SQLiteLedger
from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config
from .support import (
    CARD,
    COMMAND,
    Run,
    assert_paid_once,
    calls,
    cli,
    cli_many,
    credentials,
    good_rows,
    write_csv,
)

FULL = ["key", "provider", "method", "recipient", "amount", "bank_id", "currency",
        "recipient_name", "description"]  # fmt: skip
SBP_BANK = "100000000004"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


def one_error(run: Run) -> None:
    """A configuration or input error: exit 2, one ``error:`` line, no traceback."""
    assert run.code == 2, run
    assert len(run.errors) == 1, run
    assert "Traceback" not in run.err, run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# 1. A different ledger pays everything again. -----------------------------------------


async def test_1_the_ledger_is_never_a_surprise(sandbox: Sandbox, tmp_path: Path) -> None:
    env, state = credentials(sandbox), tmp_path / "state"
    path = write_csv(tmp_path / "batch.csv", good_rows(4, "f1"))
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()

    run = await cli("batch", str(path), "--no-progress", env=env, cwd=first, state=state)
    assert run.code == 0, run
    assert f"ledger: {first / 'payouts.db'} (SQLite, does not exist yet)" in run.err
    assert f"creating a new ledger at {first / 'payouts.db'}" in run.err
    assert mode(first / "payouts.db") == 0o600
    sent = calls(sandbox)

    runs = await cli_many(
        [
            ["batch", str(path), "--no-progress"],  # the default ledger, in another folder
            ["batch", str(path), "--ledger", "sqlite:payouts.db"],
            ["batch", str(path), "--ledger", "memory://"],
            ["batch", str(path), "--ledger", "sqlite://payouts.db"],
            ["status"],
            ["status", "--ledger", "sqlite:///typo.db"],
            ["resume"],
            ["reconcile", "--ledger", "sqlite:///typo.db"],
        ],
        env=env, cwd=other, state=state,
    )  # fmt: skip
    for run in runs:
        one_error(run)
    refused = runs[0].err
    assert f"ledger: {other / 'payouts.db'}" in refused
    assert f"already paid through another ledger ({first / 'payouts.db'})" in refused
    assert "--new-ledger" in refused
    assert "sqlite: must be followed by //" in runs[1].err
    assert "memory:// keeps nothing" in runs[2].err
    assert f"no ledger at {other / 'typo.db'}" in runs[5].err
    assert "never creates a ledger" in runs[4].err and "never creates a ledger" in runs[6].err

    # A user (or a host) whose registry never saw these keys: Enot itself knows them.
    run = await cli("batch", str(path), "--no-progress", env=env, cwd=other, state=tmp_path / "x")
    one_error(run)
    assert "enot already has a payoff for order_id 'f1-1'" in run.err
    assert list(other.iterdir()) == []  # nothing created anywhere
    assert calls(sandbox) - sent == 3  # the Enot reads (balance, two lookups), no payout
    assert_paid_once(sandbox, [f"f1-{n}" for n in range(4)])


# 2. Markup in keys or reasons crashes the report after paying. -------------------------


async def test_2_user_text_is_printed_literally(sandbox: Sandbox, tmp_path: Path) -> None:
    keys = ["mk[/]-1", "[bold red]mk-2[/bold red]", ":smile: [link=x]y"]
    rows = [
        {"key": keys[0], "provider": "intellectmoney", "method": "card", "recipient": CARD,
         "amount": "10.00", "description": keys[0]},
        {"key": keys[1], "provider": "enot", "method": "card", "recipient": CARD,
         "amount": "11.00"},
        {"key": keys[2], "provider": "enot", "method": "card", "recipient": CARD,
         "amount": "700000.00"},  # above the sandbox's tariff: refused, with a reason
    ]  # fmt: skip
    path = write_csv(tmp_path / "markup.csv", rows)
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    run = await cli("batch", str(path), "--ledger", ledger, "--no-progress",
                    env=credentials(sandbox), state=tmp_path)  # fmt: skip
    assert run.code == 1, run  # one refused; no crash, every row reported
    for key in keys:
        assert key in run.out, run
    assert "Traceback" not in run.err
    assert_paid_once(sandbox, keys[:2])

    # A reason worded with brackets and an escape sequence, as a provider might send it.
    reason = "err [code 5] [bold]x[/bold] \x1b[31mred"
    async with SQLiteLedger(db) as book:
        claim = await book.begin("enot", "r-1", "h", {"amount": "5.00"}, owner="w",
                                 lease_seconds=5, order_id="r-1")  # fmt: skip
        await book.transition("enot", "r-1", owner="w", token=claim.record.lease_token,
                              state=LedgerState.FAILED, lease_seconds=5,
                              reason=reason)  # fmt: skip
    listing, one, as_json = await cli_many(
        [["status", "--ledger", ledger], ["status", "r-1", "--ledger", ledger],
         ["status", keys[1], "--ledger", ledger, "--json"]]
    )  # fmt: skip
    shown = "err [code 5] [bold]x[/bold] \\x1b[31mred"  # the escape made visible
    assert shown in listing.out and shown in one.out, (listing, one)
    assert "\x1b" not in listing.out + one.out
    assert json.loads(as_json.out)["payouts"][0]["key"] == keys[1]


# 3. Unknown or differently-cased columns are silently dropped. --------------------------


async def test_3_columns_match_loosely_and_unknown_ones_are_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    excel = tmp_path / "excel.csv"  # Excel in a Russian locale: BOM, ';', capitals, spaces
    excel.write_bytes(
        "\ufeffKey; Provider ;METHOD;Recipient;Amount;Currency;Bank ID;Description\r\n"
        f"c3-1;intellectmoney;card;{CARD};10.00;TST;;c3-1\r\n"
        f"c3-2;enot;sbp;+7 (900) 123-45-67;11.00;;{SBP_BANK};\r\n".encode()
    )
    typo = tmp_path / "typo.csv"
    typo.write_text(
        f"key,provider,method,recipient,amount,descripton\nc3-3,enot,card,{CARD},1.00,x\n"
    )
    mangled = tmp_path / "mangled.csv"
    mangled.write_text("Key,Provider,Method,Recipient,Amount\nc3-4,enot,card,4.11111E+15,1.00\n")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"key,Key,provider,method,recipient,amount\na,b,enot,card,{CARD},1\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = credentials(sandbox)
    dry, unknown, ignored, excel_number, same = await cli_many(
        [["batch", str(excel), "--ledger", ledger, "--dry-run"],
         ["batch", str(typo), "--ledger", ledger],
         ["batch", str(typo), "--ledger", ledger, "--dry-run", "--ignore-unknown-columns"],
         ["batch", str(mangled), "--ledger", ledger],
         ["batch", str(twice), "--ledger", ledger]],
        env=env, state=tmp_path,
    )  # fmt: skip
    assert dry.code == 0 and "2 row(s) are valid" in dry.out, dry
    one_error(unknown)
    assert "unknown column(s) 'descripton' (did you mean description?)" in unknown.err
    assert ignored.code == 0 and "ignoring column(s) 'descripton'" in ignored.err, ignored
    assert excel_number.code == 2 and "line 2: Recipient: '4.11111E+15'" in excel_number.err
    assert "scientific notation" in excel_number.err
    one_error(same)
    # The two dry runs read the Enot balance (the real run's money check); nothing else.
    assert dict(sandbox.faults.call_counts) == {"enot.balance": 2}

    run = await cli("batch", str(excel), "--ledger", ledger, "--no-progress",
                    env=env, state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    (operation,) = [op for op in sandbox.state.intellectmoney if op.details.description == "c3-1"]
    assert operation.details.currency == "TST"  # the Currency column was read
    (payoff,) = [p for p in sandbox.state.enot if p.details.order_id == "c3-2"]
    assert payoff.details.wallet == "+79001234567"  # the phone, normalised


# 4. Dry-run passes rows the real run refuses; a refusal burns the key. ------------------


async def test_4_dry_run_applies_every_rule_of_the_real_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    good = {"provider": "intellectmoney", "method": "card", "recipient": CARD, "amount": "5.00"}
    current = write_csv(tmp_path / "current.csv", [
        {**good, "key": "c4-1", "description": "c4-1"},
        {**good, "key": "c4-2", "method": "qiwi", "recipient": "79001234567"},  # legacy only
    ], FULL)  # fmt: skip
    legacy = write_csv(tmp_path / "legacy.csv", [
        {**good, "key": "l4-1", "recipient_name": "Иван"},
        {**good, "key": "l4-2", "recipient_name": "Иван", "description": "not on legacy"},
        {**good, "key": "l4-3", "recipient_name": "И"},  # two to fifty characters
    ], FULL)  # fmt: skip
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = credentials(sandbox)
    runs = await cli_many(
        [["batch", str(current), "--ledger", ledger, "--dry-run"],
         ["batch", str(current), "--ledger", ledger],
         ["batch", str(legacy), "--ledger", ledger, "--im-api", "legacy", "--dry-run"],
         ["batch", str(legacy), "--ledger", ledger, "--im-api", "legacy"]],
        env=env, state=tmp_path,
    )  # fmt: skip
    for run in runs[:2]:
        assert run.code == 2 and "line 3: bank_id:" in run.err and "Qiwi" in run.err, run
        assert "nothing was sent" in run.err
    for run in runs[2:]:
        assert run.code == 2, run
        assert "line 3: description: not supported by the legacy API" in run.err
        assert "line 4: recipient_name: must be 2 to 50 characters" in run.err
    assert calls(sandbox) == 0
    assert not (tmp_path / "ledger.db").exists()


async def test_4_refusals_keep_the_key_and_stop_the_batch(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = good_rows(12, "r4")  # six IntellectMoney rows, six Enot rows
    path = write_csv(tmp_path / "batch.csv", rows)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    wrong = {**credentials(sandbox), "PAYOUT_ASYNC_IM_SECRET_KEY": "wrong-secret"}
    run = await cli("batch", str(path), "--ledger", ledger, "--max-refusals", "3",
                    "--concurrency", "1", "--no-progress", "--json",
                    env=wrong, state=tmp_path)  # fmt: skip
    assert run.code == 1, run
    report = {p["key"]: p for p in json.loads(run.out)["payouts"]}
    im = [report[f"r4-{n}"] for n in range(0, 12, 2)]
    refused = [p for p in im if p["state"] == "refused"]
    not_sent = [p for p in im if p["state"] is None]
    # Three refusals in a row stop the provider; with one payout in flight, one more
    # may already be under way when the third refusal comes back.
    assert 3 <= len(refused) <= 4 and len(refused) + len(not_sent) == 6, im
    assert all(p["status"] == "rejected" and "Неверная подпись" in p["reason"] for p in refused)
    assert all(p["status"] == NOT_STARTED.value for p in not_sent)
    assert all(p["reason"].startswith("not sent: ") for p in not_sent)
    assert all(report[f"r4-{n}"]["status"] == "succeeded" for n in range(1, 12, 2))
    assert sandbox.faults.call_counts.get("im.create", 0) == len(refused)  # the rest: unsent

    status = await cli("status", "--ledger", ledger)
    assert "r4-0" in status.out and "refused" in status.out, status

    # Secret fixed: reconcile sends the refused rows, a re-run the ones never sent.
    fixed = credentials(sandbox)
    run = await cli("reconcile", "--ledger", ledger, "--no-progress", env=fixed)
    assert run.code == 0, run
    run = await cli("batch", str(path), "--ledger", ledger, "--no-progress", env=fixed,
                    state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    assert_paid_once(sandbox, [row["key"] for row in rows])


# 5. Money-relevant input accepted loosely. ---------------------------------------------


async def test_5_money_relevant_input_is_refused_unless_exact(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    def enot(
        key: str, amount: str = "10.00", method: str = "card", recipient: str = CARD
    ) -> dict[str, str]:
        return {"key": key, "provider": "enot", "method": method, "recipient": recipient,
                "amount": amount}  # fmt: skip

    bad = [enot(f"a{n}", amount) for n, amount in
           enumerate(["1_000", "1e3", "+5", "5.", "５０", "١٠", "10.001", "0.00"])]  # fmt: skip
    bad += [
        enot("luhn", recipient="4111111111111112"),
        enot("typo", method="cardd"),
        enot("excel", recipient="4.11111E+15"),
        enot("phone", method="sbp", recipient="8 (900) abc-45-67"),
    ]
    columns = ["key", "provider", "method", "recipient", "amount"]
    money = write_csv(tmp_path / "money.csv", bad, columns)
    keys = tmp_path / "keys.jsonl"
    lines = [{"key": key, "provider": "enot", "method": "card", "recipient": CARD, "amount": "1.00"}
             for key in ["k\u200b1", "k\u00001", "k\n1", "cafe\u0301"]]  # fmt: skip
    keys.write_text("".join(json.dumps(line) + "\n" for line in lines))
    new_service = write_csv(
        tmp_path / "service.csv", [enot("s1", method="usdt_erc20", recipient="T1")], columns
    )
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    common = ["--ledger", ledger]
    runs = await cli_many(
        [["batch", str(money), *common, "--dry-run"],
         ["batch", str(money), *common],
         ["batch", str(keys), *common],
         ["batch", str(new_service), *common, "--dry-run"],
         ["batch", str(new_service), *common, "--dry-run", "--enot-service", "usdt_erc20"],
         *(["batch", str(new_service), *common, "--grace", grace] for grace in ("0", "-5", "nan")),
         ["batch", str(new_service), *common, "--grace", "20"]],  # not above the 30 s timeout
        env=credentials(sandbox), state=tmp_path,
    )  # fmt: skip
    for run in runs[:2]:
        assert run.code == 2, run
        for line in range(2, 2 + len(bad)):
            assert f"line {line}: " in run.err, (line, run)
        assert "line 10: recipient: fails the Luhn check" in run.err
        assert "line 11: method: unknown service 'cardd'" in run.err
    assert runs[2].code == 2, runs[2]
    for line, what in ((1, "U+200B"), (2, "U+0000"), (3, "U+000A"), (4, "NFC")):
        assert f"line {line}: key: " in runs[2].err and what in runs[2].err, runs[2]
    assert runs[3].code == 2 and "unknown service 'usdt_erc20'" in runs[3].err, runs[3]
    assert runs[4].code == 0 and "1 row(s) are valid" in runs[4].out, runs[4]
    for run in runs[5:]:
        one_error(run)
        assert "--grace" in run.err
    # The valid dry run read the Enot balance (the real run's money check); nothing else.
    assert dict(sandbox.faults.call_counts) == {"enot.balance": 1}


# 6. Bad configuration shows a Python traceback and exit 1. -----------------------------


async def test_6_every_configuration_error_is_one_line_and_exit_2(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "batch.csv", good_rows(2, "f6"))
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not an SQLite database" * 100)
    cp1251 = tmp_path / "cp1251.csv"
    cp1251.write_bytes(
        f"key,provider,method,recipient,amount,description\nf6,intellectmoney,card,{CARD},1.00,".encode()
        + "Выплата\n".encode("cp1251")
    )
    config = tmp_path / "config.toml"
    config.write_text('[intellectmoney]\nsecret = "x"\n')
    config.chmod(0o600)  # a config others may read is refused (test_secret_options.py)
    folder = tmp_path / "folder.db"
    folder.mkdir()
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-secret\n")
    wrong.chmod(0o600)
    f = str(path)
    runs = await cli_many(
        [["batch", f, "--ledger", "sqlite://host/x.db"],
         ["batch", f, "--ledger", "ftp://x/y"],
         ["batch", f, "--ledger", "sqlite:///x.db?journal=off"],
         ["batch", f, "--ledger", f"sqlite:///{tmp_path}/missing/x.db"],
         ["batch", f, "--ledger", f"sqlite:///{folder}"],
         ["batch", f, "--ledger", f"sqlite:///{corrupt}"],
         ["status", "--ledger", f"sqlite:///{corrupt}"],
         ["status", "--ledger", "postgresql://postgres@127.0.0.1:1/test"],
         ["batch", str(cp1251), "--ledger", f"sqlite:///{tmp_path}/l.db"],
         ["batch", f, "--ledger", f"sqlite:///{tmp_path}/l.db", "--config", str(config)],
         ["batch", f, "--ledgr", "x"],
         ["batch", f, "--concurrency", "0"],
         ["sandbox", "--port", "99999"],
         ["batch", str(tmp_path / "missing.csv")],
         # A wrong base URL or secret ends the run at once, before anything is sent.
         ["batch", f, "--ledger", f"sqlite:///{tmp_path}/l.db", "--enot-base-url",
          "http://127.0.0.1:1"],
         ["batch", f, "--ledger", f"sqlite:///{tmp_path}/l.db", "--enot-secret-key-file",
          str(wrong)],
         ["batch", f, "--ledger", f"sqlite:///{tmp_path}/l.db", "--enot-secret-key-file",
          str(config)]],  # two lines: would be sent in a header
        env=credentials(sandbox), state=tmp_path,
    )  # fmt: skip
    for run in runs:
        one_error(run)
    assert "not a readable SQLite database" in runs[5].err
    assert "cannot reach the PostgreSQL ledger" in runs[7].err
    assert "not UTF-8" in runs[8].err and "iconv -f cp1251" in runs[8].err
    assert "unknown setting intellectmoney.secret" in runs[9].err
    assert "port number from 0 to 65535" in runs[12].err
    assert "cannot reach enot (check its base URL)" in runs[14].err
    assert "enot refused the credentials" in runs[15].err
    assert "enot secret_key holds a line break" in runs[16].err
    blank = {"PAYOUT_ASYNC_STATE_DIR": str(tmp_path)}
    run = await cli("batch", f, "--ledger", f"sqlite:///{tmp_path}/l.db", env=blank)
    one_error(run)
    assert "PAYOUT_ASYNC_IM_USER_TOKEN" in run.err
    assert set(sandbox.faults.call_counts) <= {"enot.balance", "im.state"}  # reads only
    assert not (tmp_path / "l.db").exists()


# 7. Failures are hard to see. ---------------------------------------------------------


async def test_7_failures_are_listed_with_reasons(tmp_path: Path) -> None:
    failing = fast_config(failure_ratio=1.0)
    async with Sandbox(config=failing) as sandbox:
        path = write_csv(tmp_path / "batch.csv", good_rows(4, "f7"))
        ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
        run = await cli("batch", str(path), "--ledger", ledger, "--no-progress",
                        env=credentials(sandbox), state=tmp_path)  # fmt: skip
        assert run.code == 1, run
    lines = run.out.splitlines()
    assert all(len(line) <= 80 for line in lines), run.out
    assert lines[0].split() == ["key", "provider", "status", "provider", "id", "reason"]
    for n in range(4):
        (line,) = [line for line in lines if line.startswith(f"f7-{n} ")]
        reason = "Отказ банка-получателя" if n % 2 == 0 else "Отказ платёжной системы."
        assert "failed" in line and reason in line, run.out  # beside a provider id
    listing, one = await cli_many([["status", "--ledger", ledger],
                                   ["status", "f7-0", "--ledger", ledger]])  # fmt: skip
    assert "4 payout(s) failed" in listing.out, listing
    assert listing.out.count("Отказ") == 4
    assert "amount: 10.00" in one.out, one
    assert "recipient: 411111******1111" in one.out and CARD not in one.out


# 8. Signals and conventions. -----------------------------------------------------------


async def test_8_conventions_version_flags_json_secrets_and_modes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    secret = tmp_path / "enot.key"
    secret.write_text(sandbox.credentials.enot_secret_key + "\n")
    secret.chmod(0o600)
    env = {k: v for k, v in credentials(sandbox).items() if k != "PAYOUT_ASYNC_ENOT_SECRET_KEY"}
    path = write_csv(tmp_path / "batch.csv", good_rows(2, "f8"))
    db = tmp_path / "ledger.db"
    ledger = f"sqlite:///{db}"
    run = await cli("batch", str(path), "--ledger", ledger, "--json", "--no-progress",
                    "--enot-secret-key-file", str(secret), env=env, state=tmp_path)  # fmt: skip
    assert run.code == 0, run
    assert mode(db) == 0o600
    assert mode(tmp_path / "keys.db") == 0o600  # the key registry
    documents = [json.loads(run.out)]
    version, help_text, *rest = await cli_many(
        [["--version"], ["batch", "--help"],
         ["status", "--ledger", ledger, "--json", "--no-progress"],
         ["status", "f8-1", "--ledger", ledger, "--json", "--no-progress"],
         ["resume", "--ledger", ledger, "--json", "--no-progress"],
         ["reconcile", "--ledger", ledger, "--json", "--no-progress"]],
        env=env,
    )  # fmt: skip
    assert version.code == 0 and version.out.startswith("payout-async ")
    assert "/proc/PID/cmdline" in help_text.out and "--enot-secret-key-file" in help_text.out
    assert "--enot-secret-key " not in help_text.out  # refused: test_secret_options.py
    for run in rest:
        assert run.code == 0, run
        documents.append(json.loads(run.out))
    assert [d["schema"] for d in documents] == [1] * 5
    assert [d["command"] for d in documents] == ["batch", "status", "status", "resume", "reconcile"]
    assert {d["ledger"] for d in documents} == {str(db)}
    shapes = [set(p) for d in documents for p in d.get("payouts", [])]
    assert shapes and all(shape >= set(shapes[0]) - {"history"} for shape in shapes)
    assert documents[2]["payouts"][0]["recipient"] == "411111******1111"


async def test_8_sandbox_writes_a_private_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.toml"
    process = await asyncio.create_subprocess_exec(
        COMMAND, "sandbox", "--port", "0", "--write-config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    while b"settings written" not in await asyncio.wait_for(process.stdout.readline(), 10):
        pass
    assert mode(config) == 0o600
    path = write_csv(tmp_path / "batch.csv", good_rows(2, "s8"))
    run = await cli("batch", str(path), "--config", str(config), "--no-progress",
                    "--ledger", f"sqlite:///{tmp_path / 'l.db'}", state=tmp_path)  # fmt: skip
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 10)
    assert run.code == 0, run
    assert process.returncode == 0
    # Where the payouts went is said, a sandbox named as one (its "succeeded" paid nobody).
    for said in ("intellectmoney: http://127.0.0.1:", "enot: http://127.0.0.1:"):
        assert said in run.err and "(on this machine: a sandbox, not the provider)" in run.err
