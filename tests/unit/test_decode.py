"""The decoder's fast path (msgspec) reads exactly what the careful one (``json`` with
the bounds) reads, and refuses exactly what it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payout_async._decode import MAX_DEPTH, MAX_NUMBER_CHARS, UnreadableError, _careful, loads

_TOKENS = st.sampled_from(
    [
        b"{", b"}", b"[", b"]", b",", b":", b'"a"', b'"\\ud800"', b'"\\ud83d\\ude00"', b'"\\u0000"',
        b"1", b"-0", b"1.50", b"1e64", b"1e65", b"-1E-65", b"1" * MAX_NUMBER_CHARS,
        b"9" * (MAX_NUMBER_CHARS + 1), b"-" + b"1" * MAX_NUMBER_CHARS, b"NaN", b"Infinity",
        b"true", b"null", b" ", b"\xef\xbb\xbf", b"\xff", b'"\xc3\xa9"', b"\x00", b"01", b".5",
    ]
)  # fmt: skip


def _read(body: bytes) -> object:
    try:
        return ("value", _careful(body, Decimal))
    except UnreadableError as error:
        return ("error", str(error))


@settings(max_examples=600, deadline=None)
@given(st.lists(_TOKENS, max_size=12).map(b"".join))
def test_fast_path_reads_and_refuses_what_json_with_the_bounds_does(body: bytes) -> None:
    assert _read_fast(body) == _read(body)


def _read_fast(body: bytes) -> object:
    try:
        return ("value", loads(body))
    except UnreadableError as error:
        return ("error", str(error))


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"1" * MAX_NUMBER_CHARS + b"}",
        b'{"a": -' + b"1" * MAX_NUMBER_CHARS + b"}",
        b'{"a": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
        b'{"a": "\\ud800"}',
        b'{"a": 1e999}',
        b"\xef\xbb\xbf" + b'{"a": 1.5}',
        b'{"a": "' + b"7" * 100 + b'"}',
    ],
)
def test_edges_of_the_bounds_read_alike(body: bytes) -> None:
    assert _read_fast(body) == _read(body)


def test_an_ordinary_answer_takes_the_fast_path() -> None:
    from payout_async._decode import _fast

    body = b'{"OperationState": {"Code": 0}, "Result": {"Amount": 10.00, "Id": "12345"}}'
    assert _fast(body) == (
        True,
        {"OperationState": {"Code": 0}, "Result": {"Amount": Decimal("10.00"), "Id": "12345"}},
    )
