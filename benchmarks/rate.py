"""A batch at a set rate against a sandbox that enforces that rate: ``payout-async batch
--rate R`` pays 1,000 payouts (half IntellectMoney, half Enot) while the sandbox, in a
process of its own, accepts at most R requests a second per provider and answers 429
beyond it.

The sandbox's limit has a burst (``--sandbox-burst``, default 10) to absorb scheduling
jitter: the sandbox timestamps a request when its handler runs, so a stall of either
process on a busy two-core machine delivers several evenly spaced requests at once.
The client's own limit has no burst (1: evenly spaced).

Printed per provider, from the sandbox's own records: requests served, the rate it saw
(mean over the run, and the most requests in any one second), the 429s it answered,
and how long the provider's share took. ``--without-rate`` runs the same batch with no
client-side limit, to show what the limit saves. Exit status 1 only when a payout was
paid twice or lost; a rate or a 429 count is reported, never fatal.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import PAN, SandboxProcess, machine, table

from payout_async.cli._sandbox import environment as sandbox_environment
from payout_async.sandbox import peak_rate

PROVIDERS = ("intellectmoney", "enot")


def write_batch(path: Path, count: int) -> list[tuple[str, str]]:
    """``count`` card payouts of 1.00, alternating providers; returns (provider, key)."""
    payouts = []
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "provider", "method", "recipient", "amount", "description"])
        for n in range(count):
            provider = PROVIDERS[n % 2]
            key = f"rate-{n}"
            description = key if provider == "intellectmoney" else ""
            writer.writerow([key, provider, "card", PAN, "1.00", description])
            payouts.append((provider, key))
    return payouts


def environment(sandbox: SandboxProcess, state: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_ASYNC_")},
        **sandbox_environment(sandbox),
        "PAYOUT_ASYNC_STATE_DIR": str(state),  # keep the key registry out of $HOME
    }


def seen(traffic: dict[str, list[float]], provider: str) -> dict[str, float]:
    """What the sandbox saw of ``provider``: requests, span, mean and peak rates."""
    prefix = "im." if provider == "intellectmoney" else "enot."
    times = sorted(t for route, ts in traffic.items() if route.startswith(prefix) for t in ts)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "requests": len(times),
        "span": span,
        "mean": (len(times) - 1) / span if span > 0 else 0.0,
        "peak": peak_rate(times, 1.0),
    }


def problems(
    payouts: list[tuple[str, str]], stats: dict[str, Any], statuses: dict[str, str]
) -> list[str]:
    """Payouts paid twice, or lost: reported ``succeeded`` but not in the books, or in
    the books but reported neither ``succeeded`` nor ``needs_attention`` (whose outcome
    ``reconcile`` settles)."""
    found = []
    if stats["duplicates"]:
        found.append(f"{len(stats['duplicates'])} paid twice: {stats['duplicates'][:2]}")
    paid = stats["paid_per_payout"]
    lost = []
    for provider, key in payouts:
        times, status = paid[provider].get(key, 0), statuses.get(key)
        unsettled = status == "needs_attention"
        if times > 1 or (not unsettled and (status == "succeeded") != (times == 1)):
            lost.append(key)
    if lost:
        found.append(f"{len(lost)} paid twice or lost, e.g. {lost[:3]}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="payouts (default 1000)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per provider")
    parser.add_argument("--sandbox-burst", type=int, default=10, help="the sandbox's burst")
    parser.add_argument("--concurrency", type=int, default=32, help="batch --concurrency")
    parser.add_argument("--timeout", type=float, default=270, help="limit for the batch, s")
    parser.add_argument(
        "--without-rate",
        action="store_true",
        help="run the batch without --rate (the sandbox still limits): the 429s it meets",
    )
    args = parser.parse_args()

    print(f"machine: {machine()}")
    client = "no --rate" if args.without_rate else f"--rate {args.rate:g} per provider"
    print(
        f"{args.n} payouts, {client}, sandbox limit {args.rate:g}/s "
        f"with a burst of {args.sandbox_burst} per provider, --concurrency {args.concurrency}"
    )
    options: dict[str, object] = {
        "rate_limit_per_second": args.rate,
        "rate_limit_burst": args.sandbox_burst,
        "im_in_process_after": 0,
        "im_final_after": 0,
        "enot_final_after": 0,
    }
    with tempfile.TemporaryDirectory() as folder, SandboxProcess(**options) as sandbox:
        directory = Path(folder)
        payouts = write_batch(directory / "batch.csv", args.n)
        command = [
            sys.executable, "-m", "payout_async", "batch", str(directory / "batch.csv"),
            "--ledger", f"sqlite:///{directory / 'ledger.db'}",
            "--concurrency", str(args.concurrency), "--no-progress", "--json",
        ]  # fmt: skip
        if not args.without_rate:
            command += ["--rate", f"{args.rate:g}"]
        started = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=directory,
            env=environment(sandbox, directory),
            timeout=args.timeout,
        )
        wall = time.perf_counter() - started
        stats, traffic = sandbox.stats(), sandbox.traffic()
    document = json.loads(done.stdout) if done.stdout.strip() else {}
    counts = document.get("counts", {})
    statuses = {p["key"]: p["status"] for p in document.get("payouts", [])}
    rows = []
    for provider in PROVIDERS:
        figures = seen(traffic, provider)
        rows.append([
            provider,
            sum(1 for p, _ in payouts if p == provider),
            figures["requests"],
            "none" if args.without_rate else f"{args.rate:g}",
            f"{figures['mean']:.1f}",
            f"{figures['peak']:.0f}",
            stats["rate_limited"].get(provider, 0),
            f"{figures['span']:.1f}",
        ])  # fmt: skip
    print()
    print(table(
        ["provider", "payouts", "requests", "set rate/s", "rate seen/s (mean)",
         "most in any 1 s", "429s", "duration s"],
        rows,
    ))  # fmt: skip
    print()
    print(f"batch exit status {done.returncode} in {wall:.1f} s wall; results: {counts}")
    found = problems(payouts, stats, statuses)
    print("paid twice or lost: " + ("; ".join(found) if found else "none"))
    if done.returncode != 0:
        print(done.stderr[-2000:])
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
