"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297.

Shamir, "How to share a secret", CACM 1979. p is the smallest prime above 2^256,
so every 32-byte string is a field element. Share ``x``-coordinates are the
holders' 1-based positions in the round's cohort (protocols/secagg.md §3.5).
The prime's primality is checked by the test suite with an independent library.

Reconstruction from exactly ``t`` points always yields *some* value, so the
shares alone cannot show tampering: callers check a reconstructed secret against
a signed public key or commitment. With more than ``t`` points the shares form a
Reed-Solomon codeword, and :func:`correct` recovers the secret despite up to
``(m - t) / 2`` wrong ones among ``m`` (Gao's decoder), naming them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

from securefed.errors import InsufficientSharesError, ProtocolError
from securefed.randomness import RandomSource

__all__ = [
    "FIELD_PRIME",
    "SHARE_BYTES",
    "correct",
    "decode_share_value",
    "encode_share_value",
    "lagrange_at_zero",
    "reconstruct",
    "split",
    "split_many",
]

FIELD_PRIME = (1 << 256) + 297
"""p = 2^256 + 297, the smallest prime larger than 2^256."""
SHARE_BYTES = 33
"""A share value in [0, p) as 33 big-endian bytes."""
SECRET_BYTES = 32


def _random_field_elements(rng: RandomSource, count: int) -> list[int]:
    """``count`` exactly uniform elements of [0, p), by rejection sampling.

    Each candidate is 33 bytes of ``rng`` with the low 257 bits kept, accepted if
    below p (probability about 1/2). Candidates are read in blocks, one per element
    still missing, so the stream is consumed exactly as one draw at a time would
    consume it (a block never holds more candidates than are still needed), in one
    call to ``rng`` per block instead of one per candidate.
    """
    p = FIELD_PRIME
    low = (1 << 257) - 1
    elements: list[int] = []
    while len(elements) < count:
        need = count - len(elements)
        block = rng.random_bytes(SHARE_BYTES * need)
        for start in range(0, SHARE_BYTES * need, SHARE_BYTES):
            candidate = int.from_bytes(block[start : start + SHARE_BYTES], "big") & low
            if candidate < p:
                elements.append(candidate)
    return elements


def split(secret: bytes, *, xs: Sequence[int], threshold: int, rng: RandomSource) -> list[int]:
    """Split a 32-byte secret into shares at the given ``x``-coordinates.

    Args:
        secret: 32 bytes, read as a big-endian integer.
        xs: distinct share coordinates in [1, 2^32).
        threshold: ``t``: any ``t`` shares reconstruct, ``t - 1`` reveal nothing.
        rng: source of the ``t - 1`` random coefficients.

    Returns:
        The share values ``f(x)`` in the order of ``xs``.
    """
    return split_many([secret], xs=xs, threshold=threshold, rng=rng)[0]


def split_many(
    secrets: Sequence[bytes], *, xs: Sequence[int], threshold: int, rng: RandomSource
) -> list[list[int]]:
    """Split several 32-byte secrets at the same ``x``-coordinates.

    The same as ``[split(s, xs=xs, threshold=threshold, rng=rng) for s in secrets]``,
    drawing the same random coefficients in the same order (each secret's ``t - 1``
    in turn), but the polynomials are evaluated together (:func:`_evaluate_many`):
    a client shares its two secrets among its holders in one pass.

    Raises:
        ValueError: a secret is not 32 bytes, the threshold is not in
            [1, len(xs)], or the coordinates are not distinct and in [1, 2^32).
            Nothing is drawn from ``rng`` then.
    """
    if any(len(secret) != SECRET_BYTES for secret in secrets):
        raise ValueError("secret must be 32 bytes")
    if not 1 <= threshold <= len(xs):
        raise ValueError("threshold must be in [1, number of shares]")
    if len(set(xs)) != len(xs) or any(not 0 < x < (1 << 32) for x in xs):
        raise ValueError("share coordinates must be distinct and in [1, 2^32)")
    # Each secret's t - 1 coefficients in turn, from one run of draws.
    drawn = _random_field_elements(rng, len(secrets) * (threshold - 1))
    polynomials = [
        [int.from_bytes(secret, "big"), *drawn[k * (threshold - 1) : (k + 1) * (threshold - 1)]]
        for k, secret in enumerate(secrets)
    ]
    return _evaluate_many(polynomials, xs)


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Lagrange basis coefficients for interpolating at 0 from points ``xs``.

    ``lambda_i = prod_{j != i} x_j / (x_j - x_i)``. When the points are ``1..L``
    with gaps ``G`` (the usual case: holders at ``1..k``, some dropped), the
    coefficient has the closed form ``lambda_i = (-1)^(i-1) C(L, i) prod_{g in G}
    (g - i) / g``: integers except for one division by ``prod G``, so the whole
    set costs one modular inversion and ``O(t * |G|)`` small products instead of
    ``O(t^2)`` field multiplications. Other point sets invert all denominators
    together with one modular inversion (Montgomery's batch trick).
    """
    p = FIELD_PRIME
    if len(set(xs)) != len(xs) or any(not 0 < x < p for x in xs):
        raise ValueError("points must have distinct non-zero x-coordinates")
    top = max(xs, default=0)
    if top <= 2 * len(xs):
        present = set(xs)
        gaps = [j for j in range(1, top + 1) if j not in present]
        # Over B = {1..L}: prod_{j != i} j / (j - i) = (L!/i) / ((-1)^(i-1) (i-1)! (L-i)!).
        scale = pow(math.prod(gaps) % p, -1, p) if gaps else 1
        coefficients = []
        for xi in xs:
            weight = math.comb(top, xi) * math.prod([g - xi for g in gaps])
            if not xi % 2:
                weight = -weight
            coefficients.append(weight * scale % p)
        return coefficients
    total = math.prod(xs)
    numerators = [total // xi % p for xi in xs]
    denominators = [math.prod([xj - xi for xj in xs if xj != xi]) % p for xi in xs]
    return [n * d % p for n, d in zip(numerators, _batch_inverse(denominators), strict=True)]


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Modular inverses of non-zero ``values`` with a single ``pow(-1)``."""
    p = FIELD_PRIME
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % p)
    inverse = pow(prefix[-1], -1, p)
    inverses = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        inverses[i] = inverse * prefix[i] % p
        inverse = inverse * values[i] % p
    return inverses


def reconstruct(
    points: Iterable[tuple[int, int]],
    *,
    threshold: int,
    coefficients: Sequence[int] | None = None,
) -> bytes:
    """Interpolate the secret from at least ``threshold`` points.

    Uses the first ``threshold`` points in ascending ``x``. The caller must
    verify the result (it is only *a* value when shares were tampered with).

    Args:
        points: ``(x, y)`` pairs with distinct ``x``.
        threshold: the sharing threshold ``t``.
        coefficients: precomputed :func:`lagrange_at_zero` for the chosen
            ``x``-set, to amortise work across secrets shared on the same points.

    Raises:
        InsufficientSharesError: fewer than ``threshold`` points.
        ProtocolError: the interpolated value does not fit in 32 bytes
            (a sure sign of a bad share).
    """
    chosen = sorted(points)[:threshold]
    if len(chosen) < threshold:
        raise InsufficientSharesError("not enough shares to reconstruct")
    xs = [x for x, _ in chosen]
    lam = list(coefficients) if coefficients is not None else lagrange_at_zero(xs)
    p = FIELD_PRIME
    value = sum(c * y for c, (_, y) in zip(lam, chosen, strict=True)) % p
    if value >> (8 * SECRET_BYTES):
        raise ProtocolError("reconstructed value is out of range")
    return value.to_bytes(SECRET_BYTES, "big")


Polynomial = list[int]
"""Coefficients over GF(p), lowest degree first, no trailing zeros (``[]`` is 0)."""


def _trim(a: Polynomial) -> Polynomial:
    while a and not a[-1]:
        a.pop()
    return a


def _sub(a: Polynomial, b: Polynomial) -> Polynomial:
    p = FIELD_PRIME
    out = a + [0] * (len(b) - len(a))
    for i, c in enumerate(b):
        out[i] = (out[i] - c) % p
    return _trim(out)


def _mul(a: Polynomial, b: Polynomial) -> Polynomial:
    p = FIELD_PRIME
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, c in enumerate(a):
        if c:
            for j, d in enumerate(b):
                out[i + j] += c * d
    return _trim([c % p for c in out])


def _divmod(a: Polynomial, b: Polynomial) -> tuple[Polynomial, Polynomial]:
    p = FIELD_PRIME
    lead = pow(b[-1], -1, p)
    rest = list(a)
    quotient = [0] * max(len(a) - len(b) + 1, 0)
    for shift in range(len(a) - len(b), -1, -1):
        c = rest[shift + len(b) - 1] * lead % p
        quotient[shift] = c
        if c:
            for j, d in enumerate(b):
                rest[shift + j] = (rest[shift + j] - c * d) % p
    return _trim(quotient), _trim(rest[: len(b) - 1])


_LANE_BITS = 600
"""Width of one polynomial's lane in :func:`_evaluate_many`'s packed accumulator."""


def _evaluate_many(polynomials: Sequence[Polynomial], xs: Iterable[int]) -> list[list[int]]:
    """Every polynomial at every ``x``, mod p, by Horner's rule on all polynomials at once.

    The coefficients (field elements, in [0, p)) are packed into one integer,
    polynomial ``j`` in the lane at bit ``j * _LANE_BITS``. Every lane is
    multiplied by the same ``x``, so one multiply-add of Python integers steps
    every polynomial, and the interpreter's cost per step, most of a step's cost
    at these sizes, is paid once: a client sharing its two secrets among 500
    holders at t = 301 spends about a third less time than with one pass per secret.

    The lanes stay exact while none reaches 2^_LANE_BITS: a lane below 2^B
    (B >= 257) times ``x`` plus a coefficient (< p < 2^257) is at most
    (2^B - 1)(x + 1) < 2^(B + bitlen(x)). So from lanes reduced mod p, which are
    below 2^257, ``(_LANE_BITS - 257) // bitlen(x)`` steps are safe; then every
    lane is reduced again. Reducing lazily also spares most divisions by p.
    """
    if not polynomials:
        return []
    p = FIELD_PRIME
    if any(not 0 <= c < p for a in polynomials for c in a):
        raise ValueError("coefficients must be field elements")  # a lane bound needs them < p
    width = _LANE_BITS
    lane = (1 << width) - 1
    length = max((len(a) for a in polynomials), default=0)
    packed = [
        sum(a[i] << (j * width) for j, a in enumerate(polynomials) if i < len(a))
        for i in reversed(range(length))
    ]
    shifts = [j * width for j in range(1, len(polynomials))]
    values: list[list[int]] = [[] for _ in polynomials]
    first, rest = values[0], list(zip(shifts, values[1:], strict=True))
    runs: dict[int, list[list[int]]] = {}  # safe steps -> the packed coefficients in runs of it
    for x in xs:
        if not 0 <= x < p:
            raise ValueError("evaluation points must be field elements")
        safe = (width - 257) // max(x.bit_length(), 1)  # >= 1: x < p < 2^257
        chunks = runs.get(safe)
        if chunks is None:
            chunks = runs[safe] = [packed[i : i + safe] for i in range(0, length, safe)]
        acc = 0
        for chunk in chunks:
            for c in chunk:
                acc = acc * x + c
            reduced = (acc & lane) % p
            for shift in shifts:
                reduced |= ((acc >> shift) & lane) % p << shift
            acc = reduced
        first.append(acc & lane)
        for shift, out in rest:
            out.append((acc >> shift) & lane)
    return values


@functools.lru_cache(maxsize=16)
def _vanishing(xs: tuple[int, ...]) -> tuple[Polynomial, list[int]]:
    """``prod (X - x_i)`` and the weights ``1 / prod_{j != i} (x_i - x_j)`` of a point set.

    Cached: one holder whose shares are wrong sends the server into :func:`correct`
    for every owner it holds, mostly on the same point set. Callers must not
    modify the returned lists.
    """
    p = FIELD_PRIME
    g0: Polynomial = [1]
    for x in xs:
        g0 = _mul(g0, [-x % p, 1])
    weights = _batch_inverse([math.prod([xi - xj for xj in xs if xj != xi]) % p for xi in xs])
    return g0, weights


def correct(points: Iterable[tuple[int, int]], *, threshold: int) -> tuple[bytes, tuple[int, ...]]:
    """Recover the secret from ``m >= t`` points of which up to ``(m - t) // 2`` are wrong.

    Gao's Reed-Solomon decoder (S. Gao, "A new algorithm for decoding Reed-Solomon
    codes", 2003): ``g0 = prod (X - x_i)``, ``g1`` interpolates every point, the
    extended Euclidean algorithm on ``(g0, g1)`` stops at the first remainder ``g``
    of degree below ``(m + t) / 2`` with ``u g0 + v g1 = g``, and the sharing
    polynomial is ``g / v``. O(m^2) field operations. The caller must still check
    the secret against its commitment: beyond the decoding radius another
    polynomial may be returned. A commitment fixes only the secret, so colluding
    holders can even make that other polynomial keep the true secret: then the
    points named are not the wrong ones (protocols/secagg.md §3.5).

    Returns:
        The secret and the ``x``-coordinates of the points off the returned polynomial.

    Raises:
        InsufficientSharesError: fewer than ``threshold`` points.
        ProtocolError: too many wrong points to decode, or a secret out of range.
    """
    chosen = sorted(points)
    m, k = len(chosen), threshold
    if k < 1:
        raise ValueError("threshold must be at least 1")
    if m < k:
        raise InsufficientSharesError("not enough shares to reconstruct")
    xs = tuple(x for x, _ in chosen)
    if len(set(xs)) != m or any(not 0 < x < FIELD_PRIME for x in xs):
        raise ValueError("points must have distinct non-zero x-coordinates")
    if any(not 0 <= y < FIELD_PRIME for _, y in chosen):
        raise ValueError("share values must be field elements")
    p = FIELD_PRIME
    g0, weights = _vanishing(xs)
    # g1 = sum_i y_i / g0'(x_i) * g0 / (X - x_i), each quotient by synthetic division.
    g1 = [0] * m
    for (xi, yi), wi in zip(chosen, weights, strict=True):
        scale = yi * wi % p
        carry = 0
        for j in range(m, 0, -1):  # g0 / (X - xi): coefficients m-1 .. 0
            carry = (g0[j] + carry * xi) % p
            g1[j - 1] += scale * carry
    r0, r1 = g0, _trim([c % p for c in g1])
    v0: Polynomial = []
    v1: Polynomial = [1]
    while r1 and 2 * (len(r1) - 1) >= m + k:
        q, r = _divmod(r0, r1)
        r0, r1 = r1, r
        v0, v1 = v1, _sub(v0, _mul(q, v1))
    if not v1:
        raise ProtocolError("too many wrong shares to correct")
    f, remainder = _divmod(r1, v1)
    if remainder or len(f) > k:
        raise ProtocolError("too many wrong shares to correct")
    on_f = _evaluate_many([f], xs)[0]  # xs: the chosen points' coordinates, in order
    wrong = tuple(x for (x, y), value in zip(chosen, on_f, strict=True) if value != y)
    if 2 * len(wrong) > m - k:
        raise ProtocolError("too many wrong shares to correct")
    value = f[0] if f else 0
    if value >> (8 * SECRET_BYTES):
        raise ProtocolError("reconstructed value is out of range")
    return value.to_bytes(SECRET_BYTES, "big"), wrong


def encode_share_value(y: int) -> bytes:
    """Encode a share value as 33 big-endian bytes."""
    if not 0 <= y < FIELD_PRIME:
        raise ValueError("share value out of field")
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share_value(data: bytes) -> int:
    """Decode a 33-byte share value, rejecting non-canonical encodings."""
    if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
        raise ProtocolError("share value must be 33 bytes")
    y = int.from_bytes(data, "big")
    if y >= FIELD_PRIME:
        raise ProtocolError("share value out of field")
    return y
