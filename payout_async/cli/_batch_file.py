"""Reading a batch file (CSV or JSON Lines) into validated payout requests.

Columns (CSV header or JSON keys):

``key``           the idempotency key (required, unique in the file)
``provider``      ``intellectmoney`` or ``enot`` (required)
``method``        IntellectMoney: ``card``, ``sbp`` or ``qiwi`` (legacy API only);
                  Enot: the service code, e.g. ``card``, ``sbp``, ``qiwi`` (required)
``recipient``     card number, phone or wallet (required, but for Enot Garantex)
``amount``        e.g. ``100.00`` (required)
``bank_id``       SBP bank (IntellectMoney BankId / Enot sbp_bank_type)
``currency``      IntellectMoney: ``RUB`` (default) or ``TST``
``recipient_name``, ``description``, ``eshop_id``   IntellectMoney extras
``comment``, ``hook_url``, ``subtract``             Enot extras

Every row is checked before anything is sent; all bad rows are reported together,
each with its line number.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ValidationError
from ..enot import PayoffRequest
from ..intellectmoney import OperationRequest

__all__ = ["BadRow", "BatchRow", "read_batch"]

PROVIDERS = ("intellectmoney", "enot")
_IM_METHODS = ("card", "sbp", "qiwi")


@attrs.frozen
class BatchRow:
    """One valid line of a batch file."""

    line: int
    key: str
    provider: str
    request: OperationRequest | PayoffRequest


@attrs.frozen
class BadRow:
    """One invalid line: where, which field, what rule."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.problem}"


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(row: Mapping[str, Any], name: str) -> str:
    value = _text(row, name)
    if value is None:
        raise ValidationError(name, "is required")
    return value


def _im_request(row: Mapping[str, Any], method: str) -> OperationRequest:
    if method not in _IM_METHODS:
        raise ValidationError("method", f"must be one of {', '.join(_IM_METHODS)}")
    recipient = _required(row, "recipient")
    bank_id = _text(row, "bank_id")
    if method == "sbp" and bank_id is None:
        raise ValidationError("bank_id", "is required for sbp")
    if method != "sbp" and bank_id is not None:
        raise ValidationError("bank_id", "is only for sbp")
    return OperationRequest(
        amount=_required(row, "amount"),
        pan=recipient if method == "card" else None,
        account=None if method == "card" else recipient,
        bank_id=bank_id,
        currency=_text(row, "currency") or "RUB",
        recipient_name=_text(row, "recipient_name"),
        eshop_id=_text(row, "eshop_id"),
        description=_text(row, "description"),
    )


def _enot_request(row: Mapping[str, Any], method: str) -> PayoffRequest:
    subtract = _text(row, "subtract")
    if subtract is not None and subtract not in ("1", "2"):
        raise ValidationError("subtract", "must be 1 (fee from balance) or 2 (fee from amount)")
    return PayoffRequest(
        service=method,
        wallet_to=_text(row, "recipient"),
        amount=_required(row, "amount"),
        comment=_text(row, "comment"),
        hook_url=_text(row, "hook_url"),
        subtract=None if subtract is None else int(subtract),
        sbp_bank_id=_text(row, "bank_id"),
    )


def parse_row(line: int, row: Mapping[str, Any]) -> BatchRow:
    """Validate one row; ``ValidationError`` names the first broken field."""
    key = _required(row, "key")
    provider = _required(row, "provider").lower()
    if provider not in PROVIDERS:
        raise ValidationError("provider", f"must be one of {', '.join(PROVIDERS)}")
    method = _required(row, "method").lower()
    request: OperationRequest | PayoffRequest
    if provider == "intellectmoney":
        request = _im_request(row, method)
    else:
        request = _enot_request(row, method)
    return BatchRow(line=line, key=key, provider=provider, request=request)


def _records(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, row) pairs; a row that cannot be read at all is a message."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as lines:
            for number, text in enumerate(lines, start=1):
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except ValueError as error:
                    yield number, f"not valid JSON ({error.args[0]})"
                    continue
                yield number, value if isinstance(value, dict) else "not a JSON object"
        return
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row:
                yield reader.line_num, "more values than header columns"
                continue
            yield reader.line_num, row


def read_batch(path: Path) -> tuple[list[BatchRow], list[BadRow]]:
    """All valid rows and all bad rows of a CSV (``.csv``) or JSONL (``.jsonl``) file."""
    rows: list[BatchRow] = []
    bad: list[BadRow] = []
    seen: dict[str, int] = {}
    for line, record in _records(path):
        if isinstance(record, str):
            bad.append(BadRow(line, "row", record))
            continue
        try:
            row = parse_row(line, record)
        except ValidationError as error:
            bad.append(BadRow(line, error.field, error.rule))
            continue
        first = seen.setdefault(row.key, line)
        if first != line:
            bad.append(BadRow(line, "key", f"repeats the key of line {first}"))
            continue
        rows.append(row)
    return rows, bad
