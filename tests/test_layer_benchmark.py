"""``benchmarks/layer.py`` runs: both the project and the lean version pay every payout
through the instant clients (it raises on any payout that does not succeed)."""

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
