"""Shared options of the subcommands: the ledger, credentials, base URLs and tuning.

Each setting comes from its flag, else a ``--*-file`` flag (secrets), else an
environment variable, else the TOML file named by ``--config`` (or
``PAYOUT_ASYNC_CONFIG``)::

    ledger = "sqlite:////var/lib/payouts.db"   # PAYOUT_ASYNC_LEDGER
    ledger_key = "..."                         # PAYOUT_ASYNC_LEDGER_KEY, --ledger-key-file

    [intellectmoney]            # env PAYOUT_ASYNC_IM_*
    user_token = "..."          # PAYOUT_ASYNC_IM_USER_TOKEN
    secret_key = "..."          # PAYOUT_ASYNC_IM_SECRET_KEY (the SignSecretKey)
    bearer_token = "..."        # PAYOUT_ASYNC_IM_BEARER_TOKEN
    api = "current"             # PAYOUT_ASYNC_IM_API ("current" or "legacy")
    base_url = "..."            # PAYOUT_ASYNC_IM_BASE_URL
    rate = 5                    # PAYOUT_ASYNC_IM_RATE (requests a second; --rate)
    rate_burst = 1              # PAYOUT_ASYNC_IM_RATE_BURST (--rate-burst)

    [enot]                      # env PAYOUT_ASYNC_ENOT_*
    user_id = "..."             # PAYOUT_ASYNC_ENOT_USER_ID
    secret_key = "..."          # PAYOUT_ASYNC_ENOT_SECRET_KEY
    base_url = "..."            # PAYOUT_ASYNC_ENOT_BASE_URL
    services = ["usdt_erc20"]   # PAYOUT_ASYNC_ENOT_SERVICES (comma-separated)
    rate = 10                   # PAYOUT_ASYNC_ENOT_RATE (and rate_burst, as above)

A command line is readable by every user of the machine (``ps``,
``/proc/PID/cmdline``), so no secret is taken there: ``--enot-secret-key VALUE`` (and
the other secret flags) is refused with an error naming ``--enot-secret-key-file``,
and a ``--ledger`` URL holding a password gets a warning. A config or secret file
that group or others may read is refused, as ssh refuses such a private key, with the
``chmod 600`` that fixes it. The ledger URL may name the key's variable
(``?key_env=NAME``).
"""

from __future__ import annotations

import argparse
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attrs

from .._errors import ConfigurationError
from .._rate import RateLimit
from .._transport import Timeouts
from ..enot import DEFAULT_BASE_URL as ENOT_BASE_URL
from ..enot import EnotClient
from ..intellectmoney import DEFAULT_BASE_URL as IM_BASE_URL
from ..intellectmoney import Api, IntellectMoneyClient
from ..ledger import Ledger
from ..payouts import Payouts
from ._args import CLIError, at_least_one, seconds
from ._console import say
from ._rates import add_rate_options, rate_limits

__all__ = [
    "Settings",
    "add_ledger_option",
    "add_output_options",
    "add_provider_options",
    "build_client",
    "build_payouts",
    "check_credentials",
    "make_payouts",
    "settings",
]

DEFAULT_LEDGER = "sqlite:///payouts.db"
LEDGER_KEY_ENV = "PAYOUT_ASYNC_LEDGER_KEY"
_TOP_LEVEL = ("ledger", "ledger_key")
_FIELDS = {
    "intellectmoney": ("user_token", "secret_key", "bearer_token", "api", "base_url"),
    "enot": ("user_id", "secret_key", "base_url", "services"),
}
#: Each provider's rate limit (see ``_rates``).
_RATE_FIELDS = ("rate", "rate_burst")
_FIELDS = {provider: fields + _RATE_FIELDS for provider, fields in _FIELDS.items()}
_SECRETS = {
    "intellectmoney": ("user_token", "secret_key", "bearer_token"),
    "enot": ("secret_key",),
}
_REQUIRED = {"intellectmoney": ("user_token", "secret_key"), "enot": ("user_id", "secret_key")}
_ENV_PREFIX = {"intellectmoney": "PAYOUT_ASYNC_IM_", "enot": "PAYOUT_ASYNC_ENOT_"}
_FLAG_PREFIX = {"intellectmoney": "im_", "enot": "enot_"}
_VISIBLE = (
    "never the secret itself on the command line: every user of this machine can read "
    "a command line (ps, /proc/PID/cmdline)"
)


