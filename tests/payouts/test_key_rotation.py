"""Keys an operator can live with: a key ring, rotation in resumable batches, a key
added to a ledger with live rows, degenerate keys refused, and one row that cannot be
read set aside while the others are paid."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import pytest

from payout_async import ConfigurationError, PayoutStatus
from payout_async.ledger import (
    KeyUse,
    MemoryLedger,
    SQLiteLedger,
    new_encryption_key,
    rotate_keys,
)
from payout_async.ledger._rotate import RotationBatch
from payout_async.sandbox import Sandbox

from ..cli.support import cli
from .altering import CARD, Store, paid, queue
from .support import fast_config, im_client, payouts

IM = "intellectmoney"
OLD, NEW = new_encryption_key(), new_encryption_key()
RING = f"{NEW},{OLD}"


def _key_id(key: str) -> str:
    return MemoryLedger(encryption_key=key).params_hash({}).split(":")[1]


class _Interrupted:
    """A ledger whose rotation stops (raises) after ``batches`` batches."""

    def __init__(self, ledger: SQLiteLedger, batches: int) -> None:
        self.ledger = ledger
        self.batches = batches

    async def key_use(self) -> KeyUse:
        return await self.ledger.key_use()  # type: ignore[attr-defined, no-any-return]

    async def rotate_batch(self, *, after: tuple[str, str], limit: int) -> RotationBatch:
        if self.batches == 0:
            raise RuntimeError("interrupted")
        self.batches -= 1
        return await self.ledger.rotate_batch(after=after, limit=limit)  # type: ignore[attr-defined, no-any-return]


async def _resume_all(store: Store, key: object) -> dict[str, PayoutStatus]:
    async with Sandbox(config=fast_config()) as sandbox:
        ledger = store.ledger(key)
        async with ledger, im_client(sandbox.intellectmoney_url) as client:
            results = await payouts(client, ledger).resume()
        assert len(paid(sandbox, IM)) == sum(r.status is PayoutStatus.SUCCEEDED for r in results)
    return {r.key: r.status for r in results}


def test_degenerate_keys_are_refused() -> None:
    for raw in (bytes(32), b"\x07" * 32, bytes(range(8)) * 4, bytes(range(15)) * 2 + b"\x00\x01"):
        for given in (raw, base64.urlsafe_b64encode(raw).decode()):
            with pytest.raises(ConfigurationError, match="not random"):
                MemoryLedger(encryption_key=given)
    MemoryLedger(encryption_key=new_encryption_key())
    with pytest.raises(ConfigurationError, match="not random"):  # in a ring too
        MemoryLedger(encryption_key=[new_encryption_key(), bytes(32)])


async def test_a_key_ring_reads_with_every_key_and_writes_with_the_first(store: Store) -> None:
    async with store.ledger(OLD) as ledger:
        await queue(ledger, IM, "old")
    async with store.ledger([NEW, OLD]) as ledger:
        old = await ledger.get(IM, "old")
        assert old is not None and old.params["pan"] == CARD and old.untrusted is None
        await queue(ledger, IM, "new", "old")  # "old" recognised, not a conflict
        use = await ledger.key_use()  # type: ignore[attr-defined]
        assert use == KeyUse({_key_id(NEW): 1, _key_id(OLD): 1}, unsigned=0, clear=0)
    [(recipient,)] = await store.sql("SELECT recipient FROM payouts WHERE key = 'new'")
    assert recipient.startswith(f"enc:v1:{_key_id(NEW)}:")
    statuses = await _resume_all(store, RING)  # a string ring: NEW,OLD
    assert statuses == {"old": PayoutStatus.SUCCEEDED, "new": PayoutStatus.SUCCEEDED}


async def test_rotation_runs_in_batches_and_resumes_after_an_interruption(store: Store) -> None:
    """Live rows under the old key, clear rows written before the ledger had a key and
    an altered one: interrupted after its first batch and run again,
    rotation moves every live row it may to the new key -- the old key can then go."""
    async with store.ledger(None) as plain:
        await queue(plain, IM, "clear-1", "clear-2")
    async with store.ledger(OLD) as ledger:
        await queue(ledger, IM, *(f"row-{n}" for n in range(6)), "x-altered")
    await store.edit_params("x-altered", amount="99999.00")
    async with store.ledger([NEW, OLD]) as ledger:
        before = await ledger.key_use()  # type: ignore[attr-defined]
        assert before == KeyUse({_key_id(OLD): 7}, unsigned=2, clear=2)
        stopped = _Interrupted(ledger, batches=1)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="interrupted"):
            await rotate_keys(stopped, batch=3)
        midway = await ledger.key_use()  # type: ignore[attr-defined]
        assert midway.by_key[_key_id(NEW)] == 3
    async with store.ledger([NEW, OLD]) as ledger:  # another run, another process
        report = await rotate_keys(ledger, batch=3)  # type: ignore[arg-type]
    assert report.rotated == 9 - 3 - 1  # all but the three done and the altered one
    assert [(key, why.split(":")[0]) for _, key, why in report.left] == [
        ("x-altered", "the row was altered outside payout-async")
    ]
    assert report.use == KeyUse({_key_id(NEW): 8, _key_id(OLD): 1}, unsigned=0, clear=0)
    recipients = await store.sql("SELECT recipient FROM payouts WHERE key LIKE 'clear-%'")
    assert all(r.startswith(f"enc:v1:{_key_id(NEW)}:") for (r,) in recipients)
    statuses = await _resume_all(store, NEW)  # the old key is gone
    assert statuses.pop("x-altered") is PayoutStatus.NEEDS_ATTENTION
    assert set(statuses.values()) == {PayoutStatus.SUCCEEDED} and len(statuses) == 8


async def test_one_row_that_cannot_be_read_is_set_aside_and_the_others_paid(
    store: Store,
) -> None:
    async with store.ledger(OLD) as ledger:
        await queue(ledger, IM, "lost-key")
    async with store.ledger(NEW) as ledger:
        await queue(ledger, IM, "a", "b")
    async with Sandbox(config=fast_config()) as sandbox:
        ledger = store.ledger(NEW)
        async with ledger, im_client(sandbox.intellectmoney_url) as client:
            results = {r.key: r for r in await payouts(client, ledger).resume()}
        assert results["a"].status is results["b"].status is PayoutStatus.SUCCEEDED
        lost = results["lost-key"]
        assert lost.status is PayoutStatus.NEEDS_ATTENTION
        assert lost.reason is not None and _key_id(OLD) in lost.reason
        assert paid(sandbox, IM) == [(CARD, Decimal("100.00"))] * 2
        # Once the key is back (in the ring), reconcile() pays it.
        ledger = store.ledger([NEW, OLD])
        async with ledger, im_client(sandbox.intellectmoney_url) as client:
            [again] = await payouts(client, ledger).reconcile()
        assert again.status is PayoutStatus.SUCCEEDED


async def test_the_commands_count_and_rotate_keys(tmp_path: Path) -> None:
    store = Store("sqlite", tmp_path)
    async with store.ledger(None) as plain:
        await queue(plain, IM, "clear")
    async with store.ledger(OLD) as ledger:
        await queue(ledger, IM, "a", "b", "c")
    url = f"sqlite:///{store.path}"
    status = await cli("ledger-key", "status", "--ledger", url)  # no key needed
    assert status.code == 0, status
    assert f"key {_key_id(OLD)}: 3 live rows" in status.out
    assert "unsigned: 1 live rows" in status.out and "in clear: 1 live rows" in status.out
    refused = await cli("ledger-key", "rotate", "--ledger", url)
    assert refused.code == 2 and "key ring" in refused.err, refused
    env = {"PAYOUT_ASYNC_LEDGER_KEY": RING}
    rotated = await cli("ledger-key", "rotate", "--batch", "2", "--json", "--ledger", url, env=env)
    assert rotated.code == 0, rotated
    report = json.loads(rotated.out)
    assert report["rotated"] == 4 and report["left"] == []
    assert report["keys"] == {_key_id(NEW): 4} and report["unsigned"] == report["clear"] == 0
    assert CARD not in rotated.out + rotated.err + status.out + status.err
