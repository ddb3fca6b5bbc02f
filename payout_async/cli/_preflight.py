"""Checks ``batch`` makes before anything is sent (the dry run makes the same ones).

- Against the ledger: a key already recorded with other parameters is a bad row (the
  real run would refuse it, after paying the others) -- unless the row is ``refused``:
  nothing exists at the provider, and the ledger records it again with the new
  parameters (``Ledger.begin`` / ``enqueue``); so is a key recorded under the other
  provider (a key is one payout, whatever the provider), unless that payout was
  refused, failed or cancelled and the operator passed ``--switch-provider``.
- Against the per-user key registry: keys noted for another ledger that this one does
  not hold mean the file is being paid through the wrong ledger.
- Against Enot, for a new ledger: a payoff that already exists for one of the file's
  first order_ids means the same.
- Against each provider (one read each): a base URL that cannot be reached, or
  credentials the provider refuses outright, stop the run before anything is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from .._errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    PayoutError,
    PermissionDeniedError,
    RequestNotSentError,
)
from ..enot import Balance, EnotClient
from ..intellectmoney import IntellectMoneyClient
from ..ledger import Ledger, LedgerState, PayoutRecord
from ..payouts import intent_for, order_id_for
from ._args import CLIError
from ._batch_file import PROVIDERS, BadRow, BatchRow
from ._console import say
from ._registry import KeyRegistry

__all__ = [
    "Known",
    "add_switch_option",
    "check_elsewhere",
    "check_reachable",
    "known_rows",
    "probe_enot",
    "remember",
]

_GET_AT_ONCE = 64
_PROBES = 3


def intent_params(row: BatchRow) -> dict[str, Any]:
    """The parameters ``Payouts.pay`` records for this row."""
    return dict(intent_for(row.key, row.request).params)


@attrs.frozen
class Known:
    """What the ledger already holds of a file: its rows, and the rows it refuses."""

    records: dict[tuple[str, str], PayoutRecord]
    conflicts: list[BadRow]


def add_switch_option(parser: argparse.ArgumentParser) -> None:
    """``--switch-provider``: the operator moves keys to the other provider on purpose."""
    parser.add_argument(
        "--switch-provider",
        action="store_true",
        help="pay a key the ledger holds under the other provider through the file's "
        "provider, when that payout was refused, failed or cancelled (a refused one is "
        "cancelled); without it such a row is refused: a key is one payout",
    )


#: A key's row under another provider that lets the key move, with ``--switch-provider``.
_SWITCHABLE = frozenset({LedgerState.REFUSED, LedgerState.FAILED, LedgerState.CANCELLED})


async def known_rows(
    ledger: Ledger | None,
    rows: Sequence[BatchRow],
    key_column: str,
    *,
    switch_provider: bool = False,
) -> Known:
    """The file's rows the ledger already holds; the ones recorded with other
    parameters, or under another provider, are bad rows (``IdempotencyConflictError``
    in the real run), bar ``refused`` ones under the same provider (the real run
    records them again, corrected)."""
    records: dict[tuple[str, str], PayoutRecord] = {}
    conflicts: list[BadRow] = []
    if ledger is None:
        return Known(records, conflicts)
    for start in range(0, len(rows), _GET_AT_ONCE):
        chunk = rows[start : start + _GET_AT_ONCE]
        found = await asyncio.gather(*(ledger.get(row.provider, row.key) for row in chunk))
        elsewhere = await _elsewhere(ledger, chunk, found)
        for row, record in zip(chunk, found, strict=True):
            other = elsewhere.get(row.key)
            if record is None and other is not None:
                problem = _other_provider(row, other, switch_provider)
                if problem is not None:
                    conflicts.append(BadRow(row.line, key_column, problem))
                continue
            if record is None:
                continue
            records[(row.provider, row.key)] = record
            if record.state is LedgerState.REFUSED:
                continue
            if not ledger.params_match(record, intent_params(row)):
                conflicts.append(
                    BadRow(
                        row.line,
                        key_column,
                        f"{row.key!r} is already in the ledger with other parameters "
                        f"(state {record.state.value}); use a new key for a new payout",
                    )
                )
    return Known(records, conflicts)


async def _elsewhere(
    ledger: Ledger, rows: Sequence[BatchRow], found: Sequence[PayoutRecord | None]
) -> dict[str, PayoutRecord]:
    """The rows the ledger holds under another provider for the keys it does not hold
    under the file's provider (the one that still holds the key first)."""
    wanted = [
        (provider, row.key)
        for row, record in zip(rows, found, strict=True)
        if record is None
        for provider in PROVIDERS
        if provider != row.provider
    ]
    held: dict[str, PayoutRecord] = {}
    for record in await asyncio.gather(*(ledger.get(*pair) for pair in wanted)):
        if record is not None and (record.key not in held or not record.state.is_final):
            held[record.key] = record
    return held


