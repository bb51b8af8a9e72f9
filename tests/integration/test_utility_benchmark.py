"""The utility benchmark's own logic (benchmarks/utility.py) on a tiny synthetic data set.

Covers the popularity and DP-popularity rows, the interval and gap arithmetic, the
results file (merge, resume) and the markdown section; the trained rows run only in
the benchmark itself.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def utility(benchmark_module):
    with benchmark_module("utility") as module:
        yield module


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory, ratings_writer):
    # 40 users x 20-30 interactions over 300 items, popular items more likely: well
    # over 100 distinct items, so 99 sampled negatives always exist.
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    return ratings_writer(path, seed=5, users=40, items=range(1000, 1300), per_user=(20, 31),
                          popularity=0.6, start=5000, spacing=7)  # fmt: skip


@pytest.fixture(scope="module")
def split(utility, ratings_csv):
    return utility.load_split(ratings_csv)


def test_mean_and_t_interval(utility):
    mean, half = utility.mean_interval([1.0, 2.0, 3.0])
    # sd 1, n 3: t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(2.484, abs=5e-4)
    assert utility.mean_interval([0.25]) == (0.25, None)


def test_difference_interval_is_welchs(utility):
    from scipy import stats

    a, b = [0.5, 0.6, 0.72], [0.4, 0.45, 0.5, 0.58, 0.61]
    diff, half = utility.difference_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx((ci.low + ci.high) / 2)
    assert half == pytest.approx((ci.high - ci.low) / 2)
    assert utility.difference_interval([1.0], [0.5, 0.7]) == (pytest.approx(0.4), None)


def test_gap_closed(utility):
    assert utility.gap_closed(0.7, popularity=0.6, central=0.8) == pytest.approx(0.5)
    assert utility.gap_closed(0.5, popularity=0.6, central=0.8) == pytest.approx(-0.5)
    assert utility.gap_closed(0.5, popularity=0.6, central=0.6) is None


def test_popularity_counts_training_interactions_only(utility, split):
    counts = utility.popularity_counts(split)
    assert counts.shape == (split.n_items,)
    assert counts.sum() == len(split.train)
    # Held-out items are not counted: the counts come from the training rows alone.
    assert np.array_equal(counts, np.bincount(split.train.items, minlength=split.n_items))


def _full_ranks_by_hand(split, scores):
    """Rank of each test item among the items outside the user's training + validation."""
    ranks = []
    for u in np.flatnonzero(split.test_items >= 0):
        excluded = set(split.train_items_of(int(u)).tolist()) | {int(split.validation_items[u])}
        pos = int(split.test_items[u])
        others = [i for i in range(split.n_items) if i not in excluded and i != pos]
        ranks.append(sum(scores[i] >= scores[pos] for i in others))  # ties against it
    return np.array(ranks)


def test_popularity_row_matches_the_evaluation_protocol(utility, split):
    first = utility.run_popularity(split, seed=0)
    again = utility.run_popularity(split, seed=0)
    assert first == again  # deterministic for a seed (negatives from a seeded stream)
    test = first["test"]
    for key in utility.STORED:
        assert 0.0 <= test[key] <= 1.0
    ranks = _full_ranks_by_hand(split, utility.popularity_counts(split))
    assert test["full_hr10"] == pytest.approx(np.mean(ranks < 10))
    assert test["full_ndcg10"] == pytest.approx(
        np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0))
    )
    # Another seed draws other sampled negatives; full ranking does not depend on them.
    other = utility.run_popularity(split, seed=1)["test"]
    assert other["full_hr10"] == test["full_hr10"]
    assert other["sampled_auc"] != test["sampled_auc"]


def _analytic_gaussian_sigma(epsilon, delta):
    """Balle & Wang 2018, "Improving the Gaussian Mechanism for DP", Thm 8 (sensitivity 1)."""

    def excess(s):
        return (
            norm.cdf(1 / (2 * s) - epsilon * s)
            - math.exp(epsilon) * norm.cdf(-1 / (2 * s) - epsilon * s)
            - delta
        )

    return brentq(excess, 0.05, 100.0, xtol=1e-12)


