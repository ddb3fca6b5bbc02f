"""Who holds a lease: this process's identity, and whether a holder has provably ended.

An owner reads ``host:boot:pidns:pid:start:nonce``:

- ``host``: the host name (``:`` replaced by ``_``);
- ``boot``: the kernel's boot id (``/proc/sys/kernel/random/boot_id``), new at each boot
  and different on every machine, even two machines with one host name;
- ``pidns``: the inode of ``/proc/self/ns/pid``, which tells apart two containers of one
  host that share a host name but each number their own processes;
- ``pid`` and ``start``: the process id and its start time in clock ticks since boot
  (``/proc/PID/stat``), so that a recycled pid is not mistaken for the owner;
- ``nonce``: random, one per ``Payouts`` -- prefixed with the command that made it
  (``batch-``, ``worker-``) when one did, so that ``status`` can name the holder; no
  liveness rule reads it.

A part this process cannot read is written ``?``. Liveness fails closed: an owner is
dead only when it is provably this host, this boot and this PID namespace *and* the
kernel says its pid does not exist or started at another time. Everything else --
another host, boot or namespace, anything unreadable, no permission (``hidepid``), no
file descriptor left, no ``/proc``, an owner of the old ``host:pid:start:nonce`` form
or a custom owner name -- counts as alive, and its lease is waited out.

``host_name``, ``boot_id``, ``pid_namespace``, ``start_time`` and ``pid_exists`` are
small on purpose: tests replace them to play other identities.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import uuid

__all__ = [
    "BATCH",
    "WORKER",
    "boot_id",
    "host_name",
    "new_owner",
    "owner_for",
    "owner_is_dead",
    "owner_process",
    "owner_role",
    "pid_exists",
    "pid_namespace",
    "start_time",
]

_UNKNOWN = "?"
#: Roles an owner's nonce may name: the command whose process holds the lease.
BATCH = "batch"
WORKER = "worker"
_ROLES = (BATCH, WORKER)
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@functools.cache
def host_name() -> str:
    """This host's name, as owners carry it."""
    return socket.gethostname().replace(":", "_")


@functools.cache
def boot_id() -> str | None:
    """The kernel's id of this boot, or None when it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            text = file.read().strip()
    except (OSError, ValueError):
        return None
    return text if _BOOT_ID.fullmatch(text) else None


@functools.cache
def pid_namespace() -> str | None:
    """The id of this process's PID namespace, or None when it cannot be read or when
    ``/proc`` numbers the processes of another namespace than ours (then its entries
    say nothing about our pids)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return None
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot, from ``/proc/PID/stat``.

    Raises:
        FileNotFoundError: ``/proc`` shows no such pid (gone, or hidden by ``hidepid``).
        OSError: it could not be read (no permission, no descriptor left, ...).
        ValueError: it could not be understood.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        text = stat.read()
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) <= 19 or not fields[19].isdigit():
        raise ValueError(f"/proc/{pid}/stat has no start time")
    return fields[19]


def pid_exists(pid: int) -> bool:
    """False only when the kernel says no process of our namespace has ``pid``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # no permission: it exists; else unknown
        return True
    return True


def owner_for(pid: int, start: str | None, role: str | None = None) -> str:
    """An owner name for process ``pid`` of this host, boot and PID namespace, started
    at ``start`` (None: unknown), with a fresh nonce (naming ``role``, one of
    ``BATCH`` and ``WORKER``, when given)."""
    if role is not None and role not in _ROLES:
        raise ValueError(f"role must be one of {', '.join(_ROLES)}, not {role!r}")
    identity = (host_name(), boot_id(), pid_namespace(), str(pid), start)
    parts = [_UNKNOWN if part is None else part for part in identity]
    nonce = uuid.uuid4().hex[:8]
    return ":".join([*parts, nonce if role is None else f"{role}-{nonce}"])


def new_owner(role: str | None = None) -> str:
    """A fresh owner name for a ``Payouts`` of this process (run by the command
    ``role``, when given: ``BATCH`` or ``WORKER``)."""
    pid = os.getpid()
    try:
        start: str | None = start_time(pid)
    except (OSError, ValueError):
        start = None
    return owner_for(pid, start, role)


def owner_role(owner: str) -> str | None:
    """The command an owner's nonce names (``BATCH``, ``WORKER``), or None."""
    parts = owner.split(":")
    if len(parts) != 6:
        return None
    role = parts[5].split("-", 1)[0]
    return role if role in _ROLES and "-" in parts[5] else None


def owner_process(owner: str) -> str:
    """The process an owner belongs to: the owner without its nonce (every
    ``Payouts`` of one process has the same), or the whole name when it is another
    form."""
    parts = owner.split(":")
    return ":".join(parts[:5]) if len(parts) == 6 else owner


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is provably a process of this host, boot and PID
    namespace that has ended: the kernel has no such pid, or the pid now belongs to a
    process whose start time was read and differs. Any other answer means alive."""
    parts = owner.split(":")
    if len(parts) != 6:  # a custom name, or the old form without boot and namespace
        return False
    host, boot, namespace, pid, start, _ = parts
    ours = (host_name(), boot_id(), pid_namespace())
    if None in ours or (host, boot, namespace) != ours:
        return False
    if not (pid.isdigit() and start.isdigit()):
        return False
    try:
        now = start_time(int(pid))
    except FileNotFoundError:
        # Gone -- or hidden from us (``hidepid=2``): only the kernel can say which.
        return not pid_exists(int(pid))
    except (OSError, ValueError):
        return False
    return now != start
