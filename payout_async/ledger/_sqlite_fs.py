"""Refusing an SQLite ledger on a network filesystem.

SQLite keeps two writers apart with file locks and, in WAL mode, an index in shared
memory (the ``-shm`` file, mapped into each process). Neither holds across hosts: on
NFS or SMB two workers on two hosts -- replicas sharing a volume -- could both claim a
payout and both pay it, and SQLite's own documentation says WAL "does not work over a
network filesystem" at all. So a ledger written there is refused; PostgreSQL is the
ledger for several hosts. (Linux: the filesystem is read from ``/proc/self/mountinfo``;
elsewhere nothing is checked.)
"""

from __future__ import annotations

from pathlib import Path

from .._errors import ConfigurationError

__all__ = ["NETWORK_FILESYSTEMS", "check_local_disk", "filesystem_of"]

#: Filesystem types (``mountinfo``'s field after ``-``) shared between hosts.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "ceph",
        "fuse.cephfs", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "lustre", "gpfs",
        "beegfs", "ocfs2", "gfs2", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "9p",
    }
)  # fmt: skip

MOUNTINFO = Path("/proc/self/mountinfo")


def _unescape(field: str) -> str:
    """A ``mountinfo`` path: spaces, tabs, newlines and backslashes are octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(folder: Path, mountinfo: str) -> str | None:
    """The type of the filesystem ``folder`` (absolute, symbolic links resolved) lies
    on, by the deepest mount point above it in ``mountinfo`` (the text of
    ``/proc/self/mountinfo``); None when no line names one."""
    best, found = -1, None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        mount_point = Path(_unescape(fields[4]))
        if folder != mount_point and mount_point not in folder.parents:
            continue
        depth = len(mount_point.parts)
        if depth >= best:  # a later mount over the same point hides the earlier one
            best, found = depth, fields[fields.index("-", 6) + 1]
    return found


def check_local_disk(path: str) -> None:
    """``ConfigurationError`` when the SQLite ledger ``path`` lies on a network
    filesystem (see the module's docstring); nothing when it cannot be told."""
    folder = Path(path).absolute().parent
    try:
        text = MOUNTINFO.read_text(encoding="utf-8", errors="replace")
        folder = folder.resolve(strict=True)
    except OSError:  # not Linux, or no such folder (opening the ledger says so)
        return
    kind = filesystem_of(folder, text)
    if kind in NETWORK_FILESYSTEMS:
        raise ConfigurationError(
            f"the SQLite ledger {path!r} lies on a network filesystem ({kind}): SQLite "
            "cannot keep writers on two hosts apart there (nor, in WAL mode, on one), so "
            "two workers could both pay one payout. Keep the file on a local disk, or use "
            "a PostgreSQL ledger (postgresql://...) to share the work between hosts"
        )
