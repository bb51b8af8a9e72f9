"""The client's quantised input: clipping, stochastic rounding and weighting.

(protocols/secagg.md §3.7; the arithmetic is described in
:mod:`securefed.secagg.quantize`.) This module holds a *plaintext* type, so the
server side never imports it (an import-linter contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import DataError
from securefed.randomness import RandomSource
from securefed.secagg.quantize import QuantizationSpec

__all__ = ["QuantizedInput", "quantize"]

_UNIFORM_BITS = 32
"""Stochastic rounding compares the fraction with a 32-bit uniform: bias below 2^-32."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizedInput:
    """A client's quantised, weighted input: ``M`` values then the weight.

    Plaintext: it lives on the client only and is consumed by the client's
    secure-aggregation session. Its ``repr`` shows no values.
    """

    values: npt.NDArray[np.uint64] = field(repr=False)
    weight: int
    clipped_fraction: float
    spec: QuantizationSpec | None = None
    """The spec it was quantised with (set by :func:`quantize`); a session whose
    context names another refuses it."""

    @property
    def length(self) -> int:
        """``M``: the number of update coordinates (the weight excluded)."""
        return int(self.values.shape[0]) - 1


def quantize(
    update: npt.ArrayLike, spec: QuantizationSpec, *, weight: int, rng: RandomSource
) -> QuantizedInput:
    """Clip, scale, stochastically round and weight a real vector.

    Raises:
        DataError: the update is not a finite 1-D real vector.
        ValueError: the weight is not an integer in ``[1, max_weight]``.
    """
    x = np.asarray(update)
    if x.ndim != 1:
        raise DataError("update must be a 1-D vector")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise DataError("update must be real-valued")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise DataError("update contains NaN or infinite values")
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer):
        raise ValueError("weight must be an integer")
    if not 1 <= int(weight) <= spec.max_weight:
        raise ValueError("weight must be in [1, max_weight]")
    m = int(x.shape[0])
    clipped = np.count_nonzero(np.abs(x) > spec.clip)
    scaled = (np.clip(x, -spec.clip, spec.clip) + spec.clip) * (spec.levels / (2.0 * spec.clip))
    np.clip(scaled, 0.0, float(spec.levels), out=scaled)  # guards float rounding at the ends
    floor = np.floor(scaled)
    uniforms = np.frombuffer(rng.random_bytes(4 * m), dtype="<u4")
    threshold = (scaled - floor) * float(1 << _UNIFORM_BITS)
    rounded = floor.astype(np.uint64) + (uniforms < threshold)
    values = np.empty(m + 1, dtype=np.uint64)
    np.multiply(rounded, np.uint64(weight), out=values[:m])
    values[m] = weight
    return QuantizedInput(
        values=values,
        weight=int(weight),
        clipped_fraction=(clipped / m) if m else 0.0,
        spec=spec,
    )
