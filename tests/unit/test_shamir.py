"""Shamir sharing over GF(2^256 + 297)."""

from __future__ import annotations

import random

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.errors import InsufficientSharesError, ProtocolError
from securefed.randomness import DeterministicRandom
from securefed.secagg.shamir import (
    FIELD_PRIME,
    SHARE_BYTES,
    _evaluate_many,
    correct,
    decode_share_value,
    encode_share_value,
    lagrange_at_zero,
    reconstruct,
    split,
    split_many,
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


def _coefficients_by_hand(rng: DeterministicRandom, secret: bytes, t: int) -> list[int]:
    # The spec's rule (§3.5), written out: 33 bytes, the low 257 bits, kept if below p.
    coefficients = [int.from_bytes(secret, "big")]
    while len(coefficients) < t:
        candidate = int.from_bytes(rng.random_bytes(33), "big") & ((1 << 257) - 1)
        if candidate < FIELD_PRIME:
            coefficients.append(candidate)
    return coefficients


def _at(coefficients: list[int], x: int) -> int:
    return sum(c * pow(x, k, FIELD_PRIME) for k, c in enumerate(coefficients)) % FIELD_PRIME


@settings(deadline=None, max_examples=40)
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 4),
    t=st.integers(1, 40),
    extra=st.integers(0, 30),
    big_x=st.booleans(),
)
def test_split_many_is_each_split_in_turn_evaluated_by_hand(seed, count, t, extra, big_x):
    # Same draws in the same order as one split per secret, and every share is the
    # polynomial evaluated independently (power by power), so the packed Horner's
    # lanes never bleed into each other, with coordinates up to 2^32 - 1.
    draw = random.Random(seed)
    secrets = [draw.randbytes(32) for _ in range(count)]
    high = (1 << 32) - 1 if big_x else 600
    xs = draw.sample(range(1, high), t + extra)
    rng = _rng(seed)
    shares = split_many(secrets, xs=xs, threshold=t, rng=rng)
    by_hand = _rng(seed)
    for secret, values in zip(secrets, shares, strict=True):
        coefficients = _coefficients_by_hand(by_hand, secret, t)
        assert values == [_at(coefficients, x) for x in xs]
    # Not a byte read ahead: whatever draws next sees the same stream.
    assert rng.random_bytes(16) == by_hand.random_bytes(16)
    assert split(secrets[0], xs=xs, threshold=t, rng=_rng(seed)) == shares[0]


def test_packed_evaluation_at_its_largest_lanes():
    # Every coefficient p - 1 and the largest coordinates make each lane grow as fast
    # as it can between reductions; a lane that overflowed would corrupt the next one.
    top = FIELD_PRIME - 1
    polynomials = [[top] * 301, [top] * 301, [1] * 301, [0]]
    xs = [1, 2, 499, 500, (1 << 32) - 1, FIELD_PRIME - 1]
    values = _evaluate_many(polynomials, xs)
    for coefficients, row in zip(polynomials, values, strict=True):
        assert row == [_at(coefficients, x) for x in xs]
    assert _evaluate_many([[]], [5]) == [[0]]
    assert _evaluate_many([], [5]) == []
    assert split_many([], xs=[1, 2], threshold=2, rng=_rng()) == []
    with pytest.raises(ValueError, match="field elements"):
        _evaluate_many([[1, 2]], [FIELD_PRIME])
    for outside in (-1, FIELD_PRIME):  # a lane's bound holds only for reduced coefficients
        with pytest.raises(ValueError, match="coefficients must be field elements"):
            _evaluate_many([[1], [outside, 1]], [2])


def test_split_many_refuses_before_drawing():
    rng = _rng(7)
    with pytest.raises(ValueError, match="32 bytes"):
        split_many([SECRET, b"short"], xs=[1, 2, 3], threshold=2, rng=rng)
    with pytest.raises(ValueError, match="distinct"):
        split_many([SECRET, SECRET], xs=[1, 1 << 32], threshold=2, rng=rng)
    with pytest.raises(ValueError, match="threshold"):
        split_many([SECRET, SECRET], xs=[1, 2], threshold=3, rng=rng)
    # Nothing was drawn: the stream continues where a fresh one starts.
    assert rng.random_bytes(16) == _rng(7).random_bytes(16)


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
    with pytest.raises(ProtocolError):
        decode_share_value("0" * SHARE_BYTES)  # type: ignore[arg-type]  # not bytes


def test_out_of_range_reconstruction_is_a_protocol_error():
    # Points on the constant polynomial 2^256 (a value that is no 32-byte secret).
    big = 1 << 256
    with pytest.raises(ProtocolError):
        reconstruct([(1, big), (2, big)], threshold=2)


@settings(deadline=None, max_examples=60)
@given(
    shares=st.integers(1, 40),
    threshold_frac=st.floats(0.0, 1.0),
    error_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_correct_recovers_the_secret_and_names_every_wrong_share(
    shares, threshold_frac, error_frac, seed
):
    # Any m shares of a degree t - 1 sharing with up to (m - t) // 2 wrong values,
    # at any positions and by any amounts: the secret comes back and exactly the
    # wrong x-coordinates are named.
    t = 1 + round(threshold_frac * (shares - 1))
    draw = random.Random(seed)
    xs = sorted(draw.sample(range(1, 1000), shares))
    secret = draw.randbytes(32)
    ys = split(secret, xs=xs, threshold=t, rng=_rng(seed))
    wrong = sorted(draw.sample(range(shares), round(error_frac * ((shares - t) // 2))))
    for i in wrong:
        ys[i] = (ys[i] + draw.randrange(1, FIELD_PRIME)) % FIELD_PRIME
    points = list(zip(xs, ys, strict=True))
    draw.shuffle(points)
    assert correct(points, threshold=t) == (secret, tuple(xs[i] for i in wrong))


def test_correct_refuses_beyond_its_radius_and_short_input():
    xs = list(range(1, 10))  # m = 9, t = 5: corrects 2
    ys = split(SECRET, xs=xs, threshold=5, rng=_rng(3))
    assert correct(zip(xs, ys, strict=True), threshold=5) == (SECRET, ())
    for i in (0, 4, 8):  # three wrong shares
        ys[i] = (ys[i] + 1) % FIELD_PRIME
    with pytest.raises(ProtocolError, match="too many wrong shares"):
        correct(zip(xs, ys, strict=True), threshold=5)
    with pytest.raises(InsufficientSharesError):
        correct(zip(xs[:4], ys[:4], strict=True), threshold=5)
    with pytest.raises(ValueError, match="distinct"):
        correct([(1, 2), (1, 3)], threshold=1)
    with pytest.raises(ValueError, match="threshold"):
        correct([(1, 2), (2, 3)], threshold=0)
    with pytest.raises(ValueError, match="field elements"):
        correct([(1, 2), (2, FIELD_PRIME)], threshold=1)
