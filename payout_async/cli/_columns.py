"""Reading a batch file's records as they are exported from spreadsheets.

- UTF-8 only (with or without Excel's byte-order mark); anything else is refused with
  advice, never guessed.
- CSV separators ``,``, ``;`` (Excel in many locales) and tab, detected from the header.
- Column names match whatever their case, surrounding spaces and inner spaces, hyphens
  or underscores (``Bank ID`` is ``bank_id``); an unknown column is an error (unless
  told to ignore it) with the closest known name suggested; a column given twice is an
  error.
- A cell Excel turned into scientific notation (``4.11111E+15``) is an error naming the
  column: its digits are lost.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._args import CLIError

__all__ = ["COLUMNS", "FileRecords", "Record", "read_records"]

#: Every column a batch file may have, in the order docs/batches.md lists them.
COLUMNS = (
    "key",
    "provider",
    "method",
    "recipient",
    "amount",
    "bank_id",
    "currency",
    "recipient_name",
    "description",
    "eshop_id",
    "comment",
    "hook_url",
    "subtract",
)
REQUIRED = ("key", "provider", "method", "amount")
_SEPARATORS = (",", ";", "\t")
_INNER = re.compile(r"[\s\-_]+")
_SCIENTIFIC = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+")
_JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


def canonical(name: str) -> str:
    """``" Bank ID "`` -> ``"bank_id"``."""
    return _INNER.sub("_", name.replace("\ufeff", "").strip().lower()).strip("_")


@attrs.frozen
class Record:
    """One row: its line number and its cells by canonical column name (cells are
    stripped text; a missing or empty cell is absent), or why it cannot be read."""

    line: int
    cells: Mapping[str, str] = attrs.field(factory=dict)
    problems: tuple[tuple[str, str], ...] = ()  # (canonical column or "row", problem)


@attrs.frozen
class FileRecords:
    """The records of a file and the spelling of each column in it."""

    records: list[Record]
    spelling: Mapping[str, str]  # canonical name -> as written in the file
    ignored: tuple[str, ...] = ()


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CLIError(f"{path} is UTF-16 text: save it as 'CSV UTF-8' (Excel) or UTF-8 text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CLIError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); it may be "
            "Windows-1251: save it as 'CSV UTF-8' (Excel) or convert it with "
            "iconv -f cp1251 -t utf-8"
        ) from None


def _header_map(
    path: Path, names: list[str], *, ignore_unknown: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
    """canonical -> as written, for the known columns; the unknown ones ignored."""
    spelling: dict[str, str] = {}
    unknown: list[str] = []
    for name in names:
        key = canonical(name)
        if key in COLUMNS:
            if key in spelling:
                raise CLIError(
                    f"{path}: line 1: columns {spelling[key]!r} and {name!r} are the same column"
                )
            spelling[key] = name
        elif key:
            unknown.append(name)
    if unknown and not ignore_unknown:
        advice = []
        for name in unknown:
            close = difflib.get_close_matches(canonical(name), COLUMNS, n=1, cutoff=0.7)
            advice.append(f"{name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise CLIError(
            f"{path}: line 1: unknown column(s) {', '.join(advice)}; known: "
            f"{', '.join(COLUMNS)} (--ignore-unknown-columns to skip them)"
        )
    missing = [name for name in REQUIRED if name not in spelling]
    if missing:
        raise CLIError(
            f"{path}: line 1: no {', '.join(missing)} column(s); the header is "
            f"{', '.join(repr(n) for n in names)}"
        )
    return spelling, tuple(unknown)


def _cells(raw: Mapping[str, object], spelling: Mapping[str, str]) -> Record | dict[str, str]:
    cells: dict[str, str] = {}
    for key, name in spelling.items():
        value = raw.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            return Record(0, problems=((key, "must be text or a whole number"),))
        text = str(value).strip()
        if text:
            cells[key] = text
    return cells


def _excel_problems(cells: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            key,
            f"{value!r} looks like a number Excel turned into scientific notation, which "
            "loses digits: format the column as Text and export again",
        )
        for key, value in cells.items()
        if _SCIENTIFIC.fullmatch(value)
    )


def _record(line: int, raw: Mapping[str, object], spelling: Mapping[str, str]) -> Record:
    cells = _cells(raw, spelling)
    if isinstance(cells, Record):
        return attrs.evolve(cells, line=line)
    return Record(line, cells, _excel_problems(cells))


def _json_records(path: Path, text: str, *, ignore_unknown: bool) -> FileRecords:
    rows: list[tuple[int, dict[str, object] | str]] = []
    names: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            # Numbers stay as written: 1e3 or 100.10 reach the amount rules unchanged.
            value = json.loads(line, parse_float=str, parse_constant=str)
        except ValueError as error:
            rows.append((number, f"not valid JSON ({error.args[0]})"))
            continue
        if not isinstance(value, dict):
            rows.append((number, "not a JSON object"))
            continue
        names.update(dict.fromkeys(value))
        rows.append((number, value))
    spelling, ignored = _header_map(path, list(names), ignore_unknown=ignore_unknown)
    records = [
        Record(number, problems=(("row", row),)) if isinstance(row, str)
        else _record(number, row, spelling)
        for number, row in rows
    ]  # fmt: skip
    return FileRecords(records, spelling, ignored)


def _separator(header: str) -> str:
    def score(separator: str) -> tuple[int, int]:
        names = next(csv.reader([header], delimiter=separator), [])
        return sum(canonical(name) in COLUMNS for name in names), len(names)

    return max(_SEPARATORS, key=score)


def _csv_records(path: Path, text: str, *, ignore_unknown: bool) -> FileRecords:
    header = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(header))
    try:
        names = next(reader)
    except StopIteration:
        raise CLIError(f"{path} is empty") from None
    spelling, ignored = _header_map(path, names, ignore_unknown=ignore_unknown)
    records = []
    for values in reader:
        if not any(value.strip() for value in values):
            continue
        if len(values) > len(names):
            records.append(Record(reader.line_num, problems=(("row", "more values than columns"),)))
            continue
        records.append(_record(reader.line_num, dict(zip(names, values, strict=False)), spelling))
    return FileRecords(records, spelling, ignored)


def read_records(path: Path, *, ignore_unknown: bool = False) -> FileRecords:
    """Every record of a CSV file (JSON Lines for ``.jsonl``, ``.ndjson``, ``.json``).
    A problem with the whole file raises ``CLIError``; a problem with one row is in
    that ``Record``."""
    text = _decode(path)
    if path.suffix.lower() in _JSON_SUFFIXES:
        return _json_records(path, text, ignore_unknown=ignore_unknown)
    return _csv_records(path, text, ignore_unknown=ignore_unknown)