def _other_provider(row: BatchRow, other: PayoutRecord, switch_provider: bool) -> str | None:
    """Why ``row`` may not be paid through its provider, its key being in the ledger
    under ``other.provider``; None when it may (``--switch-provider``)."""
    where = (
        f"{row.key!r} is already in the ledger under {other.provider} (state "
        f"{other.state.value}): a key is one payout, whatever the provider"
    )
    if other.state not in _SWITCHABLE:
        return f"{where}; use a new key for a new payout"
    if not switch_provider:
        return (
            f"{where}; that payout was {other.state.value}: pass --switch-provider to pay it "
            f"through {row.provider} instead"
        )
    return None


def check_elsewhere(
    registry: KeyRegistry, rows: Sequence[BatchRow], known: Known, location: str
) -> None:
    """Refuse keys that were paid through another ledger and are not in this one."""
    fresh = [
        (row.provider, row.key) for row in rows if (row.provider, row.key) not in known.records
    ]
    try:
        elsewhere = registry.elsewhere(fresh, location, providers=PROVIDERS)
    except (OSError, Exception) as error:  # the registry is a safety net, never a blocker
        say(f"warning: cannot read the key registry {registry.path}: {error}")
        return
    if not elsewhere:
        return
    ledgers = sorted(set(elsewhere.values()))
    raise CLIError(
        f"{len(elsewhere)} of the file's {len(rows)} keys were already paid through another "
        f"ledger ({', '.join(ledgers)}) and are not in {location}: give that ledger with "
        "--ledger to finish the batch, or --new-ledger to pay them again"
    )


def remember(registry: KeyRegistry, rows: Sequence[BatchRow], location: str) -> None:
    """Note the keys about to be paid through ``location``."""
    try:
        registry.remember([(row.provider, row.key) for row in rows], location)
    except Exception as error:
        say(f"warning: cannot write the key registry {registry.path}: {error}")


async def probe_enot(client: EnotClient, rows: Sequence[BatchRow]) -> None:
    """For a new ledger: look the first Enot order_ids up. A payoff that exists means
    the file was paid through another ledger; refused credentials end the run before
    anything is sent. Costs one ``payoff/info`` call per probe (at most three)."""
    for row in [row for row in rows if row.provider == "enot"][:_PROBES]:
        request: Any = row.request
        order_id = request.order_id or order_id_for(row.key)
        try:
            await client.get_payoff(order_id=order_id)
        except NotFoundError:
            continue
        except (AuthenticationError, PermissionDeniedError) as error:
            raise CLIError(f"enot refused the credentials: {error}") from None
        except PayoutError as error:
            say(f"warning: cannot look order_id {order_id!r} up at enot ({error}); going on")
            return
        raise CLIError(
            f"enot already has a payoff for order_id {order_id!r} (key {row.key!r}), but this "
            "is a new ledger: the file was paid through another ledger; give it with --ledger, "
            "or --new-ledger to go on (each Enot payoff is still looked up before it is created)"
        )


async def check_reachable(
    client: IntellectMoneyClient | EnotClient, provider: str
) -> Balance | None:
    """One read that moves no money: Enot's balance, IntellectMoney's state of an
    operation that does not exist. Nothing reaching the provider, or its refusing the
    credentials, ends the run (exit 2) instead of failing payout by payout. Any other
    answer proves the provider is there (IntellectMoney's read is signed like its
    siblings but the documents do not publish its signature, so only a transport
    failure or an explicit authentication refusal counts). Returns Enot's balance
    when it was read."""
    try:
        if isinstance(client, EnotClient):
            return await client.get_balance()
        await client.get_operation_state(str(uuid.uuid4()))
    except RequestNotSentError as error:
        raise CLIError(f"cannot reach {provider} (check its base URL): {error}") from None
    except AuthenticationError as error:
        raise CLIError(f"{provider} refused the credentials: {error}") from None
    except PermissionDeniedError as error:
        if isinstance(client, EnotClient):
            raise CLIError(f"{provider} refused the credentials: {error}") from None
    except (APIError, PayoutError):
        pass
    return None
