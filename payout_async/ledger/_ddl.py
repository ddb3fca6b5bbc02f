"""What a schema script creates, read from the script itself.

``open()`` runs its DDL only when something it names is missing, so that a ledger whose
tables are current opens without write (or DDL) rights -- a read-only file, a read-only
database role -- and without taking the table locks ``CREATE INDEX`` takes. Reading the
names from the script keeps the check true to whatever the script creates.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["SchemaObjects", "schema_objects"]

_NAME = r'(?:"[^"]+"|\w+)'
_QUALIFIED = rf"({_NAME}(?:\.{_NAME})?)"
_TABLE = re.compile(
    rf"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+{_QUALIFIED}\s*\((.*?)\)\s*;", re.I | re.S
)
_ADD_COLUMN = re.compile(
    rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_QUALIFIED}\s+ADD\s+(?:COLUMN\s+)?"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})",
    re.I,
)
_INDEX = re.compile(
    rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?IF\s+NOT\s+EXISTS\s+({_NAME})", re.I
)
_NOT_COLUMNS = frozenset({"PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK", "EXCLUDE"})


def _unquote(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name


def _last(qualified: str) -> str:
    """The object's own name, without its schema and quotes."""
    parts = re.findall(_NAME, qualified)
    return _unquote(parts[-1])


@attrs.frozen
class SchemaObjects:
    """Tables (each with its column names) and indexes, by unquoted name."""

    tables: dict[str, frozenset[str]]
    indexes: frozenset[str]


def schema_objects(script: str) -> SchemaObjects:
    """The tables, columns and indexes ``script`` creates (one column per line in
    ``CREATE TABLE``, as the ledgers write them)."""
    tables: dict[str, set[str]] = {}
    for qualified, body in _TABLE.findall(script):
        columns = tables.setdefault(_last(qualified), set())
        for line in body.splitlines():
            words = line.strip().split()
            if words and words[0].upper() not in _NOT_COLUMNS:
                columns.add(_unquote(words[0].rstrip(",")))
    for qualified, column in _ADD_COLUMN.findall(script):
        tables.setdefault(_last(qualified), set()).add(_unquote(column))
    indexes = frozenset(_unquote(name) for name in _INDEX.findall(script))
    return SchemaObjects(
        tables={name: frozenset(columns) for name, columns in tables.items()}, indexes=indexes
    )
