"""Online privacy accounting for one privacy unit, with a dry run before every spend.

A budget is enforced on the online backend's epsilon (an upper bound; RDP by
default, :data:`~securefed.privacy.accounting.ONLINE_DEFAULT`) plus a margin no
smaller than the audit tolerance, so that an independent backend re-accounting
the same events (:func:`~securefed.privacy.accounting.independent_backend`)
cannot find the budget exceeded merely because the two implementations differ.

Composition is incremental: each event's contribution is cached
(:mod:`securefed.privacy.accounting`), and a dry run composes one event into a
cheap copy of the running state rather than recomputing the history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy import optimize

from securefed.errors import PrivacyBudgetExceeded
from securefed.privacy.accounting import (
    ONLINE_DEFAULT,
    Accountant,
    Backend,
    audit_tolerance,
    epsilon_for,
    new_accountant,
)
from securefed.privacy.events import (
    ClientGaussianEvent,
    ComposedEvent,
    DpSgdEvent,
    PrivacyEvent,
    PrivacyUnit,
    SelfComposedEvent,
)

__all__ = [
    "Budget",
    "BudgetedAccountant",
    "OwnerAccountant",
    "calibrate_client_noise_multiplier",
    "calibrate_noise_multiplier",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """An (epsilon, delta) budget for one privacy unit.

    Only :attr:`spendable` (epsilon less the audit margin) can be spent, so a
    budget must exceed its margin: epsilon > 0.02.
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError("budget epsilon must be positive and finite")
        if isinstance(self.delta, bool) or not 0.0 < self.delta < 1.0:
            raise ValueError("budget delta must be in (0, 1)")
        if self.spendable <= 0:
            raise ValueError(
                f"budget epsilon {self.epsilon:g} leaves nothing to spend: spends are "
                f"enforced with an audit margin of {self.margin:g} (max(1% of epsilon, "
                "0.02)), so a budget needs epsilon > 0.02"
            )

    @property
    def margin(self) -> float:
        """The audit tolerance kept in reserve: ``max(0.01 * epsilon, 0.02)``."""
        return audit_tolerance(self.epsilon)

    @property
    def spendable(self) -> float:
        """Epsilon the online backend may reach: ``epsilon - margin``."""
        return self.epsilon - self.margin


def _is_event(event: object) -> bool:
    return isinstance(event, DpSgdEvent | ClientGaussianEvent | ComposedEvent | SelfComposedEvent)


class OwnerAccountant:
    """A running (epsilon, delta) for one privacy unit, enforced against a budget.

    Used by a data owner for its record- or person-level budget, and by a
    federation for client-level budgets (``unit=PrivacyUnit.CLIENT``).

    Args:
        unit: the privacy unit every composed event must carry.
        budget: the budget; :meth:`check` refuses work that would take the
            online epsilon plus :attr:`Budget.margin` beyond ``budget.epsilon``.
        backend: the online accounting backend.
    """

    def __init__(
        self, *, unit: PrivacyUnit, budget: Budget, backend: Backend = ONLINE_DEFAULT
    ) -> None:
        if not isinstance(unit, PrivacyUnit):
            raise TypeError("unit must be a PrivacyUnit")
        if not isinstance(budget, Budget):
            raise TypeError("budget must be a Budget")
        self.unit = unit
        self.budget = budget
        self.backend = backend
        self._accountant: Accountant = new_accountant(backend)
        self._events: list[PrivacyEvent] = []

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every event composed so far, in order."""
        return tuple(self._events)

    def epsilon(self) -> float:
        """Epsilon spent so far at the budget's delta (0 before any event)."""
        return self._accountant.epsilon(self.budget.delta)

    def epsilon_after(self, event: PrivacyEvent) -> float:
        """Epsilon if ``event`` were composed now (the accountant is not changed)."""
        return self._trial(event)[1]

    def check(self, event: PrivacyEvent) -> float:
        """Dry run: the epsilon after ``event``, or :class:`PrivacyBudgetExceeded`.

        Changes no state.

        Raises:
            PrivacyBudgetExceeded: the epsilon after ``event`` plus the budget's
                margin would exceed the budget.
        """
        return self._checked(event)[1]

    def spend(self, event: PrivacyEvent) -> float:
        """Check, then compose ``event``; returns the new epsilon.

        Raises:
            PrivacyBudgetExceeded: as :meth:`check`; nothing is composed then.
        """
        trial, after = self._checked(event)
        self._accountant = trial
        self._events.append(event)
        return after

    def compose_recorded(self, event: PrivacyEvent) -> float:
        """Compose an event that already happened (e.g. restored from the ledger).

        No budget check: a spend that took place must be counted even if it
        leaves the accountant over budget (later :meth:`check` calls then refuse).
        Returns the new epsilon.

        Raises:
            TypeError: ``event`` is not a privacy event.
            ValueError: ``event``'s privacy unit is not the accountant's.
        """
        trial, after = self._trial(event)
        self._accountant = trial
        self._events.append(event)
        return after

    def _checked(self, event: PrivacyEvent) -> tuple[Accountant, float]:
        trial, after = self._trial(event)
        margin = self.budget.margin
        if after + margin > self.budget.epsilon:
            raise PrivacyBudgetExceeded(
                f"{self.unit.value}-level epsilon would reach {after:.4g} "
                f"(+ audit margin {margin:.4g} = {after + margin:.4g}) "
                f"> budget {self.budget.epsilon:.4g} (delta {self.budget.delta:g}, "
                f"{self.backend.value} accounting)"
            )
        return trial, after

    def _trial(self, event: PrivacyEvent) -> tuple[Accountant, float]:
        if not _is_event(event):
            raise TypeError(f"not a privacy event: {type(event).__name__}")
        if event.unit is not self.unit:
            raise ValueError(
                f"event privacy unit {event.unit.value!r} does not match the "
                f"accountant's {self.unit.value!r}"
            )
        trial = self._accountant.copy()
        trial.compose(event)
        return trial, trial.epsilon(self.budget.delta)


