"""Quantisation: clipping reported, unbiased stochastic rounding, error below one step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securefed.errors import DataError
from securefed.randomness import DeterministicRandom
from securefed.secagg.client_input import quantize
from securefed.secagg.quantize import QuantizationSpec, dequantize, ring_bits


def _rng(i: int = 0) -> DeterministicRandom:
    return DeterministicRandom(i.to_bytes(32, "big"))


def test_clipped_fraction_is_reported():
    spec = QuantizationSpec(bits=8, clip=1.0)
    q = quantize(np.array([2.0, -3.0, 0.5, 0.1]), spec, weight=1, rng=_rng())
    assert q.clipped_fraction == 0.5
    assert int(q.values[0]) == spec.levels  # clipped to +clip
    assert int(q.values[1]) == 0  # clipped to -clip
    assert quantize(np.zeros(0), spec, weight=1, rng=_rng()).clipped_fraction == 0.0


def test_stochastic_rounding_is_unbiased():
    # 4-bit grid, x halfway-ish between levels. N roundings of the same value:
    # each is floor(s) + Bernoulli(frac(s)), variance <= 1/4, so the mean's
    # standard deviation is <= 0.5/sqrt(N). The bound 5.5 sigma has a two-sided
    # false-alarm rate below 4e-8 (Gaussian tail); the seed is fixed, so the
    # outcome is deterministic anyway.
    spec = QuantizationSpec(bits=4, clip=1.0)
    n = 40_000
    for i, x in enumerate([-0.93, -0.2, 0.0, 0.37, 0.999]):
        scaled = (x + spec.clip) * spec.levels / (2 * spec.clip)
        q = quantize(np.full(n, x), spec, weight=1, rng=_rng(i))
        rounded = q.values[:-1].astype(np.float64)
        assert set(np.unique(rounded)) <= {math.floor(scaled), math.floor(scaled) + 1}
        assert abs(rounded.mean() - scaled) < 5.5 * 0.5 / math.sqrt(n)


def test_error_below_one_step():
    spec = QuantizationSpec(bits=6, clip=2.0)
    x = np.random.default_rng(3).uniform(-2.0, 2.0, 5000)
    q = quantize(x, spec, weight=1, rng=_rng())
    mean, weight = dequantize(q.values, spec)
    assert weight == 1
    assert np.max(np.abs(mean - x)) < spec.step


def test_weighting():
    spec = QuantizationSpec(bits=8, clip=1.0, max_weight=5)
    x = np.array([0.3, -0.7, 0.0])
    plain = quantize(x, spec, weight=1, rng=_rng(5))
    weighted = quantize(x, spec, weight=5, rng=_rng(5))
    assert weighted.weight == 5
    assert int(weighted.values[-1]) == 5
    np.testing.assert_array_equal(weighted.values[:-1], plain.values[:-1] * np.uint64(5))
    assert weighted.length == 3
    assert "values" not in repr(weighted)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_is_data_error(bad):
    spec = QuantizationSpec(bits=8, clip=1.0)
    with pytest.raises(DataError):
        quantize(np.array([0.1, bad]), spec, weight=1, rng=_rng())


def test_shape_and_type_are_data_errors():
    spec = QuantizationSpec(bits=8, clip=1.0)
    with pytest.raises(DataError):
        quantize(np.zeros((2, 2)), spec, weight=1, rng=_rng())
    with pytest.raises(DataError):
        quantize(np.array(["a", "b"]), spec, weight=1, rng=_rng())


@pytest.mark.parametrize("weight", [0, -1, 4, True, 1.0])
def test_weight_outside_range_is_value_error(weight):
    spec = QuantizationSpec(bits=8, clip=1.0, max_weight=3)
    with pytest.raises(ValueError, match="weight"):
        quantize(np.zeros(3), spec, weight=weight, rng=_rng())


def test_ring_bits_formula():
    assert ring_bits(quantization_bits=16, max_weight=1, max_clients=1000) == 16 + 0 + 10
    assert ring_bits(quantization_bits=16, max_weight=3, max_clients=1024) == 16 + 2 + 10
    assert ring_bits(quantization_bits=8, max_weight=4, max_clients=1025) == 8 + 2 + 11
    with pytest.raises(ValueError, match=">= 1"):
        ring_bits(quantization_bits=0, max_weight=1, max_clients=2)


def test_ring_bits_never_wraps_at_the_extremes():
    q, w, n = 10, 7, 33
    b = ring_bits(quantization_bits=q, max_weight=w, max_clients=n)
    assert n * w * ((1 << q) - 1) < (1 << b)


def test_spec_validation_and_dequantize_zero_weight():
    with pytest.raises(ValueError, match="bits"):
        QuantizationSpec(bits=49, clip=1.0)
    with pytest.raises(ValueError, match="clip"):
        QuantizationSpec(bits=8, clip=math.inf)
    with pytest.raises(ValueError, match="max_weight"):
        QuantizationSpec(bits=8, clip=1.0, max_weight=0)
    with pytest.raises(DataError):
        dequantize(np.zeros(3, dtype=np.uint64), QuantizationSpec(bits=8, clip=1.0))
