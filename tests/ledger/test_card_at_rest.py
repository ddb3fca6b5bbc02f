"""Card numbers at rest (issue 12): cards paid through ``Payouts`` on the sandbox, then
looked for where the ledger keeps its rows -- an SQLite ledger's file, ``-wal`` and
``-shm`` read as raw bytes (while the ledger is open, and after it is closed), a
PostgreSQL ledger's payouts and history tables with every column read as text -- in
every obvious encoding (``tests/ledger/at_rest.py``).

Without a key the card is there while the payout is in flight (the search finds it:
the control), and gone once the payout is final. With a key it is never there: not in
flight, not in a refused (parked) row, not after.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from payout_async import PayoutStatus
from payout_async.enot import PayoffRequest
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import (
    Ledger,
    LedgerState,
    PayoutRecord,
    SQLiteLedger,
    new_encryption_key,
    params_hash,
)
from payout_async.sandbox import Sandbox

from ..payouts.support import enot_client, fast_config, im_client, payouts
from .at_rest import luhn_card, postgres_hits, sqlite_files, sqlite_hits
from .support import DURABLE, Backend, backend_of

RNG = random.Random(12)
IM_CARD = luhn_card(RNG, "2200")
ENOT_CARD = luhn_card(RNG, "5536")
REFUSED_CARD = luhn_card(RNG, "4276")
KEY = new_encryption_key()
Look = Callable[[PayoutRecord], Awaitable[None]]


class Place(Backend):
    """Where one test's ledger keeps its rows, and how to look there for a card."""

    async def hits(self, card: str) -> list[str]:
        if self.kind == "sqlite":
            return sqlite_hits(self.path, card)
        return await postgres_hits(self.schema, card)


@pytest.fixture(params=DURABLE)
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    async for made in backend_of(request.param, tmp_path, Place):
        yield made


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(config=fast_config()) as running:
        yield running


CARDS = {"im-card": IM_CARD, "enot-card": ENOT_CARD, "enot-refused": REFUSED_CARD}


async def pay_by_card(sandbox: Sandbox, ledger: Ledger, look: Look) -> dict[str, Any]:
    """An IntellectMoney ``pan`` and an Enot card ``wallet_to`` paid, and an Enot card
    payoff the provider refuses (the row stays ``refused``, to be paid again);
    ``look`` runs while each money-moving step is recorded and not yet sent."""
    results: dict[str, Any] = {}
    async with (
        im_client(sandbox.intellectmoney_url) as im,
        enot_client(sandbox.enot_url) as enot,
    ):
        im_flow, enot_flow = payouts(im, ledger), payouts(enot, ledger)
        im_flow._before_send = enot_flow._before_send = look
        results["im-card"] = await im_flow.pay(
            "im-card", OperationRequest(pan=IM_CARD, amount=Decimal("10.00"))
        )
        results["enot-card"] = await enot_flow.pay(
            "enot-card", PayoffRequest(service="card", wallet_to=ENOT_CARD, amount="11.00")
        )
        results["enot-refused"] = await enot_flow.pay(
            "enot-refused",
            PayoffRequest(service="card", wallet_to=REFUSED_CARD, amount="999999.00"),
        )
    assert results["im-card"].status is PayoutStatus.SUCCEEDED, results
    assert results["enot-card"].status is PayoutStatus.SUCCEEDED, results
    assert results["enot-refused"].state is LedgerState.REFUSED, results
    return results


async def pay_refused_again(sandbox: Sandbox, ledger: Ledger) -> None:
    async with enot_client(sandbox.enot_url) as enot:
        again = await payouts(enot, ledger).pay(
            "enot-refused", PayoffRequest(service="card", wallet_to=REFUSED_CARD, amount="12.00")
        )
    assert again.status is PayoutStatus.SUCCEEDED, again


