"""How many simple requests per second the sandbox serves on one core, faults off.

The sandbox runs as ``payout-async sandbox`` in a process of its own (one asyncio
loop, so at most one core); this process drives it with raw aiohttp from
``--concurrency`` coroutines, cycling through a fixed mix of ten requests:

* Enot: 3 ``payoff/info`` by id, 2 balance, 1 SBP bank list, 1 ``payoff/create``;
* IntellectMoney (current API, signed, JSON): 2 ``getOperationState``, 1 ``createOperation``.

After a warm-up, requests are counted for ``--seconds``. Printed: requests/s by wall
clock, and requests per CPU-second of the sandbox process (its capacity on one core,
whatever the driver's own speed). The target is 3,000 requests/s; missing it is
reported, not fatal. Exit status 1 when an answer is not a success or the sandbox's
books disagree with the creates that were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from _common import SandboxProcess, machine, table

TARGET = 3000.0
PAN = "4111111111111111"

Call = Callable[[aiohttp.ClientSession], Awaitable[str]]


class Mix:
    """The ten requests of one cycle, with bodies and headers prepared up front."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        creds = sandbox.credentials
        self.sandbox = sandbox
        self.user_id = creds.enot_user_id
        self.enot_headers = {
            "Accept": "application/json",
            "x-api-signature-sha256": creds.enot_secret_key,
        }
        self.im_headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {creds.im_bearer_token}",
        }
        self.token = creds.im_user_token
        self.secret = creds.im_secret_key
        self.orders = itertools.count()
        self.payoff_id = ""
        self.state_body = b""
        self.state_sign = ""
        create = {
            "UserToken": self.token,
            "PreferenceType": "OutBankCard",
            "Pan": PAN,
            "Amount": "1.00",
            "Currency": "RUB",
        }
        self.create_body = json.dumps(create).encode()
        self.create_sign = self.sign(self.token, "OutBankCard", PAN, "", "", "1.00", "RUB", "", "")

    def sign(self, *fields: str) -> str:
        return hashlib.sha256("::".join((*fields, self.secret)).encode()).hexdigest()

    async def prepare(self, session: aiohttp.ClientSession) -> None:
        """Create the payoff and the operation that the reads look at."""
        self.payoff_id = json.loads(await self.enot_create(session))["data"]["payoff_id"]
        operation = json.loads(await self.im_create(session))["Result"]["PayoutOperationId"]
        self.state_body = json.dumps(
            {"UserToken": self.token, "PayoutOperationId": operation}
        ).encode()
        self.state_sign = self.sign(self.token, operation)

    async def _get(self, session: aiohttp.ClientSession, path: str, **params: str) -> str:
        async with session.get(
            self.sandbox.enot_url + path, params=params, headers=self.enot_headers
        ) as answer:
            text = await answer.text()
            if answer.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {answer.status}: {text[:200]}")
            return text

    async def enot_info(self, session: aiohttp.ClientSession) -> str:
        return await self._get(session, "/payoff/info", user_id=self.user_id, id=self.payoff_id)

    async def enot_balance(self, session: aiohttp.ClientSession) -> str:
        return await self._get(session, f"/account/users/{self.user_id}/balance")

    async def enot_banks(self, session: aiohttp.ClientSession) -> str:
        return await self._get(session, "/payoff/get-sbp-bank-list", user_id=self.user_id)

    async def enot_create(self, session: aiohttp.ClientSession) -> str:
        body = {
            "user_id": self.user_id,
            "service": "card",
            "wallet_to": PAN,
            "amount": 1,
            "order_id": f"bench-{next(self.orders)}",
        }
        async with session.post(
            self.sandbox.enot_url + "/payoff/create", json=body, headers=self.enot_headers
        ) as answer:
            text = await answer.text()
            if answer.status != 200:
                raise RuntimeError(f"payoff/create: HTTP {answer.status}: {text[:200]}")
            return text

    async def _im(self, session: aiohttp.ClientSession, method: str, body: bytes, sign: str) -> str:
        async with session.post(
            self.sandbox.intellectmoney_url + method,
            data=body,
            headers={**self.im_headers, "Sign": sign},
        ) as answer:
            text = await answer.text()
        if answer.status != 200 or '"Code":0' not in text:
            raise RuntimeError(f"{method}: HTTP {answer.status}: {text[:200]}")
        return text

    async def im_state(self, session: aiohttp.ClientSession) -> str:
        return await self._im(session, "getOperationState", self.state_body, self.state_sign)

    async def im_create(self, session: aiohttp.ClientSession) -> str:
        return await self._im(session, "createOperation", self.create_body, self.create_sign)

    def cycle(self) -> list[Call]:
        """The fixed mix of ten requests."""
        return [
            self.enot_info,
            self.im_state,
            self.enot_balance,
            self.enot_info,
            self.im_create,
            self.enot_banks,
            self.enot_info,
            self.im_state,
            self.enot_balance,
            self.enot_create,
        ]


