"""The plaintext model update: the one type the server side must never see.

An import-linter contract (pyproject.toml) and a test keep ``securefed.server``
from importing this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import DataError
from securefed.randomness import OsRandom, RandomSource
from securefed.secagg.client_input import QuantizedInput, quantize
from securefed.secagg.quantize import QuantizationSpec

__all__ = ["PlaintextUpdate", "quantize_update"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaintextUpdate:
    """Named update tensors (trained minus received parameters). Never leaves the client.

    Its ``repr`` lists names and shapes only.
    """

    tensors: Mapping[str, npt.NDArray[np.floating]] = field(repr=False)

    def __post_init__(self) -> None:
        for name, value in self.tensors.items():
            if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                raise DataError(f"update tensor {name!r} must be a floating-point array")

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in sorted(self.tensors.items()))
        return f"PlaintextUpdate({shapes})"

    def flatten(self) -> npt.NDArray[np.float64]:
        """Concatenate the tensors in ascending name order (the model-hash order)."""
        names = sorted(self.tensors, key=lambda s: s.encode("utf-8"))
        if not names:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate([self.tensors[n].astype(np.float64).ravel() for n in names])


def quantize_update(
    update: PlaintextUpdate,
    spec: QuantizationSpec,
    *,
    weight: int = 1,
    rng: RandomSource | None = None,
) -> QuantizedInput:
    """Flatten and quantise an update for the secure-aggregation session."""
    return quantize(update.flatten(), spec, weight=weight, rng=rng or OsRandom())
