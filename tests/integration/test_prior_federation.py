"""The item-popularity prior (round 0) in a simulated federation: ledger, audit, noise, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from securefed.audit import audit_ledger
from securefed.config import parse_config
from securefed.errors import (
    ConfigError,
    InsufficientSharesError,
    PolicyViolation,
    PrivacyBudgetExceeded,
    ProtocolError,
)
from securefed.federation import Federation, prior_noise, run_federation
from securefed.ledger import EntryKind, verify_ledger
from securefed.ledger.bodies import dp_sgd_event
from securefed.ledger.canonical import parse_uint
from securefed.prior import PRIOR_PROCEDURE_HASH, honest_shares, item_log_odds, prior_plan
from securefed.privacy.accounting import Backend, epsilon_for
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import ThreatModel
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.simulation import run_secagg_round

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

THREAT = ThreatModel()  # the configuration's default secure-aggregation assumptions
H = 2  # t - n_c of a full graph of 3 owners at corrupt fraction 0.2 (t = 3, n_c = 1)


def _plan(fed):
    """Round 0's plan as the coordinator sends it (record level, the calibrated noise)."""
    return prior_plan(
        unit=PrivacyUnit.RECORD,
        noise_multiplier=fed.prior_noise_multiplier,
        model_hash=fed.model_hash,
    )


def _session(fed, plan, *, divisor=H, clip=1024.0, bits=24, graph="full", min_clients=3):
    """A round-0 context as the coordinator builds it (overridable, to build bad ones)."""
    from securefed.prior import session_hash
    from securefed.secagg.context import SecAggParams
    from securefed.secagg.graph import GraphKind

    params = SecAggParams(
        quantization=QuantizationSpec(bits=bits, clip=clip, max_weight=1),
        vector_length=fed.split.n_items,
        max_clients=16,
        threat=THREAT,
        graph=GraphKind.FULL if graph == "full" else None,
        min_clients=min_clients,
    )
    return RoundContext(
        federation_id="prior-fed",
        round_id=0,
        model_hash=session_hash(plan, divisor),
        roster_hash=fed.roster.digest(),
        params=params,
    )


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=5, users=30, items=range(100, 160), per_user=(8, 16),
                          popularity=1.0)  # fmt: skip


