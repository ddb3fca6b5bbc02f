"""A ledger's encryption key: the recipient sealed with it, the fingerprint keyed by it,
a wrong or missing key named as such, the key from a URL's environment variable, final
rows compared by their masked parameters, and a ledger that gets a key later."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest

from payout_async import ConfigurationError, IdempotencyConflictError, PayoutStatus
from payout_async.intellectmoney import OperationRequest
from payout_async.ledger import (
    Ledger,
    LedgerKeyError,
    LedgerState,
    MemoryLedger,
    ledger_from_url,
    new_encryption_key,
    params_hash,
    rotate_keys,
)
from payout_async.ledger._url import parse_ledger_url
from payout_async.sandbox import Sandbox

from ..payouts.support import fast_config, im_client, payouts
from .support import (
    BACKENDS,
    DURABLE,
    PG_DSN,
    Backend,
    backend_of,
)

P = "intellectmoney"
CARD = "4276000012345673"
PARAMS = {"amount": "10.00", "pan": CARD, "currency": "RUB"}
KEY, OTHER_KEY = new_encryption_key(), new_encryption_key()
LEASE = 30.0


class Store(Backend):
    """One store (in memory too), opened as often as a test likes, with whatever key
    (``new(encryption_key=...)``), and its rows as stored."""

    async def raw(self, key: str) -> tuple[str, str | None, str]:
        """The row's stored (params, recipient, params_hash)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                row = conn.execute(
                    "SELECT params, recipient, params_hash FROM payouts WHERE key = ?", (key,)
                ).fetchone()
            finally:
                conn.close()
            return row[0], row[1], row[2]
        conn = await asyncpg.connect(PG_DSN)
        try:
            row = await conn.fetchrow(
                f'SELECT params::text, recipient, params_hash FROM "{self.schema}".payouts '
                "WHERE key = $1",
                key,
            )
        finally:
            await conn.close()
        return row[0], row[1], row[2]


def _store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    return backend_of(kind, tmp_path, Store)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for made in _store(request.param, tmp_path):
        yield made


@pytest.fixture(params=DURABLE)
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async for made in _store(request.param, tmp_path):
        yield made


async def begin(ledger: Ledger, key: str, params: dict[str, Any] = PARAMS, **kw: Any) -> Any:
    kw.setdefault("owner", "w")
    kw.setdefault("lease_seconds", LEASE)
    return await ledger.begin(P, key, ledger.params_hash(params), params, **kw)


async def finish(ledger: Ledger, key: str, state: LedgerState = LedgerState.SUCCEEDED) -> Any:
    record = await ledger.get(P, key)
    assert record is not None and record.lease_owner is not None
    return await ledger.transition(
        P, key, owner=record.lease_owner, token=record.lease_token, state=state,
        lease_seconds=LEASE,
    )  # fmt: skip


def test_a_new_key_is_32_random_bytes_and_bad_keys_are_refused() -> None:
    key = new_encryption_key()
    assert len(key) == 44 and len(base64.urlsafe_b64decode(key)) == 32
    assert key != new_encryption_key()
    MemoryLedger(encryption_key=key.encode())  # bytes of the same text
    MemoryLedger(encryption_key=base64.urlsafe_b64decode(key))  # or the 32 raw bytes
    for bad in ("", "short", key[:-4], key + "AAAA", "!" * 44, b"x" * 31):
        with pytest.raises(ConfigurationError, match="new_encryption_key"):
            MemoryLedger(encryption_key=bad)


def test_the_keyed_fingerprint_is_an_hmac_of_the_ledgers_key() -> None:
    keyed, again, other = (MemoryLedger(encryption_key=k) for k in (KEY, KEY, OTHER_KEY))
    digest = keyed.params_hash(PARAMS)
    assert digest.startswith("hmac-sha256:") and len(digest.rsplit(":", 1)[1]) == 64
    assert digest == again.params_hash(PARAMS)  # stable for one key
    assert digest != other.params_hash(PARAMS) != params_hash(PARAMS)
    assert params_hash(PARAMS) not in digest
    assert MemoryLedger().params_hash(PARAMS) == params_hash(PARAMS)  # no key: plain
    assert keyed.params_hash({**PARAMS, "amount": "10.01"}) != digest
    assert KEY not in repr(keyed) and KEY not in repr(keyed._recipients)


async def test_a_keyed_ledger_refuses_a_plain_fingerprint(store: Store) -> None:
    ledger = await store.new(encryption_key=KEY)
    with pytest.raises(ValueError, match="params_hash"):
        await ledger.begin(P, "k", params_hash(PARAMS), PARAMS, owner="w", lease_seconds=1)


