"""Client-level DP (DP-FedAvg with central noise): mechanism, federation budget, ledger, audit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import audit_ledger
from securefed.config import parse_config
from securefed.errors import ConfigError
from securefed.federation import Federation, run_federation
from securefed.ledger import EntryKind, verify_ledger
from securefed.ledger.bodies import client_gaussian_event
from securefed.ledger.canonical import parse_decimal
from securefed.privacy.accounting import Backend, epsilon_for
from securefed.privacy.events import ClientGaussianEvent
from securefed.randomness import DeterministicRandom
from securefed.secagg.client_input import quantize
from securefed.simulation import run_secagg_round

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=5, users=24, items=range(100, 140), per_user=(6, 12),
                          rating=4)  # fmt: skip


def _sections(ratings_csv, **sections):
    base = {
        "federation": {"rounds": 8, "federation_id": "client-dp", "cohort_rate": 0.5},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 6},
        "model": {"kind": "mf", "dim": 4},
        "training": {"sampling_rate": 0.2, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0},
        "client_privacy": {"enabled": True, "noise_multiplier": 4.0, "budget_epsilon": 2.5},
        "update": {"clip_norm": 1.0},
        "secagg": {"quantization": {"bits": 20, "clip": 1.0}, "min_clients": 2},
        "evaluation": {"sampled_negatives": 10, "every": 8},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def test_client_level_dp_needs_poisson_cohorts_a_noise_and_a_budget(ratings_csv):
    with pytest.raises(ConfigError, match="cohort_size"):
        parse_config(_sections(ratings_csv, federation={"cohort_size": 3}))
    with pytest.raises(ConfigError, match="budget_epsilon"):
        parse_config(_sections(ratings_csv, client_privacy={"budget_epsilon": None}))
    with pytest.raises(ConfigError, match="client_privacy"):
        parse_config(_sections(ratings_csv, privacy={"unit": "client"}))


def test_the_server_adds_noise_of_the_stated_scale_to_the_sum(ratings_csv):
    config = parse_config(_sections(ratings_csv, model={"dim": 160}))
    fed = Federation(config, rng=DeterministicRandom(b"n" * 32))
    c = fed.coordinator
    d = c.weights.size
    spec = c.params.quantization
    # Three clients each send the same small update: the released update is the noisy
    # sum divided by the expected cohort size (0.5 x 6 = 3), not by the survivors.
    update = np.full(d, 0.01)
    rng = DeterministicRandom(b"q" * 32)
    inputs = {i: quantize(update, spec, weight=1, rng=rng) for i in (1, 2, 3)}
    plan = c.plan(1, unit=config.privacy.unit, noise_multiplier=fed.noise_multiplier)
    report = run_secagg_round(
        roster=fed.roster,
        identities={i: fed.identities[i] for i in inputs},
        context=c.context(plan),
        inputs=inputs,
    )
    assert report.result is not None
    result = report.result
    before = c.weights.copy()
    outcome = c.apply(1, result)
    residual = outcome.released - 3 * update / c.expected_cohort
    expected_std = config.client_privacy.noise_multiplier * c.sensitivity / c.expected_cohort
    # d coordinates of fixed-seed noise: the sample std is within 5% of the stated one
    # (its relative standard error is 1/sqrt(2d), under 1% here).
    assert d > 5000
    assert np.std(residual) == pytest.approx(expected_std, rel=0.05)
    assert abs(np.mean(residual)) < 5 * expected_std / np.sqrt(d)
    assert np.allclose(c.weights, before + outcome.released.astype(np.float32), atol=1e-6)
    # The sensitivity covers the quantisation slack on top of the clip.
    assert c.sensitivity == pytest.approx(1.0 + spec.step * np.sqrt(d))


@pytest.fixture(scope="module")
def client_run(ratings_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("client-run") / "run"
    config = parse_config(_sections(ratings_csv))
    return out, run_federation(config, out_dir=out, rng=DeterministicRandom(b"f" * 32))


def test_the_federation_budget_stops_the_run_and_the_audit_agrees(client_run):
    out, result = client_run
    assert "client-level budget is exhausted" in result.stop_reason
    ran = len(result.rounds)
    # Accounted without amplification (q = 1): RDP 2.45 after five rounds (+0.025 margin)
    # fits 2.5; six (2.71) do not.
    assert ran == 5
    feds = [r.epsilon_federation for r in result.rounds]
    assert all(e is not None and e <= 2.5 for e in feds)
    assert feds == sorted(feds)
    key = bytes.fromhex((out / "ledger.pub").read_text())
    report = verify_ledger(out / "ledger.db", key)
    assert report.ok
    spends = [e for e in report.entries if e.kind is EntryKind.FEDERATION_SPEND]
    releases = [e for e in report.entries if e.kind is EntryKind.AGGREGATE_RELEASED]
    assert len(spends) == ran
    # Each round's federation spend precedes its release.
    for spend, release in zip(spends, releases, strict=False):
        assert spend.seq < release.seq
    events = [client_gaussian_event(e.fields()) for e in spends]
    assert events[0] == ClientGaussianEvent(cohort_rate=1.0, noise_multiplier=4.0, rounds=1)
    # One more round would have overspent: the independent figure confirms the stop.
    pld_next = epsilon_for([*events, events[0]], delta=1e-5, backend=Backend.PLD)
    recorded = parse_decimal(spends[-1].fields()["epsilon_after"])
    assert recorded <= 2.5
    assert pld_next > 2.5 - 0.25  # close to the budget: the stop was not premature by much
    stop = [e.fields() for e in report.entries if e.kind is EntryKind.BUDGET_EXHAUSTED]
    assert [s["scope"] for s in stop] == ["federation"]
    audit = audit_ledger(out / "ledger.db", key, require_seal=True)
    assert audit.ok
    assert audit.federation is not None
    assert audit.federation.independent <= audit.federation.recorded
    assert audit.federation.budget == 2.5
    assert not audit.federation.over_budget
    metrics = [json.loads(x) for x in Path(out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["epsilon_federation"] == pytest.approx(recorded)


def test_one_flipped_byte_in_any_entry_of_a_run_is_named_by_the_audit(client_run):
    # Every kind a run writes (genesis, plans, mechanisms, spends, countersignatures,
    # federation spends, releases, the budget stop, the seal): a flipped byte inside any
    # entry's body fails verification at exactly that entry.
    out, _ = client_run
    key = bytes.fromhex((out / "ledger.pub").read_text())
    entries = verify_ledger(out / "ledger.db", key).entries
    kinds = {e.kind for e in entries}
    assert {EntryKind.FEDERATION_SPEND, EntryKind.COUNTERSIGNATURE, EntryKind.SEAL,
            EntryKind.BUDGET_EXHAUSTED, EntryKind.AGGREGATE_RELEASED} <= kinds  # fmt: skip
    lines = [e.to_json_line() for e in entries]
    bad = out.parent / "tampered.jsonl"
    for i, line in enumerate(lines):
        at = line.index(b'"body":{') + len(b'"body":{') + 2  # inside the first field name
        changed = line[:at] + bytes([line[at] ^ 0x01]) + line[at + 1 :]
        bad.write_bytes(b"".join([*lines[:i], changed, *lines[i + 1 :]]))
        report = verify_ledger(bad, key)
        assert not report.ok
        assert report.first_bad == i, (i, entries[i].kind, report.reason)
