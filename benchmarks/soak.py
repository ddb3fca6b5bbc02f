"""Soak: 10,000 payouts through both providers while 20% of calls fail in every way the
sandbox knows, the sandbox accepts duplicate Enot order_ids, and the paying process is
SIGKILLed three times and resumed. Then the books are checked payout by payout.

The sandbox runs in this process; the payouts are paid by a child process (this
script with ``--child``) that resumes whatever is stranded, pays every payout with
``pay_many`` and resumes again. The first ``--kills`` children are SIGKILLed at a
random moment while they pay (at a random share of the results, growing from kill to
kill); the next one runs to the end; then children that only resume run until no
payout is left in an active state. Finally ``reconcile()`` runs once with the faults
switched off, to show which ``needs_attention`` rows it settles.

Printed: ``duplicates=N lost=N`` (after the resumes and again after reconcile), the
final state counts, every ``needs_attention`` reason, and the faults injected.

A provider slower or laxer than documented (off by default): ``--answer-delay`` (every
answer leaves that long after its request was processed), ``--execute-lag`` (an
accepted IntellectMoney execute reads ``Created`` that long), ``--second-execute
pay_again`` (a second execute pays twice), ``--info-lag`` (Enot's ``payoff/info`` says
"not found" that long after a create), ``--rate-limit`` (429 beyond that many requests
a second). ``--webhooks``: Enot payoffs carry a ``hook_url`` and each paying process
receives their signed webhooks (``apply_webhook``) while it pays, another system's
payoffs' among them. ``--wait S``: pay as a web app does, ``pay(key, request,
wait=S)``. ``--workers N`` (with ``--postgres``): that many ``payout-async worker``
processes on the same ledger for the whole run, resuming beside the paying processes.

* duplicates -- payments beyond the first for one payout, in the sandbox's books
  (an Enot order_id created twice, an IntellectMoney payout executed twice);
* lost -- a payout asked for that the ledger does not account for: no row, a row
  still active, ``succeeded`` without a payment in the books, ``failed`` or
  ``cancelled`` with one, ``needs_attention`` without a reason; or a payment in the
  books that nobody asked for.

The ledger is a SQLite file in a temporary directory, or with ``--postgres DSN`` a
``PostgresLedger`` in tables of its own (dropped afterwards): the deployment where
several workers share the work.

Exit status 1 when duplicates or lost is not 0; nothing else is fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import (
    PAN,
    clients,
    disagreement,
    drop_postgres_tables,
    enot_request,
    im_request,
    machine,
    table,
)
from aiohttp import web
from workers import Worker, environment

from payout_async import PayoutResult, Payouts, PollPolicy, RetryPolicy, Timeouts
from payout_async.enot import webhook_handler
from payout_async.ledger import ACTIVE_STATES, LedgerState, ledger_from_url
from payout_async.sandbox import ROUTES, FaultKind, Sandbox, SandboxConfig, SandboxCredentials

SCRIPT = str(Path(__file__).resolve())
#: Client settings for a sandbox that answers in milliseconds: a stalled answer is
#: given up after half a second, retries and polls are quick.
TIMEOUTS = Timeouts(total=3.0, connect=1.0, read=0.5)
RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.1, max_retry_after=0.05)
POLL = PollPolicy(initial=0.02, multiplier=1.5, maximum=0.2, deadline=15.0)


def keys(count: int) -> tuple[list[str], list[str]]:
    """IntellectMoney keys (even numbers) and Enot keys (odd numbers)."""
    im = [f"p-{n}" for n in range(0, count, 2)]
    enot = [f"p-{n}" for n in range(1, count, 2)]
    return im, enot


# -- the paying child -----------------------------------------------------------------


async def child(args: argparse.Namespace) -> None:
    # Every faulted call is logged; keep only errors (failures nobody expected).
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(message)s")
    im_keys, enot_keys = keys(args.n)
    rng = random.Random(args.seed)
    rng.shuffle(im_keys)
    rng.shuffle(enot_keys)
    im_client, enot_client = clients(
        args.im_url,
        args.enot_url,
        timeouts=TIMEOUTS,
        retry=RETRY,
        limit=max(args.concurrency, 10),  # no request waits for a connection
    )
    ledger = ledger_from_url(args.ledger)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(ledger)
        im = await stack.enter_async_context(im_client)
        enot = await stack.enter_async_context(enot_client)
        settings: dict[str, Any] = {
            "poll": POLL,
            "grace": args.grace,
            "lease_seconds": args.lease,
            "execute_settle": args.settle,
        }
        im_flow = Payouts(im, ledger, **settings)
        enot_flow = Payouts(enot, ledger, **settings)
        hook_url = None
        if args.hook_port:
            # Enot's webhooks come to this process while it pays (every child listens
            # on the same port, so the requests recorded stay the same).
            hook_url = webhook_url(args.hook_port)
            stack.push_async_callback(await receive_webhooks(enot_flow, args.hook_port))
        flows: list[tuple[Payouts[Any], list[tuple[str, Any]]]] = [
            (im_flow, [(key, im_request(key)) for key in im_keys]),
            (enot_flow, [(key, enot_request(hook_url=hook_url)) for key in enot_keys]),
        ]
        done = 0

        async def work(flow: Payouts[Any], items: list[tuple[str, Any]]) -> None:
            nonlocal done
            if args.mode == "reconcile":
                await flow.reconcile(concurrency=args.concurrency)
                return
            await flow.resume(concurrency=args.concurrency)
            if args.mode == "pay":
                results = (
                    answered_within(flow, items, args.wait, args.concurrency)
                    if args.wait is not None
                    else flow.pay_many(items, concurrency=args.concurrency)
                )
                async for _ in results:
                    done += 1
                    if done % 50 == 0:
                        print(f"progress {done}", flush=True)
                await flow.aclose(drain=args.timeout)  # the drives pay() left under way
                await flow.resume(concurrency=args.concurrency)

        print("started", flush=True)
        await asyncio.gather(*(work(flow, items) for flow, items in flows))
    print("finished", flush=True)


async def answered_within(
    flow: Payouts[Any], items: list[tuple[str, Any]], wait: float, at_once: int
) -> AsyncIterator[PayoutResult]:
    """As a web app pays: ``pay(key, request, wait=wait)`` for each item, ``at_once``
    requests at a time, each answered within ``wait`` while its drive goes on."""
    queue = iter(items)
    answers: asyncio.Queue[PayoutResult] = asyncio.Queue()

    async def handler() -> None:
        for key, request in queue:
            answers.put_nowait(await flow.pay(key, request, wait=wait))

    handlers = [asyncio.create_task(handler()) for _ in range(at_once)]
    for _ in items:
        yield await answers.get()
    await asyncio.gather(*handlers)


#: Where the paying processes receive Enot's webhooks.
HOOK_PATH = "/hook"


def webhook_url(port: int) -> str:
    """The ``hook_url`` of the paying processes' webhook receiver on ``port``."""
    return f"http://127.0.0.1:{port}{HOOK_PATH}"