async def drive(mix: Mix, args: argparse.Namespace) -> dict[str, float]:
    """Warm up, then count requests for ``args.seconds``."""
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await mix.prepare(session)
        calls = itertools.cycle(mix.cycle())
        counted = 0
        counting = False
        stop_at = time.monotonic() + args.warmup

        async def worker() -> None:
            nonlocal counted
            while time.monotonic() < stop_at:
                await next(calls)(session)
                if counting:
                    counted += 1

        warmup = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        await asyncio.gather(*warmup)
        cpu_before = mix.sandbox.cpu_seconds()
        started = time.monotonic()
        stop_at = started + args.seconds
        counting = True
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
        cpu = mix.sandbox.cpu_seconds() - cpu_before
    return {"requests": counted, "elapsed": elapsed, "sandbox_cpu": cpu}


def check_books(sandbox: SandboxProcess) -> list[str]:
    """Disagreements between the sandbox's books and the requests it counted."""
    stats = sandbox.stats()
    problems = []
    requests = stats["requests"]
    if stats["enot"]["created"] != requests.get("enot.create", 0):
        problems.append(f"Enot: {stats['enot']['created']} payoffs for {requests} calls")
    if stats["intellectmoney"]["created"] != requests.get("im.create", 0):
        problems.append(f"IntellectMoney: {stats['intellectmoney']['created']} operations")
    if stats["duplicates"]:
        problems.append(f"duplicates: {stats['duplicates'][:3]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    args = parser.parse_args()
    print(f"payout-async sandbox throughput on {machine()}")
    with SandboxProcess(seed=1) as sandbox:
        print(f"sandbox: pid {sandbox.pid} at {sandbox.url}, faults off")
        try:
            result = asyncio.run(drive(Mix(sandbox), args))
        except RuntimeError as error:
            print(f"FAILURE: {error}")
            return 1
        problems = check_books(sandbox)
    wall_rate = result["requests"] / result["elapsed"]
    cpu_share = result["sandbox_cpu"] / result["elapsed"]
    per_core = result["requests"] / result["sandbox_cpu"] if result["sandbox_cpu"] else 0.0
    rows: list[list[Any]] = [
        ["requests", f"{result['requests']:.0f}"],
        ["seconds", f"{result['elapsed']:.1f}"],
        ["requests/s (wall)", f"{wall_rate:,.0f}"],
        ["sandbox CPU busy", f"{cpu_share:.0%}"],
        ["requests per sandbox CPU-second", f"{per_core:,.0f}"],
    ]
    print(table(["mix of 10 (7 Enot, 3 IntellectMoney)", "value"], rows))
    verdict = "met" if wall_rate >= TARGET else "MISSED (see the per-CPU-second figure)"
    print(f"target {TARGET:,.0f} requests/s: {verdict}")
    if problems:
        print("BOOKS DISAGREE: " + "; ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
