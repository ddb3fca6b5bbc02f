"""Lease owners and their liveness (issue 23, finding 1): a holder is dead only when it
is provably a process of this host, boot and PID namespace that has ended; any other
answer means alive. Identities are played by replacing the small ``_owner`` functions."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from payout_async.payouts import _owner
from payout_async.payouts._owner import new_owner, owner_for, owner_is_dead

_NEW_OWNER = "from payout_async.payouts._owner import new_owner; print(new_owner(), flush=True)"


def _ended_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    return int(child.stdout)


def _raises(error: BaseException) -> Callable[..., str]:
    def fails(*args: object, **kwargs: object) -> str:
        raise error

    return fails


def test_an_owner_names_host_boot_namespace_pid_and_start() -> None:
    host, boot, namespace, pid, start, nonce = new_owner().split(":")
    assert (host, boot, namespace) == (_owner.host_name(), _owner.boot_id(), _owner.pid_namespace())
    assert boot != "?" and namespace.isdigit()  # readable on the machines the suite runs on
    assert (pid, start) == (str(os.getpid()), _owner.start_time(os.getpid()))
    assert len(nonce) == 8 and new_owner() != new_owner()
    assert not owner_is_dead(new_owner())


def test_a_process_that_ended_is_dead_and_was_alive_while_it_ran() -> None:
    command = [sys.executable, "-c", _NEW_OWNER + "; input()"]
    piped = subprocess.PIPE
    with subprocess.Popen(command, stdin=piped, stdout=piped, text=True) as child:  # closes both
        assert child.stdout is not None and child.stdin is not None
        owner = child.stdout.readline().strip()
        assert owner.split(":")[3] == str(child.pid)
        assert not owner_is_dead(owner)
        child.stdin.close()
        child.wait(60)  # reaped: its pid is gone from /proc
        assert owner_is_dead(owner)


def test_a_pid_now_held_by_a_process_started_at_another_time_is_dead() -> None:
    assert owner_is_dead(owner_for(os.getpid(), "1"))  # this pid, started at tick 1: reused
    assert not owner_is_dead(owner_for(os.getpid(), _owner.start_time(os.getpid())))


def test_owners_with_one_host_name_in_two_pid_namespaces_never_see_each_other_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two containers with one host name: A's pid does not exist in B's /proc, B's pid
    # belongs to another process in A's. Each would be "dead" seen from its own
    # namespace, and neither is from the other's.
    gone, reused = _ended_pid(), os.getpid()
    monkeypatch.setattr(_owner, "pid_namespace", lambda: "4026531111")
    a = owner_for(gone, "12345")
    assert owner_is_dead(a)  # what A's own namespace would say of it
    monkeypatch.setattr(_owner, "pid_namespace", lambda: "4026532222")
    b = owner_for(reused, "1")
    assert owner_is_dead(b)
    assert not owner_is_dead(a)  # B about A
    monkeypatch.setattr(_owner, "pid_namespace", lambda: "4026531111")
    assert not owner_is_dead(b)  # A about B


def test_another_boot_or_host_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = owner_for(_ended_pid(), "12345")
    assert owner_is_dead(gone)
    monkeypatch.setattr(_owner, "boot_id", lambda: "00000000-0000-0000-0000-000000000000")
    assert not owner_is_dead(gone)
    monkeypatch.undo()
    monkeypatch.setattr(_owner, "host_name", lambda: "elsewhere")
    assert not owner_is_dead(gone)


@pytest.mark.parametrize("unreadable", ["boot_id", "pid_namespace"])
def test_an_identity_this_process_cannot_read_means_alive(
    monkeypatch: pytest.MonkeyPatch, unreadable: str
) -> None:
    pid = _ended_pid()
    readable = owner_for(pid, "12345")
    monkeypatch.setattr(_owner, unreadable, lambda: None)
    written = owner_for(pid, "12345")
    assert "?" in written.split(":")
    assert not owner_is_dead(readable)  # we cannot prove we share its boot / namespace
    monkeypatch.undo()
    assert not owner_is_dead(written)  # it could not say its own


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(errno.EACCES, "hidepid=1"),
        OSError(errno.EMFILE, "no file descriptor left"),
        OSError(errno.ENFILE, "no file left on the system"),
        OSError(errno.EIO, "other"),
        ValueError("no start time"),
    ],
)
def test_a_start_time_that_cannot_be_read_means_alive(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    gone = owner_for(_ended_pid(), "12345")
    assert owner_is_dead(gone)
    monkeypatch.setattr(_owner, "start_time", _raises(error))
    assert not owner_is_dead(gone)


def test_a_pid_hidden_from_proc_that_the_kernel_knows_is_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # hidepid=2: another user's /proc/PID is not there, but the process is.
    monkeypatch.setattr(_owner, "start_time", _raises(FileNotFoundError(errno.ENOENT, "hidden")))
    assert not owner_is_dead(owner_for(os.getpid(), "1"))
    assert owner_is_dead(owner_for(_ended_pid(), "1"))


def test_pid_exists_unless_the_kernel_says_no_such_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _owner.pid_exists(os.getpid()) and not _owner.pid_exists(_ended_pid())
    for error in (PermissionError(errno.EPERM, "other user"), OSError(errno.EINVAL, "?")):
        monkeypatch.setattr(os, "kill", _raises(error))
        assert _owner.pid_exists(_ended_pid())
        monkeypatch.undo()


def test_a_proc_of_another_namespace_gives_no_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    read_namespace = _owner.pid_namespace.__wrapped__  # type: ignore[attr-defined]
    assert read_namespace() == _owner.pid_namespace()
    monkeypatch.setattr(os, "readlink", lambda path: "1")  # /proc numbers another namespace
    assert read_namespace() is None
    monkeypatch.setattr(os, "readlink", _raises(FileNotFoundError(errno.ENOENT, "no /proc")))
    assert read_namespace() is None


def test_an_unreadable_or_strange_boot_id_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    read_boot_id = _owner.boot_id.__wrapped__  # type: ignore[attr-defined]
    assert read_boot_id() == _owner.boot_id()
    monkeypatch.setattr(_owner, "open", _raises(OSError(errno.EMFILE, "none left")), raising=False)
    assert read_boot_id() is None
    monkeypatch.setattr(_owner, "open", lambda *a, **k: io.StringIO("not a boot id\n"))
    assert read_boot_id() is None


@pytest.mark.parametrize(
    "owner",
    [
        "{host}:{pid}:1:deadbeef",  # the old host:pid:start:nonce form
        "{host}:{pid}:?:deadbeef",
        "worker-7",  # a custom owner name
        "",
        "{host}:{boot}:{ns}:{pid}:?:deadbeef",  # start time unknown when written
        "{host}:{boot}:{ns}:x:1:deadbeef",
    ],
)
def test_owners_of_an_old_form_or_a_custom_name_are_alive(owner: str) -> None:
    text = owner.format(
        host=_owner.host_name(), pid=_ended_pid(), boot=_owner.boot_id(), ns=_owner.pid_namespace()
    )
    assert not owner_is_dead(text)
