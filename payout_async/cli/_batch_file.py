"""A batch file (CSV or JSON Lines) as validated payout requests.

Columns (CSV header or JSON keys; case, spaces and ``-``/``_`` do not matter):

``key``           the idempotency key (required, unique in the file; visible characters)
``provider``      ``intellectmoney`` or ``enot`` (required)
``method``        IntellectMoney: ``card``, ``sbp`` or ``qiwi`` (legacy API only);
                  Enot: the service code, e.g. ``card``, ``sbp``, ``qiwi`` (required)
``recipient``     card number, phone or wallet (required, but for Enot Garantex)
``amount``        e.g. ``100.00``: digits and at most two decimals (required)
``bank_id``       SBP bank (IntellectMoney BankId / Enot sbp_bank_type)
``currency``      IntellectMoney: ``RUB`` (default) or ``TST``
``recipient_name``, ``description``, ``eshop_id``   IntellectMoney extras
``comment``, ``hook_url``, ``subtract``             Enot extras

Every row is checked with the same rules the real run applies (the request
validators, the IntellectMoney API generation's rules, the known Enot services) before
anything is sent; all bad rows are reported together, each with its line number and
the column as the file spells it. Whatever an error quotes from the file is scrubbed
first (``_redact.scrub``): a card number in the wrong column is shown masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .._errors import ValidationError
from .._redact import scrub
from .._validation import check_key, normalize_phone
from ..enot import PayoffRequest
from ..enot._request import check_service
from ..intellectmoney import Api, OperationRequest
from ._args import CLIError
from ._columns import FileRecords, Record, read_records
from ._console import say

__all__ = [
    "PROVIDERS",
    "BadRow",
    "Batch",
    "BatchRow",
    "Rules",
    "bad_rows",
    "parse_row",
    "read_batch",
    "read_batch_file",
]

PROVIDERS = ("intellectmoney", "enot")
_IM_METHODS = ("card", "sbp", "qiwi")
_PHONE_METHODS = frozenset({"sbp", "qiwi"})
_CARD_SEPARATORS = re.compile(r"[\s\-]+")
#: An amount written with a decimal comma, as Excel writes it in a Russian locale
#: (``150,00``; ``1 500,00`` with a space, no-break space or narrow no-break space).
_DECIMAL_COMMA = re.compile(r"[0-9]{1,3}(?:[ \u00a0\u202f][0-9]{3})+,[0-9]{1,2}|[0-9]+,[0-9]{1,2}")
#: How many decimal-comma rows are listed one by one; beyond that, one line says it.
_COMMA_ROWS_LISTED = 2
#: Request fields -> the file's column that carries them.
_COLUMN_OF = {
    "pan": "recipient",
    "account": "recipient",
    "wallet_to": "recipient",
    "sbp_bank_id": "bank_id",
    "service": "method",
}


@attrs.frozen
class BatchRow:
    """One valid line of a batch file."""

    line: int
    key: str
    provider: str
    request: OperationRequest | PayoffRequest


@attrs.frozen
class BadRow:
    """One invalid line: where, which column, what rule."""

    line: int
    column: str = attrs.field(converter=scrub)
    problem: str = attrs.field(converter=scrub)  # a rule may quote the cell
    #: How many rows this one report stands for (several decimal-comma amounts: one).
    rows: int = 1

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.problem}"


@attrs.frozen
class Batch:
    """The rows of a file: the valid ones, the bad ones, the columns skipped."""

    rows: list[BatchRow]
    bad: list[BadRow]
    ignored: tuple[str, ...] = ()


@attrs.frozen
class Rules:
    """What a row is checked against besides the columns' own rules."""

    im_api: Api = "current"
    enot_services: Sequence[str] = ()


def _required(cells: Mapping[str, str], name: str) -> str:
    value = cells.get(name)
    if value is None:
        raise ValidationError(name, "is required")
    return value


def _card(text: str) -> str:
    """A card number as people write it (spaces or hyphens between groups)."""
    return _CARD_SEPARATORS.sub("", text)


def _recipient(cells: Mapping[str, str], method: str) -> str:
    recipient = _required(cells, "recipient")
    if method == "card":
        return _card(recipient)
    if method in _PHONE_METHODS:
        return normalize_phone(recipient, "recipient")
    return recipient


class _DecimalComma(ValidationError):
    """An amount written with a decimal comma (``150,00``)."""


def _amount(cells: Mapping[str, str]) -> str:
    amount = _required(cells, "amount")
    if _DECIMAL_COMMA.fullmatch(amount):
        raise _DecimalComma("amount", f"write the decimal point as '.', not ',' (got {amount!r})")
    return amount


def _comma_summary(commas: list[BadRow], amounts: int, name: str) -> BadRow:
    """One line for many decimal-comma amounts: the column, how many, and the fix."""
    first, last = commas[0].line, commas[-1].line
    which = (
        f"the whole {name} column uses ',' as the decimal point"
        if len(commas) == amounts
        else f"{len(commas)} of {amounts} amounts use ',' as the decimal point"
    )
    return BadRow(
        first,
        name,
        f"{which} (lines {first}-{last}; e.g. 150,00), as Excel writes numbers in a Russian "
        "locale: write them with '.' (150.00) -- in Excel, set File > Options > Advanced > "
        "decimal separator to '.' (untick 'Use system separators') and save as CSV again, "
        f"or replace ',' with '.' in the {name} column",
        rows=len(commas),
    )


