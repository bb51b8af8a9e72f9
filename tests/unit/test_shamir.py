"""Shamir sharing over GF(2^256 + 297)."""

from __future__ import annotations

import pytest
import sympy

from securefed.errors import InsufficientSharesError, ProtocolError
from securefed.randomness import DeterministicRandom
from securefed.secagg.shamir import (
    FIELD_PRIME,
    SHARE_BYTES,
    decode_share_value,
    encode_share_value,
    lagrange_at_zero,
    reconstruct,
    split,
)

SECRET = bytes(range(32))


def _rng(i: int = 0) -> DeterministicRandom:
    return DeterministicRandom(i.to_bytes(32, "big"))


def test_field_prime_is_the_smallest_prime_above_2_256():
    assert sympy.isprime(FIELD_PRIME)
    assert FIELD_PRIME == (1 << 256) + 297
    assert sympy.nextprime(1 << 256) == FIELD_PRIME


def test_split_and_reconstruct():
    xs = [1, 2, 3, 4, 5, 6, 7]
    shares = split(SECRET, xs=xs, threshold=4, rng=_rng())
    points = list(zip(xs, shares, strict=True))
    assert reconstruct(points, threshold=4) == SECRET
    assert reconstruct(points[3:], threshold=4) == SECRET
    assert reconstruct(reversed(points), threshold=4) == SECRET


def test_reconstruct_with_cached_coefficients():
    xs = [2, 5, 9, 11]
    a = split(SECRET, xs=xs, threshold=3, rng=_rng(1))
    other = bytes(31) + b"\x07"
    b = split(other, xs=xs, threshold=3, rng=_rng(2))
    lam = lagrange_at_zero(xs[:3])
    assert reconstruct(zip(xs, a, strict=True), threshold=3, coefficients=lam) == SECRET
    assert reconstruct(zip(xs, b, strict=True), threshold=3, coefficients=lam) == other


def test_threshold_one_shares_are_the_secret():
    shares = split(SECRET, xs=[1, 2, 3], threshold=1, rng=_rng())
    assert set(shares) == {int.from_bytes(SECRET, "big")}


def test_too_few_points():
    xs = [1, 2, 3, 4]
    shares = split(SECRET, xs=xs, threshold=3, rng=_rng())
    with pytest.raises(InsufficientSharesError):
        reconstruct(list(zip(xs, shares, strict=True))[:2], threshold=3)


def test_split_validates_arguments():
    with pytest.raises(ValueError, match="32 bytes"):
        split(b"short", xs=[1, 2], threshold=2, rng=_rng())
    with pytest.raises(ValueError, match="threshold"):
        split(SECRET, xs=[1, 2], threshold=3, rng=_rng())
    with pytest.raises(ValueError, match="distinct"):
        split(SECRET, xs=[1, 1, 2], threshold=2, rng=_rng())
    with pytest.raises(ValueError, match="distinct"):
        split(SECRET, xs=[0, 1], threshold=2, rng=_rng())
    with pytest.raises(ValueError, match="distinct"):
        lagrange_at_zero([3, 3])


def test_share_value_encoding():
    y = FIELD_PRIME - 1
    data = encode_share_value(y)
    assert len(data) == SHARE_BYTES
    assert decode_share_value(data) == y
    with pytest.raises(ValueError, match="out of field"):
        encode_share_value(FIELD_PRIME)
    with pytest.raises(ProtocolError):
        decode_share_value(FIELD_PRIME.to_bytes(SHARE_BYTES, "big"))
    with pytest.raises(ProtocolError):
        decode_share_value(((1 << 264) - 1).to_bytes(SHARE_BYTES, "big"))
    with pytest.raises(ProtocolError):
        decode_share_value(data[:-1])
    with pytest.raises(ProtocolError):
        decode_share_value(data + b"\x00")


def test_out_of_range_reconstruction_is_a_protocol_error():
    # Points on the constant polynomial 2^256 (a value that is no 32-byte secret).
    big = 1 << 256
    with pytest.raises(ProtocolError):
        reconstruct([(1, big), (2, big)], threshold=2)
