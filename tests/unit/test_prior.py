"""The item-popularity prior's pure parts: sensitivity, honest shares, calibration, biases."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld

from securefed.prior import (
    CONTRIBUTION_BOUND,
    count_ceiling,
    honest_shares,
    item_log_odds,
    prior_event,
    prior_noise_multiplier,
    prior_plan,
    quantization_range,
    unit_contributions,
)
from securefed.privacy.accountant import Budget
from securefed.privacy.events import PrivacyUnit
from securefed.secagg.graph import ThreatModel, full_parameters

N_ITEMS = 40


def _data(seed: int, users: int = 12, records: int = 90):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, size=records)
    i = rng.integers(0, N_ITEMS, size=records)
    return u.astype(np.int64), i.astype(np.int64)


def test_record_contributions_are_counts_and_one_record_moves_one_count_by_one():
    users, items = _data(0)
    total = unit_contributions(users, items, N_ITEMS, PrivacyUnit.RECORD)
    assert np.array_equal(total, np.bincount(items, minlength=N_ITEMS))
    for k in range(items.size):
        keep = np.arange(items.size) != k
        without = unit_contributions(users[keep], items[keep], N_ITEMS, PrivacyUnit.RECORD)
        assert np.linalg.norm(total - without) == pytest.approx(CONTRIBUTION_BOUND)


@pytest.mark.parametrize("seed", range(5))
def test_removing_one_person_moves_the_sum_by_at_most_the_bound(seed):
    users, items = _data(seed, users=6, records=120)  # persons with repeated items
    total = unit_contributions(users, items, N_ITEMS, PrivacyUnit.PERSON)
    largest = 0.0
    for person in np.unique(users):
        keep = users != person
        without = unit_contributions(users[keep], items[keep], N_ITEMS, PrivacyUnit.PERSON)
        change = float(np.linalg.norm(total - without))
        assert change <= CONTRIBUTION_BOUND + 1e-12
        largest = max(largest, change)
    assert largest == pytest.approx(CONTRIBUTION_BOUND)  # 20 records each: all scaled


def test_a_person_is_scaled_to_unit_norm_and_a_small_one_is_not():
    users = np.array([0, 0, 0, 0, 0, 0, 0, 1], dtype=np.int64)
    items = np.array([2, 2, 2, 5, 5, 5, 5, 7], dtype=np.int64)
    total = unit_contributions(users, items, 10, PrivacyUnit.PERSON)
    assert total[2] == pytest.approx(0.6)
    assert total[5] == pytest.approx(0.8)
    assert total[7] == 1.0
    assert total.sum() == pytest.approx(2.4)


def test_contributions_refuse_bad_input():
    users, items = _data(1)
    with pytest.raises(ValueError, match="outside"):
        unit_contributions(users, items + N_ITEMS, N_ITEMS, PrivacyUnit.RECORD)
    with pytest.raises(ValueError, match="same length"):
        unit_contributions(users[:-1], items, N_ITEMS, PrivacyUnit.RECORD)
    with pytest.raises(ValueError, match="record or a person"):
        unit_contributions(users, items, N_ITEMS, PrivacyUnit.CLIENT)


def test_honest_shares_is_threshold_minus_corrupt_and_never_decreases():
    assert honest_shares(10, ThreatModel(corrupt_fraction=0.2)) == 7 - 2
    for gamma in (0.0, 0.1, 0.2, 0.33, 0.45):
        threat = ThreatModel(corrupt_fraction=gamma, dropout_fraction=0.05)
        values = []
        for n in range(2, 400):
            try:
                graph = full_parameters(n, threat)
            except ValueError:
                continue
            h = honest_shares(n, threat)
            assert h == graph.threshold - graph.corrupt_bound >= 1
            values.append(h)
        assert values == sorted(values)


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("budget_eps", [1.0, 3.0, 8.0])
def test_prior_noise_meets_its_share_by_an_independent_accountant(share, budget_eps):
    budget = Budget(epsilon=budget_eps, delta=1e-5)
    sigma = prior_noise_multiplier(share, budget)
    accountant = pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.GaussianDpEvent(sigma))  # one plain Gaussian release
    eps = accountant.get_epsilon(1e-5)
    target = share * budget.spendable
    assert eps <= target * 1.01 + 1e-3  # RDP (online) is an upper bound on PLD
    assert eps >= 0.8 * target  # and not wastefully loose
    assert prior_event(sigma, PrivacyUnit.RECORD).to_dp_accounting() == (
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(1.0, dp_accounting.GaussianDpEvent(sigma)), 1
        )
    )


def test_prior_noise_refuses_a_share_outside_the_open_interval():
    for share in (0.0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match="share"):
            prior_noise_multiplier(share, Budget(epsilon=8.0, delta=1e-5))


def test_prior_plan_is_one_full_batch_release():
    plan = prior_plan(unit=PrivacyUnit.PERSON, noise_multiplier=2.5, model_hash=b"m" * 32)
    event = plan.dp_event()
    assert plan.round_id == 0
    assert plan.clip_norm == CONTRIBUTION_BOUND
    assert event is not None
    assert (event.sampling_rate, event.steps) == (1.0, 1)
    assert event.noise_multiplier == 2.5
    assert event.unit is PrivacyUnit.PERSON
    assert (
        prior_plan(unit=PrivacyUnit.RECORD, noise_multiplier=0.0, model_hash=b"m" * 32).dp_event()
        is None
    )


def test_item_log_odds_keeps_the_released_order_in_full():
    counts = np.array([-1e9, -50.0, -1.0, -0.5, 0.0, 0.0, 0.3, 1.0, 7.0, 250.0, 1e9])
    biases = item_log_odds(counts, negatives=4)
    assert np.all(np.isfinite(biases))
    assert np.all(np.diff(biases.astype(np.float64))[[0, 1, 2, 3, 5, 6, 7, 8, 9]] > 0)
    assert biases[4] == biases[5]  # equal counts, equal biases
    # Large counts: log(c / (negatives * N / n)), N the sum of the non-negative counts.
    n_pos = counts.clip(0).sum()
    assert biases[9] == pytest.approx(math.log(250.0 / (4 * n_pos / counts.size)), abs=1e-4)


def test_item_log_odds_refuses_bad_input():
    with pytest.raises(ValueError, match="finite"):
        item_log_odds(np.array([1.0, np.nan]), negatives=4)
    with pytest.raises(ValueError, match="non-empty"):
        item_log_odds(np.array([]), negatives=4)
    with pytest.raises(ValueError, match="negatives"):
        item_log_odds(np.array([1.0]), negatives=0)


def test_clipping_counts_at_the_ceiling_keeps_the_sensitivity():
    users, items = _data(2, users=4, records=200)
    ceiling = count_ceiling(2)  # an understated public count: 2 units declared
    assert ceiling == 4.0
    total = np.minimum(unit_contributions(users, items, N_ITEMS, PrivacyUnit.RECORD), ceiling)
    assert total.max() == ceiling  # it binds here
    for k in range(0, items.size, 7):
        keep = np.arange(items.size) != k
        without = np.minimum(
            unit_contributions(users[keep], items[keep], N_ITEMS, PrivacyUnit.RECORD), ceiling
        )
        assert np.linalg.norm(total - without) <= CONTRIBUTION_BOUND
    with pytest.raises(ValueError, match="positive unit count"):
        count_ceiling(0)


def test_quantization_range_covers_the_largest_count_and_the_noise_margin():
    # Two significant digits: 10,499 units are declared as 10,000.
    r = quantization_range(10_000, noise_std=1.0)
    assert r >= 15_000 + 12  # 14,999 units are declared as 10,000 at one significant digit
    assert math.log2(r).is_integer()
    with pytest.raises(ValueError, match="positive unit count"):
        quantization_range(0, noise_std=1.0)
    with pytest.raises(ValueError, match="finite noise"):
        quantization_range(10, noise_std=float("nan"))