def test_dp_popularity_noise_is_calibrated_and_shrinks_with_epsilon(utility, split):
    s1, s8 = utility.dp_popularity_sigma(1.0), utility.dp_popularity_sigma(8.0)
    # The PLD calibration agrees with the exact analytic Gaussian mechanism (3.7306, 0.6002).
    assert s1 == pytest.approx(_analytic_gaussian_sigma(1.0, 1e-5), rel=1e-4)
    assert s8 == pytest.approx(_analytic_gaussian_sigma(8.0, 1e-5), rel=1e-4)
    assert utility.gaussian_epsilon(s1) <= 1.0 + 1e-6

    counts = utility.popularity_counts(split)
    e1 = utility.run_dp_popularity(split, seed=3, epsilon=1.0)
    e8 = utility.run_dp_popularity(split, seed=3, epsilon=8.0)
    assert e1["sigma"] == s1
    assert e8["epsilon_final"] == pytest.approx(8.0, abs=1e-3)
    assert e1["epsilon_final"] <= 1.0 + 1e-6

    def noisy(epsilon):
        stream = utility.noise_stream(f"dp-popularity-e{epsilon:g}", 3)
        return utility.dp_popularity_counts(counts, utility.dp_popularity_sigma(epsilon), stream)

    far, near = noisy(1.0), noisy(8.0)
    assert np.linalg.norm(far - counts) > np.linalg.norm(near - counts) > 0
    assert np.array_equal(noisy(1.0), far)  # fixed seed: the same release


def _fake_federated_run(utility, seed, hr):
    return {
        "row": "dp-silo-record-e8",
        "seed": seed,
        "passes": 2,
        "test": {k: hr for k in utility.STORED},
        "epsilon_target": 8.0,
        "epsilon_final": 7.98,
        "delta": 1e-5,
        "noise_multiplier": 0.71,
        "owners": 10,
        "cost": {
            "cohort_mean": 10.0,
            "client_cpu_s": 1.2,
            "server_cpu_s": 0.03,
            "bytes_up_per_client": 1.2e6,
            "round_wall_s": 6.7,
        },
        "wall_s": 17.0,
        "cpu_s": 28.0,
    }


def test_main_writes_merges_and_renders(utility, ratings_csv, tmp_path, capsys):
    results, md = tmp_path / "utility.json", tmp_path / "BENCHMARKS.md"
    md.write_text("# securefed benchmarks\n\n<!-- secagg:begin -->\nkept\n<!-- secagg:end -->\n")
    common = ["--data", str(ratings_csv), "--results", str(results), "--markdown", str(md)]
    common += ["--write", "--passes", "2"]
    utility.main(["--rows", "popularity", "dp-popularity-e8", "--seeds", "2", *common])
    progress = capsys.readouterr().out
    assert "popularity           seed 1  HR@10 sampled" in progress
    data = json.loads(results.read_text())
    assert sorted(data["runs"]) == ["dp-popularity-e8", "popularity"]
    assert sorted(data["runs"]["popularity"]) == ["0", "1"]

    # A second part merges into the file; --resume skips what is there.
    utility.main(["--rows", "dp-popularity-e1", "popularity", "--seeds", "2", "--resume", *common])
    assert "already in utility.json; skipped" in capsys.readouterr().out
    data = json.loads(results.read_text())
    assert sorted(data["runs"]) == ["dp-popularity-e1", "dp-popularity-e8", "popularity"]
    assert len(data["sessions"]) == 2
    # Other passes do not mix into the same file.
    with pytest.raises(SystemExit, match="R = 2"):
        utility.main(["--rows", "popularity", *common, "--passes", "3"])

    # Render with two trained rows added (central = the popularity's means + 0.1).
    pop = data["runs"]["popularity"]
    data["runs"]["central"] = {
        s: {
            **r,
            "row": "central",
            "train_cpu_s": 5.0,
            "test": {k: v + 0.1 for k, v in r["test"].items()},
        }
        for s, r in pop.items()
    }
    data["runs"]["dp-silo-record-e8"] = {
        str(s): _fake_federated_run(utility, s, hr) for s, hr in ((0, 0.5), (1, 0.6))
    }
    # A paired row: its SecAgg run 0.002 above its unmasked run on every metric.
    data["runs"]["dp-silo-record-e8-unmasked"] = {
        str(s): {
            **_fake_federated_run(utility, s, hr),
            "row": "dp-silo-record-e8-unmasked",
            "paired_secagg_test": {k: hr + 0.002 for k in utility.STORED},
            "max_mean_difference": 1e-5,
        }
        for s, hr in ((0, 0.5), (1, 0.6))
    }
    results.write_text(json.dumps(data))
    utility.main(["--write-only", "--results", str(results), "--markdown", str(md)])
    text = md.read_text()
    assert text.count(utility.BEGIN) == 1
    assert text.count(utility.END) == 1
    assert "<!-- secagg:begin -->\nkept\n<!-- secagg:end -->" in text  # other sections kept
    section = text[text.index(utility.BEGIN) : text.index(utility.END)]
    # Every table renders: each row has as many cells as its separator line.
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            rows = [lines[i - 1]]
            for following in lines[i + 1 :]:
                if not following.startswith("|"):
                    break
                rows.append(following)
            for row in rows:
                assert row.count("|") == line.count("|"), row
    paired = next(x for x in lines if x.startswith("| dp-silo-record-e8-unmasked | 2 |"))
    assert "| 0.0020 / 0.0020 | 0.0020 / 0.0020 | 0.0020 | 1e-05 | yes |" in paired
    for header in (
        "HR@10 sampled (99 negatives)",
        "NDCG@10 sampled (99 negatives)",
        "HR@10 full ranking",
        "NDCG@10 full ranking",
        "AUC full ranking",
        "gap closed, HR@10 sampled (99 negatives)",
        "gap closed, HR@10 full ranking",
    ):
        assert f"| {header} " in section
    table = [line for line in section.splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0][2:] for line in table[1:6]]
    assert names == [
        "popularity",
        "dp-popularity-e1",
        "dp-popularity-e8",
        "central",
        "dp-silo-record-e8",
    ]
    central = next(line for line in table if line.startswith("| central "))
    assert " +1.00 | +1.00 | 2 |" in central
    assert "s = 3.731 at ε = 1" in section
    assert "s = 0.600 at ε = 8" in section
    fed = [line for line in table if line.startswith("| dp-silo-record-e8 ")]
    # Two seeds 0.5 and 0.6: mean 0.55 ± t(0.975, 1) * 0.05 = 0.635.
    assert "0.550 ± 0.635" in fed[0]
    assert "| 8 / 7.98 |" in fed[0]
    assert "| 1.20 | 0.030 | 1.20 MB | 17 |" in fed[1]

    # The targets: the DP row against popularity, seed by seed (0.5, 0.6 vs the
    # popularity seeds), and how many of the five metrics it is above on.
    target = next(
        line for line in table if line.startswith("| dp-silo-record-e8 (2) − popularity (2) |")
    )
    pop_hr = [r["test"]["sampled_hr10"] for r in pop.values()]
    diff, half = utility.difference_interval([0.5, 0.6], pop_hr)
    assert f"| {diff:+.4f} ± {half:.4f} |" in target
    assert target.count(" / 5 |") == 1

    # Rendering again replaces the section in place.
    before = md.read_text()
    utility.main(["--write-only", "--results", str(results), "--markdown", str(md)])
    assert md.read_text() == before