async def receive_webhooks(flow: Payouts[Any], port: int) -> Callable[[], Awaitable[None]]:
    """Serve Enot's webhooks on ``port`` into ``flow.apply_webhook``; returns the
    clean-up."""
    app = web.Application()
    key = SandboxCredentials().enot_additional_key
    app.router.add_post(HOOK_PATH, webhook_handler(flow.apply_webhook, key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner.cleanup


def worker_options(args: argparse.Namespace) -> list[str]:
    """A ``payout-async worker``'s settings: the paying processes' (every drive on one
    ledger uses the same lease and request timeout), but a grace above the request
    timeout, as the command line insists."""
    grace = max(args.grace, (TIMEOUTS.total or 0.0) + 1.0)
    return [
        "--concurrency", str(args.concurrency), "--lease-seconds", str(args.lease),
        "--request-timeout", str(TIMEOUTS.total), "--grace", str(grace),
        "--execute-settle", str(args.settle), "--idle-poll", "0.5",
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        return int(listening.getsockname()[1])


async def foreign_payoffs(sandbox: Sandbox, hook_port: int, every: float) -> None:
    """Another system on the same Enot account: a payoff of its own every ``every``
    seconds, final at once, its signed webhook sent to our receiver."""
    for number in itertools.count():
        sandbox.foreign_payoff(
            order_id=f"other-{number}",
            amount="7.00",
            wallet_to=PAN,
            hook_url=webhook_url(hook_port),
        )
        await asyncio.sleep(every)


# -- the parent: sandbox, kills, resumes, checks -----------------------------------------


class Soak:
    def __init__(
        self, args: argparse.Namespace, sandbox: Sandbox, ledger_url: str, directory: Path
    ) -> None:
        self.args = args
        self.sandbox = sandbox
        self.ledger_url = ledger_url
        self.rng = random.Random(args.seed)
        self.runs: list[str] = []
        #: The children's stderr: errors only (see ``child``), kept for the report.
        self.log_path = directory / "soak.log"
        self.log = self.log_path.open("ab")

    def errors(self) -> list[str]:
        self.log.flush()
        return self.log_path.read_text(errors="replace").splitlines()

    async def start(self, mode: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--child",
            "--mode",
            mode,
            "--n",
            str(self.args.n),
            "--seed",
            str(self.args.seed),
            "--ledger",
            self.ledger_url,
            "--im-url",
            self.sandbox.intellectmoney_url,
            "--enot-url",
            self.sandbox.enot_url,
            "--concurrency",
            str(self.args.concurrency),
            "--grace",
            str(self.args.grace),
            "--lease",
            str(self.args.lease),
            "--settle",
            str(self.args.settle),
            "--hook-port",
            str(self.args.hook_port),
            *(["--wait", str(self.args.wait)] if self.args.wait is not None else []),
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
        )

    async def run_and_kill(self, number: int) -> None:
        """Start a paying child and SIGKILL it while it pays: once it has reported a
        random share of the results, the share growing from kill to kill (a child
        first reports the payouts its predecessors finished, quickly, then pays on)."""
        process = await self.start("pay")
        assert process.stdout is not None
        began = time.perf_counter()
        low = (number - 1) / self.args.kills
        share = self.rng.uniform(low + 0.1 / self.args.kills, low + 0.9 / self.args.kills)
        target = max(1, int(share * 0.9 * self.args.n))
        progress = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.args.timeout):
                while line := await process.stdout.readline():
                    word = line.decode().split()
                    if word[:1] == ["progress"]:
                        progress = int(word[1])
                        if progress >= target:
                            break
        killed = process.returncode is None
        if killed:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        what = "SIGKILLed" if killed else "NOT killed: it finished first"
        self.runs.append(
            f"run {number}: {what} after {time.perf_counter() - began:.1f} s, "
            f"at {progress} of {self.args.n} results"
        )

    async def run_to_end(self, number: int, mode: str) -> None:
        began = time.perf_counter()
        process = await self.start(mode)
        try:
            await asyncio.wait_for(process.communicate(), self.args.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(
                f"the {mode} child did not finish in {self.args.timeout} s"
            ) from None
        if process.returncode != 0:
            tail = "\n".join(self.errors()[-40:])
            raise RuntimeError(f"the {mode} child exited {process.returncode}:\n{tail}")
        self.runs.append(f"run {number}: {mode} to the end in {time.perf_counter() - began:.1f} s")

    async def ledger_counts(self) -> Counter[LedgerState]:
        async with ledger_from_url(self.ledger_url) as ledger:
            return Counter(await ledger.counts())


def books(sandbox: Sandbox) -> tuple[Counter[str], Counter[str]]:
    """Payments per key: IntellectMoney operations executed, by Description; Enot
    payoffs created, by order_id."""
    executed = Counter(
        operation.details.description or ""
        for operation in sandbox.state.intellectmoney
        if operation.executed_at is not None
    )
    created = Counter(payoff.details.order_id or "" for payoff in sandbox.state.enot)
    return executed, created


async def audit(
    args: argparse.Namespace, sandbox: Sandbox, ledger_url: str
) -> tuple[int, list[str], Counter[str], list[tuple[str, str, str, int]]]:
    """(duplicates, lost, state counts, needs_attention rows as (key, provider, reason,
    payments in the books))."""
    executed, created = books(sandbox)
    im_keys, enot_keys = keys(args.n)
    asked = {**dict.fromkeys(im_keys, "intellectmoney"), **dict.fromkeys(enot_keys, "enot")}
    lost: list[str] = []
    attention: list[tuple[str, str, str, int]] = []
    states: Counter[str] = Counter()
    duplicates = sum(count - 1 for count in (*executed.values(), *created.values()) if count > 1)
    for key in sorted(set(executed) | set(created)):
        if key not in asked:
            lost.append(f"{key}: paid in the books but never asked for")
    async with ledger_from_url(ledger_url) as ledger:
        rows = {(record.provider, record.key): record for record in await ledger.records()}
    for key, provider in asked.items():
        paid = (executed if provider == "intellectmoney" else created)[key]
        record = rows.get((provider, key))
        if record is None:
            lost.append(f"{key}: no ledger row")
            continue
        states[record.state.value] += 1
        if record.state in ACTIVE_STATES:
            lost.append(f"{key}: still {record.state.value}")
        elif (problem := disagreement(record, paid)) is not None:
            lost.append(problem)
        elif record.state is LedgerState.NEEDS_ATTENTION:
            if not record.reason:
                lost.append(f"{key}: needs_attention without a reason")
            attention.append((key, provider, record.reason or "", paid))
    found = sandbox.duplicates()
    if len(found) and not duplicates:
        duplicates = sum(dup.count - 1 for dup in found)
    return duplicates, lost, states, attention


def webhooks(sandbox: Sandbox) -> str:
    """Webhook deliveries: ours and another system's, delivered (2xx) or not."""
    theirs = {payoff.id for payoff in sandbox.state.enot.foreign()}
    counts: Counter[tuple[str, str]] = Counter()
    for delivery in sandbox.state.webhooks:
        whose = "another system's" if delivery.payoff_id in theirs else "ours"
        if delivery.delivered:
            what = "delivered"
        elif delivery.status is None:
            what = "not delivered (no answer)"
        else:
            what = f"not delivered ({delivery.status})"
        counts[whose, what] += 1
    rows = [[whose, what, count] for (whose, what), count in sorted(counts.items())]
    return table(["webhooks of payoffs", "attempt", "count"], rows)


def report(
    title: str,
    duplicates: int,
    lost: list[str],
    states: Counter[str],
    attention: list[tuple[str, str, str, int]],
) -> None:
    print(f"\n{title}")
    print(f"duplicates={duplicates} lost={len(lost)}")
    for line in lost[:50]:
        print(f"  lost: {line}")
    order = [state.value for state in LedgerState]
    print("final state counts: " + ", ".join(f"{s}={states[s]}" for s in order if states[s]))
    if attention:
        print(f"needs_attention ({len(attention)}), every one with its reason:")
        for key, provider, reason, paid in sorted(attention, key=lambda row: row[2]):
            print(f"  {key:<8} {provider:<14} paid in books: {paid}  {' '.join(reason.split())}")


async def parent(args: argparse.Namespace) -> int:
    # A SIGKILLed child leaves requests half written: aiohttp's server logs each one.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    config = SandboxConfig(
        seed=args.seed,
        fault_rate=args.fault_rate,
        fault_kinds=frozenset(FaultKind),
        duplicate_order_id="accept",
        im_in_process_after=0.02,
        im_final_after=0.05,
        enot_final_after=0.05,
        stall_seconds=1.0,
        retry_after=0.01,
        latency=(0.0, 0.02),
        im_balance=10**9,
        enot_balance=10**9,
        answer_delay={route: args.answer_delay for route in ROUTES} if args.answer_delay else (),
        im_execute_lag=args.execute_lag,
        im_second_execute=args.second_execute,
        enot_info_lag=args.info_lag,
        rate_limit_per_second=args.rate_limit,
        rate_limit_burst=max(1, int(args.rate_limit or 1)),
    )
    print(f"payout-async soak on {machine()}")
    print(
        f"{args.n} payouts (half IntellectMoney, half Enot), fault rate {args.fault_rate:.0%} "
        f"over {len(FaultKind)} fault kinds, duplicate order_ids accepted, "
        f"{args.kills} SIGKILLs; Enot grace {args.grace:g} s, lease {args.lease:g} s"
    )
    hostile = {
        "answers delayed (s)": args.answer_delay,
        "IntellectMoney execute lag (s)": args.execute_lag,
        "Enot info lag (s)": args.info_lag,
        "requests/s per provider": args.rate_limit,
    }
    named = [f"{name} {value:g}" for name, value in hostile.items() if value]
    if args.second_execute != "refuse":
        named.append(f"a second execute: {args.second_execute}")
    if args.webhooks:
        named.append("webhooks received while paying, another system's among them")
    if args.wait is not None:
        named.append(f"paid as a web app does: pay(wait={args.wait:g})")
    if args.workers:
        named.append(f"{args.workers} payout-async workers beside the paying processes")
    if named:
        print("the provider: " + "; ".join(named))
    began = time.perf_counter()
    async with contextlib.AsyncExitStack() as cleanup:
        directory = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        if args.postgres:
            prefix = f"soak_{uuid.uuid4().hex[:10]}_"
            ledger_url = f"{args.postgres}?table_prefix={prefix}"
            cleanup.push_async_callback(drop_postgres_tables, args.postgres, prefix)
        else:
            ledger_url = str(directory / "soak.db")
        async with Sandbox(config=config) as sandbox:
            soak = Soak(args, sandbox, ledger_url, directory)
            if args.webhooks:
                args.hook_port = free_port()
                others = asyncio.create_task(foreign_payoffs(sandbox, args.hook_port, 0.05))
                cleanup.callback(others.cancel)
            if args.workers:
                await soak.ledger_counts()  # made here: a worker never makes a ledger
            workers = [
                await Worker.start(ledger_url, environment(sandbox), worker_options(args))
                for _ in range(args.workers)
            ]
            for number in range(1, args.kills + 1):
                await soak.run_and_kill(number)
                print(soak.runs[-1], flush=True)
            stranded = await soak.ledger_counts()
            active = sum(stranded[state] for state in ACTIVE_STATES)
            print(f"after the kills: {sum(stranded.values())} rows, {active} in active states")
            number = args.kills + 1
            await soak.run_to_end(number, "pay")
            print(soak.runs[-1], flush=True)
            for _ in range(5):
                counts = await soak.ledger_counts()
                if not any(counts[state] for state in ACTIVE_STATES):
                    break
                await asyncio.sleep(args.lease + 0.2)  # the killed children's leases expire
                number += 1
                await soak.run_to_end(number, "resume")
                print(soak.runs[-1], flush=True)
            if workers:
                ended = [await worker.stop() for worker in workers]
                print(f"{len(workers)} workers stopped (SIGTERM), exit statuses {ended}")
            paying = time.perf_counter() - began

            stats = sandbox.stats()
            calls = sum(stats.requests.values())
            faults = sum(stats.faults.values())
            print(
                f"\n{calls} calls served, {faults} faulted ({faults / max(calls, 1):.1%}); "
                f"paid and resumed in {paying:.1f} s"
            )
            print(
                table(
                    ["fault kind", "injected"],
                    [[kind, count] for kind, count in sorted(stats.faults.items())],
                )
            )
            print(
                table(
                    ["route", "calls"],
                    [[route, count] for route, count in sorted(stats.requests.items())],
                )
            )
            if args.webhooks:
                print(webhooks(sandbox))
            first = await audit(args, sandbox, ledger_url)
            report("After the kills and resumes:", *first)

            # Switch the faults off and ask reconcile() to settle what needs attention.
            sandbox.state.faults.rate = 0.0
            second = first
            if first[3]:
                number += 1
                await soak.run_to_end(number, "reconcile")
                print(soak.runs[-1])
                second = await audit(args, sandbox, ledger_url)
                report("After reconcile() with the faults switched off:", *second)
            errors = [line for line in soak.errors() if " ERROR " in line]
            print(f"\nunexpected errors logged by the paying processes: {len(errors)}")
            for line in errors[:20]:
                print(f"  {line}")
            soak.log.close()
    print(f"wall time {time.perf_counter() - began:.1f} s")
    failed = any(duplicates or lost for duplicates, lost, _, _ in (first, second))
    if failed:
        print("CORRECTNESS FAILURE: a payout was paid twice or lost")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="payouts (default 10000)")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="default 0.2")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs (default 3)")
    parser.add_argument("--concurrency", type=int, default=100, help="per provider")
    parser.add_argument("--grace", type=float, default=2.0, help="Enot grace, s")
    parser.add_argument(
        "--lease", type=float, default=4.0, help="lease, s (above the 3 s request timeout)"
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="IntellectMoney execute settle window, s"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=180, help="limit per child, s")
    # A provider slower or laxer than documented (all off by default; SandboxConfig).
    parser.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        help="every answer leaves this long after its request was processed, s "
        "(below the 0.5 s read timeout: slow inside the timeout)",
    )
    parser.add_argument(
        "--execute-lag",
        type=float,
        default=0.0,
        help="an accepted IntellectMoney execute reads Created for this long, s",
    )
    parser.add_argument(
        "--second-execute",
        default="refuse",
        choices=("refuse", "accept", "pay_again"),
        help="what a second execute of one operation gets (pay_again: it pays twice)",
    )
    parser.add_argument(
        "--info-lag",
        type=float,
        default=0.0,
        help="Enot payoff/info answers 404 for this long after a create, s",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests per second each provider accepts (the rest get 429)",
    )
    parser.add_argument(
        "--postgres",
        default="",
        metavar="DSN",
        help="a PostgresLedger at DSN (tables of its own, dropped after) instead of SQLite",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="Enot payoffs carry a hook_url: each paying process receives their signed "
        "webhooks (apply_webhook) while it pays, with another system's payoffs' webhooks "
        "(20 a second) among them",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=None,
        help="pay as a web app does: pay(key, request, wait=WAIT), --concurrency at a "
        "time, each answered within WAIT s while its drive goes on (default: pay_many)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="with --postgres: this many `payout-async worker` processes on the same "
        "ledger for the whole run, resuming what the killed processes left beside them",
    )
    parser.add_argument("--hook-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="pay", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", help=argparse.SUPPRESS)
    parser.add_argument("--im-url", help=argparse.SUPPRESS)
    parser.add_argument("--enot-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers and not args.postgres:
        parser.error("--workers needs --postgres (workers share a PostgreSQL ledger)")
    if args.child:
        asyncio.run(child(args))
        return 0
    return asyncio.run(parent(args))


if __name__ == "__main__":
    sys.exit(main())
