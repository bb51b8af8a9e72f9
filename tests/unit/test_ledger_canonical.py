"""The canonical body encoding (protocols/ledger.md §3).

An independent encoder (the standard library's ``json`` with members pre-sorted
by UTF-16 code units) checks :func:`encode` on generated documents.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.errors import DataError
from securefed.ledger.canonical import (
    MAX_DEPTH,
    CanonicalValue,
    decimal_text,
    decode,
    decode_object,
    encode,
    parse_decimal,
    parse_uint,
    to_canonical,
    uint_text,
)


def reference(value: Any) -> bytes:
    """RFC 8785 for number-free documents, written independently of the library."""

    def order(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: order(v[k]) for k in sorted(v, key=lambda k: k.encode("utf-16-be"))}
        if isinstance(v, list):
            return [order(x) for x in v]
        return v

    return json.dumps(order(value), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# Unicode scalar values only (no lone surrogates), including astral characters.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
documents = st.recursive(
    st.none() | st.booleans() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(documents)
def test_matches_independent_encoder_and_round_trips(value: Any) -> None:
    data = encode(value)
    assert data == reference(value)
    assert decode(data) == value


def test_members_sorted_by_utf16_code_units() -> None:
    value: CanonicalValue = {
        "\ue000": "",
        "\U0001f600": "",
        "b": "",
        "B": "",
        "a": {"y": "", "x": ""},
    }
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+E000 (unlike code point order).
    expected = '{"B":"","a":{"x":"","y":""},"b":"","\U0001f600":"","\ue000":""}'
    assert encode(value) == expected.encode("utf-8")


def test_escaping_rule() -> None:
    controls = "".join(chr(c) for c in range(0x20))
    data = encode({"s": controls + '"\\/\x7f\u2028é'})
    expected = (
        '{"s":"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b'
        "\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017"
        '\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028é"}'
    )
    assert data == expected.encode("utf-8")


def test_unicode_is_literal_utf8() -> None:
    assert encode(["é€😀"]) == '["é€😀"]'.encode()
    assert decode('["é€😀"]'.encode()) == ["é€😀"]


def test_tuples_encode_as_arrays() -> None:
    value: dict[str, CanonicalValue] = {"a": ("x", True, None)}
    assert encode(value) == b'{"a":["x",true,null]}'


@pytest.mark.parametrize("number", [1, 0, -3, 1.5, math.nan, math.inf, -math.inf])
def test_numbers_refused(number: float) -> None:
    with pytest.raises(TypeError, match="numbers"):
        encode({"a": number})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [b"bytes", {1: "x"}, {("a",): "x"}, {"a": object()}, {"a": {1}}])
def test_other_types_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode(value)


def test_lone_surrogate_refused() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        encode({"a": "\ud800"})
    with pytest.raises(ValueError, match="surrogate"):
        encode({"\udc00": ""})


def test_depth_limit() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    encode(deep)
    with pytest.raises(ValueError, match="nesting"):
        encode([deep])
    with pytest.raises(DataError):
        decode(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(DataError):
        decode(b"[" * 100_000 + b"]" * 100_000)


def test_duplicate_names_impossible() -> None:
    # A mapping cannot hold a name twice, so encode never writes one; decode refuses one.
    assert encode({"a": "1"}) == b'{"a":"1"}'
    with pytest.raises(DataError, match="duplicate"):
        decode(b'{"a":"1","a":"2"}')


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1}',
        b'{"a":-0.5}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{ "a":"b"}',
        b'{"a":"b"} ',
        b'{"b":"","a":""}',
        b'{"a":"\\u001F"}',
        b'{"a":"\\/"}',
        b'{"a":"\\u0041"}',
        b'{"a":"\\ud800"}',
        b'{"a":"\xff"}',
        b'\xef\xbb\xbf{"a":"b"}',
        b"",
        b'"unterminated',
    ],
)
def test_decode_refuses_non_canonical(data: bytes) -> None:
    with pytest.raises(DataError):
        decode(data)


def test_decode_object_requires_object() -> None:
    assert decode_object(b"{}") == {}
    with pytest.raises(DataError):
        decode_object(b'["a"]')


def test_uint_strings() -> None:
    assert uint_text(0) == "0"
    assert uint_text(2**64 - 1) == "18446744073709551615"
    assert parse_uint("18446744073709551615") == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="2\\^64"):
            uint_text(bad)
    for wrong_type in (True, 1.0, "1"):
        with pytest.raises(TypeError):
            uint_text(wrong_type)  # type: ignore[arg-type]
    for bad_text in ("", "01", "-1", "+1", "1.0", "18446744073709551616", " 1", 1, None):
        with pytest.raises(DataError):
            parse_uint(bad_text)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_decimal_strings_round_trip_exactly(x: float) -> None:
    text = decimal_text(x)
    assert parse_decimal(text) == x
    assert math.copysign(1.0, parse_decimal(text)) == math.copysign(1.0, x)


def test_decimal_strings_refuse_non_finite_and_bad_grammar() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="NaN"):
            decimal_text(bad)
    with pytest.raises(TypeError):
        decimal_text(True)
    for bad_text in ("", ".5", "5.", "01", "1e", "+1", "NaN", "inf", "1e400", "0x10", "1_0", 1.5):
        with pytest.raises(DataError):
            parse_decimal(bad_text)
    assert decimal_text(1e-5) == "1e-05"
    assert decimal_text(3) == "3.0"


def test_to_canonical_converts_plain_data() -> None:
    import enum

    class Mode(enum.Enum):
        A = "a"
        N = 3

    value = {
        "rounds": 3,
        "neg": -2,
        "lr": 0.05,
        "on": True,
        "none": None,
        "mode": Mode.A,
        "n": Mode.N,
        "nested": [{"x": 1.0}, ("t",)],
    }
    assert to_canonical(value) == {
        "rounds": "3",
        "neg": "-2",
        "lr": "0.05",
        "on": True,
        "none": None,
        "mode": "a",
        "n": "3",
        "nested": [{"x": "1.0"}, ["t"]],
    }
    encode(to_canonical(value))
    with pytest.raises(ValueError, match="NaN"):
        to_canonical({"x": math.nan})
    with pytest.raises(TypeError):
        to_canonical({1: "x"})
    with pytest.raises(TypeError):
        to_canonical({"x": b"bytes"})
