"""What a failed ledger call means for its caller, like the transport's error classes.

* ``LedgerNotWrittenError`` -- the call changed nothing (refused, timed out before it
  was sent, rolled back, or it only reads): safe to repeat.
* ``LedgerOutcomeUnknownError`` -- a write may have committed (the connection broke or
  the wait ran out after it was sent, or the commit itself failed): read the row again
  before going on.

Both are ``LedgerError``\\ s and ``PayoutError``\\ s. Messages never carry parameter
values (card-number-like digit runs are masked) and never a database's row details.
``LedgerKeyError``, ``LedgerOutdatedError`` and ``LedgerTooNewError`` are
``ConfigurationError``\\ s instead: the ledger lacks the encryption key its rows were
written with, a ledger opened read-only is not the current schema (and upgrading it
would write), or a newer payout-async has written to it.
"""

from __future__ import annotations

from .._errors import ConfigurationError, PayoutError
from .._redact import Redactor

__all__ = [
    "LedgerError",
    "LedgerKeyError",
    "LedgerNotWrittenError",
    "LedgerOutcomeUnknownError",
    "LedgerOutdatedError",
    "LedgerTooNewError",
    "OperationTakenError",
    "operations_shared",
    "outdated",
    "too_new",
]

_SCRUB = Redactor()


class LedgerError(PayoutError):
    """A ledger call failed. ``code`` is the database's own error code, when it gave one
    (a PostgreSQL SQLSTATE such as ``57014``, or an SQLite name such as ``SQLITE_BUSY``)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(_SCRUB(message))
        self.code = code


class LedgerNotWrittenError(LedgerError):
    """Nothing was written: the call is safe to repeat as it is."""


class LedgerOutcomeUnknownError(LedgerError):
    """The write may or may not have committed: re-read the row before acting on it."""


class OperationTakenError(PayoutError):
    """A transition would record an ``operation_id`` that another row of the same
    provider already holds (``holder``, its key, when known). An IntellectMoney
    operation or an Enot payoff is one payout's: an answer naming another row's is no
    evidence about this one (a gateway replaying answers, a provider laxer than
    documented). Nothing was written; the row keeps its lease."""

    def __init__(self, provider: str, key: str, operation_id: str, holder: str | None) -> None:
        held = "another payout" if holder is None else f"payout {holder!r}"
        super().__init__(
            _SCRUB(
                f"{provider} {operation_id} belongs to {held} already, "
                f"not to {key!r}: nothing was written"
            )
        )
        self.provider = provider
        self.key = key
        self.operation_id = operation_id
        self.holder = holder


class LedgerKeyError(ConfigurationError):
    """A row cannot be read or compared with this ledger's encryption key: it was
    written with a key and the ledger has none, or another key, or the row was altered.
    Nothing was written; give the ledger the key its rows were written with."""


class LedgerOutdatedError(ConfigurationError):
    """A ledger opened read-only holds no current payout ledger: none at all, or one
    written by an older payout-async. Nothing was written; opened read-write (by this
    version) it is created or upgraded."""


class LedgerTooNewError(ConfigurationError):
    """A newer payout-async has written to this ledger (its schema is newer than this
    version knows): this version would write rows without what the newer one records
    (the newer one would take them for altered, or trust less than it should). Nothing
    was written; upgrade payout-async in every process that writes to the ledger.
    Opened read-only, the ledger can still be read."""


def too_new(ledger: object, found: int, known: int) -> LedgerTooNewError:
    """The error a writing ``ledger`` raises on a schema ``found`` newer than ``known``."""
    return LedgerTooNewError(
        f"{ledger!r} was written by a newer payout-async (ledger format {found}; this "
        f"version writes format {known}); nothing was written: upgrade payout-async in "
        "every process that writes to it (opened read-only, it can still be read)"
    )


def outdated(ledger: object) -> LedgerOutdatedError:
    """The error a read-only ``ledger`` raises on opening a schema it would have to
    create or upgrade."""
    return LedgerOutdatedError(
        f"{ledger!r} holds no current payout ledger (none, or one written by an older "
        "payout-async); opened read-only it creates and upgrades nothing: open it "
        "read-write with this version to create or upgrade it"
    )


def operations_shared(which: str = "") -> ConfigurationError:
    """The error of a ledger that records one operation (or payoff) under several rows
    (``which``: those rows, if known): adding the unique index of operations fails."""
    listed = f" ({which})" if which else ""
    return ConfigurationError(
        f"this ledger records one operation under several payouts{listed}; an operation "
        "is one payout's, so at most one of them was paid by it: settle those rows (of "
        "one provider, with one operation_id) by hand before opening it with this version"
    )
