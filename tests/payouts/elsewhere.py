"""``payout-async ARGS`` as if it ran on another host.

The lease owners it writes name the host ``elsewhere``, so workers on this host cannot
tell when it has died (``owner_is_dead`` only judges this host's processes) and must
wait for its leases to run out, as they would for a worker on another machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from payout_async.cli import main
from payout_async.payouts import _owner


def _elsewhere() -> str:
    return "elsewhere"


_owner.host_name = _elsewhere  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
