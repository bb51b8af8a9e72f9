"""The client-throughput benchmark's own logic (benchmarks/client.py) on a tiny data set."""

from __future__ import annotations

import pytest

from securefed.config import parse_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def client(benchmark_module):
    with benchmark_module("client") as module:
        yield module


def test_measure_and_render(client, tmp_path, ratings_writer):
    path = ratings_writer(tmp_path / "ratings.csv", seed=3, users=12, items=range(50),
                          per_user=(8, 12))  # fmt: skip
    config = parse_config(
        {
            "federation": {"rounds": 1},
            "data": {"path": str(path), "format": "csv", "partition": "silos", "silos": 2},
            "model": {"kind": "mf", "dim": 4},
            "training": {"sampling_rate": 0.5, "negatives": 2},
            "privacy": {"target_epsilon": 8.0},
            "secagg": {"min_clients": 2},
        }
    )
    entry = client.measure(config, [0.5, 1.0], 2)
    assert entry["item_features"] == []
    assert [r["sampling_rate"] for r in entry["rates"]] == [0.5, 1.0]
    for r in entry["rates"]:
        assert r["steps"] == (2 if r["sampling_rate"] == 0.5 else 1)
        assert len(r["runs"]["dp"]) == len(r["runs"]["plain"]) == len(r["runs"]["noise_s"]) == 2
        assert r["ratio"] == pytest.approx(r["dp_records_per_s"] / r["plain_records_per_s"])
    assert entry["trained_parameters"] > entry["shared_parameters"] > 0
    shipped = dict(entry, item_features=["genres", "decade"])
    data = {
        "config": "examples/recommendation/movielens.toml",
        "models": [shipped, entry],
        "command": "python benchmarks/client.py --write",
        "repeats": 2,
        "default_rate": 0.5,
        "runtime_s": 1.0,
        "machine": {
            "nproc": 2,
            "python": "3",
            "numpy": "2",
            "torch": "2",
            "opacus": "1",
            "date": "today",
        },
    }
    text = client.markdown(data)
    assert text.startswith(client.BEGIN)
    assert text.rstrip().endswith(client.END)
    rows = [line for line in text.splitlines() if line.startswith(("| fixed", "| learned"))]
    assert len(rows) == 4
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert all(row.count("|") == header.count("|") for row in rows)
    assert "0.5 (shipped default)" in rows[0]
    assert "Target: DP-SGD throughput >= 0.33 x non-private at the shipped default " in text
    assert "fixed item vectors (genres + decade), q = 0.5" in text
