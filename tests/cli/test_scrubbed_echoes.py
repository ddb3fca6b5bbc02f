"""Card numbers and phones a provider echoes back never reach disk, logs or screens in
clear (issue 24): 32 echoes -- cards with separators of many kinds and groupings,
phones in many notations -- in an IntellectMoney ``Desc``, an Enot 422, an
IntellectMoney 500 and an Enot 503 page, through real payouts on a keyed SQLite and a
keyed PostgreSQL ledger. Then every output is searched for their digits: the ledger's
files (or tables), the DEBUG log, and ``status``, ``status KEY``, ``status --json``
and ``export`` (CSV and JSON Lines). What is not a card or a phone -- amounts, dates,
UUIDs, order numbers that fail the Luhn check -- stays readable.
"""

from __future__ import annotations

import asyncio
import html
import logging
import random
import re
import sqlite3
import unicodedata
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest

from payout_async import Timeouts
from payout_async._numbers import card_kept, luhn_ok
from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import Ledger, PostgresLedger, SQLiteLedger, new_encryption_key
from payout_async.sandbox import Sandbox

from ..ledger.at_rest import sqlite_files
from ..ledger.support import DURABLE, PG_DSN, Backend, backend_of
from ..payouts.support import RETRY, enot_client, fast_config, im_client, payouts
from .support import cli_many

RNG = random.Random(2424)
KEY = new_encryption_key()
AMOUNT = "1234.56"
ORDER = "ORD-482913570245"
DATE = "2024-05-01 12:34:56"
OPERATION = "4f0c6c2e-8d1a-4b6e-9f3a-2c1d0e9b8a7f"
READABLE = (AMOUNT, ORDER, DATE, OPERATION)


def card(length: int) -> str:
    digits = "".join(str(RNG.randrange(10)) for _ in range(length - 1))
    return next(digits + d for d in "0123456789" if luhn_ok(digits + d))


def groups(digits: str, sizes: tuple[int, ...]) -> list[str]:
    out, at = [], 0
    for size in sizes:
        out.append(digits[at : at + size])
        at += size
    return out


def joined(separator: str, sizes: tuple[int, ...] = (4, 4, 4, 4)) -> Callable[[str], str]:
    return lambda digits: separator.join(groups(digits, sizes))


FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
#: (length of the card, how the provider writes it).
CARD_STYLES: list[tuple[int, Callable[[str], str]]] = [
    (16, joined(" ")),
    (16, joined("-")),
    (16, joined(".")),
    (16, joined("\u00a0")),  # NBSP
    (16, joined("\u202f")),  # narrow NBSP
    (16, joined("\u2007")),  # figure space
    (16, joined("\u2009")),  # thin space
    (16, joined("\u3000")),  # ideographic space
    (16, joined("/")),
    (16, joined(" ", (6, 6, 4))),
    (15, joined(" ", (4, 6, 5))),
    (19, joined(" ", (4, 4, 4, 4, 3))),
    (13, joined(" ", (4, 4, 5))),
    (12, joined("-", (4, 4, 4))),
    (16, lambda d: d),
    (16, joined(" – ")),  # en dash, spaced
    (16, joined("\u200b")),  # zero-width space
    (16, joined("_")),
    (16, joined("&nbsp;")),
    (16, joined("&#160;")),
    (16, lambda d: f"{d[:4]} {d[4:8]}-{d[8:12]}.{d[12:]}"),
    (16, joined("  ")),
    (16, joined("\t")),
    (16, joined(" ", (2,) * 8)),
    (16, lambda d: f"({d[:4]}) {d[4:8]} {d[8:12]} {d[12:]}"),
    (16, joined("\u2011")),  # non-breaking hyphen
    (16, joined("\u2212")),  # minus sign
    (16, lambda d: " ".join(groups(d, (4, 4, 4, 4))).translate(FULLWIDTH)),
    (16, lambda d: f"{' '.join(groups(d, (4, 4, 4, 4)))} 100.00"),
    (18, joined(" ", (6, 6, 6))),
    (16, lambda d: f"№{d}"),
    (17, joined(".", (4, 4, 4, 5))),
]
#: How a phone's national number ``n`` (10 digits) is written.
PHONE_STYLES: list[Callable[[str], str]] = [
    lambda n: f"+7 {n[:3]} {n[3:6]}-{n[6:8]}-{n[8:]}",
    lambda n: f"+7({n[:3]}){n[3:6]}-{n[6:8]}-{n[8:]}",
    lambda n: f"8 ({n[:3]}) {n[3:6]} {n[6:8]} {n[8:]}",
    lambda n: f"7{n}",
    lambda n: f"+7{n}",
    lambda n: f"8-{n[:3]}-{n[3:6]}-{n[6:8]}-{n[8:]}",
    lambda n: f"8.{n[:3]}.{n[3:6]}.{n[6:8]}.{n[8:]}",
    lambda n: f"+7 ({n[:3]}) {n[3:6]} {n[6:8]} {n[8:]}",
    lambda n: f"8 {n[:3]} {n[3:]}",
    lambda n: f"+7\u00a0{n[:3]}\u00a0{n[3:6]}\u00a0{n[6:8]}\u00a0{n[8:]}",
    lambda n: f"({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
    lambda n: n,
    lambda n: f"+7-{n[:3]}-{n[3:6]}-{n[6:8]}-{n[8:]}",
    lambda n: f"7 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
    lambda n: f"8{n}",
    lambda n: f"+7 {n}",
]
ROUTES = ("im-desc", "enot-422", "im-500", "enot-503")


