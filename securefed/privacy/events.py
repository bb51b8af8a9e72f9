"""Privacy events: immutable values that say what a mechanism did (not how to count it).

In the style of dp_accounting's ``DpEvent``: an event type never changes meaning;
a new mechanism gets a new type. Every event names its privacy unit, so a report
can never mix "one record" guarantees with "one person" or "one client" guarantees:
compositions refuse inner events of different units.

Events are frozen, hashable values (usable as cache keys). Accountants that count
them live in :mod:`securefed.privacy.accounting`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

import dp_accounting

__all__ = [
    "ClientGaussianEvent",
    "ComposedEvent",
    "DpSgdEvent",
    "PrivacyEvent",
    "PrivacyUnit",
    "SelfComposedEvent",
    "to_dp_accounting",
]


class PrivacyUnit(Enum):
    """What one unit of protection covers (the neighbouring-dataset relation)."""

    RECORD = "record"
    """One interaction together with its sampled negatives, clipped as one example."""
    PERSON = "person"
    """All records of one person id within one data owner, sampled and clipped as one unit."""
    CLIENT = "client"
    """Everything one data owner contributes (DP-FedAvg style: the whole clipped update)."""


def _check_rate(value: float, name: str) -> None:
    if isinstance(value, bool) or not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1]")


def _check_sigma(value: float) -> None:
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0.0):
        raise ValueError("noise_multiplier must be positive and finite")


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")


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
        _check_rate(self.sampling_rate, "sampling_rate")
        _check_sigma(self.noise_multiplier)
        _check_count(self.steps, "steps")
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientGaussianEvent:
    """``rounds`` rounds of client-level Gaussian noise under Poisson cohort sampling.

    Each round Poisson-samples data owners at rate ``cohort_rate``; each sampled
    owner's whole update is clipped to norm C, and after the secure aggregate is
    unmasked the server adds Gaussian noise of std ``noise_multiplier`` x C
    (DP-FedAvg, McMahan et al. 2018). Accounted as the ``rounds``-fold
    self-composition of the Poisson-subsampled Gaussian mechanism with
    add/remove-one-client adjacency.

    The noise is added centrally, after unmasking: the guarantee holds only if the
    server adds the noise as claimed, i.e. it **trusts the server** (against the
    other clients and anyone who sees the released model, not against the server).
    """

    cohort_rate: float
    noise_multiplier: float
    rounds: int

    def __post_init__(self) -> None:
        _check_rate(self.cohort_rate, "cohort_rate")
        _check_sigma(self.noise_multiplier)
        _check_count(self.rounds, "rounds")

    @property
    def unit(self) -> PrivacyUnit:
        """Always :attr:`PrivacyUnit.CLIENT`."""
        return PrivacyUnit.CLIENT

    def to_dp_accounting(self) -> dp_accounting.DpEvent:
        """The same mechanism as a dp_accounting event."""
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                self.cohort_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
            ),
            self.rounds,
        )


def _check_event(event: object) -> None:
    if not isinstance(event, DpSgdEvent | ClientGaussianEvent | ComposedEvent | SelfComposedEvent):
        raise TypeError(f"not a privacy event: {type(event).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposedEvent:
    """The events in ``events``, each run once (on the same units), in any order.

    Raises:
        TypeError: an inner value is not a privacy event.
        ValueError: no events, or inner events of different privacy units.
    """

    events: tuple[PrivacyEvent, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple):
            raise TypeError("events must be a tuple (events are immutable values)")
        if not self.events:
            raise ValueError("a composition needs at least one event")
        for event in self.events:
            _check_event(event)
        units = {event.unit for event in self.events}
        if len(units) != 1:
            names = ", ".join(sorted(u.value for u in units))
            raise ValueError(f"cannot compose events of different privacy units ({names})")

    @property
    def unit(self) -> PrivacyUnit:
        """The privacy unit every inner event shares."""
        return self.events[0].unit

    def to_dp_accounting(self) -> dp_accounting.DpEvent:
        """The same mechanism as a dp_accounting event."""
        return dp_accounting.ComposedDpEvent([e.to_dp_accounting() for e in self.events])


@dataclass(frozen=True, slots=True, kw_only=True)
class SelfComposedEvent:
    """``event`` run ``count`` times.

    Raises:
        TypeError: ``event`` is not a privacy event.
        ValueError: ``count`` is not a non-negative integer.
    """

    event: PrivacyEvent
    count: int

    def __post_init__(self) -> None:
        _check_event(self.event)
        _check_count(self.count, "count")

    @property
    def unit(self) -> PrivacyUnit:
        """The inner event's privacy unit."""
        return self.event.unit

    def to_dp_accounting(self) -> dp_accounting.DpEvent:
        """The same mechanism as a dp_accounting event."""
        return dp_accounting.SelfComposedDpEvent(self.event.to_dp_accounting(), self.count)


PrivacyEvent: TypeAlias = DpSgdEvent | ClientGaussianEvent | ComposedEvent | SelfComposedEvent
"""Any privacy event an accountant in :mod:`securefed.privacy.accounting` can count."""


def to_dp_accounting(event: PrivacyEvent) -> dp_accounting.DpEvent:
    """``event`` as a dp_accounting ``DpEvent`` (same mechanism, same adjacency).

    Raises:
        TypeError: ``event`` is not a privacy event.
    """
    _check_event(event)
    return event.to_dp_accounting()
