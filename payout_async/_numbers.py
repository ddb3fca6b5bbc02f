"""Card numbers and phones however they are written: the Luhn check, the one masking
rule for each, and finding them in free text whatever separates their digits.

In text, a *digit group* is a run of decimal digits (any script's), and consecutive
groups form a *chain* when one to three separator characters stand between them:
whitespace (NBSP and every other Unicode space), dashes, dots, slashes, underscores,
parentheses and invisible format characters (a zero-width space). A colon, a comma or
a letter ends a chain, so times, lists and identifiers do not join up. Within a chain:

* any run of whole groups holding 12 to 19 digits that passes the Luhn check is a card
  number (``5536 9129 9887 7664``, ``553691-299887-7664``, ``5536.9129.9887.7664``);
* a phone is a chain that follows ``+`` (10 to 15 digits from its start), or 11 digits
  starting with 7 or 8 whose first group has 1, 4 or 11 digits (``8 (900) 123 45 67``),
  or 10 digits whose first group has 3 (``(900) 123-45-67``) or 10; a lone group of 10
  or 11 digits followed by a decimal point and digits is an amount, not a phone.

Each is masked digit by digit where it stands (separators stay), as ``mask_card`` and
``mask_phone`` mask a value; where candidates overlap, a digit any of them hides stays
hidden, so a card is never shown more than its own mask shows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

__all__ = [
    "MIN_HIDDEN",
    "card_kept",
    "clip",
    "is_card_number",
    "luhn_ok",
    "mask_numbers",
    "phone_kept",
]

#: The fewest digits a mask hides (PCI DSS: at most the first six and last four shown,
#: fewer for short numbers).
MIN_HIDDEN = 6
_CARD_DIGITS = range(12, 20)
_GROUP = re.compile(r"\d+")
_LETTER = re.compile(r"[^\W\d_]")  # a letter of any script
_MAX_GAP = 3
_SEPARATOR_CHARS = frozenset("./\\_()\u2212\u00b7\u2022")
_PLUS = frozenset("+\uff0b")


#: Each digit doubled, its digits summed: what every second digit adds to the Luhn sum.
_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (decimal digits of any script) passes the Luhn checksum."""
    if digits.isascii() and digits.isdigit():  # the common case, summed in C
        kept, doubled = digits[-1::-2], digits[-2::-2].translate(_DOUBLED)
        return (sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)) % 10 == 0
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


def _is_separator(char: str) -> bool:
    return (
        char in _SEPARATOR_CHARS
        or char.isspace()
        or unicodedata.category(char) in ("Zs", "Pd", "Cf")
    )


def _chains(text: str) -> Iterator[list[re.Match[str]]]:
    """The text's digit groups, chained where only separators stand between them."""
    chain: list[re.Match[str]] = []
    for group in _GROUP.finditer(text):
        if chain:
            gap = text[chain[-1].end() : group.start()]
            if len(gap) > _MAX_GAP or not all(_is_separator(char) for char in gap):
                yield chain
                chain = []
        chain.append(group)
    if chain:
        yield chain


def _after_plus(text: str, start: int) -> bool:
    """Whether a ``+`` stands right before ``start`` (a space or bracket may follow it)."""
    before = text[max(0, start - 3) : start].rstrip(" (\u00a0")
    return bool(before) and before[-1] in _PLUS


def _amount_after(text: str, end: int) -> bool:
    """Whether a decimal point or comma and a digit follow ``end`` (``1234567890.12``)."""
    return text[end : end + 1] in (".", ",") and text[end + 1 : end + 2].isdigit()


def _bare_phone(sizes: list[int], first: str, amount: bool) -> bool:
    """Whether groups of ``sizes`` digits, the first starting with ``first``, are written
    as a phone without ``+`` (``amount``: a lone group is followed by decimals)."""
    total = sum(sizes)
    if len(sizes) == 1 and amount:
        return False
    if total == 11:
        return first in "78" and sizes[0] in (1, 4, 11)
    return total == 10 and sizes[0] in (3, 10)


def _hide(hidden: set[int], positions: list[int], kept: tuple[int, int]) -> None:
    head, tail = kept
    hidden.update(positions[head : len(positions) - tail])


def _chain_hidden(text: str, chain: list[re.Match[str]]) -> set[int]:
    """The positions of the digits of ``chain`` that some card or phone in it hides."""
    hidden: set[int] = set()
    plus = _after_plus(text, chain[0].start())
    for first in range(len(chain)):
        positions: list[int] = []
        digits = ""
        for last in range(first, len(chain)):
            group = chain[last]
            positions += range(group.start(), group.end())
            digits += group[0]
            count = len(digits)
            if count > 19:
                break
            if count in _CARD_DIGITS and luhn_ok(digits):
                _hide(hidden, positions, card_kept(count))
            if first == 0 and plus and 10 <= count <= 15:
                _hide(hidden, positions, phone_kept(count))
            elif count in (10, 11):
                sizes = [len(g[0]) for g in chain[first : last + 1]]
                if _bare_phone(sizes, digits[0], _amount_after(text, group.end())):
                    _hide(hidden, positions, phone_kept(count))
    return hidden


def mask_numbers(text: str) -> str:
    """``text`` with every card number and phone in it masked (see the module)."""
    hidden: set[int] = set()
    for chain in _chains(text):
        if sum(len(group[0]) for group in chain) >= 10:
            hidden |= _chain_hidden(text, chain)
    if not hidden:
        return text
    return "".join("*" if index in hidden else char for index, char in enumerate(text))


def is_card_number(text: str) -> bool:
    """Whether ``text`` as a whole is a card number: 12 to 19 digits passing the Luhn
    check, with or without separators between them."""
    if not (text[:1].isdigit() and text[-1:].isdigit()):
        return False  # a number that is the whole text begins and ends with a digit
    if _LETTER.search(text):
        return False  # a letter is no separator: the digits around it are two numbers
    chains = list(_chains(text))
    if len(chains) != 1:
        return False
    chain = chains[0]
    if chain[0].start() != 0 or chain[-1].end() != len(text):
        return False
    digits = "".join(group[0] for group in chain)
    return len(digits) in _CARD_DIGITS and luhn_ok(digits)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, never inside a run of digits and
    separators: a number cut in two would be a part no scrubber recognises."""
    if len(text) <= limit:
        return text
    cut = limit
    if _in_number(text[cut]):  # what is cut off goes on with a number: drop it whole
        while cut > 0 and _in_number(text[cut - 1]):
            cut -= 1
    return text[:cut]


def _in_number(char: str) -> bool:
    return char.isdigit() or _is_separator(char)
