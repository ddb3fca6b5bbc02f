"""The long-running commands switch core dumps off for themselves (issue 24): a core
file of a worker would hold card numbers, every API secret and the ledger key.

Each command runs in a child process that starts with core dumps allowed and reports,
from where the command would start its work, its own ``RLIMIT_CORE`` and
``prctl(PR_GET_DUMPABLE)``; ``status`` and ``export``, which hold no secret for long,
are the control.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")

CHILD = """
import ctypes, json, resource, sys
import payout_async.cli as cli

soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
allowed = 1 << 20 if hard == resource.RLIM_INFINITY else hard
resource.setrlimit(resource.RLIMIT_CORE, (allowed, hard))
libc = ctypes.CDLL(None)
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE 1: dumps allowed, whatever the parent said
build = cli.build_parser

def report(args):
    print(json.dumps({"core": resource.getrlimit(resource.RLIMIT_CORE),
                      "dumpable": libc.prctl(3, 0, 0, 0, 0)}))
    return 0

def parser():
    made = build()
    parse = made.parse_args
    def parse_args(argv=None):
        args = parse(argv)
        args.run = report  # report instead of doing the work
        return args
    made.parse_args = parse_args
    return made

cli.build_parser = parser
sys.exit(cli.main(sys.argv[1:]))
"""
LONG_RUNNING = [
    ["worker"],
    ["batch", "payouts.csv"],
    ["resume"],
    ["reconcile"],
    ["demo"],
    ["sandbox"],
    ["enqueue", "payouts.csv"],
]


def state(args: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    reported: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return reported


@pytest.mark.parametrize("args", LONG_RUNNING, ids=lambda args: args[0])
def test_a_long_running_command_has_no_core_dumps(args: list[str]) -> None:
    assert state(args) == {"core": [0, 0], "dumpable": 0}


@pytest.mark.parametrize("args", [["status"], ["export"]], ids=lambda args: args[0])
def test_a_short_command_leaves_them_as_they_were(args: list[str]) -> None:
    reported = state(args)
    assert reported["dumpable"] == 1 and reported["core"] != [0, 0]
