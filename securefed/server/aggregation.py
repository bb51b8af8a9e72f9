"""Server-side aggregation API: protected updates in, only the aggregate out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import UnprotectedUpdateError
from securefed.secagg.messages import MaskedInput
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.secagg.server import AggregateResult

__all__ = ["ProtectedUpdate", "SecureAggregate", "aggregate_mean", "require_protected"]

ProtectedUpdate = MaskedInput
"""Every update type the server accepts (encrypted updates join in a later version)."""


def require_protected(update: object) -> ProtectedUpdate:
    """Return ``update`` if it is protected, else raise.

    Raises:
        UnprotectedUpdateError: ``update`` is anything but a protected update
            (an array, a tensor, bytes, a plaintext or quantised update ...).
    """
    if not isinstance(update, MaskedInput):
        raise UnprotectedUpdateError(
            f"the server accepts only protected updates, not {type(update).__name__}"
        )
    return update


@dataclass(frozen=True, slots=True, kw_only=True)
class SecureAggregate:
    """The dequantised weighted mean of the survivors' updates."""

    mean: npt.NDArray[np.float64] = field(repr=False)
    total_weight: int
    survivors: tuple[int, ...]
    dropped: dict[str, tuple[int, ...]]


def aggregate_mean(result: AggregateResult, spec: QuantizationSpec) -> SecureAggregate:
    """Dequantise a secure-aggregation result into the survivors' weighted mean."""
    mean, weight = dequantize(result.total, spec)
    return SecureAggregate(
        mean=mean, total_weight=weight, survivors=result.survivors, dropped=result.dropped
    )
