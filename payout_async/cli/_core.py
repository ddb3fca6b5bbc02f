"""No core dumps of the long-running commands: a core file of a worker would hold card
numbers, every API secret and the ledger key.

``no_core_dumps`` sets ``RLIMIT_CORE`` to 0 (soft and hard: the process cannot raise it
again) and, on Linux, ``prctl(PR_SET_DUMPABLE, 0)``, which also keeps other processes
of the same user from attaching a debugger or reading the process's memory through
``/proc``. Either is skipped silently where the platform does not offer it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

__all__ = ["LONG_RUNNING", "no_core_dumps"]

#: The commands that hold secrets for a long time (and so switch core dumps off).
LONG_RUNNING = frozenset({"worker", "batch", "resume", "reconcile", "demo", "sandbox", "enqueue"})
_PR_SET_DUMPABLE = 4


def no_core_dumps() -> None:
    """Switch core dumps off for this process (see the module)."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