@attrs.frozen
class Echo:
    key: str
    route: str
    card: str
    phone: str  # the national number, ten digits
    message: str

    @property
    def needles(self) -> list[str]:
        """Digit strings none of which a masked form shows: the hidden digits with the
        last four, the first digits with the hidden ones (when that is 10 or more
        digits), and the phone's national number."""
        head, tail = card_kept(len(self.card))
        found = [self.card[head:]]
        if len(self.card) - tail >= 10:
            found.append(self.card[: len(self.card) - tail])
        return [*found, self.phone]


def make_echoes() -> list[Echo]:
    echoes = []
    for index, (length, style) in enumerate(CARD_STYLES):
        number = card(length)
        phone = "9" + "".join(str(RNG.randrange(10)) for _ in range(9))
        said = PHONE_STYLES[index % len(PHONE_STYLES)](phone)
        message = (
            f"карта {style(number)} тел. {said} сумма {AMOUNT} заказ {ORDER} {DATE} id {OPERATION}"
        )
        route = ROUTES[index % len(ROUTES)]
        echoes.append(Echo(f"echo-{index}", route, number, phone, message))
    return echoes


ECHOES = make_echoes()


def flat(text: str) -> str:
    """``text`` with only letters, digits and ``*`` left (HTML references decoded, NFKC:
    fullwidth digits as ASCII), so that a number is found whatever separated its
    digits."""
    return re.sub(r"[^0-9A-Za-z*]", "", unicodedata.normalize("NFKC", html.unescape(text)))


def leaks(outputs: dict[str, str]) -> list[str]:
    flattened = {where: flat(text) for where, text in outputs.items()}
    return [
        f"{echo.key} ({echo.route}): {needle} in {where}"
        for echo in ECHOES
        for needle in echo.needles
        for where, text in flattened.items()
        if needle in text
    ]


def test_the_echoes_are_what_they_claim() -> None:
    assert len(ECHOES) >= 30
    assert not luhn_ok(ORDER[4:]), "the order number must fail the Luhn check"
    # The control: each echo, as sent, holds its card and phone for the search to find.
    assert len(leaks({echo.key: echo.message for echo in ECHOES})) == 3 * len(ECHOES) - sum(
        len(echo.card) - 4 < 10 for echo in ECHOES
    )


#: Long enough that a scripted answer reaches its payout on a loaded machine: a
#: refusal whose answer timed out would be retried (a create moves no money) and the
#: echo never seen; short enough that an Enot 503's unknown outcome is waited out
#: soon (the request timeout, the lease's tenth and the grace).
QUICK = Timeouts(total=3.0, connect=1.0, read=2.5)


async def pay_one(echo: Echo, ledger: Ledger) -> str:
    """The echo's payout through a sandbox of its own (its scripted answers reach this
    payout and no other), its provider answering with the echo; the outcome."""
    # A short lease: an Enot 503 is an unknown outcome, waited out for the request
    # timeout plus the lease's tenth and the grace before the payoff is made.
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url, timeouts=QUICK) as im,
        enot_client(sandbox.enot_url, timeouts=QUICK) as enot,
    ):
        if echo.route == "im-desc":
            sandbox.script_inner_code("im.create", 7, echo.message)
        elif echo.route == "im-500":
            # Every try of every round of creates (3: max_send_attempts), so that the
            # row parks with the echo as its reason (and its last_error before that).
            sandbox.script_error("im.create", 500, echo.message, times=RETRY.attempts * 3)
        else:
            status = 422 if echo.route == "enot-422" else 503
            sandbox.script_error("enot.create", status, echo.message)
        if echo.route.startswith("im"):
            request = OperationRequest(pan=echo.card, amount=Decimal("10.00"))
            result = await payouts(im, ledger, lease_seconds=4.0).pay(echo.key, request)
        else:
            wallet = PayoffRequest(service="card", wallet_to=echo.card, amount="11.00")
            result = await payouts(enot, ledger, lease_seconds=4.0).pay(echo.key, wallet)
        return f"{result.status.value}: {result.reason}"


