"""Owner accountant: epsilon against an independent implementation, and budget refusal."""

from __future__ import annotations

import dataclasses

import pytest
from opacus.accountants.analysis import rdp as opacus_rdp

from securefed.errors import PrivacyBudgetExceeded
from securefed.privacy import accounting
from securefed.privacy.accountant import (
    Budget,
    BudgetedAccountant,
    OwnerAccountant,
    calibrate_client_noise_multiplier,
    calibrate_noise_multiplier,
)
from securefed.privacy.accounting import Backend, audit_tolerance, epsilon_for
from securefed.privacy.events import (
    ClientGaussianEvent,
    ComposedEvent,
    DpSgdEvent,
    PrivacyUnit,
    SelfComposedEvent,
    to_dp_accounting,
)

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
    budget = Budget(epsilon=2.0, delta=1e-5)
    acc = OwnerAccountant(unit=RECORD, budget=budget)
    event = DpSgdEvent(sampling_rate=0.01, noise_multiplier=1.0, steps=300, unit=RECORD)
    spent = []
    while acc.epsilon_after(event) <= budget.spendable:
        spent.append(acc.spend(event))
    with pytest.raises(PrivacyBudgetExceeded, match=r"margin 0\.02 .*budget 2"):
        acc.spend(event)
    assert spent, "at least one round fits"
    assert all(e + budget.margin <= 2.0 for e in spent)
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


@pytest.mark.parametrize(
    ("epsilon", "margin"), [(0.021, 0.02), (1.0, 0.02), (2.0, 0.02), (8.0, 0.08), (50.0, 0.5)]
)
def test_budget_margin_is_the_audit_tolerance(epsilon, margin):
    budget = Budget(epsilon=epsilon, delta=1e-5)
    assert budget.margin == pytest.approx(margin) == pytest.approx(audit_tolerance(epsilon))
    assert budget.spendable == pytest.approx(epsilon - margin)


@pytest.mark.parametrize("epsilon", [0.01, 0.02])
def test_budget_that_leaves_nothing_to_spend_is_refused(epsilon):
    with pytest.raises(ValueError, match=r"margin.*epsilon > 0\.02"):
        Budget(epsilon=epsilon, delta=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0, "delta": 1e-5},
        {"epsilon": float("inf"), "delta": 1e-5},
        {"epsilon": 1.0, "delta": 0.0},
        {"epsilon": 1.0, "delta": 1.0},
    ],
)
def test_bad_budgets_are_refused(kwargs):
    with pytest.raises(ValueError, match="budget"):
        Budget(**kwargs)


def test_client_level_accountant_takes_client_events_only():
    assert BudgetedAccountant is OwnerAccountant
    acc = BudgetedAccountant(unit=PrivacyUnit.CLIENT, budget=Budget(epsilon=4.0, delta=1e-5))
    event = ClientGaussianEvent(cohort_rate=0.1, noise_multiplier=1.0, rounds=10)
    eps = acc.spend(event)
    assert eps == epsilon_for([event], delta=1e-5, backend=Backend.RDP)
    assert acc.events == (event,)
    with pytest.raises(ValueError, match="unit"):
        acc.check(DpSgdEvent(sampling_rate=0.1, noise_multiplier=1.0, steps=1, unit=RECORD))
    with pytest.raises(TypeError, match="event"):
        acc.check(event.to_dp_accounting())  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", list(Backend))
def test_owner_accountant_backends(backend):
    acc = OwnerAccountant(unit=RECORD, budget=Budget(epsilon=10.0, delta=1e-5), backend=backend)
    event = DpSgdEvent(sampling_rate=0.05, noise_multiplier=1.0, steps=20, unit=RECORD)
    assert acc.backend is backend
    assert acc.spend(event) == epsilon_for([event], delta=1e-5, backend=backend)


