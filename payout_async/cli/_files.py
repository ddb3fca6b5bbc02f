"""Files the commands write (exports, configs holding secrets): created anew, readable
by their owner only, never through a link someone planted.

A new file is opened ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600): an existing file
or symbolic link at that name is an error, never written through. ``write_private``
writes a whole file that way under a random hidden name beside the target and then
renames it over the target in one step: a link at the target is replaced, not
followed, and a reader sees the old file or the new one, never half of it. It never
replaces an SQLite database or write-ahead log (a ledger, say).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from ._args import CLIError

__all__ = ["create_new", "write_private"]

#: Flags Windows lacks (links there need an administrator to make; descriptors are
#: not inherited by default): zero, so that the module imports and works there too.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NON_BLOCKING = getattr(os, "O_NONBLOCK", 0)
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | getattr(os, "O_CLOEXEC", 0)


def create_new(path: Path | str, mode: int = 0o600) -> int:
    """A descriptor of a new, empty file at ``path`` (``FileExistsError`` if anything,
    a link included, is already there)."""
    return os.open(path, _NEW, mode)


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise CLIError(f"cannot write {path}: it is a directory; name a file in it")


#: How an SQLite database file, and a write-ahead log (either byte order), begin.
_DATABASE_HEADERS = (b"SQLite format 3\x00", b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")


def _refuse_database(path: Path) -> None:
    """A regular file at ``path`` that is an SQLite database or its log is never
    replaced: it may be the ledger, the record of what was paid."""
    try:
        with open(path, "rb", opener=_no_follow) as handle:
            head = handle.read(16)
    except OSError:  # nothing there, a link (replaced, not followed), unreadable
        return
    if head.startswith(_DATABASE_HEADERS):
        raise CLIError(
            f"cannot write {path}: it is an SQLite database or its log (a ledger?); "
            "it is left as it is: name another file"
        )


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | _NO_FOLLOW | _NON_BLOCKING)


def write_private(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` with a new 0600 file holding the text of ``lines`` (UTF-8);
    any failure is a ``CLIError`` and leaves ``path`` as it was."""
    _refuse_directory(path)
    _refuse_database(path)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        descriptor = create_new(partial)
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error.strerror}") from None
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            for line in lines:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CLIError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