async def test_the_recipient_is_sealed_and_reads_back_whole(store: Store) -> None:
    ledger = await store.new(encryption_key=KEY)
    claim = await begin(ledger, "k")
    assert claim.record.params == PARAMS
    record = await ledger.get(P, "k")
    assert record is not None and record.params == PARAMS
    assert [r.params for r in await ledger.records()] == [PARAMS]
    assert ledger.params_match(record, PARAMS)
    assert not ledger.params_match(record, {**PARAMS, "pan": "4276000012345681"})
    if store.kind != "memory":
        params, recipient, digest = await store.raw("k")
        assert CARD not in params and "427600******5673" in params
        assert recipient is not None and recipient.startswith("enc:v1:") and CARD not in recipient
        assert digest == ledger.params_hash(PARAMS)


async def test_a_final_row_keeps_only_the_masked_recipient(store: Store) -> None:
    ledger = await store.new(encryption_key=KEY)
    phone = {"amount": "5.00", "account": "79001234567", "bank_id": "100000000004"}
    await begin(ledger, "card")
    await begin(ledger, "phone", phone)
    await finish(ledger, "card")
    await finish(ledger, "phone", LedgerState.FAILED)
    card, sbp = await ledger.get(P, "card"), await ledger.get(P, "phone")
    assert card is not None and sbp is not None
    assert card.params == {**PARAMS, "pan": "427600******5673"}
    assert sbp.params == {**phone, "account": "7900*****67"}
    assert card.params_hash == sbp.params_hash == "masked"
    # The same parameters are still recognised; others are not.
    assert ledger.params_match(card, PARAMS) and ledger.params_match(sbp, phone)
    assert not ledger.params_match(card, {**PARAMS, "amount": "10.01"})
    again = await begin(ledger, "card")
    assert not again.claimed and again.record.state is LedgerState.SUCCEEDED
    with pytest.raises(IdempotencyConflictError):
        await begin(ledger, "card", {**PARAMS, "amount": "10.01"})
    if store.kind != "memory":
        params, recipient, digest = await store.raw("card")
        assert (recipient, digest) == (None, "masked") and CARD not in params


async def test_a_webhook_settles_a_sealed_row_without_the_key(durable: Store) -> None:
    keyed = await durable.new(encryption_key=KEY)
    await begin(keyed, "k", order_id="o-1")
    plain = await durable.new()
    record = await plain.settle_by_order_id(
        P, "o-1", state=LedgerState.SUCCEEDED, provider_status="success"
    )
    assert record is not None and record.state is LedgerState.SUCCEEDED
    assert record.params["pan"] == "427600******5673"
    assert (await durable.raw("k"))[1:] == (None, "masked")


async def test_another_key_is_named_and_nothing_is_written(durable: Store) -> None:
    await begin(await durable.new(encryption_key=KEY), "k")
    before = await durable.raw("k")
    wrong = await durable.new(encryption_key=OTHER_KEY)
    # Read: the row as kept (recipient masked), and why it cannot move money.
    record = await wrong.get(P, "k")
    assert record is not None and record.params["pan"] == "427600******5673"
    assert record.untrusted is not None and "not with this ledger's key" in record.untrusted
    assert CARD not in record.untrusted
    assert [r.untrusted for r in await wrong.records()] == [record.untrusted]
    with pytest.raises(LedgerKeyError) as caught:  # not an IdempotencyConflictError
        await begin(wrong, "k")
    assert isinstance(caught.value, ConfigurationError) and CARD not in str(caught.value)
    assert await durable.raw("k") == before
    right = await durable.new(encryption_key=KEY)
    record = await right.get(P, "k")
    assert record is not None and record.params == PARAMS and record.lease_token == 1
    assert record.untrusted is None


async def test_a_missing_key_is_named(durable: Store) -> None:
    keyed = await durable.new(encryption_key=KEY)
    await begin(keyed, "live")
    await begin(keyed, "done", {**PARAMS, "amount": "1.00"})
    await finish(keyed, "done")
    await begin(keyed, "plain", {"amount": "2.00"})  # no recipient: nothing sealed
    plain = await durable.new()
    live = await plain.get(P, "live")
    assert live is not None and live.untrusted is not None
    assert "this ledger has none" in live.untrusted and live.params["pan"] != CARD
    live_plain = await plain.get(P, "plain")
    assert live_plain is not None and live_plain.untrusted is not None
    with pytest.raises(LedgerKeyError, match="this ledger has none"):  # its fingerprint
        plain.params_match(live_plain, {"amount": "2.00"})
    # A final row needs no key: its recipient is masked, compared as such.
    done = await plain.get(P, "done")
    assert done is not None and plain.params_match(done, {**PARAMS, "amount": "1.00"})


