"""Enot results and the cattrs converter that reads them off the wire.

Money arrives as JSON numbers or strings; it is always parsed into a finite
``Decimal`` (anything else makes the answer unreadable: ``UnreadableError``).
Unknown fields are kept in ``raw``; an undocumented status becomes ``UNKNOWN`` with
the value kept in ``raw_status``. Every field has a default, so an answer that lacks
one (even ``payoff_id``) still structures instead of crashing inside cattrs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .._decode import UnreadableError, money
from .._errors import ValidationError
from .._redact import masked_repr

__all__ = [
    "Balance",
    "CreatedPayoff",
    "Payoff",
    "PayoffStatus",
    "PayoffWebhook",
    "SbpBank",
    "converter",
    "parse_banks",
    "parse_webhook_payload",
    "structure",
]


class PayoffStatus(enum.StrEnum):
    """A payoff's status: ``wait`` until it ends ``success`` or ``fail``."""

    WAIT = "wait"
    SUCCESS = "success"
    FAIL = "fail"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> PayoffStatus:
        """The status named by ``value``; ``UNKNOWN`` for anything undocumented."""
        if isinstance(value, str):
            status = _STATUSES.get(value.lower())
            if status is not None:
                return status
        return cls.UNKNOWN

    @property
    def is_final(self) -> bool:
        """True for ``success`` and ``fail``."""
        return self is PayoffStatus.SUCCESS or self is PayoffStatus.FAIL


_STATUSES = {status.value: status for status in PayoffStatus if status.value != "unknown"}


def _money(value: Any, _: Any = None) -> Decimal | None:
    return money(value)


def _finite(instance: Any, attribute: attrs.Attribute[Any], value: Decimal | None) -> None:
    """Money fields hold a finite ``Decimal`` or ``None``, so that ``==`` and ``hash``
    never raise (a signalling NaN makes both raise)."""
    if value is not None and not (isinstance(value, Decimal) and value.is_finite()):
        raise ValidationError(attribute.name, "must be a finite Decimal or None")


_money_field: Any = attrs.field(default=None, validator=_finite)


def _text(value: Any, _: Any = None) -> str | None:
    return None if value is None else str(value)


def _passthrough(value: Any, _: Any) -> Any:
    return value


_raw: Any = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(slots=False)
class CreatedPayoff:
    """The answer to ``payoff/create``: the new payoff's id and the money moved."""

    payoff_id: str | None = None
    amount_withdraw_rub: Decimal | None = _money_field
    balance: Decimal | None = _money_field
    raw: Mapping[str, Any] = _raw


@attrs.frozen(slots=False)
class Payoff:
    """A payoff as ``payoff/info`` describes it. ``wallet`` is masked in ``repr``."""

    payoff_id: str | None = None
    order_id: str | None = None
    raw_status: str | None = None
    service: str | None = None
    wallet: str | None = attrs.field(default=None, repr=masked_repr)
    type: str | None = None
    subtract: str | None = None
    amount: Decimal | None = _money_field
    amount_withdraw_rub: Decimal | None = _money_field
    commission_rub: Decimal | None = _money_field
    receive_currency: str | None = None
    amount_receive: Decimal | None = _money_field
    comment: str | None = None
    created_at: str | None = None
    paid_at: str | None = None
    error_message: str | None = None
    raw: Mapping[str, Any] = _raw

    @property
    def status(self) -> PayoffStatus:
        """The payoff's status; ``UNKNOWN`` when absent or undocumented."""
        return PayoffStatus.parse(self.raw_status)

    @property
    def is_final(self) -> bool:
        """True once the payoff is ``success`` or ``fail``."""
        return self.status.is_final


@attrs.frozen
class SbpBank:
    """A bank reachable through SBP; ``id`` goes into ``sbp_bank_id``."""

    id: str
    name: str


@attrs.frozen
class Balance:
    """The merchant's balance in rubles."""

    balance: Decimal | None = _money_field
    active_balance: Decimal | None = _money_field
    freeze_balance: Decimal | None = _money_field
    raw: Mapping[str, Any] = _raw


