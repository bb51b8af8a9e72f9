"""Leave-one-out ranking metrics: hand-computed cases, ties, exclusion, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securefed.evaluation import (
    SAMPLED_NEGATIVES,
    IntegerSource,
    MetricSums,
    NumpyIntegers,
    auc_from_ranks,
    candidates_full,
    hit_rate_at,
    ndcg_at,
    ranks_full,
    ranks_sampled,
    sample_negatives,
)


def _ints(seed: int) -> NumpyIntegers:
    return NumpyIntegers(np.random.default_rng(seed))


# --- ranks --------------------------------------------------------------------------------


def test_ranks_sampled_hand_computed() -> None:
    pos = np.array([5.0, 0.0, 1.0])
    neg = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],  # all below: rank 0
            [1.0, 2.0, 3.0, 4.0],  # all above: rank 4
            [0.0, 2.0, 0.5, 3.0],  # two above: rank 2
        ]
    )
    np.testing.assert_array_equal(ranks_sampled(pos, neg), [0, 4, 2])
    assert ranks_sampled(pos, neg).dtype == np.int64


def test_ties_count_against_the_positive() -> None:
    np.testing.assert_array_equal(ranks_sampled([1.0], [[1.0, 1.0, 0.0]]), [2])
    # A constant scorer gets the worst rank under both protocols.
    np.testing.assert_array_equal(ranks_sampled(np.zeros(2), np.zeros((2, 99))), [99, 99])
    scores = np.zeros((1, 6))
    np.testing.assert_array_equal(ranks_full(scores, [3], [np.array([0])]), [4])


def test_ranks_reject_nan_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranks_sampled([np.nan], [[0.0]])
    with pytest.raises(ValueError, match="NaN"):
        ranks_full([[0.0, np.nan]], [0], [[]])
    with pytest.raises(ValueError, match="rows of negatives"):
        ranks_sampled([0.0, 1.0], [[0.0]])
    with pytest.raises(ValueError, match="dimension"):
        ranks_sampled([[0.0]], [[0.0]])


def test_ranks_full_exclusion() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.8, 0.2],
            [0.9, 0.1, 0.5, 0.8, 0.2],
        ]
    )
    positives = np.array([2, 2])
    # Without exclusion item 2 (0.5) is beaten by items 0 and 3.
    np.testing.assert_array_equal(ranks_full(scores, positives, [[], []]), [2, 2])
    # User 0 excludes item 0, which outscored the positive: it no longer counts.
    # User 1 excludes items below the positive (and lists one twice): no change.
    np.testing.assert_array_equal(ranks_full(scores, positives, [[0], [1, 4, 4]]), [1, 2])
    np.testing.assert_array_equal(candidates_full(5, [[0], [1, 4, 4]]), [4, 3])


def test_ranks_full_rejects_bad_exclusion() -> None:
    scores = np.zeros((2, 4))
    with pytest.raises(ValueError, match="also in"):
        ranks_full(scores, [1, 2], [[1], []])
    with pytest.raises(ValueError, match="outside"):
        ranks_full(scores, [1, 2], [[4], []])
    with pytest.raises(ValueError, match="entries for"):
        ranks_full(scores, [1, 2], [[0]])
    with pytest.raises(ValueError, match="positives"):
        ranks_full(scores, [1, 5], [[], []])
    with pytest.raises(ValueError, match="integer"):
        ranks_full(scores, [1, 2], [[0.5], []])


def test_ranks_full_matches_a_plain_loop() -> None:
    gen = np.random.default_rng(5)
    n_users, n_items = 30, 25
    scores = gen.integers(0, 6, size=(n_users, n_items)).astype(float)  # many ties
    positives = gen.integers(0, n_items, size=n_users)
    exclude = []
    for u in range(n_users):
        drawn = gen.integers(0, n_items, size=gen.integers(0, 10))
        exclude.append(drawn[drawn != positives[u]])
    expected = []
    for u in range(n_users):
        banned = set(exclude[u].tolist()) | {int(positives[u])}
        expected.append(
            sum(
                1
                for i in range(n_items)
                if i not in banned and scores[u, i] >= scores[u, positives[u]]
            )
        )
    np.testing.assert_array_equal(ranks_full(scores, positives, exclude), expected)
    np.testing.assert_array_equal(
        candidates_full(n_items, exclude),
        [n_items - len(set(e.tolist())) for e in exclude],
    )


# --- metrics -------------------------------------------------------------------------------


def test_hit_rate_and_ndcg_hand_computed() -> None:
    ranks = np.array([0, 9, 10, 3])
    np.testing.assert_array_equal(hit_rate_at(ranks), [1.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(
        ndcg_at(ranks), [1.0, 1 / math.log2(11), 0.0, 1 / math.log2(5)], rtol=1e-15
    )
    np.testing.assert_array_equal(hit_rate_at(ranks, k=1), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(ndcg_at(ranks, k=4), [1.0, 0.0, 0.0, 1 / math.log2(5)])
    with pytest.raises(ValueError, match="k must"):
        hit_rate_at(ranks, k=0)
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at([-1])
    with pytest.raises(ValueError, match="integer"):
        ndcg_at([0.5])


def test_auc() -> None:
    np.testing.assert_array_equal(auc_from_ranks([0, 99, 33], 100), [1.0, 0.0, 1 - 33 / 99])
    np.testing.assert_array_equal(auc_from_ranks([0, 3], np.array([2, 7])), [1.0, 0.5])
    with pytest.raises(ValueError, match="at least 2"):
        auc_from_ranks([0], 1)
    with pytest.raises(ValueError, match="not below"):
        auc_from_ranks([100], 100)


def test_auc_perfect_and_random_rankers() -> None:
    gen = np.random.default_rng(0)
    n_users, k = 2000, SAMPLED_NEGATIVES
    neg = gen.normal(size=(n_users, k))
    perfect = ranks_sampled(neg.max(axis=1) + 1.0, neg)
    np.testing.assert_array_equal(auc_from_ranks(perfect, k + 1), np.ones(n_users))
    random = ranks_sampled(gen.normal(size=n_users), neg)
    # Per-user AUC of a random ranker is uniform on {0, 1/99, ..., 1}: sd 0.29 / sqrt(2000).
    assert abs(auc_from_ranks(random, k + 1).mean() - 0.5) < 0.02
    assert abs(hit_rate_at(random).mean() - 0.10) < 0.02


# --- MetricSums ----------------------------------------------------------------------------


def _sums() -> MetricSums:
    return MetricSums.from_ranks(
        sampled=[0, 9, 50], full=[3, 200, 10], full_candidates=[1000, 900, 500]
    )


def test_metric_sums_from_ranks_and_means() -> None:
    sums = _sums()
    assert sums.users == 3
    assert sums.sampled_hr10 == 2.0
    assert sums.sampled_ndcg10 == pytest.approx(1 + 1 / math.log2(11))
    assert sums.sampled_auc == pytest.approx(1 + (1 - 9 / 99) + (1 - 50 / 99))
    assert sums.full_hr10 == 1.0
    assert sums.full_ndcg10 == pytest.approx(1 / math.log2(5))
    assert sums.full_auc == pytest.approx((1 - 3 / 999) + (1 - 200 / 899) + (1 - 10 / 499))
    means = sums.means()
    assert list(means) == list(MetricSums.ORDER[1:])
    assert means["sampled_hr10"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no users"):
        MetricSums().means()


def test_metric_sums_vector_round_trip_and_addition() -> None:
    a = _sums()
    b = MetricSums.from_ranks(sampled=[1], full=[0], full_candidates=50)
    vector = a.to_vector()
    assert vector.dtype == np.float64
    assert vector.shape == (7,)
    assert vector[0] == 3.0
    assert MetricSums.from_vector(vector) == a
    total = a + b
    assert total.users == 4
    np.testing.assert_allclose(total.to_vector(), a.to_vector() + b.to_vector())
    assert MetricSums.from_vector(a.to_vector() + b.to_vector()) == total
    assert a + MetricSums.zero() == a
    assert MetricSums.zero().to_vector().tolist() == [0.0] * 7


def test_metric_sums_validation() -> None:
    with pytest.raises(ValueError, match="values"):
        MetricSums.from_vector(np.zeros(6))
    with pytest.raises(ValueError, match="whole number"):
        MetricSums.from_vector([2.5, 0, 0, 0, 0, 0, 0])
    # After quantised aggregation the caller states the error bound of the count.
    noisy = [3.0004, 1.9998, 1.2, 2.1, 1.0, 0.4, 2.9]
    with pytest.raises(ValueError, match="whole number"):
        MetricSums.from_vector(noisy)
    assert MetricSums.from_vector(noisy, count_tolerance=1e-3).users == 3
    with pytest.raises(ValueError, match="count_tolerance"):
        MetricSums.from_vector(noisy, count_tolerance=0.5)
    with pytest.raises(ValueError, match="non-negative"):
        MetricSums(users=-1)
    with pytest.raises(ValueError, match="finite"):
        MetricSums(users=1, full_auc=math.inf)
    with pytest.raises(ValueError, match="same users"):
        MetricSums.from_ranks(sampled=[0], full=[0, 1], full_candidates=10)
    with pytest.raises(ValueError, match="k=5"):
        MetricSums.from_ranks(sampled=[0], full=[0], full_candidates=10, k=5)
    with pytest.raises(ValueError, match="not below"):
        MetricSums.from_ranks(sampled=[100], full=[0], full_candidates=10)


# --- negative sampling ---------------------------------------------------------------------


def test_numpy_adapter_is_an_integer_source() -> None:
    source = _ints(0)
    assert isinstance(source, IntegerSource)
    draws = source.integers(1000, 7)
    assert draws.dtype == np.int64
    assert draws.min() == 0
    assert draws.max() == 6


def test_sample_negatives_avoids_excluded_and_duplicates() -> None:
    gen = np.random.default_rng(1)
    source = _ints(2)
    n_items = 300
    for _ in range(50):
        exclude = np.unique(gen.integers(0, n_items, size=gen.integers(0, 150)))
        negatives = sample_negatives(source, n_items, exclude)
        assert negatives.dtype == np.int64
        assert negatives.shape == (SAMPLED_NEGATIVES,)
        assert np.unique(negatives).size == SAMPLED_NEGATIVES
        assert not np.isin(negatives, exclude).any()
        assert negatives.min() >= 0
        assert negatives.max() < n_items


def test_sample_negatives_takes_every_candidate_when_k_equals_them() -> None:
    exclude = np.array([0, 2, 3, 9])
    negatives = sample_negatives(_ints(3), 10, exclude, k=6)
    np.testing.assert_array_equal(negatives, [1, 4, 5, 6, 7, 8])


def test_sample_negatives_is_uniform() -> None:
    source = _ints(4)
    exclude = np.array([1, 4, 5])
    counts = np.zeros(10)
    trials = 4000
    for _ in range(trials):
        counts[sample_negatives(source, 10, exclude, k=2)] += 1
    allowed = np.setdiff1d(np.arange(10), exclude)
    assert counts[exclude].sum() == 0
    # Each allowed item appears with probability 2/7; binomial sd about 29.
    np.testing.assert_allclose(counts[allowed], trials * 2 / 7, atol=130)


def test_sample_negatives_is_reproducible() -> None:
    exclude = np.array([3, 8])
    first = sample_negatives(_ints(9), 500, exclude)
    np.testing.assert_array_equal(first, sample_negatives(_ints(9), 500, exclude))


def test_sample_negatives_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="only 5 candidate"):
        sample_negatives(_ints(0), 10, np.arange(5), k=6)
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_negatives(_ints(0), 200, np.array([5, 3]))
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_negatives(_ints(0), 200, np.array([3, 3]))
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_negatives(_ints(0), 200, np.array([200]))
    with pytest.raises(ValueError, match="k must"):
        sample_negatives(_ints(0), 200, np.array([]), k=0)

    class Broken:
        def integers(self, n: int, high: int) -> np.ndarray:
            return np.full(n, high, dtype=np.int64)

    with pytest.raises(ValueError, match="out of range"):
        sample_negatives(Broken(), 200, np.array([], dtype=np.int64))