def test_the_unmasked_instrument_applies_the_exact_mean_and_draws_the_same(utility, ratings_csv):
    # The paired rows' harness: inside it, a round applies the survivors' exact float
    # mean of clipped updates (FedAvg, server lr 1), the difference from the secure
    # aggregate is at most one quantisation step, and outside it nothing is patched.
    from securefed.client.owner import DataOwner, clip_l2
    from securefed.config import parse_config
    from securefed.federation import Federation
    from securefed.randomness import DeterministicRandom

    config = parse_config({
        "federation": {"rounds": 1, "federation_id": "paired"},
        "data": {"path": str(ratings_csv), "format": "csv", "partition": "silos", "silos": 3},
        "model": {"kind": "mf", "dim": 8},
        "training": {"sampling_rate": 0.15, "learning_rate": 0.5, "negatives": 2},
        "privacy": {"target_epsilon": 8.0},
        "update": {"clip_norm": 5.0},
        "secagg": {"quantization": {"bits": 20, "clip": 5.0}, "min_clients": 2},
    })  # fmt: skip

    def one_round(instrumented):
        fed = Federation(config, rng=DeterministicRandom(b"u" * 32))
        sent = []
        protect = DataOwner.protect

        def spy(self, update, spec, *, clip_norm):
            sent.append(clip_l2(update, clip_norm)[0])
            return protect(self, update, spec, clip_norm=clip_norm)

        DataOwner.protect = spy
        try:
            before = fed.coordinator.weights.copy()
            if instrumented:
                with utility.unmasked_mean() as gaps:
                    fed.train_round(1)
            else:
                gaps = []
                fed.train_round(1)
        finally:
            DataOwner.protect = protect
        return before, np.mean(sent, axis=0), fed.coordinator.weights, gaps, fed

    before, exact, after, gaps, fed = one_round(True)
    np.testing.assert_allclose(after, before + exact, rtol=0, atol=1e-6)
    step = fed.coordinator.params.quantization.step
    assert len(gaps) == 1
    assert 0 < gaps[0] <= step
    assert DataOwner.protect.__name__ == "protect"  # restored
    # The same seeds without the instrument: the same clipped updates (every draw
    # unchanged), and the secure aggregate within one quantisation step of them.
    before2, exact2, after2, _, _ = one_round(False)
    np.testing.assert_array_equal(before2, before)
    np.testing.assert_array_equal(exact2, exact)
    assert np.max(np.abs(after2 - (before + exact))) <= step + 1e-6
    assert np.max(np.abs(after2 - after)) > 0  # the two runs applied different aggregates
