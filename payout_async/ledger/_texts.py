"""The free text a ledger keeps -- a row's ``reason`` and ``last_error``, a transition's
note, a provider pause's reason -- passes the one scrubber (``_redact.scrub``: card
numbers and phones however they are written) on its way in, whoever the caller, and
again on its way out, so that a row written in clear by an older version is shown
masked too. On its way in a reason or ``last_error`` is also made one line of at most
``_summary.LIMIT`` characters (``_summary.one_line``: an HTML page as its title and
size), so that an export holds one line per row."""

from __future__ import annotations

from .._redact import scrub
from .._summary import one_line

__all__ = ["TEXT_FIELDS", "kept_text", "scrub"]

#: The fields of ``Ledger.transition`` that hold free text from providers and callers.
TEXT_FIELDS = frozenset({"reason", "last_error"})


def kept_text(value: str) -> str:
    """Free text as the ledger keeps it: scrubbed, on one line of at most
    ``_summary.LIMIT`` characters (a row's reason, a provider pause's reason)."""
    return scrub(one_line(scrub(value)))