def _config(ratings_csv, **sections):
    base = {
        "federation": {"rounds": 2, "federation_id": "prior-fed"},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 3},
        "model": {"kind": "mf", "dim": 8},
        "training": {"sampling_rate": 0.15, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0},
        "prior": {"enabled": True, "epsilon_share": 0.3},
        "update": {"clip_norm": 5.0},
        "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
        "evaluation": {"sampled_negatives": 20, "every": 2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return parse_config(base)


def _fed(config, label="prior"):
    return Federation(config, rng=DeterministicRandom(label.encode().ljust(32, b".")))


@pytest.fixture(scope="module")
def finished(ratings_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = _config(ratings_csv)
    result = run_federation(config, out_dir=out, rng=DeterministicRandom(b"p" * 32))
    return config, result, out


def test_the_prior_is_round_zero_of_the_ledger_and_the_audit_passes(finished):
    _, result, out = finished
    assert result.prior_released
    assert result.prior_noise_multiplier > 0
    key = bytes.fromhex((out / "ledger.pub").read_text())
    stored = json.loads((out / "owner_keys.json").read_text())
    owner_keys = {int(k): bytes.fromhex(v) for k, v in stored.items()}
    audit = audit_ledger(out / "ledger.db", key, owner_keys=owner_keys, require_seal=True)
    assert audit.ok, audit.first_problem
    entries = verify_ledger(out / "ledger.db", key).entries
    zero = [e for e in entries if e.fields().get("round_id") == "0"]
    kinds = [e.kind for e in zero]
    assert kinds[:2] == [EntryKind.ROUND_PLANNED, EntryKind.MECHANISM]
    assert kinds.count(EntryKind.SPEND) == 3
    assert kinds[-1] is EntryKind.AGGREGATE_RELEASED
    plan = zero[0].fields()["plan"]
    assert plan["training_procedure_hash"] == PRIOR_PROCEDURE_HASH.hex()
    release = plan["release"]
    assert release["noise"] == "distributed"
    assert release["kind"] == "item_counts"
    assert parse_uint(release["honest_shares"]) == honest_shares(3, THREAT)
    mechanism = dp_sgd_event(zero[1].fields())
    assert (mechanism.sampling_rate, mechanism.steps) == (1.0, 1)
    assert mechanism.noise_multiplier == pytest.approx(result.prior_noise_multiplier, rel=1e-9)
    # Every round-0 spend is countersigned by its owner, and round 1 follows the release.
    signed = {
        parse_uint(e.fields()["entry_seq"]) for e in entries if e.kind is EntryKind.COUNTERSIGNATURE
    }
    assert {e.seq for e in zero if e.kind is EntryKind.SPEND} <= signed
    first_round = next(
        e for e in entries if e.kind is EntryKind.ROUND_PLANNED and e.fields()["round_id"] == "1"
    )
    assert first_round.seq > zero[-1].seq


def test_each_owner_spends_prior_plus_training_within_budget_by_an_independent_accountant(finished):
    config, result, _ = finished
    p, t = config.privacy, config.training
    steps = math.ceil(1 / t.sampling_rate) * t.local_epochs
    history = [
        DpSgdEvent(
            sampling_rate=1.0,
            noise_multiplier=result.prior_noise_multiplier,
            steps=1,
            unit=PrivacyUnit.RECORD,
        ),
        *[
            DpSgdEvent(
                sampling_rate=t.sampling_rate,
                noise_multiplier=result.noise_multiplier,
                steps=steps,
                unit=PrivacyUnit.RECORD,
            )
            for _ in range(config.federation.rounds)
        ],
    ]
    independent = epsilon_for(history, delta=p.delta, backend=Backend.PLD)
    recorded = result.rounds[-1].epsilon_max
    assert independent <= recorded <= 8.0 - 0.02  # the budget less the audit margin
    # The prior alone takes its share of the spendable budget (PLD is below RDP).
    alone = epsilon_for([history[0]], delta=p.delta, backend=Backend.PLD)
    assert alone <= 0.3 * (8.0 - 0.02) * 1.01


def test_the_released_sum_sets_the_item_biases(ratings_csv):
    # Without DP the counts are summed exactly: the biases are those of the true counts.
    config = _config(ratings_csv, privacy={"enabled": False, "target_epsilon": None})
    fed = _fed(config, "exact")
    assert prior_noise(config) == 0.0
    report = fed.prior_round()
    assert report is not None
    assert report.result is not None
    counts = np.bincount(fed.split.train.items, minlength=fed.split.n_items).astype(np.float64)
    expected = item_log_odds(counts, config.training.negatives)
    model = fed.owners[1].model
    from securefed.models import unflatten_into

    unflatten_into(model, fed.coordinator.weights)
    got = model.item_bias.weight.detach().numpy().ravel()
    np.testing.assert_allclose(got, expected, atol=1e-4)  # within the quantisation step


def test_each_owner_adds_its_share_of_the_noise(tmp_path, ratings_writer):
    """The noise share's std is sigma / sqrt(h): 3 owners x 4,000 items.

    The sample std of 12,000 draws has a relative standard error of 0.65%; the 5%
    tolerance is 7.7 standard errors (false alarm below 1e-13). Seeded: deterministic.
    """
    path = ratings_writer(tmp_path / "r.csv", seed=3, users=30, items=range(4000),
                          per_user=(8, 16), popularity=0.0)  # fmt: skip
    config = _config(path)
    fed = _fed(config, "noise")
    sigma = fed.prior_noise_multiplier
    plan = prior_plan(unit=PrivacyUnit.RECORD, noise_multiplier=sigma, model_hash=fed.model_hash)
    residuals = []
    for owner in fed.owners.values():
        accepted = owner.accept_prior(plan, divisor=H)
        q = owner.prior_contribution(accepted, _session(fed, accepted.plan))
        values, _ = dequantize(q.values.astype(np.uint64), q.spec)
        counts = np.bincount(owner._train.items, minlength=fed.split.n_items)
        residuals.append(values - counts)
    r = np.concatenate(residuals)
    expected = sigma / math.sqrt(honest_shares(3, THREAT))
    assert abs(r.mean()) < 5 * expected / math.sqrt(r.size)
    assert r.std() == pytest.approx(expected, rel=0.05)


def test_owners_refuse_anything_but_the_prior_before_any_round(ratings_csv):
    fed = _fed(_config(ratings_csv), "refuse")
    owner = fed.owners[1]
    good = _plan(fed)
    bad_plans = [
        dataclasses.replace(good, round_id=1),
        dataclasses.replace(good, sampling_rate=0.5),
        dataclasses.replace(good, clip_norm=2.0),
        dataclasses.replace(good, plan_hash=fed.plan_hash),
        dataclasses.replace(good, unit=PrivacyUnit.PERSON),
        dataclasses.replace(good, model_hash=b"x" * 32),
        dataclasses.replace(good, noise_multiplier=0.0),  # the policy requires DP
        # Below the policy's prior floor (the coordinator cannot lower it: it is signed),
        # even when above the training rounds' floor.
        dataclasses.replace(good, noise_multiplier=owner.policy.prior_min_noise_multiplier * 0.99),
        dataclasses.replace(good, noise_multiplier=owner.policy.min_noise_multiplier),
    ]
    for plan in bad_plans:
        with pytest.raises(PolicyViolation):
            owner.accept_prior(plan, divisor=H)
    assert owner.accepted == []
    assert owner.epsilon() == 0.0
    accepted = owner.accept_prior(good, divisor=H)
    with pytest.raises(PolicyViolation, match="before any round"):
        owner.accept_prior(good, divisor=H)  # no second prior
    owner.prior_contribution(accepted, _session(fed, accepted.plan))
    with pytest.raises(PolicyViolation):
        owner.prior_contribution(
            accepted, _session(fed, accepted.plan)
        )  # the token buys one contribution


def test_an_owner_refuses_a_prior_within_its_floor_that_would_overspend(ratings_csv):
    # The budget binds even where the policy's floor does not: an owner whose prior
    # floor is low (set here without re-signing: the budget check alone is tested).
    fed = _fed(_config(ratings_csv), "greedy")
    owner = fed.owners[1]
    owner.policy = dataclasses.replace(owner.policy, prior_min_noise_multiplier=0.2)
    greedy = dataclasses.replace(_plan(fed), noise_multiplier=0.2)
    assert epsilon_for([greedy.dp_event()], delta=1e-5, backend=Backend.RDP) > 8.0  # premise
    with pytest.raises(PrivacyBudgetExceeded):
        owner.accept_prior(greedy, divisor=H)
    assert owner.accepted == []
    assert owner.epsilon() == 0.0
    owner.accept_prior(_plan(fed), divisor=H)  # the calibrated prior still fits
    assert 0.0 < owner.epsilon() < 8.0


def test_an_owner_refuses_a_quantisation_range_below_its_own(ratings_csv):
    # A narrow range would make saturation (or a refusal) depend on the counts.
    fed = _fed(_config(ratings_csv), "range")
    owner = fed.owners[1]
    plan = _plan(fed)
    accepted = owner.accept_prior(plan, divisor=H)
    with pytest.raises(PolicyViolation, match="range"):
        owner.prior_contribution(accepted, _session(fed, plan, clip=8.0))


def test_an_owner_refuses_a_divisor_above_its_own_and_a_session_it_did_not_accept(ratings_csv):
    fed = _fed(_config(ratings_csv), "divisor")
    owner = fed.owners[1]
    plan = _plan(fed)
    with pytest.raises(PolicyViolation, match="noise divisor 3"):
        owner.accept_prior(plan, divisor=H + 1)  # less noise than its assumptions allow
    assert owner.accepted == []
    accepted = owner.accept_prior(plan, divisor=H)
    bad_sessions = {
        "does not bind": _session(fed, plan, divisor=1),  # others told another divisor
        "full-graph": _session(fed, plan, graph=None),
        "cohort floor": _session(fed, plan, min_clients=2),
        "bits": _session(fed, plan, bits=12),
    }
    for reason, context in bad_sessions.items():
        with pytest.raises(PolicyViolation, match=reason):
            owner.prior_contribution(accepted, context)
    owner.prior_contribution(accepted, _session(fed, plan))  # the one it accepted


def test_a_session_refuses_an_input_quantised_for_another_spec(ratings_csv):
    """A coordinator cannot hand one owner a fine spec and the others a coarse one."""
    fed = _fed(_config(ratings_csv), "spec")
    plan = _plan(fed)
    fine, coarse = _session(fed, plan), _session(fed, plan, clip=2.0**40)
    inputs = {
        oid: owner.prior_contribution(
            owner.accept_prior(plan, divisor=H), fine if oid == 1 else coarse
        )
        for oid, owner in fed.owners.items()
    }
    report = run_secagg_round(
        roster=fed.roster, identities=fed.identities, context=fine, inputs=inputs
    )
    assert report.result is None
    assert {2, 3} <= set(report.client_errors)
    assert all("another range" in str(report.client_errors[i]) for i in (2, 3))


def test_owners_refuse_a_session_that_assumes_fewer_corrupt_owners(ratings_csv):
    """A coordinator that lowers the corrupt fraction lowers t (and the honest inputs)."""
    fed = _fed(_config(ratings_csv), "pinned")
    spec = QuantizationSpec(bits=24, clip=1024.0, max_weight=1)
    plan = _plan(fed)
    inputs = {
        oid: owner.prior_contribution(owner.accept_prior(plan, divisor=H), _session(fed, plan))
        for oid, owner in fed.owners.items()
    }
    from securefed.secagg.context import SecAggParams
    from securefed.secagg.graph import GraphKind

    def params(fraction, graph):
        return SecAggParams(
            quantization=spec,
            vector_length=fed.split.n_items,
            max_clients=16,
            threat=ThreatModel(corrupt_fraction=fraction),
            graph=graph,
            min_clients=3,
        )

    for weak in (params(0.0, GraphKind.FULL), params(0.2, None)):
        context = RoundContext(
            federation_id="prior-fed",
            round_id=0,
            model_hash=b"h" * 32,
            roster_hash=fed.roster.digest(),
            params=weak,
        )
        report = run_secagg_round(
            roster=fed.roster,
            identities=fed.identities,
            context=context,
            inputs=inputs,
            min_cohort={i: 3 for i in inputs},
            pinned_threat={i: fed.owners[i].policy.threat() for i in inputs},
            full_graph_only=True,
        )
        assert report.result is None
        assert set(report.client_errors) == {1, 2, 3}
        assert all(isinstance(e, ProtocolError) for e in report.client_errors.values())


def test_an_owner_without_a_prior_in_its_policy_refuses(ratings_csv):
    fed = _fed(_config(ratings_csv, prior={"enabled": False}), "nopolicy")
    plan = prior_plan(unit=PrivacyUnit.RECORD, noise_multiplier=3.0, model_hash=fed.model_hash)
    with pytest.raises(PolicyViolation, match="no part in a prior"):
        fed.owners[1].accept_prior(plan, divisor=H)


def test_a_bound_owner_releases_nothing_before_its_spend_is_countersigned(ratings_csv):
    from securefed.secagg.roster import IdentityKey

    fed = _fed(_config(ratings_csv), "receipt")
    owner = fed.owners[1]
    owner.bind_ledger(writer_key=IdentityKey.generate().public_key)
    plan = _plan(fed)
    accepted = owner.accept_prior(plan, divisor=H)
    with pytest.raises(ProtocolError, match="not durable"):
        owner.prior_contribution(accepted, _session(fed, plan))


def test_a_session_below_the_owners_floor_releases_nothing(ratings_csv):
    fed = _fed(_config(ratings_csv), "floor")
    plan = _plan(fed)
    spec = QuantizationSpec(bits=24, clip=1024.0, max_weight=1)
    inputs = {}
    for oid in (1, 2):  # the server leaves owner 3 out and runs a 2-client session
        owner = fed.owners[oid]
        inputs[oid] = owner.prior_contribution(
            owner.accept_prior(plan, divisor=H), _session(fed, plan)
        )
    from securefed.secagg.context import SecAggParams

    params = SecAggParams(quantization=spec, vector_length=fed.split.n_items, max_clients=16,
                          threat=THREAT, min_clients=2)  # fmt: skip
    context = RoundContext(federation_id="prior-fed", round_id=0, model_hash=b"h" * 32,
                           roster_hash=fed.roster.digest(), params=params)  # fmt: skip
    report = run_secagg_round(
        roster=fed.roster,
        identities={i: fed.identities[i] for i in inputs},
        context=context,
        inputs=inputs,
        min_cohort={i: fed.owners[i].policy.prior_min_cohort for i in inputs},
    )
    assert report.result is None
    assert all(isinstance(e, InsufficientSharesError) for e in report.client_errors.values())
    assert set(report.client_errors) == {1, 2}


def test_prior_configuration_is_checked(ratings_csv, tmp_path, ratings_writer):
    with pytest.raises(ConfigError, match="item biases"):
        _config(ratings_csv, model={"kind": "neumf"})
    client = {"enabled": True, "noise_multiplier": 1.0, "budget_epsilon": 8.0}
    with pytest.raises(ConfigError, match="client_privacy"):
        _config(ratings_csv, client_privacy=client)
    # A configuration built without parse_config is refused by the federation too.
    with_client = _config(ratings_csv, prior={"enabled": False}, client_privacy=client)
    combined = _config(ratings_csv).model_copy(
        update={"client_privacy": with_client.client_privacy}
    )
    with pytest.raises(ConfigError, match="client_privacy"):
        _fed(combined, "combined")
    many = ratings_writer(tmp_path / "many.csv", seed=1, users=30, items=range(50),
                          per_user=(8, 12), popularity=0.0)  # fmt: skip
    config = _config(many, data={"partition": "per_user", "silos": 1},
                     secagg={"full_graph_up_to": 20})  # fmt: skip
    with pytest.raises(ConfigError, match="full-graph"):
        _fed(config, "many")


def test_summary_names_the_prior(finished):
    _, result, out = finished
    summary = json.loads(Path(out / "summary.json").read_text())
    assert summary["prior"] == {
        "enabled": True,
        "released": True,
        "noise_multiplier": result.prior_noise_multiplier,
    }


def _prior_ledger(fed, path, variant):
    """Round 0 written by the recorder, with one claim falsified per ``variant``."""
    from securefed.ledger import Ledger
    from securefed.secagg.roster import IdentityKey
    from securefed.server.recorder import RoundRecorder

    writer = IdentityKey.generate()
    recorder = RoundRecorder(Ledger.create(path, writer, federation=fed.genesis_body()))
    sigma = fed.prior_noise_multiplier
    plan = prior_plan(unit=PrivacyUnit.RECORD, noise_multiplier=sigma, model_hash=fed.model_hash)
    if variant == "partial_batch":
        plan = dataclasses.replace(plan, sampling_rate=0.5)
    if variant == "training_procedure":
        plan = dataclasses.replace(plan, plan_hash=fed.plan_hash)
    release = {
        "kind": "item_counts",
        "contribution_bound": "1",
        "noise": "distributed",
        "min_cohort": "3",
        "honest_shares": "2",  # t - n_c of a full graph of 3 at corrupt fraction 0.2
        "corrupt_fraction": "0.2",
    }
    if variant == "more_honest_shares":
        release["honest_shares"] = "3"
    if variant == "fewer_corrupt":
        release["corrupt_fraction"] = "0.1"
    if variant == "larger_bound":
        release["contribution_bound"] = "2"
    event = plan.dp_event()
    if variant == "no_mechanism":  # exact counts released in a private federation
        event = None
        release["noise"] = "none"
    recorder.planned(plan, cohort=[1, 2, 3], cohort_rate=1.0, accepted=[1, 2, 3], event=event,
                     release=release)  # fmt: skip
    for oid in (1, 2, 3) if event is not None else ():
        eps = epsilon_for([event], delta=1e-5, backend=Backend.RDP)
        recorder.spend(oid, event=event, delta=1e-5, epsilon_after=eps)
    survivors = [1, 2, 3]
    if variant == "below_threshold":
        recorder.dropouts({"masked_input": [3]})
        survivors = [1, 2]
    recorder.released(mean=np.zeros(4), weight=len(survivors), new_weights=np.zeros(4, np.float32),
                      survivors=survivors)  # fmt: skip
    recorder.ledger.close()
    return writer.public_key


@pytest.mark.parametrize(
    ("variant", "finding"),
    [
        ("honest", None),
        ("more_honest_shares", "honest_shares 3 is not t - n_c = 2"),
        ("fewer_corrupt", "below the configured 0.2"),
        ("below_threshold", "released from 2 inputs, below the threshold 3"),
        ("partial_batch", "not one full-batch release"),
        ("training_procedure", "names another procedure"),
        ("larger_bound", "contribution bound 2 is not 1"),
        ("no_mechanism", "released with no mechanism"),
    ],
)
def test_the_audit_checks_the_priors_claims(ratings_csv, tmp_path, variant, finding):
    fed = _fed(_config(ratings_csv), "audit")
    key = _prior_ledger(fed, tmp_path / "l.db", variant)
    result = audit_ledger(tmp_path / "l.db", key)
    reasons = [f.reason for f in result.findings]
    if finding is None:
        assert result.ok, reasons
    else:
        assert not result.ok
        assert any(finding in r for r in reasons), reasons


def test_the_report_states_the_priors_trust_assumption(finished):
    from securefed.report import render_report

    _, _, out = finished
    key = bytes.fromhex((out / "ledger.pub").read_text())
    html = render_report(out, audit_ledger(out / "ledger.db", key, require_seal=True))
    assert "<b>distributed</b>" in html
    assert "counting on 2 honest inputs" in html
    assert "up to a fraction 0.2 of colluding owners" in html


@pytest.mark.slow  # PLD calibration and a PRV audit: about 45 s
def test_a_pld_accounted_run_needs_less_noise_and_audits_clean_with_prv(ratings_csv, tmp_path):
    # The online accountant is the configuration's: PLD is tighter than RDP, so
    # both the prior and DP-SGD get less noise for the same target, and the audit
    # re-accounts the ledger with the backend independent of PLD (PRV).
    rdp = _fed(_config(ratings_csv), "rdp")
    config = _config(ratings_csv, privacy={"accountant": "pld"})
    pld = _fed(config, "pld")
    assert pld.prior_noise_multiplier < 0.97 * rdp.prior_noise_multiplier
    assert pld.noise_multiplier < 0.97 * rdp.noise_multiplier
    assert all(o.accountant.backend is Backend.PLD for o in pld.owners.values())
    result = run_federation(config, out_dir=tmp_path, rng=DeterministicRandom(b"l" * 32))
    assert result.prior_released
    key = bytes.fromhex((tmp_path / "ledger.pub").read_text())
    stored = json.loads((tmp_path / "owner_keys.json").read_text())
    owner_keys = {int(k): bytes.fromhex(v) for k, v in stored.items()}
    audit = audit_ledger(tmp_path / "ledger.db", key, owner_keys=owner_keys, require_seal=True)
    assert audit.ok, audit.first_problem
    assert (audit.online_backend, audit.audit_backend) == ("pld", "prv")
    for check in audit.owners:
        assert check.recorded <= 8.0 - 0.08
        assert check.independent == pytest.approx(check.recorded, abs=0.08)
    # Under RDP the same noise would have been recorded as more than the target.
    last = audit.owners[0]
    spent = [
        DpSgdEvent(sampling_rate=1.0, noise_multiplier=pld.prior_noise_multiplier, steps=1,
                   unit=PrivacyUnit.RECORD),
        *[dp_sgd_event(e.fields()) for e in verify_ledger(tmp_path / "ledger.db", key).entries
          if e.kind is EntryKind.SPEND and parse_uint(e.fields()["owner_id"]) == last.owner_id
          and e.fields()["round_id"] != "0"],
    ]  # fmt: skip
    assert epsilon_for(spent, delta=1e-5, backend=Backend.PLD) == pytest.approx(
        last.recorded, abs=1e-6
    )
    assert epsilon_for(spent, delta=1e-5, backend=Backend.RDP) > last.recorded * 1.05