async def test_a_ledger_given_a_key_later_sends_nothing_for_its_unsigned_rows(
    durable: Store, tmp_path: Path
) -> None:
    """Rows written without a key keep their plain fingerprint and clear recipient; the
    keyed ledger reads them and compares them (no conflict), but a row clear and
    unsigned in a keyed ledger is never sent: it is set aside, until ``rotate_keys``
    (``ledger-key rotate``) seals and signs it; then ``reconcile()`` pays it."""
    plain = await durable.new()
    request = OperationRequest(pan=CARD, amount=Decimal("10.00"), description="old")
    async with (
        Sandbox(config=fast_config()) as sandbox,
        im_client(sandbox.intellectmoney_url) as client,
    ):
        params = {
            n: str(v) if isinstance(v, Decimal) else v for n, v in attrs.asdict(request).items()
        }
        for key in ("old", "older"):
            claim = await plain.begin(
                P, key, plain.params_hash(params), params, owner="dead", lease_seconds=LEASE
            )
            await plain.release(P, key, owner="dead", token=claim.record.lease_token)
        assert (await durable.raw("old"))[2] == params_hash(params)

        keyed = await durable.new(encryption_key=KEY)
        old = await keyed.get(P, "old")
        assert old is not None and old.params["pan"] == CARD
        assert old.untrusted is not None and "in clear" in old.untrusted
        assert keyed.params_match(old, params)  # a plain fingerprint still compares
        flow = payouts(client, keyed)
        older = await flow.pay("older", request)  # claimed by its plain fingerprint
        assert older.status is PayoutStatus.NEEDS_ATTENTION
        assert older.reason is not None
        assert older.reason.startswith("the row was altered outside payout-async")
        [result] = await flow.resume()
        assert result.status is PayoutStatus.NEEDS_ATTENTION
        with pytest.raises(IdempotencyConflictError):
            await flow.pay("old", attrs.evolve(request, amount=Decimal("10.01")))
        fresh = await flow.pay("new", request)
        assert fresh.status is PayoutStatus.SUCCEEDED
        assert len(sandbox.state.intellectmoney) == 1
        report = await rotate_keys(keyed)  # type: ignore[arg-type]
        assert report.rotated == 2 and report.use.clear == report.use.unsigned == 0
        settled = await flow.reconcile()
        assert {r.key: r.status for r in settled} == dict.fromkeys(
            ("old", "older"), PayoutStatus.SUCCEEDED
        )
        assert len(sandbox.state.intellectmoney) == 3
    assert (await durable.raw("old"))[1:] == (None, "masked")


async def test_the_key_comes_from_the_urls_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_KEY_FOR_TEST", KEY)
    url = f"sqlite:///{tmp_path}/ledger.db?key_env=LEDGER_KEY_FOR_TEST"
    parsed = parse_ledger_url(url)
    assert parsed.key_env == "LEDGER_KEY_FOR_TEST" and "key_env" not in parsed.location
    ledger = ledger_from_url(url)
    assert ledger.params_hash(PARAMS) == MemoryLedger(encryption_key=KEY).params_hash(PARAMS)
    await ledger.open()
    try:
        await begin(ledger, "k")
    finally:
        await ledger.aclose()
    conn = sqlite3.connect(tmp_path / "ledger.db")
    try:
        [(recipient,)] = conn.execute("SELECT recipient FROM payouts").fetchall()
    finally:
        conn.close()
    assert recipient.startswith("enc:v1:")
    memory = ledger_from_url("memory://?key_env=LEDGER_KEY_FOR_TEST")
    assert memory.params_hash(PARAMS).startswith("hmac-sha256:")
    assert ledger_from_url(url, encryption_key=KEY).params_hash(PARAMS) == memory.params_hash(
        PARAMS
    )
    postgres = parse_ledger_url("postgresql://u@h/db?key_env=LEDGER_KEY_FOR_TEST&schema=s")
    assert postgres.dsn is not None and "key_env" not in postgres.dsn
    assert "key_env" not in postgres.location and postgres.key_env == "LEDGER_KEY_FOR_TEST"

    with pytest.raises(ConfigurationError, match="two different encryption keys"):
        ledger_from_url(url, encryption_key=OTHER_KEY)
    monkeypatch.delenv("LEDGER_KEY_FOR_TEST")
    with pytest.raises(ConfigurationError, match=r"\$LEDGER_KEY_FOR_TEST, which is not set"):
        ledger_from_url(url)
    for bad in ("key_env=", "key_env=1X", "key_env=A-B"):
        with pytest.raises(ConfigurationError, match="key_env"):
            parse_ledger_url(f"sqlite:///x.db?{bad}")
    with pytest.raises(ConfigurationError, match="memory"):
        parse_ledger_url("memory://?schema=x")
