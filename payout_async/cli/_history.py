"""Which ledger this user paid through at each location, and refusing any other.

A ledger protects only the payouts it holds. One removed and created anew at the same
place, or restored from a backup, lacks the payouts made since -- and would pay them
again (IntellectMoney has no call that finds an operation by anything but its id). So
every command that can send money checks the ledger's identity (``LedgerIdentity``: a
random id made with the ledger, and a mark that grows with every row begun) against
the one the key registry noted at that location after this user's last run there. A
ledger that is missing, another one, or older (a lower mark) is refused, with the keys
it lacks, until the operator passes ``--accept-restored-ledger``; the command then
notes the ledger it finds (the next run compares with that one).

With that flag, IntellectMoney payouts that could have been paid since the backup are
not paid: a key this user sent through the location that the ledger lacks, and a row
the ledger holds at a step from which a new operation would be created (pending,
sending, refused) -- neither can be looked up. A row waiting to execute an operation it
recorded (``created``) is looked up by that operation's id first: if the operation is
past ``Created``, it was executed after the backup, and the row is refused too.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import attrs

from .._errors import PayoutError
from ..intellectmoney import IntellectMoneyClient, MassPaymentOperationState
from ..ledger import Ledger, LedgerIdentity, LedgerState, PayoutRecord
from ._args import CLIError
from ._batch_file import PROVIDERS, BadRow, BatchRow
from ._console import say
from ._registry import KeyRegistry, Seen

__all__ = [
    "ACCEPT_FLAG",
    "History",
    "add_accept_option",
    "check_history",
    "note_ledger",
    "unknowable_im_rows",
    "unknowable_ledger_rows",
]

ACCEPT_FLAG = "--accept-restored-ledger"
IM = "intellectmoney"
_SHOWN = 10  # keys named in a message
#: Steps from which an IntellectMoney row creates a new operation: a restored row there
#: may have been paid since through an operation the ledger never learnt.
_CREATES_AGAIN = frozenset({LedgerState.PENDING, LedgerState.SENDING, LedgerState.REFUSED})
_NO_LOOKUP = (
    "IntellectMoney can find an operation only by its id (it has no call that finds one "
    "by its description or lists operations), so it cannot be looked up: check the "
    "IntellectMoney account by hand, and pay it under a new key if it was not paid"
)


def add_accept_option(parser: argparse.ArgumentParser) -> None:
    """``--accept-restored-ledger``: go on with a ledger that is new or older here."""
    parser.add_argument(
        ACCEPT_FLAG,
        action="store_true",
        help="go on with a ledger that is not the one this user last paid through at its "
        "location (recreated, or restored from a backup); IntellectMoney payouts it may "
        "lack are refused, not paid",
    )


@attrs.frozen
class History:
    """What the check found: ``restored`` when the operator accepted a ledger that is
    new or older at its location."""

    registry: KeyRegistry
    location: str
    restored: bool = False


def _problem(seen: Seen, current: LedgerIdentity | None, location: str) -> str | None:
    """Why the ledger at ``location`` is not the one last seen there, or None."""
    last = f"this user last paid through a ledger there with {seen.mark} row(s) begun"
    if current is None:
        return f"there is no ledger at {location}, but {last}: it was removed or moved"
    if current.ledger_id != seen.ledger_id:
        return (
            f"the ledger at {location} is not the one this user paid through there ({last}): "
            "it was created anew, or replaced"
        )
    if current.mark < seen.mark:
        return (
            f"the ledger at {location} is older than the one this user paid through there: "
            f"{current.mark} row(s) begun, {seen.mark} when last used (restored from a backup?)"
        )
    return None


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


async def _absent(ledger: Ledger | None, rows: Sequence[BatchRow]) -> list[BatchRow]:
    """The rows whose key the ledger holds under no provider."""
    if ledger is None:
        return list(rows)
    found = await asyncio.gather(
        *(ledger.get(provider, row.key) for row in rows for provider in PROVIDERS)
    )
    held = {record.key for record in found if record is not None}
    return [row for row in rows if row.key not in held]


async def _lacking(
    registry: KeyRegistry, ledger: Ledger | None, rows: Sequence[BatchRow] | None, location: str
) -> str:
    noted = registry.count_at(location)
    total = f"this user sent {noted} key(s) through {location} in all"
    if rows is None:
        return total
    keys = [(row.provider, row.key) for row in rows]
    sent = registry.noted(keys, location, providers=PROVIDERS)
    absent = await _absent(ledger, [row for row in rows if (row.provider, row.key) in sent])
    if not absent:
        return total
    return (
        f"it lacks {len(absent)} key(s) of this file sent through it: "
        + _names([row.key for row in absent])
        + f" ({total})"
    )


async def check_history(
    registry: KeyRegistry,
    location: str,
    ledger: Ledger | None,
    rows: Sequence[BatchRow] | None = None,
    *,
    accept: bool,
) -> History:
    """Refuse (``CLIError``) a ledger that is missing, another one, or older than the
    one this user last paid through at ``location`` -- unless ``accept``."""
    try:
        seen = registry.last_seen(location)
    except Exception as error:  # the registry is a safety net, never a blocker
        say(f"warning: cannot read the key registry {registry.path}: {error}")
        return History(registry, location)
    if seen is None:
        return History(registry, location)
    current = None if ledger is None else await ledger.identity()
    problem = _problem(seen, current, location)
    if problem is None:
        return History(registry, location)
    lacking = await _lacking(registry, ledger, rows, location)
    if not accept:
        raise CLIError(
            f"{problem}; {lacking}. Payouts made since may be missing from it and would be "
            f"paid again: give the newest copy of the ledger, or, having checked, pass "
            f"{ACCEPT_FLAG} (IntellectMoney payouts it may lack are then refused, not paid)"
        )
    say(f"warning: {problem}; {lacking}; going on ({ACCEPT_FLAG})")
    return History(registry, location, restored=True)


async def note_ledger(history: History, ledger: Ledger) -> None:
    """After a run: note the ledger's identity and mark at its location."""
    try:
        identity = await ledger.identity()
        registry, location = history.registry, history.location
        registry.saw(location, identity.ledger_id, identity.mark, accepted=history.restored)
    except Exception as error:
        say(f"warning: cannot note the ledger in the key registry {history.registry.path}: {error}")


