"""``payout-async sandbox``: serve the provider emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tomllib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import attrs

from ..sandbox import FaultKind, Sandbox, SandboxConfig, SandboxCredentials
from ._args import EXIT_USAGE, CLIError, port
from ._console import say, show
from ._files import write_private
from ._setup import on_this_machine
from ._views import document

__all__ = ["environment", "register", "run"]


def _money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None


#: Command-line options that map one to one onto ``SandboxConfig`` fields.
_NUMBERS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("fault_rate", float, "probability that a request gets a fault"),
    ("seed", int, "seed for faults and outcomes, for reproducible runs (default: random)"),
    ("failure_ratio", float, "share of payouts that end Failed / fail"),
    ("stall_seconds", float, "silence of COMMIT_THEN_STALL, seconds"),
    ("im_in_process_after", float, "IntellectMoney: seconds after execute until InProcess"),
    ("im_final_after", float, "IntellectMoney: seconds after execute until final"),
    ("im_execute_lag", float, "IntellectMoney: seconds an accepted execute still reads Created"),
    ("enot_final_after", float, "Enot: seconds after create until success/fail"),
    ("enot_info_lag", float, "Enot: seconds after create that payoff/info answers 404"),
    (
        "user_token_lifetime",
        float,
        "IntellectMoney UserToken lifetime, seconds (default: never expires)",
    ),
    ("im_balance", _money, "IntellectMoney starting balance, rubles"),
    ("enot_balance", _money, "Enot starting balance, rubles"),
    (
        "rate_limit_per_second",
        float,
        "requests a second each provider accepts, 429 beyond (default: no limit)",
    ),
    ("rate_limit_burst", int, "requests each provider accepts back to back"),
)
#: ``SandboxConfig``'s defaults, shown by ``--help`` (the options themselves default to
#: None: only what is given overrides the config).
_DEFAULTS = {field.name: field.default for field in attrs.fields(SandboxConfig)}


def _with_default(name: str, text: str) -> str:
    if "default" in text:
        return text
    value = _DEFAULTS[name]
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} (default: {shown})"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _fault_kinds(text: str) -> frozenset[FaultKind]:
    try:
        return frozenset(FaultKind[name.upper()] for name in _names(text))
    except KeyError as error:
        known = ", ".join(kind.name for kind in FaultKind)
        raise argparse.ArgumentTypeError(f"unknown fault kind {error}; known: {known}") from None


def register(subparsers: Any) -> None:
    """Add the ``sandbox`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="serve an emulator of both providers on 127.0.0.1",
        description="Serve IntellectMoney and Enot emulators on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=port, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--write-config",
        type=Path,
        metavar="FILE",
        help="write the sandbox's ledger-free settings (credentials, base URLs) to FILE as a "
        "TOML config for --config, readable by you only (0600); a FILE already there is "
        "replaced only if it is a sandbox config, never a real one",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the addresses, credentials and environment settings as one JSON "
        "document on stdout instead of the banner",
    )
    for name, kind, text in _NUMBERS:
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, help=_with_default(name, text)
        )
    parser.add_argument(
        "--fault-kinds",
        type=_fault_kinds,
        help="comma-separated fault kinds to draw from (default: all)",
    )
    parser.add_argument(
        "--fault-routes",
        type=_names,
        help="comma-separated routes to fault, e.g. enot.create (default: every route)",
    )
    parser.add_argument(
        "--duplicate-order-id",
        choices=("accept", "reject"),
        help="Enot: what a second payoff with a used order_id gets (default: accept)",
    )
    parser.add_argument(
        "--im-second-execute",
        choices=("refuse", "accept", "pay_again"),
        help="IntellectMoney: what a second execute of an operation gets (default: refuse)",
    )
    parser.set_defaults(run=run)


def _config(args: argparse.Namespace) -> SandboxConfig:
    names = [name for name, _, _ in _NUMBERS]
    names += ["fault_kinds", "fault_routes", "duplicate_order_id", "im_second_execute"]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return SandboxConfig(**given)


class Served(Protocol):
    """A running sandbox, in this process (``Sandbox``) or another."""

    @property
    def credentials(self) -> SandboxCredentials: ...

    @property
    def intellectmoney_url(self) -> str: ...

    @property
    def enot_url(self) -> str: ...


def environment(sandbox: Served) -> dict[str, str]:
    """The environment settings that point the other commands at this sandbox."""
    c = sandbox.credentials
    return {
        "PAYOUT_ASYNC_IM_USER_TOKEN": c.im_user_token,
        "PAYOUT_ASYNC_IM_SECRET_KEY": c.im_secret_key,
        "PAYOUT_ASYNC_IM_BEARER_TOKEN": c.im_bearer_token,
        "PAYOUT_ASYNC_IM_BASE_URL": sandbox.intellectmoney_url,
        "PAYOUT_ASYNC_ENOT_USER_ID": c.enot_user_id,
        "PAYOUT_ASYNC_ENOT_SECRET_KEY": c.enot_secret_key,
        "PAYOUT_ASYNC_ENOT_BASE_URL": sandbox.enot_url,
    }


def _endpoints(sandbox: Sandbox) -> dict[str, str]:
    return {
        "stats": f"GET {sandbox.url}/_sandbox/stats",
        "reset": f"POST {sandbox.url}/_sandbox/reset",
        "top_up": f"POST {sandbox.url}/_sandbox/top-up",
        "traffic": f"GET {sandbox.url}/_sandbox/traffic",
        "user_token": f"POST {sandbox.url}/_sandbox/user-token",
    }


def _banner(sandbox: Sandbox) -> str:
    ends = _endpoints(sandbox)
    lines = [
        f"payout-async sandbox listening on {sandbox.url}",
        f"  IntellectMoney base URL  {sandbox.intellectmoney_url}",
        f"  Enot base URL            {sandbox.enot_url}",
        f"  stats                    {ends['stats']}",
        f"  reset                    {ends['reset']}",
        f'  top up a balance         {ends["top_up"]} {{"provider": "enot", "amount": "100.00"}}',
        f"  request arrival times    {ends['traffic']}",
        f"  fresh UserToken          {ends['user_token']}",
        "credentials (test values):",
    ]
    for name, value in attrs.asdict(sandbox.credentials).items():
        lines.append(f"  {name:<20} {value}")
    lines.append("for `payout-async batch`, in another shell:")
    lines += [f"  export {name}='{value}'" for name, value in environment(sandbox).items()]
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def _json(sandbox: Sandbox, config_file: Path | None) -> str:
    """The ``--json`` document: where the sandbox listens, its test credentials and the
    environment settings for the other commands."""
    return document(
        "sandbox",
        None,
        url=sandbox.url,
        intellectmoney_url=sandbox.intellectmoney_url,
        enot_url=sandbox.enot_url,
        endpoints=_endpoints(sandbox),
        credentials=attrs.asdict(sandbox.credentials),
        environment=environment(sandbox),
        config_file=None if config_file is None else str(config_file),
    )


def _toml(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def _check_replaceable(path: Path) -> None:
    """Refuse (``CLIError``) to replace anything at ``path`` but a config this command
    wrote: one whose every table is a provider's with its ``base_url`` on this machine.
    A config of the real providers -- their credentials -- is never overwritten with
    the sandbox's."""
    if path.is_dir():
        return  # write_private says so
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError):
        text = None
    try:
        found = None if text is None else tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        found = None
    if found is not None and _sandbox_config(found):
        return
    raise CLIError(
        f"{path} is there already and is not a sandbox config (not every base_url "
        "in it is on this machine): left as it is; name a new file, or remove it first"
    )


def _sandbox_config(found: dict[str, Any]) -> bool:
    """Whether a config names only provider tables, each talking to this machine."""
    if not found or set(found) - {"intellectmoney", "enot"}:
        return False
    for table in found.values():
        url = table.get("base_url") if isinstance(table, dict) else None
        if not isinstance(url, str) or not on_this_machine(url):
            return False
    return True


def write_config(path: Path, sandbox: Sandbox) -> None:
    """A ``--config`` file for this sandbox, created readable by its owner only (a
    new file renamed over ``path``: a link there is replaced, never written through)."""
    c = sandbox.credentials
    text = "\n".join([
        "[intellectmoney]",
        f"user_token = {_toml(c.im_user_token)}",
        f"secret_key = {_toml(c.im_secret_key)}",
        f"bearer_token = {_toml(c.im_bearer_token)}",
        f"base_url = {_toml(sandbox.intellectmoney_url)}",
        "",
        "[enot]",
        f"user_id = {_toml(c.enot_user_id)}",
        f"secret_key = {_toml(c.enot_secret_key)}",
        f"base_url = {_toml(sandbox.enot_url)}",
        "",
    ])  # fmt: skip
    write_private(path, [text])


async def _serve(config: SandboxConfig, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    sandbox = Sandbox(config=config, port=args.port)
    try:
        await sandbox.start()
    except OSError as error:
        raise CLIError(f"cannot listen on port {args.port}: {error.strerror or error}") from None
    try:
        if args.write_config is not None:
            write_config(args.write_config, sandbox)
        if args.json:
            show(_json(sandbox, args.write_config))
            say("sandbox running; Ctrl-C (or SIGTERM) stops it")
        else:
            show(_banner(sandbox))
            if args.write_config is not None:
                show(f"settings written to {args.write_config} (mode 0600): "
                     f"payout-async batch FILE --config {args.write_config}")  # fmt: skip
        await stop.wait()
    finally:
        await sandbox.close()


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 on bad settings or a port that
    cannot be bound."""
    try:
        config = _config(args)
    except (ValueError, TypeError) as error:
        say(f"error: {error}")
        return EXIT_USAGE
    if args.write_config is not None:
        _check_replaceable(args.write_config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, args))
    return 0
