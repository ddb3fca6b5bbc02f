"""Enot results and the cattrs converter that reads them off the wire.

Money arrives as JSON numbers or strings; it is always parsed into ``Decimal``.
Unknown fields are kept in ``raw``; an undocumented status becomes ``UNKNOWN`` with
the value kept in ``raw_status``. Every field has a default, so an answer that lacks
one (even ``payoff_id``) still structures instead of crashing inside cattrs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .._redact import masked_repr

__all__ = [
    "Balance",
    "CreatedPayoff",
    "Payoff",
    "PayoffStatus",
    "PayoffWebhook",
    "SbpBank",
    "converter",
    "parse_webhook_payload",
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
    def is_terminal(self) -> bool:
        """True for ``success`` and ``fail``."""
        return self is PayoffStatus.SUCCESS or self is PayoffStatus.FAIL


_STATUSES = {status.value: status for status in PayoffStatus if status.value != "unknown"}


def _money(value: Any, _: Any = None) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return None


def _text(value: Any, _: Any = None) -> str | None:
    return None if value is None else str(value)


def _passthrough(value: Any, _: Any) -> Any:
    return value


_raw: Any = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class CreatedPayoff:
    """The answer to ``payoff/create``: the new payoff's id and the money moved."""

    payoff_id: str | None = None
    amount_withdraw_rub: Decimal | None = None
    balance: Decimal | None = None
    raw: Mapping[str, Any] = _raw


@attrs.frozen
class Payoff:
    """A payoff as ``payoff/info`` describes it. ``wallet`` is masked in ``repr``."""

    payoff_id: str | None = None
    order_id: str | None = None
    raw_status: str | None = None
    service: str | None = None
    wallet: str | None = attrs.field(default=None, repr=masked_repr)
    type: str | None = None
    subtract: str | None = None
    amount: Decimal | None = None
    amount_withdraw_rub: Decimal | None = None
    commission_rub: Decimal | None = None
    receive_currency: str | None = None
    amount_receive: Decimal | None = None
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
        return self.status.is_terminal


@attrs.frozen
class SbpBank:
    """A bank reachable through SBP; ``id`` goes into ``sbp_bank_id``."""

    id: str
    name: str


@attrs.frozen
class Balance:
    """The merchant's balance in rubles."""

    balance: Decimal | None = None
    active_balance: Decimal | None = None
    freeze_balance: Decimal | None = None
    raw: Mapping[str, Any] = _raw


@attrs.frozen
class PayoffWebhook:
    """A payoff status notification. ``wallet`` is masked in ``repr``."""

    payoff_id: str | None = None
    order_id: str | None = None
    raw_status: str | None = None
    amount: Decimal | None = None
    commission: Decimal | None = None
    service: str | None = None
    wallet: str | None = attrs.field(default=None, repr=masked_repr)
    raw: Mapping[str, Any] = _raw

    @property
    def status(self) -> PayoffStatus:
        """The reported status; ``UNKNOWN`` when undocumented."""
        return PayoffStatus.parse(self.raw_status)


converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(Decimal | None, _money)
converter.register_structure_hook(str | None, _text)
converter.register_structure_hook(str, lambda value, _: str(value))
_keep_raw = override(struct_hook=_passthrough)
for _model in (CreatedPayoff, Balance):
    converter.register_structure_hook(
        _model, make_dict_structure_fn(_model, converter, raw=_keep_raw)
    )
for _status_model in (Payoff, PayoffWebhook):
    converter.register_structure_hook(
        _status_model,
        make_dict_structure_fn(
            _status_model, converter, raw=_keep_raw, raw_status=override(rename="status")
        ),
    )


def structure(data: Mapping[str, Any], model: type[Any]) -> Any:
    """Structure a ``data`` object into ``model``, keeping the object as ``raw``."""
    return converter.structure({**data, "raw": data}, model)


def parse_webhook_payload(payload: Mapping[str, Any]) -> PayoffWebhook:
    """A ``PayoffWebhook`` from a decoded webhook body (``invoice_id`` stands in for a
    missing ``payoff_id``)."""
    data = dict(payload)
    data.setdefault("payoff_id", payload.get("invoice_id"))
    result: PayoffWebhook = structure(data, PayoffWebhook)
    return result