async def _operation_moved(client: IntellectMoneyClient | None, record: PayoutRecord) -> str | None:
    """Why a restored ``created`` row may not execute its operation, or None."""
    if client is None:
        return "no IntellectMoney credentials to look its operation up with"
    assert record.operation_id is not None
    try:
        operation = await client.get_operation_state(record.operation_id)
    except PayoutError as error:
        return f"its operation could not be looked up ({error})"
    if operation.state is MassPaymentOperationState.CREATED:
        return None
    return (
        f"its operation {record.operation_id} is {operation.raw_state} at IntellectMoney, "
        "though the ledger says created: it was executed after the backup"
    )


async def _unknowable(client: IntellectMoneyClient | None, record: PayoutRecord) -> str | None:
    """Why a restored IntellectMoney row may not be driven, or None."""
    if record.state in _CREATES_AGAIN or (
        record.state is LedgerState.CREATED and record.operation_id is None
    ):
        return (
            f"the restored ledger's row says {record.state.value}: since the backup it may "
            f"have been paid through an operation the ledger does not know; {_NO_LOOKUP}"
        )
    if record.state is LedgerState.CREATED:
        return await _operation_moved(client, record)
    return None


async def unknowable_im_rows(
    history: History,
    ledger: Ledger | None,
    rows: Sequence[BatchRow],
    client: IntellectMoneyClient | None,
    *,
    present: bool = True,
) -> list[BadRow]:
    """For an accepted restored ledger: the file's IntellectMoney rows that may have
    been paid since the backup and cannot be looked up (only those the ledger lacks,
    unless ``present``)."""
    if not history.restored:
        return []
    im = [row for row in rows if row.provider == IM]
    keys = [(IM, row.key) for row in im]
    sent = history.registry.noted(keys, history.location, providers=PROVIDERS)
    bad: list[BadRow] = []
    for row in im:
        record = None if ledger is None else await ledger.get(IM, row.key)
        if record is None:
            if (IM, row.key) in sent:
                lacks = "was sent through this location before and the restored ledger lacks it"
                bad.append(BadRow(row.line, "key", f"{row.key!r} {lacks}; {_NO_LOOKUP}"))
            continue
        if record.state.is_final or not present:
            continue
        why = await _unknowable(client, record)
        if why is not None:
            bad.append(BadRow(row.line, "key", f"{row.key!r}: {why}"))
    return bad


async def unknowable_ledger_rows(
    history: History, ledger: Ledger, client: IntellectMoneyClient | None
) -> None:
    """For an accepted restored ledger: refuse (``CLIError``) to drive it while it holds
    IntellectMoney rows that may have been paid since the backup."""
    if not history.restored:
        return
    found: list[str] = []
    for state in (*_CREATES_AGAIN, LedgerState.CREATED):
        for record in await ledger.records(provider=IM, state=state):
            why = await _unknowable(client, record)
            if why is not None:
                found.append(record.key)
    if found:
        raise CLIError(
            f"the restored ledger holds {len(found)} IntellectMoney payout(s) that may have "
            f"been paid since the backup: {_names(found)}; {_NO_LOOKUP}. Nothing was sent"
        )
