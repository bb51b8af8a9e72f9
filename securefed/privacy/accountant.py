"""Online privacy accounting for one data owner, with a dry run before every spend.

Backed by dp_accounting's RDP accountant (Mironov 2017; Mironov, Talwar, Zhang
2019 for the subsampled Gaussian): composition is a sum over RDP orders, so each
round costs one small vector add, and the epsilon it reports is an upper bound.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import dp_accounting
from dp_accounting import rdp

from securefed.errors import PrivacyBudgetExceeded
from securefed.privacy.events import DpSgdEvent, PrivacyUnit

__all__ = ["Budget", "OwnerAccountant", "calibrate_noise_multiplier"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """An (epsilon, delta) budget for one privacy unit."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError("budget epsilon must be positive and finite")
        if not 0.0 < self.delta < 1.0:
            raise ValueError("budget delta must be in (0, 1)")


class OwnerAccountant:
    """A data owner's running (epsilon, delta) for one privacy unit.

    Args:
        unit: the privacy unit every composed event must carry.
        budget: the owner's budget; :meth:`check` refuses work beyond it.
    """

    def __init__(self, *, unit: PrivacyUnit, budget: Budget) -> None:
        self.unit = unit
        self.budget = budget
        self._accountant = rdp.RdpAccountant()
        self._events: list[DpSgdEvent] = []

    @property
    def events(self) -> tuple[DpSgdEvent, ...]:
        """Every event composed so far, in order."""
        return tuple(self._events)

    def epsilon(self) -> float:
        """Epsilon spent so far at the budget's delta (0 before any event)."""
        if not self._events:
            return 0.0
        return float(self._accountant.get_epsilon(self.budget.delta))

    def epsilon_after(self, event: DpSgdEvent) -> float:
        """Epsilon if ``event`` were composed now (the accountant is not changed)."""
        self._check_unit(event)
        trial = copy.deepcopy(self._accountant)
        trial.compose(event.to_dp_accounting())
        return float(trial.get_epsilon(self.budget.delta))

    def check(self, event: DpSgdEvent) -> float:
        """Dry run: the epsilon after ``event``, or :class:`PrivacyBudgetExceeded`.

        Raises:
            PrivacyBudgetExceeded: composing ``event`` would exceed the budget.
        """
        after = self.epsilon_after(event)
        if after > self.budget.epsilon:
            raise PrivacyBudgetExceeded(
                f"{self.unit.value}-level epsilon would reach {after:.4g} "
                f"> budget {self.budget.epsilon:.4g} (delta {self.budget.delta:g})"
            )
        return after

    def spend(self, event: DpSgdEvent) -> float:
        """Check, then compose ``event``; returns the new epsilon."""
        self.check(event)
        self._accountant.compose(event.to_dp_accounting())
        self._events.append(event)
        return self.epsilon()

    def _check_unit(self, event: DpSgdEvent) -> None:
        if event.unit is not self.unit:
            raise ValueError("event privacy unit does not match the accountant's")


def calibrate_noise_multiplier(
    *, epsilon: float, delta: float, sampling_rate: float, steps: int
) -> float:
    """A noise multiplier within 1e-4 of the smallest whose RDP epsilon is <= ``epsilon``.

    ``steps`` should assume the owner takes part in every planned round (the worst case).
    """
    Budget(epsilon=epsilon, delta=delta)  # validates
    if steps < 1:
        raise ValueError("steps must be at least 1")

    def make_event(sigma: float) -> dp_accounting.DpEvent:
        return DpSgdEvent(
            sampling_rate=sampling_rate,
            noise_multiplier=sigma,
            steps=steps,
            unit=PrivacyUnit.RECORD,
        ).to_dp_accounting()

    sigma = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        make_event,
        epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(0.05, 1.0),
        tol=1e-4,
    )
    return float(sigma)