async def test_without_a_key_a_final_payout_leaves_no_card_behind(
    place: Place, sandbox: Sandbox
) -> None:
    seen: dict[str, list[str]] = {}

    async def look(record: PayoutRecord) -> None:
        seen[record.key] = await place.hits(CARDS[record.key])
        if isinstance(ledger, SQLiteLedger):
            # The live row's page goes into the database file itself, so that the final
            # write's page there must not keep the old row's bytes (secure_delete).
            assert await ledger.checkpoint()

    ledger = place.ledger(checkpoint_interval=0)
    await ledger.open()
    try:
        await pay_by_card(sandbox, ledger, look)
        # The control: in flight, without a key, the card is there to be found.
        assert seen["im-card"] and seen["enot-card"], seen
        for card in (IM_CARD, ENOT_CARD):
            assert await place.hits(card) == [], card  # final: gone, the ledger still open
        # A refused row keeps its recipient (reconcile() or a new pay() sends it again)...
        refused = await ledger.get("enot", "enot-refused")
        assert refused is not None and refused.params["wallet_to"] == REFUSED_CARD
        assert await place.hits(REFUSED_CARD)
        # ... until it is paid.
        await pay_refused_again(sandbox, ledger)
        assert await place.hits(REFUSED_CARD) == []
        record = await ledger.get("enot", "enot-refused")
        masked = f"{REFUSED_CARD[:6]}******{REFUSED_CARD[-4:]}"
        assert record is not None and record.params["wallet_to"] == masked
    finally:
        await ledger.aclose()
    for card in CARDS.values():
        assert await place.hits(card) == [], card  # and after close


async def test_with_a_key_no_card_is_ever_written(place: Place, sandbox: Sandbox) -> None:
    seen: dict[str, list[str]] = {}

    async def look(record: PayoutRecord) -> None:
        assert record.params.get("pan", record.params.get("wallet_to")) == CARDS[record.key]
        seen[record.key] = await place.hits(CARDS[record.key])

    ledger = place.ledger(encryption_key=KEY)
    await ledger.open()
    try:
        await pay_by_card(sandbox, ledger, look)
        assert set(seen) == set(CARDS) and not any(seen.values()), seen  # in flight
        for card in CARDS.values():
            assert await place.hits(card) == [], card  # final, and the refused (parked) row
        refused = await ledger.get("enot", "enot-refused")
        assert refused is not None and refused.params["wallet_to"] == REFUSED_CARD  # sealed
        assert refused.params_hash.startswith("hmac-sha256:")
        await pay_refused_again(sandbox, ledger)
        assert await place.hits(REFUSED_CARD) == []
    finally:
        await ledger.aclose()
    for card in CARDS.values():
        assert await place.hits(card) == [], card


