"""Every module imports where the POSIX-only parts of ``os`` and ``signal`` are missing,
as on Windows (the package says "OS Independent"): a module-level
``os.register_at_fork`` or ``os.O_NOFOLLOW`` made ``import payout_async``, or the command
line, fail there before anything could say why. Run in a fresh interpreter: the
dependencies and the standard library are imported first, as they are (they adapt to
Windows themselves), then the names are removed and this package's modules imported."""

from __future__ import annotations

import subprocess
import sys

_PROGRAM = """
import importlib, os, pkgutil, signal, sys
for dep in ("asyncio", "subprocess", "multiprocessing", "concurrent.futures", "sqlite3",
            "aiohttp", "aiohttp.web", "aiosqlite", "asyncpg", "attrs", "cattrs", "tenacity",
            "aiolimiter", "msgspec", "rich.console", "rich.progress", "rich.table",
            "cryptography.hazmat.primitives.ciphers.aead", "logging.handlers", "tempfile",
            "shutil", "uuid", "argparse", "tomllib", "csv", "json", "getpass", "ssl",
            "email.utils", "socket", "selectors", "threading", "pytest"):
    importlib.import_module(dep)
for name in ("register_at_fork", "fork", "O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC", "getuid",
             "geteuid", "getgid", "killpg", "setsid", "fchmod", "sysconf", "uname", "getpgid",
             "WNOHANG", "getloadavg", "sched_getaffinity", "statvfs", "chown", "lchown"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGALRM", "SIGCHLD",
             "SIGPIPE", "SIGTSTP", "SIGCONT"):
    if hasattr(signal, name):
        delattr(signal, name)
for name in ("resource", "fcntl", "pwd", "grp", "termios", "tty", "pty"):
    sys.modules[name] = None  # "import resource" fails, as there
import payout_async
failed = []
def broken(name):
    failed.append(f"{name}: {sys.exc_info()[1]!r}")
for info in pkgutil.walk_packages(payout_async.__path__, "payout_async.", onerror=broken):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as error:
        failed.append(f"{info.name}: {error!r}")
print("\\n".join(failed))
"""


def test_every_module_imports_without_posix_only_names() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stdout