def _im_request(cells: Mapping[str, str], method: str, rules: Rules) -> OperationRequest:
    if method not in _IM_METHODS:
        raise ValidationError("method", f"must be one of {', '.join(_IM_METHODS)}")
    recipient = _recipient(cells, method)
    bank_id = cells.get("bank_id")
    if method == "sbp" and bank_id is None:
        raise ValidationError("bank_id", "is required for sbp")
    if method != "sbp" and bank_id is not None:
        raise ValidationError("bank_id", "is only for sbp")
    request = OperationRequest(
        amount=_amount(cells),
        pan=recipient if method == "card" else None,
        account=None if method == "card" else recipient,
        bank_id=bank_id,
        currency=cells.get("currency", "RUB").upper(),
        recipient_name=cells.get("recipient_name"),
        eshop_id=cells.get("eshop_id"),
        description=cells.get("description"),
    )
    request.validate_for(rules.im_api)
    return request


def _enot_request(cells: Mapping[str, str], method: str, rules: Rules) -> PayoffRequest:
    check_service(method, rules.enot_services)
    subtract = cells.get("subtract")
    if subtract is not None and subtract not in ("1", "2"):
        raise ValidationError("subtract", "must be 1 (fee from balance) or 2 (fee from amount)")
    for column in ("currency", "recipient_name", "description", "eshop_id"):
        if column in cells:
            raise ValidationError(column, "is an IntellectMoney column (not for enot)")
    wallet = None
    if "garantex" not in method or "recipient" in cells:
        wallet = _recipient(cells, method)
    return PayoffRequest(
        service=method,
        wallet_to=wallet,
        amount=_amount(cells),
        comment=cells.get("comment"),
        hook_url=cells.get("hook_url"),
        subtract=None if subtract is None else int(subtract),
        sbp_bank_id=cells.get("bank_id"),
    )


def parse_row(record: Record, rules: Rules) -> BatchRow:
    """Validate one row; ``ValidationError`` names the first broken column."""
    cells = record.cells
    key = check_key(_required(cells, "key"))
    provider = _required(cells, "provider").lower()
    if provider not in PROVIDERS:
        raise ValidationError("provider", f"must be one of {', '.join(PROVIDERS)}")
    method = _required(cells, "method").lower()
    request: OperationRequest | PayoffRequest
    if provider == "intellectmoney":
        for column in ("comment", "hook_url", "subtract"):
            if column in cells:
                raise ValidationError(column, "is an Enot column (not for intellectmoney)")
        request = _im_request(cells, method, rules)
    else:
        request = _enot_request(cells, method, rules)
    return BatchRow(line=record.line, key=key, provider=provider, request=request)


def bad_rows(bad: Sequence[BadRow]) -> int:
    """How many rows ``bad`` reports on (a summary line may stand for several)."""
    return sum(problem.rows for problem in bad)


def _parse(found: FileRecords, rules: Rules) -> Batch:
    spelling = found.spelling

    def column(name: str) -> str:
        name = _COLUMN_OF.get(name, name)
        return spelling.get(name, name)

    rows: list[BatchRow] = []
    bad: list[BadRow] = []
    commas: list[BadRow] = []
    seen: dict[str, int] = {}
    for record in found.records:
        if record.problems:
            bad += [BadRow(record.line, column(name), text) for name, text in record.problems]
            continue
        try:
            row = parse_row(record, rules)
        except ValidationError as error:
            problem = BadRow(record.line, column(error.field), error.rule)
            (commas if isinstance(error, _DecimalComma) else bad).append(problem)
            continue
        first = seen.setdefault(row.key, record.line)
        if first != record.line:
            bad.append(BadRow(record.line, column("key"), f"repeats the key of line {first}"))
            continue
        rows.append(row)
    if len(commas) > _COMMA_ROWS_LISTED:
        amounts = sum(1 for record in found.records if record.cells.get("amount"))
        commas = [_comma_summary(commas, amounts, column("amount"))]
    bad = sorted(bad + commas, key=lambda problem: problem.line)
    return Batch(rows, bad, found.ignored)


def read_batch(path: Path, rules: Rules, *, ignore_unknown: bool = False) -> Batch:
    """All valid rows and all bad rows of a CSV or JSON Lines file."""
    return _parse(read_records(path, ignore_unknown=ignore_unknown), rules)


def read_batch_file(path: Path, rules: Rules, *, ignore_unknown: bool) -> Batch:
    """``read_batch`` for a command: a missing file is a ``CLIError``, and ignored
    columns are warned about on stderr."""
    if not path.is_file():
        raise CLIError(f"no such file: {path}")
    batch = read_batch(path, rules, ignore_unknown=ignore_unknown)
    if batch.ignored:
        say(scrub(f"warning: ignoring column(s) {', '.join(repr(c) for c in batch.ignored)}"))
    return batch