@attrs.frozen
class PayoffWebhook:
    """A payoff status notification. ``wallet`` is masked in ``repr``."""

    payoff_id: str | None = None
    order_id: str | None = None
    raw_status: str | None = None
    amount: Decimal | None = _money_field
    commission: Decimal | None = _money_field
    service: str | None = None
    wallet: str | None = attrs.field(default=None, repr=masked_repr)
    raw: Mapping[str, Any] = _raw

    @property
    def status(self) -> PayoffStatus:
        """The reported status; ``UNKNOWN`` when undocumented."""
        return PayoffStatus.parse(self.raw_status)


def _money_hook(field: str) -> Any:
    def hook(value: Any, _: Any) -> Decimal | None:
        return money(value, field)

    return hook


def _overrides(model: type[Any]) -> dict[str, Any]:
    """Keep ``raw`` as is, and name the field in a money field's error."""
    fields: dict[str, Any] = {"raw": override(struct_hook=_passthrough)}
    for field in attrs.fields(model):
        if field.validator is _finite:
            fields[field.name] = override(struct_hook=_money_hook(field.name))
    return fields


# Without detailed validation the first bad field's own error comes out (not a group).
converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
converter.register_structure_hook(Decimal | None, _money)
converter.register_structure_hook(str | None, _text)
converter.register_structure_hook(str, lambda value, _: str(value))
for _model in (CreatedPayoff, Balance):
    converter.register_structure_hook(
        _model, make_dict_structure_fn(_model, converter, **_overrides(_model))
    )
for _status_model in (Payoff, PayoffWebhook):
    converter.register_structure_hook(
        _status_model,
        make_dict_structure_fn(
            _status_model,
            converter,
            raw_status=override(rename="status"),
            **_overrides(_status_model),
        ),
    )


#: For each model whose fields are all ``str | None`` or money (and ``raw``): its fields
#: as (attribute, wire name, reader). ``structure`` builds these models directly, doing
#: what the converter's hooks do, field by field in the same order, without its cost.
_PLANS: dict[type[Any], list[tuple[str, str, Any]]] = {}
for _built in (CreatedPayoff, Payoff, Balance, PayoffWebhook):
    _plan = []
    for _field in attrs.fields(_built):
        if _field.name == "raw":
            continue
        if _field.validator is _finite:
            _plan.append((_field.name, _field.name, _money_hook(_field.name)))
        else:
            assert _field.type in ("str | None", str | None), (_built, _field.name)
            _plan.append(
                (_field.name, "status" if _field.name == "raw_status" else _field.name, _text)
            )
    _PLANS[_built] = _plan


def structure(data: Mapping[str, Any], model: type[Any]) -> Any:
    """Structure a ``data`` object into ``model``, keeping the object as ``raw``.

    A money field that is not a finite number raises ``UnreadableError``.
    """
    plan = _PLANS.get(model)
    if plan is None:
        return converter.structure({**data, "raw": data}, model)
    values: dict[str, Any] = {"raw": data}
    for name, wire, read in plan:
        if wire in data:
            values[name] = read(data[wire], None)
    return model(**values)


def parse_banks(data: Mapping[str, Any]) -> list[SbpBank]:
    """The ``SbpBank`` list of a ``get-sbp-bank-list`` ``data`` object
    (``UnreadableError`` when it is not a list of objects with ids)."""
    banks = data.get("banks", data.get("items", []))
    if not isinstance(banks, list) or not all(isinstance(bank, dict) for bank in banks):
        raise UnreadableError("bank list is not a list of objects")
    result = []
    for bank in banks:
        bank_id, name = bank.get("id"), bank.get("name")
        if isinstance(bank_id, bool) or not isinstance(bank_id, str | int) or bank_id == "":
            raise UnreadableError("a bank has no id")
        result.append(SbpBank(id=str(bank_id), name="" if name is None else str(name)))
    return result


def parse_webhook_payload(payload: Mapping[str, Any]) -> PayoffWebhook:
    """A ``PayoffWebhook`` from a decoded webhook body (``invoice_id`` stands in for a
    missing ``payoff_id``); ``UnreadableError`` when a money field is not a number."""
    data = dict(payload)
    data.setdefault("payoff_id", payload.get("invoice_id"))
    result: PayoffWebhook = structure(data, PayoffWebhook)
    return result
