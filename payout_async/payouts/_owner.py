"""Who holds a lease: this process's identity, and whether another one still lives.

An owner reads ``host:pid:start:nonce``: the host name, the process id, the process's
start time (so that a recycled pid is not mistaken for the owner) and a nonce per
``Payouts``. A lease whose owner is a process of *this* host that no longer exists can
be taken over at once instead of waiting for it to expire.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid

__all__ = ["new_owner", "owner_is_dead"]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@functools.cache
def _host() -> str:
    return socket.gethostname().replace(":", "_")


def new_owner() -> str:
    """A fresh owner name for a ``Payouts`` of this process."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{_start_time(pid) or '?'}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` names a process of this host that has ended (its pid
    is gone, or now belongs to a process started at another time). Owners of other
    hosts, custom owner names and anything unreadable count as alive."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[0] != _host() or not parts[1].isdigit() or parts[2] == "?":
        return False
    if not os.path.isdir("/proc/self"):  # no way to tell on this system
        return False
    return _start_time(int(parts[1])) != parts[2]
