"""An SQLite ledger on a network filesystem is refused before anything is written:
SQLite's locks (and WAL's shared-memory index) do not keep writers on two hosts apart
there, so two replicas sharing a volume could both claim and pay one payout."""

from __future__ import annotations

from pathlib import Path

import pytest

from payout_async import ConfigurationError
from payout_async.ledger import SQLiteLedger, _sqlite_fs
from payout_async.ledger._sqlite_fs import filesystem_of

MOUNTS = r"""22 1 0:21 / /proc rw,relatime - proc proc rw
27 0 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
40 27 0:40 / /srv/payouts rw,relatime shared:5 - nfs4 files:/export rw,vers=4.2
41 40 0:41 / /srv/payouts/local rw,relatime - tmpfs tmpfs rw
42 27 0:42 / /mnt/with\040space rw - cifs //nas/share rw
43 27 0:43 / /data rw - ext4 /dev/sdb rw
44 27 0:44 / /data rw - nfs nas:/data rw
"""


@pytest.mark.parametrize(
    ("folder", "kind"),
    [
        ("/", "ext4"),
        ("/home/me", "ext4"),
        ("/srv/payouts", "nfs4"),
        ("/srv/payouts/2026", "nfs4"),
        ("/srv/payouts/local/x", "tmpfs"),  # a local mount inside the network one
        ("/srv/payoutsX", "ext4"),  # a name that only starts like the mount point
        ("/mnt/with space/ledgers", "cifs"),
        ("/data/x", "nfs"),  # mounted over /data later: the later mount is the one seen
    ],
)
def test_the_deepest_mount_above_the_folder_names_its_filesystem(folder: str, kind: str) -> None:
    assert filesystem_of(Path(folder), MOUNTS) == kind


def _mount(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> Path:
    """``tmp_path/share``, shown mounted as ``kind`` by the ``/proc/self/mountinfo``
    the ledger reads."""
    share = (tmp_path / "share").resolve()
    share.mkdir(exist_ok=True)
    info = tmp_path / "mountinfo"
    info.write_text(f"27 0 259:1 / / rw - ext4 root rw\n50 27 0:50 / {share} rw - {kind} x rw\n")
    monkeypatch.setattr(_sqlite_fs, "MOUNTINFO", info)
    return share


@pytest.mark.parametrize("kind", ["nfs4", "cifs", "fuse.sshfs"])
async def test_a_ledger_on_a_network_filesystem_is_refused_and_not_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    share = _mount(monkeypatch, tmp_path, kind)
    ledger = SQLiteLedger(share / "payouts.db")
    with pytest.raises(ConfigurationError, match=rf"network filesystem \({kind}\).*PostgreSQL"):
        await ledger.open()
    assert list(share.iterdir()) == []  # nothing created, nothing written


async def test_a_ledger_on_a_local_filesystem_opens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    share = _mount(monkeypatch, tmp_path, "xfs")
    async with SQLiteLedger(share / "payouts.db") as ledger:
        assert await ledger.get("enot", "k") is None


async def test_a_ledger_there_can_still_be_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Looking (``status``, ``export``) writes nothing and claims nothing: allowed."""
    share = _mount(monkeypatch, tmp_path, "xfs")
    async with SQLiteLedger(share / "payouts.db") as ledger:  # written on a local disk
        assert await ledger.get("enot", "k") is None
    _mount(monkeypatch, tmp_path, "nfs4")  # then moved to a share
    async with SQLiteLedger(share / "payouts.db", read_only=True) as reader:
        assert await reader.get("enot", "k") is None
    with pytest.raises(ConfigurationError, match="network filesystem"):
        await SQLiteLedger(share / "payouts.db").open()