def add_ledger_option(parser: argparse.ArgumentParser) -> None:
    """``--ledger`` and ``--config``."""
    parser.add_argument(
        "--ledger",
        help="ledger URL: sqlite:///path.db or postgresql://... (default: PAYOUT_ASYNC_LEDGER, "
        f"the config file's ledger, else {DEFAULT_LEDGER} in the current directory)",
    )
    parser.add_argument(
        "--config", type=Path, help="TOML file with the ledger and credentials (mode 0600)"
    )
    parser.add_argument(
        "--ledger-key-file",
        type=Path,
        metavar="FILE",
        help=f"read the ledger's encryption key from FILE (else {LEDGER_KEY_ENV}, or the "
        "config file's ledger_key); with a key, recipients are stored encrypted",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--no-progress``."""
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


class _RefusedSecret(argparse.Action):
    """A secret flag given its value on the command line: refused, naming the
    replacement (the value is never repeated)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{self.option_strings[0]} would put the secret on the command line, where every "
            f"user of this machine can read it (ps, /proc/PID/cmdline): give "
            f"{self.option_strings[0]}-file FILE (mode 0600), set {self.metavar}, or use "
            "--config"
        )


def _secret_flag(parser: argparse.ArgumentParser, provider: str, name: str, what: str) -> None:
    flag = f"--{_FLAG_PREFIX[provider][:-1]}-{name.replace('_', '-')}"
    env = _ENV_PREFIX[provider] + name.upper()
    parser.add_argument(
        f"{flag}-file",
        type=Path,
        metavar="FILE",
        help=f"read the {what} from FILE (mode 0600; or {env}); {_VISIBLE}",
    )
    # Registered only to refuse it: unknown, it would pass as an abbreviation of
    # ``{flag}-file`` and the secret would be read as a file name.
    parser.add_argument(flag, nargs="?", action=_RefusedSecret, metavar=env, help=argparse.SUPPRESS)


def add_provider_options(parser: argparse.ArgumentParser) -> None:
    """Credentials, base URLs, the Enot services allowed, and tuning."""
    add_ledger_option(parser)
    _secret_flag(parser, "intellectmoney", "user_token", "IntellectMoney UserToken")
    _secret_flag(parser, "intellectmoney", "secret_key", "IntellectMoney SignSecretKey")
    _secret_flag(parser, "intellectmoney", "bearer_token", "IntellectMoney Bearer token")
    parser.add_argument("--im-api", choices=("current", "legacy"), help="IntellectMoney API")
    parser.add_argument("--im-base-url", help="IntellectMoney base URL (e.g. a sandbox)")
    parser.add_argument("--enot-user-id", help="Enot user_id")
    _secret_flag(parser, "enot", "secret_key", "Enot secret key")
    parser.add_argument("--enot-base-url", help="Enot base URL (e.g. a sandbox)")
    parser.add_argument(
        "--enot-service",
        action="append",
        default=[],
        metavar="CODE",
        help="allow an Enot service code beyond card, sbp, qiwi, usdt_trc20, garantex "
        "(repeatable; or PAYOUT_ASYNC_ENOT_SERVICES / [enot] services)",
    )
    parser.add_argument(
        "--concurrency", type=at_least_one, default=32, help="payouts in flight per provider"
    )
    parser.add_argument(
        "--lease-seconds",
        type=seconds,
        default=120.0,
        help="how long a worker holds a payout before others may take it over (default 120)",
    )
    parser.add_argument(
        "--request-timeout",
        type=seconds,
        default=30.0,
        help="seconds one request to a provider may take (default 30)",
    )
    parser.add_argument(
        "--grace",
        type=seconds,
        default=60.0,
        help="Enot: seconds a lost payoff must stay 'not found' before it is created again; "
        "must exceed --request-timeout (default 60)",
    )
    parser.add_argument(
        "--execute-settle",
        type=seconds,
        default=60.0,
        help="IntellectMoney: seconds an operation must keep reading 'Created' after an "
        "execute whose answer was lost before it is executed again (default 60)",
    )
    parser.add_argument(
        "--no-lookup-before-create",
        dest="lookup_before_create",
        action="store_false",
        help="Enot: do not look each new order_id up before creating its payoff (a "
        "payoff created before is always looked up before it is created again)",
    )
    add_rate_options(parser)


@attrs.frozen
class Settings:
    """Everything a command needs besides its own flags, resolved once."""

    ledger: str
    providers: dict[str, dict[str, str]]
    enot_services: tuple[str, ...]
    rates: dict[str, RateLimit] = attrs.field(factory=dict)
    ledger_key: str | None = attrs.field(default=None, repr=False)

    def im_api(self) -> Api:
        """The IntellectMoney API generation (``current`` unless told otherwise)."""
        return cast(Api, self.providers["intellectmoney"].get("api", "current"))


