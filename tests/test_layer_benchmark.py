"""The yardstick of issue 26 keeps its word: ``benchmarks/lean.py`` holds the guarantees
it claims (against the sandbox, on every ledger), and ``benchmarks/layer.py`` runs --
both the project and the lean version pay every payout through the instant clients (it
raises on any payout that does not succeed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_benchmark_pays_every_payout_and_prints_its_quotient() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/layer.py", "--n", "40", "--repeat", "2", "--only", "memory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("memory"))
    project, lean, quotient = row.split()[1:4]
    assert int(project) > 0 and int(lean) > 0 and float(quotient) > 0


def test_the_lean_version_holds_its_guarantees_and_pays_each_key_once() -> None:
    """Its own check: one live row per key across providers, the count of rows begun
    and moved, stranded rows found by index and taken over, a row altered between
    begin and send parked unsent (with and without a key); then a sandbox's books."""
    done = subprocess.run(
        [sys.executable, "benchmarks/lean.py", "--n", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(verdicts) == 10, verdicts  # five ledgers, checked twice each
    assert all(line.split()[1] == "ok:" for line in verdicts), verdicts
