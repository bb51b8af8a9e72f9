"""Owner accountant: epsilon against an independent implementation, and budget refusal."""

from __future__ import annotations

import pytest
from opacus.accountants.analysis import rdp as opacus_rdp

from securefed.errors import PrivacyBudgetExceeded
from securefed.privacy.accountant import Budget, OwnerAccountant, calibrate_noise_multiplier
from securefed.privacy.events import DpSgdEvent, PrivacyUnit

RECORD = PrivacyUnit.RECORD


def _opacus_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    # Opacus' own RDP analysis (an implementation independent of dp_accounting's).
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512]
    rdp = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    eps, _ = opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


@pytest.mark.parametrize(
    ("q", "sigma", "steps"),
    [(0.01, 1.0, 1000), (0.1, 2.0, 50), (0.004, 0.8, 5000), (1.0, 5.0, 10)],
)
def test_epsilon_matches_opacus_rdp(q, sigma, steps):
    acc = OwnerAccountant(unit=RECORD, budget=Budget(epsilon=1e6, delta=1e-5))
    # Two halves composed online equal the whole history.
    half = DpSgdEvent(sampling_rate=q, noise_multiplier=sigma, steps=steps // 2, unit=RECORD)
    rest = DpSgdEvent(
        sampling_rate=q, noise_multiplier=sigma, steps=steps - steps // 2, unit=RECORD
    )
    acc.spend(half)
    eps = acc.spend(rest)
    ref = _opacus_epsilon(q, sigma, steps, 1e-5)
    # Different order grids and conversions: agree to 3% relative.
    assert eps == pytest.approx(ref, rel=0.03)


def test_overspending_round_is_refused_and_changes_nothing():
    acc = OwnerAccountant(unit=RECORD, budget=Budget(epsilon=2.0, delta=1e-5))
    event = DpSgdEvent(sampling_rate=0.01, noise_multiplier=1.0, steps=300, unit=RECORD)
    spent = []
    while acc.epsilon_after(event) <= 2.0:
        spent.append(acc.spend(event))
    with pytest.raises(PrivacyBudgetExceeded, match="budget 2"):
        acc.spend(event)
    assert spent, "at least one round fits"
    assert all(e <= 2.0 for e in spent)
    assert acc.epsilon() == spent[-1]
    assert len(acc.events) == len(spent)


def test_events_with_another_unit_are_rejected():
    acc = OwnerAccountant(unit=PrivacyUnit.PERSON, budget=Budget(epsilon=8, delta=1e-5))
    with pytest.raises(ValueError, match="unit"):
        acc.check(DpSgdEvent(sampling_rate=0.1, noise_multiplier=1.0, steps=1, unit=RECORD))


@pytest.mark.parametrize("eps", [1.0, 3.0, 8.0])
def test_calibration_spends_at_most_the_target(eps):
    q, steps, delta = 0.02, 2000, 1e-5
    sigma = calibrate_noise_multiplier(epsilon=eps, delta=delta, sampling_rate=q, steps=steps)
    budget = Budget(epsilon=1e9, delta=delta)
    got = OwnerAccountant(unit=RECORD, budget=budget).epsilon_after(
        DpSgdEvent(sampling_rate=q, noise_multiplier=sigma, steps=steps, unit=RECORD)
    )
    less = OwnerAccountant(unit=RECORD, budget=budget).epsilon_after(
        DpSgdEvent(sampling_rate=q, noise_multiplier=sigma * 0.99, steps=steps, unit=RECORD)
    )
    assert got <= eps < less


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampling_rate": 0.0, "noise_multiplier": 1.0, "steps": 1},
        {"sampling_rate": 1.5, "noise_multiplier": 1.0, "steps": 1},
        {"sampling_rate": 0.1, "noise_multiplier": 0.0, "steps": 1},
        {"sampling_rate": 0.1, "noise_multiplier": float("nan"), "steps": 1},
        {"sampling_rate": 0.1, "noise_multiplier": 1.0, "steps": -1},
    ],
)
def test_bad_events_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"sampling_rate|noise_multiplier|steps"):
        DpSgdEvent(unit=RECORD, **kwargs)
