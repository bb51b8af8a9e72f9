"""Neighbour graphs and thresholds (protocols/secagg.md §5)."""

from __future__ import annotations

import hashlib
import math

import pytest

from securefed.secagg.graph import (
    GraphKind,
    ThreatModel,
    choose_parameters,
    full_parameters,
    neighbourhoods,
    sparse_parameters,
)

THREATS = [
    ThreatModel(),
    ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.05),
    ThreatModel(corrupt_fraction=0.1, dropout_fraction=0.2, sigma=30, eta=15),
    ThreatModel(corrupt_fraction=0.0, dropout_fraction=0.1),
    ThreatModel(corrupt_fraction=0.33, dropout_fraction=0.1),
]


@pytest.mark.parametrize("threat", THREATS)
def test_full_threshold_formula(threat):
    for n in range(2, 80):
        corrupt = math.ceil(threat.corrupt_fraction * n)
        expected = (n + corrupt) // 2 + 1
        if expected > n:
            with pytest.raises(ValueError, match="threshold"):
                full_parameters(n, threat)
            continue
        p = full_parameters(n, threat)
        assert p.kind is GraphKind.FULL
        assert p.threshold == expected
        assert p.degree == n - 1
        assert p.holders == n
        # Never-both: n_c corrupt clients plus the server cannot reach t twice.
        assert 2 * p.threshold > n + corrupt


def test_full_parameters_rejects_tiny_cohorts():
    with pytest.raises(ValueError, match="at least 2"):
        full_parameters(1, ThreatModel())


@pytest.mark.parametrize("threat", THREATS[1:4])
def test_sparse_parameters_invariants(threat):
    found = 0
    for n in (10, 20, 40, 80, 150, 300):
        p = sparse_parameters(n, threat)
        if p is None:
            continue
        found += 1
        assert p.kind is GraphKind.SPARSE
        assert p.n == n
        assert p.degree % 2 == 0
        assert 2 <= p.degree < n - 1
        assert p.threshold <= p.degree
        assert 2 * p.threshold > p.degree + 1 + p.corrupt_bound
        # Adversarial exclusion: a client cut off from one side of the ring
        # (k/2 peers gone) sees at most k/2 + 1 + c peers and must refuse.
        assert p.threshold > p.degree // 2 + 1 + p.corrupt_bound
        assert p.security_log2 <= -(threat.sigma + 1) + 1e-9
        assert p.correctness_log2 <= -threat.eta + 1e-9
    assert found > 0


def test_strong_assumptions_leave_no_sparse_graph():
    # gamma = 0.2 with delta = 0.1: t >= k/2 + c + 2 and t <= k - B cannot both hold.
    assert sparse_parameters(500, ThreatModel()) is None
    assert choose_parameters(500, ThreatModel()).kind is GraphKind.FULL


def test_sparse_degree_grows_sublinearly():
    threat = ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.1)
    small, large = sparse_parameters(300, threat), sparse_parameters(3000, threat)
    assert small is not None
    assert large is not None
    # The fraction of the cohort each client talks to shrinks as the cohort grows.
    assert large.degree / 3000 < small.degree / 300 < 1


def test_choose_parameters():
    threat = ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.05)
    assert choose_parameters(40, threat, full_up_to=100).kind is GraphKind.FULL
    assert choose_parameters(40, threat, full_up_to=10).kind is GraphKind.SPARSE
    assert choose_parameters(40, threat, kind=GraphKind.FULL).kind is GraphKind.FULL
    assert choose_parameters(5, threat, full_up_to=0).kind is GraphKind.FULL  # fallback
    # A forced sparse graph that cannot meet the threat model falls back to the
    # full graph (never less secure) instead of failing the round.
    assert choose_parameters(5, threat, kind=GraphKind.SPARSE).kind is GraphKind.FULL


def _seed(i: int) -> bytes:
    return hashlib.sha256(f"graph-seed-{i}".encode()).digest()


@pytest.mark.parametrize("n", [12, 20, 40, 64])
def test_sparse_neighbourhoods_symmetric_regular_deterministic(n):
    threat = ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.05)
    params = sparse_parameters(n, threat)
    assert params is not None
    cohort = [7 * i + 3 for i in range(n)]
    graph = neighbourhoods(cohort, params, _seed(0))
    assert set(graph) == set(cohort)
    for u, near in graph.items():
        assert len(near) == params.degree
        assert u not in near
        assert list(near) == sorted(near)
        for v in near:
            assert u in graph[v]
    assert neighbourhoods(list(reversed(cohort)), params, _seed(0)) == graph
    assert neighbourhoods(cohort, params, _seed(1)) != graph


def test_full_neighbourhoods():
    params = full_parameters(5, ThreatModel())
    graph = neighbourhoods([9, 2, 5, 7, 1], params, _seed(0))
    assert graph[5] == (1, 2, 7, 9)
    assert all(len(v) == 4 for v in graph.values())
    with pytest.raises(ValueError, match="distinct"):
        neighbourhoods([1, 1, 2, 3, 4], params, _seed(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"corrupt_fraction": 0.5},
        {"dropout_fraction": 1.0},
        {"corrupt_fraction": 0.4, "dropout_fraction": 0.6},
        {"sigma": 0},
        {"eta": 257},
    ],
)
def test_threat_model_validation(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ThreatModel(**kwargs)


def test_a_context_is_at_least_a_pinned_threat_model_only_if_no_assumption_is_weaker():
    pinned = ThreatModel(corrupt_fraction=0.2, sigma=40)
    assert ThreatModel(corrupt_fraction=0.2, sigma=40).at_least(pinned)
    assert ThreatModel(corrupt_fraction=0.3, sigma=64, dropout_fraction=0.0).at_least(pinned)
    assert not ThreatModel(corrupt_fraction=0.1, sigma=64).at_least(pinned)  # lower t, quorum
    assert not ThreatModel(corrupt_fraction=0.3, sigma=20).at_least(pinned)