def _private_text(path: Path, what: str) -> str:
    """The text of a config or secret file; a regular file that group or others may
    read or write is refused before it is read (a pipe, ``<(...)``, is private)."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISREG(info.st_mode) and mode & 0o077:
                raise CLIError(
                    f"{what} {path} is open to other users (mode {mode:04o}): refused, as ssh "
                    f"refuses such a key; run chmod 600 {path}"
                )
            data = handle.read()
    except OSError as error:
        raise CLIError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CLIError(f"cannot read {what} {path}: not UTF-8 text") from None


def _read_config(args: argparse.Namespace) -> dict[str, Any]:
    path = getattr(args, "config", None)
    if path is None and os.environ.get("PAYOUT_ASYNC_CONFIG"):
        path = Path(os.environ["PAYOUT_ASYNC_CONFIG"])
    if path is None:
        return {}
    try:
        config = tomllib.loads(_private_text(path, "config file"))
    except tomllib.TOMLDecodeError as error:
        raise CLIError(f"cannot read config file {path}: {error}") from None
    for name, value in config.items():
        if name in _TOP_LEVEL and isinstance(value, str):
            continue
        if name in _FIELDS and isinstance(value, dict):
            unknown = sorted(set(value) - set(_FIELDS[name]))
            if unknown:
                known = ", ".join(_FIELDS[name])
                raise CLIError(
                    f"config file {path}: unknown setting {name}.{unknown[0]} (known: {known})"
                )
            continue
        raise CLIError(
            f"config file {path}: unknown setting {name!r} (known: ledger, ledger_key, "
            "[intellectmoney], [enot])"
        )
    return config


def _read_secret(path: Path) -> str:
    text = _private_text(path, "secret file").strip()
    if not text:
        raise CLIError(f"secret file {path} is empty")
    return text


def _provider_settings(
    args: argparse.Namespace, provider: str, from_file: dict[str, Any]
) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in _FIELDS[provider]:
        if name == "services":
            continue
        flag = _FLAG_PREFIX[provider] + name
        value = getattr(args, flag, None)
        if not value and name in _SECRETS[provider]:
            secret_file = getattr(args, flag + "_file", None)
            value = _read_secret(secret_file) if secret_file is not None else None
        value = value or os.environ.get(_ENV_PREFIX[provider] + name.upper()) or from_file.get(name)
        if value:
            values[name] = _one_line(str(value), provider, name)
    return values


def _one_line(value: str, provider: str, name: str) -> str:
    """A setting without line breaks or control characters (they would end up in an
    HTTP header); the value itself is never shown."""
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or value != value.strip():
        raise CLIError(
            f"{provider} {name} holds a line break, a control character or surrounding "
            "spaces (a secret file must hold the secret alone, on one line)"
        )
    return value


def _services(args: argparse.Namespace, from_file: dict[str, Any]) -> tuple[str, ...]:
    names = list(getattr(args, "enot_service", None) or [])
    names += os.environ.get("PAYOUT_ASYNC_ENOT_SERVICES", "").split(",")
    configured = from_file.get("services", [])
    if not isinstance(configured, list) or not all(isinstance(n, str) for n in configured):
        raise CLIError("config file: [enot] services must be a list of service codes")
    names += configured
    return tuple(sorted({name.strip().lower() for name in names if name.strip()}))


def settings(args: argparse.Namespace) -> Settings:
    """The command's settings from flags, files, environment and config file."""
    config = _read_config(args)
    providers = {
        provider: _provider_settings(args, provider, config.get(provider, {}))
        for provider in _FIELDS
    }
    api = providers["intellectmoney"].get("api", "current")
    if api not in ("current", "legacy"):
        raise CLIError(f"IntellectMoney api must be 'current' or 'legacy', not {api!r}")
    ledger = (
        getattr(args, "ledger", None)
        or os.environ.get("PAYOUT_ASYNC_LEDGER")
        or config.get("ledger")
        or DEFAULT_LEDGER
    )
    _warn_if_password(getattr(args, "ledger", None))
    grace, timeout = getattr(args, "grace", None), getattr(args, "request_timeout", None)
    if grace is not None and timeout is not None and grace <= timeout:
        raise CLIError(
            f"--grace ({grace:g} s) must exceed --request-timeout ({timeout:g} s): a payoff "
            "whose create is still in flight could otherwise be created a second time"
        )
    return Settings(
        ledger=ledger,
        providers=providers,
        enot_services=_services(args, config.get("enot", {})),
        rates=rate_limits(args, providers),
        ledger_key=_ledger_key(args, config),
    )


