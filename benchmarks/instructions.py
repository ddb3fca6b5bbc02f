"""Instructions per payout of ``layer.py``'s ways, counted under valgrind's callgrind:
a measure that, unlike CPU time, does not move with the machine's load.

On a shared machine CPU time moves by 10% from one run to the next, so a change worth
a few per cent cannot be seen in ``overhead.py`` or ``layer.py``; the number of
instructions the process runs for the same work can (it repeats within half a per
cent). Each way runs twice under callgrind, with 50 + 50 payouts of warm-up and then
with ``--n`` more of each provider; the difference over the payouts it adds is the
figure, so that interpreter start-up and imports drop out (with a few hundred payouts
at least: the default 600; with 100, one collection of the garbage collector's oldest
generation more or less moves it by a quarter). It counts work done, not
time: what cache misses cost (the code run cold beside aiohttp's, see
``docs/performance.md``) it does not see, and a PostgreSQL server's own work is not
in it (as in ``overhead.py``).

    python benchmarks/instructions.py                  # every way, project and lean
    python benchmarks/instructions.py --only memory    # one way (memory, sqlite, ...)

Needs ``valgrind`` on the PATH; about a minute per way and side.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import machine, table

WAYS = ("memory", "sqlite", "sqlite+key", "postgres")
WARMUP = 50  # payouts per provider before the counted ones (both runs)


def count(side: str, way: str, n: int) -> int:
    """Instructions of one run of ``side`` (project or lean) paying ``n`` payouts of each
    provider after the warm-up."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--run",
        side,
        way,
        str(n),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        raise SystemExit(f"{side} {way}: callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_payout(side: str, way: str, n: int) -> float:
    return (count(side, way, n) - count(side, way, 0)) / (2 * n)


async def run(side: str, way: str, n: int) -> None:
    """One run, as ``count`` starts it under callgrind."""
    import layer

    async def paid(both: Callable[[str, int], Awaitable[None]], tag: str, count: int) -> float:
        await both(f"w{tag}", WARMUP)
        if count:
            await both(tag, count)
        return 0.0

    layer._timed = paid  # the same payouts, counted instead of timed
    with tempfile.TemporaryDirectory() as directory:
        making = layer.project_run if side == "project" else layer.lean_run
        await making(way, Path(directory), n, 64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="counted payouts per provider")
    parser.add_argument("--only", default="", help=f"comma-separated ways ({', '.join(WAYS)})")
    parser.add_argument("--run", nargs=3, metavar=("SIDE", "WAY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        side, way, n = args.run
        asyncio.run(run(side, way, int(n)))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on the PATH")
    ways = [way.strip() for way in args.only.split(",")] if args.only else list(WAYS)
    print(f"payout-async instructions per payout (callgrind, no HTTP) on {machine()}")
    rows = []
    for way in ways:
        project, lean = per_payout("project", way, args.n), per_payout("lean", way, args.n)
        rows.append([way, f"{project:,.0f}", f"{lean:,.0f}", f"{lean / project:.2f}"])
    print(
        f"\n{args.n} IntellectMoney + {args.n} Enot payouts, 64 in flight, clients "
        "answering at once (layer.py's ways):"
    )
    print(table(["way", "project", "lean", "project / lean"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
