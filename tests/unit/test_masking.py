"""One masking rule for card numbers (issue 24): whatever the length, at most the first
six and the last four digits are shown, and at least six are hidden -- in a value's
mask (``mask_card``, ``mask_wallet``, a final ledger row's parameters) and in free text
(the redactor), so that a short card number cannot be recovered from its mask. And one
scrubber for free text: cards and phones however they are written."""

from __future__ import annotations

import pytest

from payout_async._numbers import clip, is_card_number, luhn_ok
from payout_async._redact import Redactor, mask_card, mask_wallet, scrub
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


# --- the one scrubber (issue 24): cards and phones however they are written ----------

CARD = "5536912998877664"  # passes Luhn
SCRUBBED = [
    ("5536 9129 9887 7664", "5536 91** **** 7664"),
    ("5536-9129-9887-7664", "5536-91**-****-7664"),
    ("5536.9129.9887.7664", "5536.91**.****.7664"),
    ("5536\u00a09129\u00a09887\u00a07664", "5536\u00a091**\u00a0****\u00a07664"),
    ("553691 299887 7664", "553691 ****** 7664"),
    ("5536/9129/9887/7664", "5536/91**/****/7664"),
    ("5536&nbsp;9129&nbsp;9887&nbsp;7664", "5536\u00a091**\u00a0****\u00a07664"),
    ("5536 – 9129 – 9887 – 7664", "5536 – 91** – **** – 7664"),
    ("card 5536912998877664 100.00 RUB", "card 553691******7664 100.00 RUB"),
    ("+7 900 123-45-67", "+7 900 ***-**-67"),
    ("+7(900)123-45-67", "+7(900)***-**-67"),
    ("8 (900) 123 45 67", "8 (900) *** ** 67"),
    ("79001234567", "7900*****67"),
    ("8-900-123-45-67", "8-900-***-**-67"),
    ("(900) 123-45-67", "(900) 1**-**-67"),
]
READABLE = [
    "amount 1234567890.12, id 123456789",
    "order 123456789012 at 2024-05-01 12:34:56",  # 123456789012 fails the Luhn check
    "op 81fa5265-de0b-498d-be37-5d48f4aa3ba1 amount 99999.00",
    "1000000000.00 RUB; 1 000 000.00 RUB",
    "ids 1234567, 7654321; version 1.2.3",
]


@pytest.mark.parametrize(("text", "masked"), SCRUBBED)
def test_scrub_masks_cards_and_phones_with_any_separators(text: str, masked: str) -> None:
    assert scrub(text) == masked
    assert scrub(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize("text", READABLE)
def test_scrub_leaves_amounts_dates_uuids_and_other_numbers(text: str) -> None:
    assert scrub(text) == text


def test_a_cut_never_splits_a_number() -> None:
    text = f"refused: {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}"
    for limit in range(len("refused: "), len(text)):
        assert clip(text, limit) == "refused:"
    assert clip("abc def", 5) == "abc d" and clip("short", 50) == "short"


def test_is_card_number() -> None:
    for written in (CARD, "5536 9129 9887 7664", "5536-9129-9887-7664", "553691 299887 7664"):
        assert is_card_number(written), written
    for written in (
        "\u0665\u0665\u0663\u0666 9129 9887 7664",  # Arabic-Indic digits: still a card
        "5536\u00a09129\u20139887\u200b7664",  # no-break space, en dash, zero-width space
    ):
        assert is_card_number(written), written
    for written in ("5536912998877665", "card 5536912998877664", "12345", "order-42", ""):
        assert not is_card_number(written), written
    for written in ("5536 9129a9887 7664", "5536 9129\u00e99887 7664", "5536\u00b29129988777664"):
        assert not is_card_number(written), written  # a letter or sign in it splits it


def test_a_final_row_masked_by_the_older_rule_still_matches_its_payout() -> None:
    """Rows made final before masks hid six digits kept the first six and last four of
    a 12-15 digit card: a repeated ``pay()`` of that key must still match (and return the
    stored result), not raise a conflict -- while another card, or another amount, does
    not match."""
    from payout_async.ledger._recipient import MASKED_HASH, Recipients

    card = "123456789015"  # 12 digits, Luhn-valid
    assert luhn_ok(card)
    older = {"pan": card[:6] + "**" + card[-4:], "amount": "10.00"}
    recipients = Recipients()
    assert recipients.matches(MASKED_HASH, older, {"pan": card, "amount": "10.00"}, row="r")
    assert recipients.matches(
        MASKED_HASH,
        mask_params({"pan": card, "amount": "10.00"}),
        {"pan": card, "amount": "10.00"},
        row="r",
    )
    other = "123457789014"
    assert not recipients.matches(MASKED_HASH, older, {"pan": other, "amount": "10.00"}, row="r")
    assert not recipients.matches(MASKED_HASH, older, {"pan": card, "amount": "11.00"}, row="r")
