"""Card numbers and phones: the Luhn check and the one masking rule for each."""

from __future__ import annotations

import unicodedata

__all__ = ["MIN_HIDDEN", "card_kept", "luhn_ok", "phone_kept"]

#: The fewest digits a mask hides (PCI DSS: at most the first six and last four shown,
#: fewer for short numbers).
MIN_HIDDEN = 6


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (decimal digits of any script) passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = unicodedata.digit(char)
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_kept(length: int) -> tuple[int, int]:
    """How many leading and trailing characters a card-like value of ``length`` keeps
    in clear: the last four, and as many of the first six as leave at least six hidden
    (``12 -> (2, 4)``, ``16 -> (6, 4)``); values shorter than ten keep nothing."""
    if length < MIN_HIDDEN + 4:
        return 0, 0
    return max(0, min(6, length - MIN_HIDDEN - 4)), 4


def phone_kept(length: int) -> tuple[int, int]:
    """How many leading and trailing digits a phone of ``length`` digits keeps in clear:
    the first four (country and operator code) and the last two."""
    return (4, 2) if length >= 10 else (0, 0)
