"""Checking an IntellectMoney createOperation / CreateOperation body as the documents say.

Every refusal is a ``BookError`` whose message becomes the envelope's ``Desc``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal

from .._errors import ValidationError
from .._validation import check_digits, check_length, check_pan, check_phone
from ._im_book import BookError, OperationDetails

__all__ = ["parse_create"]

Fields = Mapping[str, str | None]

#: Current API: a string of at most 13 characters with exactly two decimals.
_CURRENT_AMOUNT = re.compile(r"[0-9]{1,10}\.[0-9]{2}")
#: Legacy API: a decimal with at most two places.
_LEGACY_AMOUNT = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,2})?")
_CURRENCIES = frozenset({"RUB", "TST"})
_CURRENT_TYPES = {"OutBankCard": "card", "OutSbp": "sbp"}
_LEGACY_TYPES = {
    "0": "card",
    "1": "qiwi",
    "2": "sbp",
    "BankCardRussia": "card",
    "QiwiWallet": "qiwi",
    "Sbp": "sbp",
}
NO_DETAILS = "Не переданы реквизиты для выплаты"


def _checked(field: str, check: Callable[[], object]) -> None:
    try:
        check()
    except ValidationError as error:
        raise BookError(f"Неверное значение поля {field}: {error.rule}") from None


def _amount(value: str | None, pattern: re.Pattern[str]) -> Decimal:
    if value is None or value == "":
        raise BookError("Не передана сумма выплаты (Amount)")
    if len(value) > 13 or not pattern.fullmatch(value):
        raise BookError("Неверный формат суммы (Amount): число с двумя знаками после точки")
    amount = Decimal(value)
    if amount <= 0:
        raise BookError("Сумма выплаты (Amount) должна быть больше нуля")
    return amount.quantize(Decimal("0.01"))


def _requisites(channel: str, fields: Fields) -> tuple[str, str | None]:
    pan, account, bank_id = fields.get("Pan"), fields.get("Account"), fields.get("BankId")
    if channel == "card":
        if not pan:
            raise BookError(NO_DETAILS)
        if account or bank_id:
            raise BookError("Account и BankId передаются только для выплат по СБП")
        _checked("Pan", lambda: check_pan(pan, "Pan"))
        return pan, None
    if not account or (channel == "sbp" and not bank_id):
        raise BookError(NO_DETAILS)
    if pan:
        raise BookError("Pan передаётся только для выплат на карту")
    if channel != "sbp" and bank_id:
        raise BookError("BankId передаётся только для выплат по СБП")
    _checked("Account", lambda: check_phone(account, "Account"))
    _checked("BankId", lambda: check_length(bank_id, "BankId", low=1, high=32))
    return account, bank_id


def parse_create(api: str, fields: Fields) -> OperationDetails:
    """Check a create body of the ``"current"`` or ``"legacy"`` API."""
    if api == "current":
        kind = fields.get("PreferenceType")
        channel = _CURRENT_TYPES.get(kind or "")
        if channel is None:
            raise BookError("Неверный способ выплаты (PreferenceType): OutBankCard или OutSbp")
        pattern = _CURRENT_AMOUNT
    else:
        kind = fields.get("ProviderType")
        channel = _LEGACY_TYPES.get(kind or "")
        if channel is None:
            raise BookError("Неверный тип провайдера (ProviderType)")
        pattern = _LEGACY_AMOUNT
    recipient, bank_id = _requisites(channel, fields)
    amount = _amount(fields.get("Amount"), pattern)
    currency = fields.get("Currency")
    if currency is None or currency not in _CURRENCIES:
        raise BookError("Неверная валюта (Currency): RUB или TST")
    name = fields.get("RecipientName") or None
    eshop_id = description = None
    if api == "current":
        _checked("RecipientName", lambda: check_length(name, "RecipientName", high=255))
        eshop_id = fields.get("EshopId") or None
        _checked("EshopId", lambda: check_digits(eshop_id, "EshopId", high=6))
        description = fields.get("Description") or None
        _checked("Description", lambda: check_length(description, "Description", high=255))
    else:
        _checked("RecipientName", lambda: check_length(name, "RecipientName", low=2, high=50))
    return OperationDetails(
        channel=channel,
        recipient=recipient,
        amount=amount,
        currency=currency,
        bank_id=bank_id,
        recipient_name=name,
        eshop_id=eshop_id,
        description=description,
    )