async def test_sqlite_checkpoints_at_most_once_per_interval(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Under load the WAL is not checkpointed per payout: once, then at the end of the
    interval (here, never before close), and at close."""
    path = tmp_path / "ledger.db"
    cards = [luhn_card(RNG) for _ in range(24)]
    ledger = SQLiteLedger(path, checkpoint_interval=3600)
    await ledger.open()
    try:
        async with im_client(sandbox.intellectmoney_url) as im:
            items = [
                (f"k-{n}", OperationRequest(pan=card, amount=Decimal("1.00")))
                for n, card in enumerate(cards)
            ]
            results = [r async for r in payouts(im, ledger).pay_many(items, concurrency=8)]
        assert {r.status for r in results} == {PayoutStatus.SUCCEEDED}
        assert ledger._scrubber.checkpoints == 1  # the first drop; the rest wait
        assert ledger._scrubber.due
    finally:
        await ledger.aclose()
    assert ledger._scrubber.checkpoints == 2 and not ledger._scrubber.due
    for card in cards:
        assert sqlite_hits(path, card) == [], card


async def test_sqlite_a_late_drop_is_checkpointed_when_the_interval_ends(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path, checkpoint_interval=0.2)
    await ledger.open()
    try:
        async with im_client(sandbox.intellectmoney_url) as im:
            flow = payouts(im, ledger)
            for key, card in (("first", IM_CARD), ("second", ENOT_CARD)):
                result = await flow.pay(key, OperationRequest(pan=card, amount=Decimal("1")))
                assert result.status is PayoutStatus.SUCCEEDED
        later = ledger._scrubber._later
        if later is not None:  # the second drop came within the interval
            await later
        assert not ledger._scrubber.due
        assert sqlite_hits(path, IM_CARD) == [] and sqlite_hits(path, ENOT_CARD) == []
    finally:
        await ledger.aclose()


@pytest.mark.parametrize("secure_delete", [True, False], ids=["ledger", "control"])
async def test_sqlite_a_dropped_recipient_leaves_nothing_in_the_freed_space(
    tmp_path: Path, secure_delete: bool
) -> None:
    """SQLite may write a row's new version elsewhere in its page and leave the old one
    as free space, which secure_delete zeroes. The layout here makes SQLite do just that
    (a larger free block lower in the page takes row ``a``'s final version); the control
    turns secure_delete off on the ledger's connection (some builds default to off),
    and the card is then still in the file."""
    path = tmp_path / "ledger.db"
    card = luhn_card(RNG)
    provider = "intellectmoney"
    async with SQLiteLedger(path, checkpoint_interval=0) as ledger:
        if not secure_delete:
            assert ledger._db is not None
            await ledger._db.execute("PRAGMA secure_delete = OFF")

        async def begin(key: str, params: dict[str, Any]) -> int:
            claim = await ledger.begin(
                provider, key, params_hash(params), params, owner="w", lease_seconds=60
            )
            return claim.record.lease_token

        token = await begin("a", {"amount": "1.00", "pan": card})
        await begin("d", {"amount": "1.00"})
        big = await begin("b", {"amount": "1.00", "description": "x" * 250})
        await begin("c", {"amount": "1.00"})
        # Row b grows and moves: its old place is a free block below row d.
        await ledger.transition(
            provider, "b", owner="w", token=big, state=LedgerState.NEEDS_ATTENTION,
            lease_seconds=60, reason="y" * 600,
        )  # fmt: skip
        assert await ledger.checkpoint()
        assert sqlite_hits(path, card)  # in the database file itself now
        await ledger.transition(
            provider, "a", owner="w", token=token, state=LedgerState.SUCCEEDED, lease_seconds=60
        )
        assert bool(sqlite_hits(path, card)) is not secure_delete


async def test_a_final_row_keeps_nothing_to_brute_force_the_card_from(tmp_path: Path) -> None:
    """The masked card shows the first six and last four digits; a plain SHA-256 of the
    full parameters beside it would give the other six back in a second. A final row
    keeps no such hash: no candidate's hash is anywhere in the file."""
    path = tmp_path / "ledger.db"
    params = {"amount": "10.00", "pan": IM_CARD, "currency": "RUB"}
    async with SQLiteLedger(path) as ledger:
        claim = await ledger.begin(
            "intellectmoney", "k", params_hash(params), params, owner="w", lease_seconds=5
        )
        record = claim.record
        await ledger.transition(
            "intellectmoney",
            "k",
            owner="w",
            token=record.lease_token,
            state=LedgerState.SUCCEEDED,
            lease_seconds=5,
        )
    data = b"".join(sqlite_files(path).values())
    assert params_hash(params).encode() not in data
    # Every stretch of the file as long as a hash: ``digest in stretches`` is
    # ``digest in data``, without scanning the file once per candidate.
    width = len(params_hash(params).encode())
    stretches = {data[i : i + width] for i in range(len(data) - width + 1)}
    candidates = luhn_candidates(IM_CARD[:6], IM_CARD[-4:])
    assert len(set(candidates)) == 10**5  # a tenth of the million: all of them
    for card in candidates:
        assert luhn_card_ok(card)
        digest = params_hash({**params, "pan": card}).encode()
        assert len(digest) == width and digest not in stretches


def luhn_candidates(head: str, tail: str) -> list[str]:
    """Every card number ``head`` + six digits + ``tail`` that passes the Luhn check:
    for each choice of the first five middle digits, the one sixth digit that makes the
    sum a multiple of ten (a digit's share of the sum is a different one for each value)."""
    doubled = len(tail) % 2 == 1  # the sixth middle digit, counted from the right

    def share(digit: int) -> int:
        value = digit * 2 if doubled else digit
        return value - 9 if value > 9 else value

    found = []
    for first in range(10**5):
        partial = luhn_sum(f"{head}{first:05d}0{tail}")
        last = next(d for d in range(10) if (partial + share(d)) % 10 == 0)
        found.append(f"{head}{first:05d}{last}{tail}")
    return found


def luhn_sum(card: str) -> int:
    total = 0
    for index, char in enumerate(reversed(card)):
        digit = int(char) * (2 if index % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total


def luhn_card_ok(card: str) -> bool:
    return luhn_sum(card) % 10 == 0


async def test_logs_show_no_card(
    place: Place, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def look(record: PayoutRecord) -> None:
        logging.getLogger("payout_async").debug("look: %r", record)

    async with place.ledger(encryption_key=KEY) as ledger:
        await pay_by_card(sandbox, ledger, look)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert caplog.records and "look:" in text
    for card in CARDS.values():
        assert card not in text
