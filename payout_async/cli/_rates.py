"""``--rate`` and ``--rate-burst``: each provider's client-side rate limit.

``--rate 5`` limits every provider to 5 requests a second, ``--rate enot=10`` one
provider (it wins over the plain form); ``--rate-burst`` takes the same forms. Without
a flag, ``PAYOUT_ASYNC_IM_RATE`` / ``PAYOUT_ASYNC_ENOT_RATE`` (and ``..._RATE_BURST``)
or ``rate`` / ``rate_burst`` in the config file's provider table apply. No setting
anywhere: no limit.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

from .._rate import RateLimit
from ._args import CLIError

__all__ = ["add_rate_options", "burst_option", "rate_limits", "rate_option"]

PROVIDERS = ("intellectmoney", "enot")

T = TypeVar("T")


def _split(text: str) -> tuple[str | None, str]:
    provider, sep, value = text.partition("=")
    if not sep:
        return None, text.strip()
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise argparse.ArgumentTypeError(
            f"unknown provider {provider!r} in {text!r} (known: {', '.join(PROVIDERS)})"
        )
    return provider, value.strip()


def _per_second(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be a number of requests per second above 0, not {value!r}")
    return number


def _burst(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise ValueError(f"{what} must be a whole number of requests, at least 1, not {value!r}")
    return int(value)


def rate_option(text: str) -> tuple[str | None, float]:
    """``[PROVIDER=]PER_SECOND``."""
    provider, value = _split(text)
    try:
        return provider, _per_second(value, "--rate")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def burst_option(text: str) -> tuple[str | None, int]:
    """``[PROVIDER=]N``."""
    provider, value = _split(text)
    try:
        return provider, _burst(value, "--rate-burst")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_rate_options(parser: argparse.ArgumentParser) -> None:
    """``--rate`` and ``--rate-burst`` (both repeatable)."""
    parser.add_argument(
        "--rate",
        type=rate_option,
        action="append",
        default=[],
        metavar="[PROVIDER=]N",
        help="at most N requests a second to each provider, or to PROVIDER "
        "(intellectmoney, enot); repeatable, e.g. --rate intellectmoney=5 --rate enot=10 "
        "(or PAYOUT_ASYNC_IM_RATE / PAYOUT_ASYNC_ENOT_RATE, or rate in the config file's "
        "provider table; default: no limit)",
    )
    parser.add_argument(
        "--rate-burst",
        type=burst_option,
        action="append",
        default=[],
        metavar="[PROVIDER=]N",
        help="requests that may leave back to back under --rate (default 1: evenly spaced)",
    )


def _flag_value(given: Sequence[tuple[str | None, T]], provider: str) -> T | None:
    """The last value given for ``provider``, else the last one given for all."""
    for wanted in (provider, None):
        found = [value for name, value in given if name == wanted]
        if found:
            return found[-1]
    return None


def rate_limits(
    args: argparse.Namespace, configured: Mapping[str, Mapping[str, str]]
) -> dict[str, RateLimit]:
    """Each provider's ``RateLimit`` from the flags, else ``configured[provider]``'s
    ``rate`` / ``rate_burst`` (the environment or the config file); providers without
    a rate are absent."""
    limits: dict[str, RateLimit] = {}
    rates = getattr(args, "rate", None) or []
    bursts = getattr(args, "rate_burst", None) or []
    for provider in PROVIDERS:
        values = configured.get(provider, {})
        try:
            per_second = _flag_value(rates, provider)
            if per_second is None and "rate" in values:
                per_second = _per_second(values["rate"], f"{provider} rate")
            burst = _flag_value(bursts, provider)
            if burst is None and "rate_burst" in values:
                burst = _burst(values["rate_burst"], f"{provider} rate_burst")
        except ValueError as error:
            raise CLIError(str(error)) from None
        if per_second is not None:
            limits[provider] = RateLimit(per_second, burst)
        elif any(name == provider for name, _ in bursts) or "rate_burst" in values:
            raise CLIError(f"a burst for {provider} needs a rate too (--rate {provider}=N)")
    return limits