def test_dry_run_composes_only_the_new_event(monkeypatch):
    # epsilon_after works on a copy of the running state: it must not replay the history.
    acc = OwnerAccountant(unit=RECORD, budget=Budget(epsilon=1e6, delta=1e-5))
    rounds = [
        DpSgdEvent(sampling_rate=0.01 * (i + 1), noise_multiplier=1.0, steps=5, unit=RECORD)
        for i in range(20)
    ]
    for event in rounds:
        acc.spend(event)
    seen = []
    original = accounting.RdpAccountant._added

    def spy(self, atoms):
        seen.append(atoms)
        original(self, atoms)

    monkeypatch.setattr(accounting.RdpAccountant, "_added", spy)
    probe = DpSgdEvent(sampling_rate=0.5, noise_multiplier=2.0, steps=3, unit=RECORD)
    after = acc.epsilon_after(probe)
    assert seen == [(((0.5, 2.0), 3),)]
    assert after == pytest.approx(
        epsilon_for([*rounds, probe], delta=1e-5, backend=Backend.RDP), rel=1e-12
    )


def test_client_calibration_matches_the_dp_sgd_calibration():
    # Same mechanism, different unit: the same noise multiplier.
    client = calibrate_client_noise_multiplier(
        epsilon=2.0, delta=1e-5, cohort_rate=0.05, rounds=200
    )
    record = calibrate_noise_multiplier(epsilon=2.0, delta=1e-5, sampling_rate=0.05, steps=200)
    assert client == pytest.approx(record, abs=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0},
        {"delta": 1.0},
        {"steps": 0},
        {"sampling_rate": 0.0},
    ],
)
def test_calibration_refuses_bad_targets(kwargs):
    args = {"epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.01, "steps": 100} | kwargs
    with pytest.raises(ValueError, match=r"epsilon|delta|steps|sampling_rate"):
        calibrate_noise_multiplier(**args)


def test_recorded_spends_are_counted_even_over_budget():
    budget = Budget(epsilon=1.0, delta=1e-5)
    acc = OwnerAccountant(unit=RECORD, budget=budget)
    big = DpSgdEvent(sampling_rate=0.1, noise_multiplier=0.8, steps=100, unit=RECORD)
    with pytest.raises(PrivacyBudgetExceeded):
        acc.check(big)
    eps = acc.compose_recorded(big)
    assert eps > budget.epsilon
    assert acc.epsilon() == eps
    assert acc.events == (big,)
    with pytest.raises(ValueError, match="unit"):
        acc.compose_recorded(
            DpSgdEvent(sampling_rate=0.1, noise_multiplier=1.0, steps=1, unit=PrivacyUnit.PERSON)
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cohort_rate": 0.0},
        {"cohort_rate": 1.01},
        {"cohort_rate": True},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": float("inf")},
        {"rounds": -1},
        {"rounds": True},
        {"rounds": 2.0},
    ],
)
def test_bad_client_events_are_refused(kwargs):
    args = {"cohort_rate": 0.1, "noise_multiplier": 1.0, "rounds": 3} | kwargs
    with pytest.raises(ValueError, match=r"cohort_rate|noise_multiplier|rounds"):
        ClientGaussianEvent(**args)


def test_events_are_immutable_hashable_values():
    a = DpSgdEvent(sampling_rate=0.1, noise_multiplier=1.0, steps=3, unit=RECORD)
    b = DpSgdEvent(sampling_rate=0.1, noise_multiplier=1.0, steps=3, unit=RECORD)
    composed = ComposedEvent(events=(a, SelfComposedEvent(event=b, count=2)))
    again = ComposedEvent(events=(b, SelfComposedEvent(event=a, count=2)))
    assert {composed: 1}[again] == 1
    assert composed.unit is RECORD
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.steps = 4  # type: ignore[misc]
    with pytest.raises(TypeError, match="tuple"):
        ComposedEvent(events=[a])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        ComposedEvent(events=())
    with pytest.raises(TypeError, match="event"):
        SelfComposedEvent(event=a.to_dp_accounting(), count=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        SelfComposedEvent(event=a, count=-1)
    with pytest.raises(TypeError, match="event"):
        to_dp_accounting("event")  # type: ignore[arg-type]
