"""What a user gets after the README's ``pip install -e``: mypy, run on the user's own
file outside the repository, finds payout_async and its types; and the docs' pytest
plugin example passes as written in a fresh folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .blocks import ROOT, blocks

USER_FILE = """\
from decimal import Decimal

from payout_async import EnotClient
from payout_async.enot import PayoffRequest

request = PayoffRequest(service="card", wallet_to="4111111111111111", amount=Decimal("1"))
reveal_type(request.amount)
EnotClient(user_id=1)
"""


def _fresh(tmp_path: Path) -> dict[str, str]:
    """An environment that points at nothing of the repository: a user's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MYPY"))}
    env["HOME"] = str(tmp_path)
    return env


def test_mypy_on_a_users_file_outside_the_repository_sees_payout_async(
    tmp_path: Path,
) -> None:
    (tmp_path / "user.py").write_text(USER_FILE, encoding="utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "user.py"],
        cwd=tmp_path, env=_fresh(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    out = checked.stdout
    assert "import-not-found" not in out and "import-untyped" not in out, out
    assert 'Revealed type is "decimal.Decimal"' in out, out
    assert 'Argument "user_id" to "EnotClient" has incompatible type "int"' in out, out
    assert checked.returncode == 1, out


def test_the_pytest_plugin_example_passes_in_a_fresh_folder(tmp_path: Path) -> None:
    page = ROOT / "docs" / "sandbox.md"
    files = {b.title: b.code for b in blocks(page) if b.language == "python" and b.title}
    assert set(files) == {"conftest.py", "test_withdrawal.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_withdrawal.py"],
        cwd=tmp_path, env=_fresh(tmp_path), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout, ran.stdout
