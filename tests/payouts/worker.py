"""A paying process for the crash and multi-worker tests.

``python worker.py LEDGER_URL IM_URL ENOT_URL COUNT SEED`` resumes whatever is
stranded (taking over at once the rows of workers that were killed), pays payouts
``p-0 .. p-{COUNT-1}`` (even numbers through IntellectMoney, odd through Enot, in an
order shuffled by SEED), resumes and reconciles again and exits. Killing it at any
instruction must never lead to a payout paid twice.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from payout_async.ledger import ledger_from_url
from tests.payouts.support import (
    enot_client,
    enot_request,
    im_client,
    im_request,
    payouts,
)

LEASE_SECONDS = 4.0  # the shortest the fence allows with the tests' 2 s timeout


def requests(count: int, seed: int) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The IntellectMoney and Enot (key, request) pairs, shuffled."""
    keys = [f"p-{n}" for n in range(count)]
    random.Random(seed).shuffle(keys)
    im = [(key, im_request(key)) for key in keys if int(key[2:]) % 2 == 0]
    enot = [(key, enot_request()) for key in keys if int(key[2:]) % 2 == 1]
    return im, enot


async def main(ledger_url: str, im_url: str, enot_url: str, count: int, seed: int) -> None:
    ledger = ledger_from_url(ledger_url)
    await ledger.open()
    im_items, enot_items = requests(count, seed)
    async with im_client(im_url) as im, enot_client(enot_url) as enot:
        flows = [
            (payouts(im, ledger, lease_seconds=LEASE_SECONDS), im_items),
            (payouts(enot, ledger, lease_seconds=LEASE_SECONDS), enot_items),
        ]

        async def work(flow: Any, items: list[tuple[str, Any]]) -> None:
            await flow.resume()
            async for _ in flow.pay_many(items, concurrency=25):
                pass
            await flow.resume()
            await flow.reconcile()

        await asyncio.gather(*(work(flow, items) for flow, items in flows))
    await ledger.aclose()


if __name__ == "__main__":
    url, im_url, enot_url, count, seed = sys.argv[1:6]
    asyncio.run(main(url, im_url, enot_url, int(count), int(seed)))