BudgetedAccountant = OwnerAccountant
"""The same class under a role-neutral name (owners and federations both use it)."""


_SIGMA_FLOOR = 0.05
"""Smallest noise multiplier calibration considers (below it the loss range explodes)."""


def _calibrate(
    epsilon_of: Callable[[float], float], *, epsilon: float, tol: float, guess: float
) -> float:
    """The smallest sigma (within ``tol``) with ``epsilon_of(sigma) <= epsilon``.

    Brent's method on ``epsilon_of(sigma) - epsilon`` (decreasing in sigma), then
    a guard so that the returned sigma has itself been evaluated feasible.
    """
    values: dict[float, float] = {}

    def gap(sigma: float) -> float:
        if sigma not in values:
            values[sigma] = epsilon_of(sigma) - epsilon
        return min(values[sigma], 1e9)  # keep Brent's interpolation finite

    hi, lo = guess, 0.0
    while gap(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError("calibration failed: no noise multiplier up to 1e6 meets the target")
    if lo == 0.0:
        lo = hi
        while gap(lo) <= 0:
            if lo <= _SIGMA_FLOOR:
                raise ValueError(
                    f"calibration failed: the target is met even at noise multiplier {_SIGMA_FLOOR}"
                )
            hi, lo = lo, max(lo * 0.7, _SIGMA_FLOOR)
    root = float(optimize.brentq(gap, lo, hi, xtol=tol / 2))
    for candidate in (root, root + tol / 2):
        if gap(candidate) <= 0:
            return candidate
    # Not monotone at this resolution (numerical noise): bisect keeping the invariant
    # gap(lo) > 0 >= gap(hi).
    lo, hi = max(s for s, v in values.items() if v > 0), min(s for s, v in values.items() if v <= 0)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
    return hi


def _check_target(epsilon: float, delta: float) -> None:
    if isinstance(epsilon, bool) or not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError("target epsilon must be positive and finite")
    if isinstance(delta, bool) or not 0.0 < delta < 1.0:
        raise ValueError("delta must be in (0, 1)")


def _calibrate_for(
    make_event: Callable[[float], PrivacyEvent],
    *,
    epsilon: float,
    delta: float,
    backend: Backend,
) -> float:
    def epsilon_of_backend(b: Backend) -> Callable[[float], float]:
        return lambda sigma: epsilon_for([make_event(sigma)], delta=delta, backend=b)

    rdp_sigma = _calibrate(epsilon_of_backend(Backend.RDP), epsilon=epsilon, tol=1e-4, guess=1.0)
    if backend is Backend.RDP:
        return rdp_sigma
    # PLD and PRV are at most RDP, so RDP's sigma is a feasible start: fewer of
    # their (costlier) evaluations.
    return _calibrate(epsilon_of_backend(backend), epsilon=epsilon, tol=1e-4, guess=rdp_sigma)


def calibrate_noise_multiplier(
    *,
    epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    backend: Backend = ONLINE_DEFAULT,
    event_factory: Callable[[float], PrivacyEvent] | None = None,
) -> float:
    """A noise multiplier within 1e-4 of the smallest whose epsilon is <= ``epsilon``.

    ``steps`` should assume the owner takes part in every planned round (the worst
    case). Callers that enforce a budget margin pass ``epsilon=budget.spendable``.

    Args:
        epsilon: target epsilon.
        delta: target delta.
        sampling_rate: Poisson sampling rate of each DP-SGD step.
        steps: number of DP-SGD steps.
        backend: the backend whose epsilon must meet the target.
        event_factory: builds the event for a noise multiplier; default
            ``DpSgdEvent(sampling_rate, sigma, steps, RECORD)`` (the unit does not
            change the epsilon).

    Raises:
        ValueError: a bad target, rate or step count, or no noise multiplier in
            [0.05, 1e6] brackets the target.
    """
    _check_target(epsilon, delta)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be at least 1")
    DpSgdEvent(  # validates the rate before any search
        sampling_rate=sampling_rate, noise_multiplier=1.0, steps=steps, unit=PrivacyUnit.RECORD
    )

    def dp_sgd(sigma: float) -> PrivacyEvent:
        return DpSgdEvent(
            sampling_rate=sampling_rate,
            noise_multiplier=sigma,
            steps=steps,
            unit=PrivacyUnit.RECORD,
        )

    make_event = dp_sgd if event_factory is None else event_factory
    return _calibrate_for(make_event, epsilon=epsilon, delta=delta, backend=backend)


def calibrate_client_noise_multiplier(
    *,
    epsilon: float,
    delta: float,
    cohort_rate: float,
    rounds: int,
    backend: Backend = ONLINE_DEFAULT,
) -> float:
    """The client-level noise multiplier (within 1e-4 of the smallest) meeting ``epsilon``.

    For :class:`~securefed.privacy.events.ClientGaussianEvent` over ``rounds``
    rounds at cohort rate ``cohort_rate`` (worst case: the client is eligible in
    every round).

    Raises:
        ValueError: a bad target, rate or round count.
    """
    _check_target(epsilon, delta)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError("rounds must be at least 1")
    ClientGaussianEvent(cohort_rate=cohort_rate, noise_multiplier=1.0, rounds=rounds)

    def make_event(sigma: float) -> PrivacyEvent:
        return ClientGaussianEvent(cohort_rate=cohort_rate, noise_multiplier=sigma, rounds=rounds)

    return _calibrate_for(make_event, epsilon=epsilon, delta=delta, backend=backend)
