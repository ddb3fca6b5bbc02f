"""Checking an Enot ``payoff/create`` body as the documents say (422 on any breach)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .._errors import ValidationError
from .._validation import check_phone
from ._enot_book import PayoffDetails, PayoffRefused

__all__ = ["SBP_BANKS", "parse_payoff"]

#: The banks ``get-sbp-bank-list`` names; ``payoff_data.sbp_bank_type`` must be one.
SBP_BANKS: tuple[tuple[str, str], ...] = (
    ("100000000004", "Т-Банк"),
    ("100000000111", "Сбербанк"),
    ("100000000005", "ВТБ"),
    ("100000000008", "Альфа-Банк"),
    ("100000000007", "Райффайзенбанк"),
    ("100000000015", "Банк Открытие"),
)
_BANK_IDS = frozenset(bank_id for bank_id, _ in SBP_BANKS)
_PHONE_SERVICES = frozenset({"sbp", "qiwi"})
_CENT = Decimal("0.01")


def _invalid(message: str) -> PayoffRefused:
    return PayoffRefused(422, message)


def _text(body: Mapping[str, Any], name: str, *, high: int, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(f"Поле {name} обязательно для заполнения.")
        return None
    if not isinstance(value, str):
        raise _invalid(f"Поле {name} должно быть строкой.")
    if len(value) > high:
        raise _invalid(f"Поле {name} не может быть длиннее {high} символов.")
    return value


def _amount(value: object) -> Decimal:
    if value is None:
        raise _invalid("Поле amount обязательно для заполнения.")
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _invalid("Поле amount должно быть числом.")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise _invalid("Поле amount должно быть числом.") from None
    if not amount.is_finite() or amount <= 0:
        raise _invalid("Поле amount должно быть больше нуля.")
    if amount != amount.quantize(_CENT):
        raise _invalid("Поле amount может иметь не более двух знаков после точки.")
    return amount.quantize(_CENT)


def _wallet(service: str, body: Mapping[str, Any]) -> str | None:
    required = "garantex" not in service.lower()
    wallet = _text(body, "wallet_to", high=255, required=required)
    if wallet is None:
        return None
    kind = service.lower()
    if kind == "card" and not (wallet.isascii() and wallet.isdigit() and 12 <= len(wallet) <= 20):
        raise _invalid("Недействительный кошелёк.")
    if kind in _PHONE_SERVICES:
        try:
            check_phone(wallet, "wallet_to")
        except ValidationError:
            raise _invalid("Недействительный кошелёк.") from None
    return wallet


def _sbp_bank(service: str, body: Mapping[str, Any]) -> str | None:
    data = body.get("payoff_data")
    if data is not None and not isinstance(data, dict):
        raise _invalid("Поле payoff_data должно быть объектом.")
    bank = (data or {}).get("sbp_bank_type")
    if service.lower() != "sbp":
        return bank if isinstance(bank, str) else None
    if not isinstance(bank, str) or not bank:
        raise _invalid("Поле payoff_data.sbp_bank_type обязательно для СБП.")
    if bank not in _BANK_IDS:
        raise _invalid("Банк СБП не найден.")
    return bank


def parse_payoff(body: Mapping[str, Any]) -> PayoffDetails:
    """The payoff a create body asks for; ``PayoffRefused`` (422) when it breaks a rule."""
    service = _text(body, "service", high=64, required=True)
    assert service is not None
    if not service:
        raise _invalid("Поле service обязательно для заполнения.")
    wallet = _wallet(service, body)
    amount = _amount(body.get("amount"))
    order_id = _text(body, "order_id", high=255)
    comment = _text(body, "comment", high=255)
    hook_url = _text(body, "hook_url", high=500)
    subtract = body.get("subtract", 2)
    if subtract is None:
        subtract = 2
    if isinstance(subtract, bool) or subtract not in (1, 2):
        raise _invalid("Поле subtract должно быть 1 или 2.")
    return PayoffDetails(
        service=service,
        wallet=wallet,
        amount=amount,
        order_id=order_id,
        subtract=int(subtract),
        comment=comment,
        hook_url=hook_url,
        sbp_bank_id=_sbp_bank(service, body),
    )
