"""Run the deterministic simulation of ``Payouts`` over many seeds (issue 23).

    python benchmarks/simulate.py --seeds 5000 [--start 0] [--ledger memory|sqlite]
        [--family core] [--mutation old-fence ...]
    python benchmarks/simulate.py --replay 1234 --family core --ledger memory

Each seed is one simulated deployment (``tests/simulation``): the real ``Payouts``,
flows and ledger on a virtual-time loop, against simulated providers and network,
with every fault drawn from the seed. A failing seed prints the one-line command that
replays it exactly; ``--replay`` prints that run's event log. The summary gives the
schedules per second (wall clock and CPU), the violations by invariant, and how often
the admitted assumption was hit: a money-moving request that left more than the fence
margin after its fence began.

Families: ``core`` (issue 23), ``history`` and ``restore`` (issue 27), and one per old
rule (``fence``, ``takeover``, ``evidence``, ``liveness``, ``webhook``). ``--mutation
all`` installs every old rule (today's main before issue 23, with the old liveness).

Exit status 1 when a seed fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.simulation.mutations import MUTATIONS
from tests.simulation.runner import run_seed
from tests.simulation.scenario import FAMILIES, Outcome


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--replay", type=int, help="run this one seed and print its log")
    parser.add_argument("--ledger", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="core")
    parser.add_argument(
        "--mutation",
        action="append",
        default=[],
        choices=[*sorted(MUTATIONS), "all"],
        help="install an old rule (repeatable; 'all': every one)",
    )
    return parser.parse_args()


def _mutations(names: list[str]) -> tuple[str, ...]:
    return tuple(MUTATIONS) if "all" in names else tuple(names)


def _replay(seed: int, args: argparse.Namespace, directory: Path) -> int:
    outcome = run_seed(
        seed,
        family=args.family,
        ledger=args.ledger,
        mutations=_mutations(args.mutation),
        directory=directory,
    )
    print("\n".join(outcome.log))
    print(f"\nstats: {outcome.stats}")
    for violation in outcome.violations:
        print(f"{'excused' if violation.excused else 'FAILED'}: {violation}")
    return 1 if outcome.failures else 0


def _sweep(args: argparse.Namespace, directory: Path) -> int:
    mutations = _mutations(args.mutation)
    rules: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    failed = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(args.start, args.start + args.seeds):
        outcome = run_seed(
            seed, family=args.family, ledger=args.ledger, mutations=mutations, directory=directory
        )
        _count(outcome, rules, totals)
        if outcome.failures:
            failed += 1
            print(f"FAILED {outcome.replay}  # {outcome.failures[0]}", flush=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"\n{args.seeds} seeds ({args.family}, {args.ledger}"
        f"{', ' + ', '.join(mutations) if mutations else ''}): {failed} failed; "
        f"{args.seeds / wall:.1f} schedules/s ({args.seeds / cpu:.1f} per CPU second)"
    )
    print("violations: " + (", ".join(f"{k} {v}" for k, v in sorted(rules.items())) or "none"))
    print(
        f"per run on average: {totals['requests'] / args.seeds:.0f} requests, "
        f"{totals['money_requests'] / args.seeds:.1f} money-moving, "
        f"{totals['virtual_seconds'] / args.seeds:.0f} virtual seconds"
    )
    print(
        f"admitted assumption: {totals['late_departures']} of {totals['money_requests']} "
        f"money-moving requests left more than the fence margin after their fence "
        f"(in {totals['late_runs']} runs); {rules['S1 excused']} double payments excused by it"
    )
    return 1 if failed else 0


def _count(outcome: Outcome, rules: Counter[str], totals: Counter[str]) -> None:
    for violation in outcome.violations:
        rules[f"{violation.rule}{' excused' if violation.excused else ''}"] += 1
    for name in ("requests", "money_requests", "virtual_seconds", "late_departures"):
        totals[name] += outcome.stats[name]
    totals["late_runs"] += outcome.stats["late_departures"] > 0


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="payout-simulation-") as directory:
        if args.replay is not None:
            return _replay(args.replay, args, Path(directory))
        return _sweep(args, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
