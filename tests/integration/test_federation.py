"""A whole federated recommender through the client and server code, on a small data set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from securefed.cli import main
from securefed.client.owner import DataOwner
from securefed.config import load_config, parse_config
from securefed.federation import Federation, run_federation

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    # 30 users x 8-15 interactions over 60 items; popular items are more likely.
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=11, users=30, items=range(100, 160), per_user=(8, 16),
                          popularity=1.0)  # fmt: skip


def _config(ratings_csv, **sections):
    base = {
        "federation": {"rounds": 2, "federation_id": "test-fed"},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 3},
        "model": {"kind": "mf", "dim": 8},
        "training": {"sampling_rate": 0.15, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0},
        "update": {"clip_norm": 5.0},
        "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
        "evaluation": {"sampled_negatives": 20},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return parse_config(base)


def test_federation_runs_and_writes_metrics(ratings_csv, tmp_path):
    config = _config(ratings_csv)
    out = tmp_path / "run"
    result = run_federation(config, out_dir=out)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    for row in lines:
        assert row["survivors"] == 3
        assert row["cohort"] == 3
        assert 0 < row["epsilon_max"] <= 8.0 + 1e-9
        assert row["bytes_up_per_client"] > 0
        assert row["server_seconds"] > 0
        for key in ("sampled_hr10", "sampled_ndcg10", "full_hr10", "full_auc"):
            assert 0.0 <= row["metrics"][key] <= 1.0
    # The noise was calibrated to spend the target over the planned rounds.
    assert lines[-1]["epsilon_max"] == pytest.approx(8.0, rel=0.02)
    assert result.final_test is not None
    # The resolved configuration reloads to the same configuration.
    assert load_config(out / "config.toml") == config
    summary = json.loads((out / "summary.json").read_text())
    assert summary["owners"] == 3
    assert summary["noise_multiplier"] > 0


def test_the_global_step_is_the_mean_of_the_clipped_updates(ratings_csv, monkeypatch):
    # The server learns only the aggregate; check the aggregate is what the owners sent:
    # new weights = old + mean(clipped updates), up to one quantisation step.
    config = _config(ratings_csv, federation={"rounds": 1})
    fed = Federation(config)
    sent: list[np.ndarray] = []
    original = DataOwner.protect

    def spy(self, update, spec, *, clip_norm):
        from securefed.client.owner import clip_l2

        sent.append(clip_l2(update, clip_norm)[0])
        return original(self, update, spec, clip_norm=clip_norm)

    monkeypatch.setattr(DataOwner, "protect", spy)
    before = fed.coordinator.weights.copy()
    report, refused, _, _ = fed.train_round(1)
    assert report is not None
    assert report.result is not None
    assert refused == {"policy": 0, "budget": 0}
    step = fed.coordinator.params.quantization.step
    expected = before + np.mean(sent, axis=0)
    assert np.max(np.abs(fed.coordinator.weights - expected)) <= step + 1e-6


def test_a_server_that_lowers_the_noise_is_refused_by_every_owner(ratings_csv):
    config = _config(ratings_csv, federation={"rounds": 1})
    fed = Federation(config)
    before = fed.coordinator.weights.copy()
    fed.noise_multiplier *= 0.5  # the coordinator now plans with half the calibrated noise
    fed.server_view = {}  # ... and skips its own budget check: the owners must refuse
    report, refused, _, cohort = fed.train_round(1)
    assert refused["policy"] == cohort == 3
    assert report is None
    assert np.array_equal(fed.coordinator.weights, before)
    assert all(eps == 0.0 for eps in fed.epsilons())  # nothing was spent


def test_budgets_stop_owners_before_they_overspend(ratings_csv):
    # Noise fixed so that the first round fits every owner (about 1.0-1.4) but five
    # rounds do not: later rounds must be refused, and no owner may exceed its budget.
    config = _config(
        ratings_csv,
        federation={"rounds": 5},
        privacy={"target_epsilon": None, "noise_multiplier": 2.0, "budget_epsilon": 2.0},
    )
    result = run_federation(config)
    assert "budget is exhausted" in result.stop_reason
    assert 1 <= len(result.rounds) < 5  # the round that would overspend never started
    assert all(r.refused["budget"] == 0 for r in result.rounds)
    assert all(r.epsilon_max <= 2.0 for r in result.rounds)
    assert result.rounds[-1].epsilon_max > 1.5  # the last round that fit did run


def test_nonprivate_baseline_reports_infinite_epsilon(ratings_csv):
    config = _config(
        ratings_csv,
        federation={"rounds": 1},
        privacy={"enabled": False, "target_epsilon": None},
    )
    result = run_federation(config)
    assert math.isinf(result.rounds[0].epsilon_max)
    assert result.noise_multiplier == 0.0


def test_cli_simulate_writes_its_outputs(ratings_csv, tmp_path, capsys):
    config_path = tmp_path / "fed.toml"
    config_path.write_text(
        f"""
[federation]
rounds = 1
[data]
path = "{ratings_csv}"
format = "csv"
silos = 3
[model]
dim = 8
[training]
sampling_rate = 0.15
[secagg]
min_clients = 2
[evaluation]
sampled_negatives = 20
"""
    )
    assert main(["simulate", str(config_path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "metrics.jsonl").exists()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "VERIFIED" in html
    printed = capsys.readouterr().out
    assert "outside the DP guarantee" in printed
    assert "AUDIT PASSED" in printed
    # A second run into the same folder is refused before anything is touched.
    ledger = (tmp_path / "out" / "ledger.db").read_bytes()
    assert main(["simulate", str(config_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (ledger.db)" in err
    assert "Traceback" not in err
    assert (tmp_path / "out" / "ledger.db").read_bytes() == ledger


def test_cli_simulate_reports_bad_configuration(tmp_path, capsys):
    config_path = tmp_path / "bad.toml"
    config_path.write_text("[federation]\nrounds = 0\n")
    assert main(["simulate", str(config_path), "--out", str(tmp_path / "out")]) == 2
    assert "federation.rounds" in capsys.readouterr().err


@pytest.mark.slow
def test_library_example_runs_on_the_embedded_data(capsys):
    # The README's library example (examples/recommendation/library.py), one round.
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    module = runpy.run_path(str(root / "examples" / "recommendation" / "library.py"))
    final = module["main"](rounds=1)
    out = capsys.readouterr().out
    assert "record-level epsilon" in out
    assert 0.0 <= final["sampled_hr10"] <= 1.0


@pytest.mark.parametrize(
    "sections",
    [
        {"model": {"kind": "neumf", "dim": 8, "mlp_dims": (8, 4)}},
        {"privacy": {"unit": "person"}, "training": {"sampling_rate": 0.4}},
        {"strategy": {"kind": "fedyogi", "server_lr": 0.01}},
        {"data": {"partition": "per_user"}, "federation": {"rounds": 1, "cohort_rate": 0.5}},
        {"data": {"partition": "dirichlet", "dirichlet_alpha": 0.3}},
    ],
    ids=["neumf", "person-unit", "fedyogi", "cross-device", "dirichlet"],
)
def test_variants_run_end_to_end(ratings_csv, sections):
    sections = {"federation": {"rounds": 1}, **sections}
    result = run_federation(_config(ratings_csv, **sections))
    row = result.rounds[0]
    assert row.survivors >= 2
    assert 0 < row.epsilon_max <= 8.0 + 1e-9
    assert result.final_test is not None
    assert 0.0 <= result.final_test["sampled_hr10"] <= 1.0