def _warn_if_password(flag: str | None) -> None:
    """A warning when the ``--ledger`` flag itself holds a database password."""
    if flag is None:
        return
    try:
        parts = urlsplit(flag)
        password = parts.password or any(n == "password" for n, _ in parse_qsl(parts.query))
    except ValueError:
        return  # a malformed URL: parse_ledger_url says what is wrong
    if password:
        say(
            "warning: --ledger holds a password, which every user of this machine can read "
            "(ps, /proc/PID/cmdline): put the URL in PAYOUT_ASYNC_LEDGER or the config file, "
            "or the password in PGPASSWORD or ~/.pgpass"
        )


def _ledger_key(args: argparse.Namespace, config: dict[str, Any]) -> str | None:
    """The ledger's encryption key: ``--ledger-key-file``, else the environment, else
    the config file (None: no key, unless the ledger URL names one)."""
    path = getattr(args, "ledger_key_file", None)
    key = _read_secret(path) if path is not None else None
    key = key or os.environ.get(LEDGER_KEY_ENV, "").strip() or config.get("ledger_key")
    if isinstance(key, list):  # a key ring in the config file: the current key first
        key = ",".join(str(one) for one in key)
    return key or None


def _missing(provider: str, names: list[str]) -> str:
    prefix = _ENV_PREFIX[provider]
    hints = ", ".join(f"{prefix}{name.upper()}" for name in names)
    return f"{provider}: missing {', '.join(names)} (set {hints}, a --*-file flag, or --config)"


def check_credentials(config: Settings, provider: str) -> None:
    """A ``CLIError`` naming what is missing to pay through ``provider``."""
    values = config.providers[provider]
    missing = [name for name in _REQUIRED[provider] if name not in values]
    if (
        provider == "intellectmoney"
        and config.im_api() == "current"
        and "bearer_token" not in values
    ):
        missing.append("bearer_token")
    if missing:
        raise CLIError(_missing(provider, missing))


def build_client(
    args: argparse.Namespace, config: Settings, provider: str
) -> IntellectMoneyClient | EnotClient:
    """The client for ``provider`` from the command's settings."""
    check_credentials(config, provider)
    values = config.providers[provider]
    total = args.request_timeout
    timeouts = Timeouts(total=total, connect=min(10.0, total), read=total)
    default = IM_BASE_URL if provider == "intellectmoney" else ENOT_BASE_URL
    base_url = values.get("base_url", default)
    try:
        if provider == "intellectmoney":
            client: IntellectMoneyClient | EnotClient = IntellectMoneyClient(
                values["user_token"],
                values["secret_key"],
                bearer_token=values.get("bearer_token"),
                api=config.im_api(),
                base_url=base_url,
                timeouts=timeouts,
                rate_limit=config.rates.get(provider),
            )
        else:
            client = EnotClient(
                values["user_id"],
                values["secret_key"],
                base_url=base_url,
                timeouts=timeouts,
                rate_limit=config.rates.get(provider),
            )
    except ConfigurationError as error:
        raise CLIError(f"{provider}: {error}") from None
    say(f"{provider}: {_endpoint(base_url)}")
    return client


def _endpoint(base_url: str) -> str:
    """Where a client sends its requests, said out loud (without any user or password
    in the URL): a sandbox on this machine is named as such, since a payout it
    answers ``succeeded`` was paid to nobody."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if on_this_machine(base_url):
        return f"{shown} (on this machine: a sandbox, not the provider)"
    return shown


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def on_this_machine(url: str) -> bool:
    """Whether ``url`` names this machine (loopback): where a sandbox listens."""
    return urlsplit(url).hostname in _LOOPBACK


def make_payouts(
    args: argparse.Namespace,
    client: IntellectMoneyClient | EnotClient,
    ledger: Ledger,
    **options: Any,
) -> Payouts[Any]:
    """A ``Payouts`` over ``client`` and ``ledger`` with the command's tuning: the one
    place the CLI builds them (``batch``, ``worker``, ``resume`` and ``reconcile`` alike),
    Enot's looking each order_id up before its first create included."""
    options.setdefault("lease_seconds", args.lease_seconds)
    options.setdefault("grace", args.grace)
    options.setdefault("execute_settle", args.execute_settle)
    if isinstance(client, EnotClient):
        options.setdefault("lookup_before_create", args.lookup_before_create)
    try:
        return Payouts(client, ledger, **options)
    except ConfigurationError as error:
        raise CLIError(str(error)) from None


def build_payouts(
    args: argparse.Namespace, config: Settings, provider: str, ledger: Ledger, **options: Any
) -> Payouts[Any]:
    """A ``Payouts`` for ``provider`` from the command's settings."""
    return make_payouts(args, build_client(args, config, provider), ledger, **options)
