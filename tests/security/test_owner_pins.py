"""An owner's own secure-aggregation floor and assumptions hold against the coordinator's context.

The round context (threshold, quorum, cohort floor) comes from the coordinator; an
owner pins its own cohort floor and threat model in its signed policy, and its
client refuses a session that undercuts them, in training rounds as in the prior.
"""

from __future__ import annotations

import dataclasses

import pytest

from securefed.config import parse_config
from securefed.errors import InsufficientSharesError, ProtocolError
from securefed.federation import Federation
from securefed.randomness import DeterministicRandom
from securefed.secagg.graph import ThreatModel

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=9, users=30, items=range(60), per_user=(8, 14),
                          popularity=1.0)  # fmt: skip


def _fed(ratings_csv, label):
    config = parse_config(
        {
            "federation": {"rounds": 2, "federation_id": "pins"},
            "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 4},
            "model": {"kind": "mf", "dim": 4},
            "training": {"sampling_rate": 0.2, "learning_rate": 0.5, "negatives": 2},
            "privacy": {"target_epsilon": 8.0},
            "update": {"clip_norm": 5.0},
            "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 3},
        }
    )
    return Federation(config, rng=DeterministicRandom(label.encode().ljust(32, b".")))


def test_owners_send_no_input_in_a_training_session_below_their_floor(ratings_csv, monkeypatch):
    fed = _fed(ratings_csv, "floor")
    assert {o.policy.min_cohort for o in fed.owners.values()} == {3}
    c = fed.coordinator
    # A coordinator that runs a two-client session (its context says min_clients 2).
    monkeypatch.setattr(c, "_params", dataclasses.replace(c.params, min_clients=2))
    monkeypatch.setattr(c, "select_cohort", lambda owners: (1, 2))
    report, _, _, _ = fed.train_round(1)
    assert report is not None
    assert report.result is None
    assert set(report.client_errors) == {1, 2}
    assert all(isinstance(e, InsufficientSharesError) for e in report.client_errors.values())


def test_owners_refuse_a_training_context_with_a_lower_corrupt_fraction(ratings_csv, monkeypatch):
    fed = _fed(ratings_csv, "threat")
    c = fed.coordinator
    weak = dataclasses.replace(c.params, threat=ThreatModel(corrupt_fraction=0.0))
    monkeypatch.setattr(c, "_params", weak)  # a lower threshold and quorum
    report, _, _, _ = fed.train_round(1)
    assert report is not None
    assert report.result is None
    assert set(report.client_errors) == set(fed.owners)
    assert all(isinstance(e, ProtocolError) for e in report.client_errors.values())
