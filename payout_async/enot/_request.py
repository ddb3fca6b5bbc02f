"""The parameters of one Enot payoff, validated before anything is sent."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from .._errors import ValidationError
from .._redact import masked_repr
from .._validation import check_length, check_pan, check_phone, parse_amount

__all__ = ["KNOWN_SERVICES", "PayoffRequest", "check_service"]

#: The payoff services the provider's documents and examples name. ``service`` is a free
#: string to the API, so ``PayoffRequest`` accepts any; ``check_service`` (used by the
#: command line) refuses the others unless they are allowed explicitly.
KNOWN_SERVICES = frozenset({"card", "sbp", "qiwi", "usdt_trc20", "garantex"})
_PHONE_SERVICES = frozenset({"sbp", "qiwi"})


def check_service(service: str, allowed: Iterable[str] = ()) -> None:
    """Refuse a ``service`` that is neither in ``KNOWN_SERVICES`` nor in ``allowed``
    (a typo such as ``cardd`` would otherwise reach the provider)."""
    known = KNOWN_SERVICES | {name.lower() for name in allowed}
    if service.lower() not in known:
        raise ValidationError(
            "service",
            f"unknown service {service!r}: known are {', '.join(sorted(known))} "
            "(allow a new one explicitly)",
        )


def _amount(value: object) -> Decimal:
    return parse_amount(value, "amount")


@attrs.frozen
class PayoffRequest:
    """One payoff: ``service`` (``card``, ``sbp``, ``qiwi``...), ``wallet_to`` (card,
    phone or wallet; optional only for Garantex), ``amount`` and the optional fields of
    ``payoff/create``. ``order_id`` is the merchant's unique id; ``Payouts`` derives it
    from the idempotency key when it is left ``None``.

    A ``card`` payoff's ``wallet_to`` must be 12 to 20 digits passing the Luhn check;
    an ``sbp`` or ``qiwi`` one a phone (``+`` and 10 to 15 digits, see
    ``normalize_phone``). ``wallet_to`` is masked in ``repr``.
    """

    service: str
    wallet_to: str | None = attrs.field(repr=masked_repr)
    amount: Decimal = attrs.field(converter=_amount)
    order_id: str | None = None
    comment: str | None = None
    hook_url: str | None = None
    subtract: int | None = None
    sbp_bank_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.service, str) or not self.service:
            raise ValidationError("service", "must be a non-empty string such as 'card' or 'sbp'")
        if not self.service.isprintable() or self.service != self.service.strip():
            raise ValidationError("service", "must be a service code such as 'card' or 'sbp'")
        kind = self.service.lower()
        if self.wallet_to is None:
            if "garantex" not in kind:
                raise ValidationError("wallet_to", "required for every service but Garantex")
        elif not self.wallet_to:
            raise ValidationError("wallet_to", "must not be empty")
        check_length(self.wallet_to, "wallet_to", high=255)
        if self.wallet_to is not None:
            if kind == "card":
                check_pan(self.wallet_to, "wallet_to")
            elif kind in _PHONE_SERVICES:
                check_phone(self.wallet_to, "wallet_to")
        check_length(self.order_id, "order_id", high=255)
        if self.order_id == "":
            raise ValidationError("order_id", "must not be empty")
        check_length(self.comment, "comment", high=255)
        check_length(self.hook_url, "hook_url", high=500)
        if self.subtract is not None and (
            isinstance(self.subtract, bool) or self.subtract not in (1, 2)
        ):
            raise ValidationError("subtract", "must be 1 (fee from balance) or 2 (fee from amount)")
        if self.service.lower() == "sbp" and not self.sbp_bank_id:
            raise ValidationError("sbp_bank_id", "required for SBP payoffs")
        check_length(self.sbp_bank_id, "sbp_bank_id", high=255)

    def to_wire(self, user_id: str, order_id: str) -> dict[str, Any]:
        """The JSON body of ``payoff/create``. The amount is written as a JSON number:
        an ``int`` when whole, else a float, which round-trips exactly for the at most
        twelve significant digits an amount may have."""
        whole = self.amount == self.amount.to_integral_value()
        body: dict[str, Any] = {
            "user_id": user_id,
            "service": self.service,
            "amount": int(self.amount) if whole else float(self.amount),
            "order_id": order_id,
        }
        if self.wallet_to is not None:
            body["wallet_to"] = self.wallet_to
        if self.comment is not None:
            body["comment"] = self.comment
        if self.hook_url is not None:
            body["hook_url"] = self.hook_url
        if self.subtract is not None:
            body["subtract"] = self.subtract
        if self.sbp_bank_id is not None:
            body["payoff_data"] = {"sbp_bank_type": self.sbp_bank_id}
        return body
