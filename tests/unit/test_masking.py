"""One masking rule for card numbers (issue 24): whatever the length, at most the first
six and the last four digits are shown, and at least six are hidden -- in a value's
mask (``mask_card``, ``mask_wallet``, a final ledger row's parameters) and in free text
(the redactor), so that a short card number cannot be recovered from its mask."""

from __future__ import annotations

import pytest

from payout_async._numbers import luhn_ok
from payout_async._redact import Redactor, mask_card, mask_wallet
from payout_async.ledger._recipient import mask_params


def card_of_length(length: int) -> str:
    """A card number of ``length`` digits passing the Luhn check."""
    body = "".join(str((7 * n + 3) % 10) for n in range(length - 1))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def assert_masked(card: str, masked: str) -> None:
    assert len(masked) == len(card), masked
    shown = [index for index, char in enumerate(masked) if char != "*"]
    assert all(masked[index] == card[index] for index in shown), masked
    assert len(card) - len(shown) >= 6, f"{masked}: fewer than six digits hidden"
    head = next(index for index, char in enumerate(masked) if char == "*")
    assert head <= 6 and masked[head:-4] == "*" * (len(card) - head - 4), masked
    assert masked[-4:] == card[-4:], masked


@pytest.mark.parametrize("length", range(12, 20))
def test_every_mask_hides_at_least_six_digits(length: int) -> None:
    card = card_of_length(length)
    assert luhn_ok(card)
    masks = {
        "mask_card": mask_card(card),
        "mask_wallet": mask_wallet(card),
        "a final row's pan": mask_params({"pan": card})["pan"],
        "a final row's wallet_to": mask_params({"wallet_to": card})["wallet_to"],
    }
    for where, masked in masks.items():
        assert masked is not None, where
        assert_masked(card, masked)
    text = Redactor()(f"card {card} refused")
    assert text.startswith("card ") and text.endswith(" refused"), text
    assert_masked(card, text[len("card ") : -len(" refused")])


def test_masks_keep_first_six_once_six_are_hidden_anyway() -> None:
    assert mask_card("4111111111111111") == "411111******1111"
    assert mask_card("2200700000000000006") == "220070*********0006"
    short = card_of_length(12)
    assert mask_card(short) == f"{short[:2]}******{short[-4:]}"
    assert mask_card("12345678901") == "***"
    assert mask_wallet("TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE") == "TQn9Y2************************bLSE"
