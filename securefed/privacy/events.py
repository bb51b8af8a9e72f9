"""Privacy events: immutable values that say what a mechanism did (not how to count it).

In the style of dp_accounting's ``DpEvent``: an event type never changes meaning;
a new mechanism gets a new type. Every event names its privacy unit, so a report
can never mix "one record" guarantees with "one person" guarantees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import dp_accounting

__all__ = ["DpSgdEvent", "PrivacyUnit"]


class PrivacyUnit(Enum):
    """What one unit of protection covers (the neighbouring-dataset relation)."""

    RECORD = "record"
    """One interaction together with its sampled negatives, clipped as one example."""
    PERSON = "person"
    """All records of one person id within one data owner, sampled and clipped as one unit."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DpSgdEvent:
    """``steps`` steps of DP-SGD over one data owner's units.

    Each step Poisson-samples units at rate ``sampling_rate``, clips each unit's
    gradient and adds Gaussian noise of std ``noise_multiplier`` x clip norm.
    Abadi et al. 2016; accounted as ``steps``-fold self-composition of the
    Poisson-subsampled Gaussian mechanism (add/remove-one-unit adjacency).
    """

    sampling_rate: float
    noise_multiplier: float
    steps: int
    unit: PrivacyUnit

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sampling_rate) and 0.0 < self.sampling_rate <= 1.0):
            raise ValueError("sampling_rate must be in (0, 1]")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0.0):
            raise ValueError("noise_multiplier must be positive and finite")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError("steps must be a non-negative integer")
        if not isinstance(self.unit, PrivacyUnit):
            raise TypeError("unit must be a PrivacyUnit")

    def to_dp_accounting(self) -> dp_accounting.DpEvent:
        """The same mechanism as a dp_accounting event."""
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
            ),
            self.steps,
        )
