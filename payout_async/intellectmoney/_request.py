"""The parameters of one IntellectMoney payout, validated before anything is sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import attrs

from .._errors import ValidationError
from .._redact import masked_repr
from .._validation import check_digits, check_length, check_pan, check_phone, parse_amount
from ._models import PayoutMethod

__all__ = ["Api", "OperationRequest"]

Api = Literal["current", "legacy"]
_CURRENCIES = frozenset({"RUB", "TST"})


def _amount(value: object) -> Decimal:
    return parse_amount(value, "amount")


def _eshop_id(value: str | int | None) -> str | None:
    return check_digits(value, "eshop_id", high=6)


@attrs.frozen
class OperationRequest:
    """One payout: to a card (``pan``), by SBP (``account`` phone and ``bank_id``) or,
    on the legacy API only, to a Qiwi wallet (``account`` without ``bank_id``).

    Field rules are checked on construction (``ValidationError`` names the field);
    rules that differ between the two API generations are checked by
    ``validate_for(api)``. ``amount`` is stored as a two-place ``Decimal``; ``pan``
    and ``account`` are masked in ``repr``.
    """

    amount: Decimal = attrs.field(converter=_amount)
    pan: str | None = attrs.field(default=None, repr=masked_repr)
    account: str | None = attrs.field(default=None, repr=masked_repr)
    bank_id: str | None = None
    currency: str = "RUB"
    recipient_name: str | None = None
    eshop_id: str | None = attrs.field(default=None, converter=_eshop_id)
    description: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.pan is None) == (self.account is None):
            raise ValidationError("pan", "give exactly one of pan (card) or account (SBP/Qiwi)")
        if self.pan is not None:
            check_pan(self.pan, "pan")
            if self.bank_id is not None:
                raise ValidationError("bank_id", "only allowed for SBP payouts (with account)")
        else:
            assert self.account is not None
            check_phone(self.account, "account")
        if self.bank_id is not None and not (isinstance(self.bank_id, str) and self.bank_id):
            raise ValidationError("bank_id", "must be a non-empty string")
        if self.currency not in _CURRENCIES:
            raise ValidationError("currency", "must be 'RUB' or 'TST'")
        check_length(self.recipient_name, "recipient_name", high=255)
        check_length(self.description, "description", high=255)

    @property
    def method(self) -> PayoutMethod:
        """Where the money goes, from which fields are given."""
        if self.pan is not None:
            return PayoutMethod.BANK_CARD
        return PayoutMethod.SBP if self.bank_id is not None else PayoutMethod.QIWI

    def validate_for(self, api: Api) -> None:
        """Check the rules specific to one API generation (the client calls this before
        sending; a dry run calls it too, so that both refuse the same requests)."""
        if api == "current":
            if self.method is PayoutMethod.QIWI:
                raise ValidationError(
                    "bank_id",
                    "required for SBP payouts (account given); the current API pays by card "
                    "or SBP only (Qiwi needs the legacy API)",
                )
            return
        check_length(self.recipient_name, "recipient_name", low=2, high=50)
        if self.eshop_id is not None:
            raise ValidationError("eshop_id", "not supported by the legacy API")
        if self.description is not None:
            raise ValidationError("description", "not supported by the legacy API")
