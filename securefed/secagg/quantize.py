"""Quantisation of real-valued updates into the secure-aggregation ring.

(protocols/secagg.md §3.7.) A client's update ``x`` (``M`` reals) is

1. clipped to ``[-clip, clip]`` per coordinate: a declared mechanism, and the
   fraction of coordinates it changed is reported, never hidden;
2. mapped affinely onto ``[0, L]`` with ``L = 2^q - 1`` levels;
3. rounded stochastically and without bias (``floor(v) + Bernoulli(frac(v))``)
   with randomness from the injected CSPRNG;
4. multiplied by the client's integer weight ``w`` (1, or a public capped value),
   and ``w`` itself appended as coordinate ``M``.

The server divides the weighted sum by the summed weight and inverts the affine
map. Per coordinate the dequantised mean is unbiased and off by less than one
quantisation step ``2 * clip / L`` (each client's rounding error is below one
step and a weighted mean of such errors is too).

The ring has ``b = q + ceil(log2 w_max) + ceil(log2 n_max)`` bits, so a sum of
``n <= n_max`` inputs each at most ``w_max * L`` can never wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.errors import DataError
from securefed.secagg.primitives import RingArray

__all__ = ["MAX_RING_BITS", "QuantizationSpec", "dequantize", "ring_bits"]

MAX_RING_BITS = 64
"""Ring elements live in uint64 at most; a configuration needing more is refused."""


def ring_bits(*, quantization_bits: int, max_weight: int, max_clients: int) -> int:
    """``b = q + ceil(log2 w_max) + ceil(log2 n_max)``: the bits a sum needs never to wrap."""
    if quantization_bits < 1 or max_weight < 1 or max_clients < 1:
        raise ValueError("quantization_bits, max_weight and max_clients must be >= 1")
    return quantization_bits + math.ceil(math.log2(max_weight)) + math.ceil(math.log2(max_clients))


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizationSpec:
    """Public quantisation parameters, identical for every client of a round.

    Attributes:
        bits: ``q``, so ``L = 2^q - 1`` levels span ``[-clip, clip]``.
        clip: half-width of the representable range (clipping is declared).
        max_weight: public cap ``w_max`` on any client's integer weight.
    """

    bits: int
    clip: float
    max_weight: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 48:
            raise ValueError("quantization bits must be in [1, 48]")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError("clip must be a positive finite number")
        if self.max_weight < 1:
            raise ValueError("max_weight must be >= 1")

    @property
    def levels(self) -> int:
        """``L = 2^q - 1``."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """One quantisation step in update units: ``2 * clip / L``."""
        return 2.0 * self.clip / self.levels


def dequantize(
    total: RingArray,
    spec: QuantizationSpec,
) -> tuple[npt.NDArray[np.float64], int]:
    """Turn an aggregated ring vector (``M`` values then summed weight) into the weighted mean.

    Returns:
        ``(mean update, total weight)``.

    Raises:
        DataError: the total weight is zero.
    """
    total_weight = int(total[-1])
    if total_weight <= 0:
        raise DataError("aggregate has zero total weight")
    mean_levels = total[:-1].astype(np.float64) / total_weight
    return mean_levels * (2.0 * spec.clip / spec.levels) - spec.clip, total_weight
