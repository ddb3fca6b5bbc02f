"""Looking for a card number where a ledger keeps its rows: the bytes of an SQLite
ledger's files, and a PostgreSQL ledger's tables read back as text."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import asyncpg

from .support import PG_DSN

__all__ = ["luhn_card", "needles", "postgres_hits", "sqlite_files", "sqlite_hits"]


def luhn_card(rng: random.Random, prefix: str = "4") -> str:
    """A 16-digit card number that passes the Luhn check, unlike any other in the suite."""
    digits = [int(d) for d in prefix] + [rng.randrange(10) for _ in range(15 - len(prefix))]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def needles(card: str) -> dict[str, bytes]:
    """The card number in every obvious encoding: ASCII, UTF-16 (either byte order), hex
    of its ASCII, base64 (both alphabets, any alignment), and as a 64-bit integer."""
    raw = card.encode("ascii")
    found = {
        "ascii": raw,
        "utf-16-le": card.encode("utf-16-le"),
        "utf-16-be": card.encode("utf-16-be"),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "int64-be": int(card).to_bytes(8, "big"),
        "int64-le": int(card).to_bytes(8, "little"),
    }
    for shift in range(3):  # a 3-byte aligned stretch shows whatever the alignment
        chunk = raw[shift:]
        chunk = chunk[: len(chunk) // 3 * 3]
        found[f"base64+{shift}"] = base64.b64encode(chunk)
        found[f"base64url+{shift}"] = base64.urlsafe_b64encode(chunk)
    return found


def _hits(haystacks: dict[str, bytes], card: str) -> list[str]:
    return [
        f"{encoding} in {where}"
        for where, data in haystacks.items()
        for encoding, needle in needles(card).items()
        if needle in data
    ]


def sqlite_files(path: Path) -> dict[str, bytes]:
    """The database file, its ``-wal`` and its ``-shm`` as raw bytes, by name (whether or
    not a connection has them open)."""
    files = {}
    for suffix in ("", "-wal", "-shm"):
        target = Path(f"{path}{suffix}")
        if target.exists():
            with open(target, "rb") as handle:
                files[target.name] = handle.read()
    assert files, f"no ledger files at {path}"
    return files


def sqlite_hits(path: Path, card: str) -> list[str]:
    """Where ``card`` shows in the database file, its ``-wal`` and its ``-shm``."""
    return _hits(sqlite_files(path), card)


async def postgres_hits(schema: str, card: str, prefix: str = "") -> list[str]:
    """Where ``card`` shows in the ledger's two tables, every column of every row read
    as text (``SELECT t::text FROM table t``)."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        tables = {}
        for table in (f"{prefix}payouts", f"{prefix}payout_transitions"):
            rows = await conn.fetch(f'SELECT t::text FROM "{schema}"."{table}" t')
            tables[table] = "\n".join(row[0] for row in rows).encode()
    finally:
        await conn.close()
    return _hits(tables, card)