async def pay(ledger: Ledger) -> dict[str, str]:
    """Every echo's payout, all at once (each Enot one waits out its unknown outcome or
    its refusal's look-up: about 4 s each, a minute one after another); the outcomes."""
    outcomes = await asyncio.gather(*(pay_one(echo, ledger) for echo in ECHOES))
    return {echo.key: outcome for echo, outcome in zip(ECHOES, outcomes, strict=True)}


class Place(Backend):
    """A keyed ledger's store, and what it keeps."""

    def ledger(self, **options: Any) -> SQLiteLedger | PostgresLedger:
        return super().ledger(encryption_key=KEY, **options)

    async def stored(self) -> dict[str, str]:
        """What the ledger keeps: its files' bytes, or its tables' rows as text."""
        if self.kind == "sqlite":
            files = sqlite_files(self.path)
            return {name: data.decode("utf-8", "replace") for name, data in files.items()}
        conn = await asyncpg.connect(PG_DSN)
        try:
            tables = {}
            for table in ("payouts", "payout_transitions"):
                rows = await conn.fetch(f'SELECT t::text FROM "{self.schema}"."{table}" t')
                tables[table] = "\n".join(row[0] for row in rows)
        finally:
            await conn.close()
        return tables


@pytest.fixture(params=DURABLE)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    async for made in backend_of(request.param, tmp_path, Place):
        yield made


async def test_echoed_cards_and_phones_reach_no_output(
    place: Place, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="payout_async")
    async with place.ledger() as ledger:
        outcomes = await pay(ledger)
        records = {record.key: record for record in await ledger.records()}
    assert {echo.key for echo in ECHOES} <= set(records)
    # Each route ended as it should, with the provider's text in the row.
    for echo in ECHOES:
        record = records[echo.key]
        text = f"{record.reason} {record.last_error}"
        assert "сумма" in text, (echo.key, outcomes[echo.key], text)
        expected = {"im-desc": "refused", "enot-422": "refused", "im-500": "needs_attention"}
        assert record.state.value == expected.get(echo.route, "succeeded"), outcomes[echo.key]

    env = {"PAYOUT_ASYNC_LEDGER_KEY": KEY}
    one_per_route = [echo.key for echo in ECHOES[: len(ROUTES)]]
    commands = [
        ["status"],
        ["status", "--json"],
        ["export"],
        ["export", "--format", "jsonl"],
        *(["status", key] for key in one_per_route),
        *(["status", key, "--json"] for key in one_per_route),
    ]
    runs = await cli_many([[*args, "--ledger", place.url] for args in commands], env=env)
    outputs = {}
    for args, run in zip(commands, runs, strict=True):
        assert run.code == 0, f"{args}: {run}"
        outputs[" ".join(args)] = run.out + run.err
    outputs.update(await place.stored())
    outputs["the DEBUG log"] = caplog.text
    outputs["the rows read back"] = "\n".join(
        f"{r.reason} {r.last_error} {r.provider_status}" for r in records.values()
    )
    assert any(r.levelno == logging.DEBUG for r in caplog.records)

    assert leaks(outputs) == []
    # Not over-masked: amounts, dates, UUIDs and order numbers stay readable.
    shown = outputs["status --json"]
    for readable in READABLE:
        assert readable in shown, readable
    assert "карта 5" in shown or "карта 2" in shown or "карта" in shown


async def test_a_row_stored_in_clear_by_an_older_version_is_shown_masked(tmp_path: Path) -> None:
    """``reason``, ``last_error`` and history notes written in clear before the
    scrubber existed are masked wherever they are read and shown."""
    echo = ECHOES[0]
    path = tmp_path / "old.db"
    async with SQLiteLedger(path) as ledger:
        request = {"amount": "10.00", "pan": echo.card}
        digest = ledger.params_hash(request)
        await ledger.begin("intellectmoney", "old", digest, request, owner="w", lease_seconds=1)
    with sqlite3.connect(path) as conn:  # what an older version may have written
        conn.execute(
            "UPDATE payouts SET state = 'refused', reason = ?, last_error = ?",
            (echo.message, echo.message),
        )
        conn.execute("UPDATE payout_transitions SET note = ?", (echo.message,))
    async with SQLiteLedger(path) as ledger:
        record = await ledger.get("intellectmoney", "old")
        history = await ledger.history("intellectmoney", "old")
    assert record is not None and history
    shown = {"reason": record.reason or "", "last_error": record.last_error or ""}
    shown["note"] = history[0].note or ""
    commands = [["status"], ["status", "--json"], ["export"], ["status", "old"]]
    runs = await cli_many([[*args, "--ledger", f"sqlite:///{path}"] for args in commands])
    for args, run in zip(commands, runs, strict=True):
        assert run.code == 0, f"{args}: {run}"
        shown[" ".join(args)] = run.out
    found = {where: [n for n in echo.needles if n in flat(text)] for where, text in shown.items()}
    assert found == {where: [] for where in shown}
    assert "сумма 1234.56" in shown["status --json"]
