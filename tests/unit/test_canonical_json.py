"""The JSON a payout's fingerprint is taken over is byte for byte what ``json.dumps``
(sorted keys, no spaces, ASCII escapes) writes -- also where msgspec's C encoder writes
it: a fingerprint that changed would make every live row an idempotency conflict."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from payout_async._transport import json_body
from payout_async.ledger._recipient import canonical_json

_VALUES = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
)
_PARAMS = st.dictionaries(st.text(max_size=8), _VALUES, max_size=8)


def _reference(params: Any) -> bytes:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()


@settings(max_examples=400)
@given(_PARAMS)
def test_the_fingerprinted_json_is_what_json_dumps_writes(params: dict[str, Any]) -> None:
    assert canonical_json(params) == _reference(params)


@settings(max_examples=200)
@given(st.text(), st.one_of(st.none(), st.text()), _PARAMS)
def test_a_signatures_facts_are_written_as_json_dumps_writes(
    key: str, order_id: str | None, params: dict[str, Any]
) -> None:
    facts = ["row", "enot", key, order_id, params]  # what a row's signature covers
    assert canonical_json(facts) == _reference(facts)


def test_every_ascii_character_and_text_beyond_it_are_written_as_json_does() -> None:
    for text in ("".join(map(chr, range(128))), "Оплата", "\ud800", "a\u2028b", '/\\"'):
        params = {"pan": "4111111111111111", "description": text, "eshop_id": 7}
        assert canonical_json(params) == _reference(params)


def test_a_request_body_reads_back_as_what_was_sent() -> None:
    body = {"Description": 'Оплата "x"\n', "EshopId": 123, "Amount": "10.00", "b": None}
    assert json.loads(json_body(body)) == body
    assert "Оплата".encode() in json_body(body)  # UTF-8, not \\u escapes
