"""Shared options of the paying subcommands: credentials, base URLs, the ledger.

Credentials come from flags, else environment variables, else a TOML config file
(``--config``)::

    [intellectmoney]            # env PAYOUT_ASYNC_IM_*
    user_token = "..."          # PAYOUT_ASYNC_IM_USER_TOKEN
    secret_key = "..."          # PAYOUT_ASYNC_IM_SECRET_KEY (the SignSecretKey)
    bearer_token = "..."        # PAYOUT_ASYNC_IM_BEARER_TOKEN
    api = "current"             # PAYOUT_ASYNC_IM_API ("current" or "legacy")
    base_url = "..."            # PAYOUT_ASYNC_IM_BASE_URL

    [enot]                      # env PAYOUT_ASYNC_ENOT_*
    user_id = "..."             # PAYOUT_ASYNC_ENOT_USER_ID
    secret_key = "..."          # PAYOUT_ASYNC_ENOT_SECRET_KEY
    base_url = "..."            # PAYOUT_ASYNC_ENOT_BASE_URL
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any, cast

from .._errors import ConfigurationError
from ..enot import DEFAULT_BASE_URL as ENOT_BASE_URL
from ..enot import EnotClient
from ..intellectmoney import DEFAULT_BASE_URL as IM_BASE_URL
from ..intellectmoney import Api, IntellectMoneyClient
from ..ledger import Ledger, ledger_from_url
from ..payouts import Payouts

__all__ = ["add_common_options", "build_payouts", "open_ledger"]

_IM_FIELDS = ("user_token", "secret_key", "bearer_token", "api", "base_url")
_ENOT_FIELDS = ("user_id", "secret_key", "base_url")
_ENV_PREFIX = {"intellectmoney": "PAYOUT_ASYNC_IM_", "enot": "PAYOUT_ASYNC_ENOT_"}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--ledger``, ``--config``, credential flags and ``--*-base-url``."""
    parser.add_argument(
        "--ledger",
        default="sqlite:///payouts.db",
        help="ledger URL: sqlite:///path.db (default sqlite:///payouts.db) or postgresql://...",
    )
    parser.add_argument("--config", type=Path, help="TOML file with provider credentials")
    parser.add_argument("--im-user-token", help="IntellectMoney UserToken")
    parser.add_argument("--im-secret-key", help="IntellectMoney SignSecretKey")
    parser.add_argument("--im-bearer-token", help="IntellectMoney Bearer token")
    parser.add_argument("--im-api", choices=("current", "legacy"), help="IntellectMoney API")
    parser.add_argument("--im-base-url", help="IntellectMoney base URL (e.g. a sandbox)")
    parser.add_argument("--enot-user-id", help="Enot user_id")
    parser.add_argument("--enot-secret-key", help="Enot secret key")
    parser.add_argument("--enot-base-url", help="Enot base URL (e.g. a sandbox)")
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=120.0,
        help="how long a worker holds a payout before others may take it over",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="Enot: seconds a lost payoff must stay 'not found' before it is created again",
    )


def _settings(args: argparse.Namespace, provider: str) -> dict[str, str]:
    """Flags, else environment, else config file."""
    fields = _IM_FIELDS if provider == "intellectmoney" else _ENOT_FIELDS
    flag_prefix = "im_" if provider == "intellectmoney" else "enot_"
    from_file: dict[str, Any] = {}
    if args.config is not None:
        try:
            from_file = tomllib.loads(args.config.read_text(encoding="utf-8")).get(provider, {})
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigurationError(f"cannot read config file {args.config}: {error}") from None
    settings: dict[str, str] = {}
    for name in fields:
        value = (
            getattr(args, flag_prefix + name, None)
            or os.environ.get(_ENV_PREFIX[provider] + name.upper())
            or from_file.get(name)
        )
        if value:
            settings[name] = str(value)
    return settings


def build_payouts(
    args: argparse.Namespace, provider: str, ledger: Ledger, **options: Any
) -> Payouts[Any]:
    """A ``Payouts`` for ``provider`` from the command line's settings."""
    settings = _settings(args, provider)
    client: IntellectMoneyClient | EnotClient
    if provider == "intellectmoney":
        missing = [name for name in ("user_token", "secret_key") if name not in settings]
        if missing:
            raise ConfigurationError(_missing(provider, missing))
        client = IntellectMoneyClient(
            settings["user_token"],
            settings["secret_key"],
            bearer_token=settings.get("bearer_token"),
            api=cast(Api, settings.get("api", "current")),
            base_url=settings.get("base_url", IM_BASE_URL),
        )
    else:
        missing = [name for name in ("user_id", "secret_key") if name not in settings]
        if missing:
            raise ConfigurationError(_missing(provider, missing))
        client = EnotClient(
            settings["user_id"],
            settings["secret_key"],
            base_url=settings.get("base_url", ENOT_BASE_URL),
        )
    options.setdefault("lease_seconds", args.lease_seconds)
    options.setdefault("reconcile", args.grace)
    return Payouts(client, ledger, **options)


def _missing(provider: str, names: list[str]) -> str:
    prefix = _ENV_PREFIX[provider]
    hints = ", ".join(f"{prefix}{name.upper()}" for name in names)
    return f"{provider}: missing {', '.join(names)} (set {hints}, a flag, or --config)"


async def open_ledger(url: str) -> Ledger:
    """Open the ledger named by ``url``."""
    ledger = ledger_from_url(url)
    await ledger.open()
    return ledger
