"""``None`` bound as directly as an ``int``.

Python's ``sqlite3`` binds an ``int``, ``float``, ``str`` or ``bytearray`` as it is and
hands any other value -- ``None`` among them -- to its adaptation protocol, which looks
the value's type up among the registered adapters and, finding none, tries
``__adapt__`` and ``__conform__`` (raising and clearing an ``AttributeError`` inside):
about 3,300 machine instructions per ``None`` (CPython 3.11), twelve times what binding
an ``int`` costs. A ledger row has many NULL columns, and ``SQLiteLedger`` bound some
thirty ``None`` per payout: 4-5% of its instructions (``benchmarks/instructions.py``,
docs/performance.md).

``bind_none_directly`` registers an adapter for ``None`` that returns ``None`` (the
C-level ``get`` of an empty dict): the adapter is found at the first look, and SQLite
binds NULL exactly as before. The registry is the ``sqlite3`` module's, shared by the
process: an adapter for ``None`` registered before is left in place, and any other code
binding ``None`` gets the same NULL, sooner.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import cast

__all__ = ["bind_none_directly"]

_NONE = (type(None), sqlite3.PrepareProtocol)
#: ``None`` for ``None``, in C: an empty dict's ``get``.
_AS_IT_IS = cast("Callable[[None], None]", {}.get)


def bind_none_directly() -> None:
    """Register the adapter for ``None``, unless one is registered already."""
    if _NONE not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _AS_IT_IS)
