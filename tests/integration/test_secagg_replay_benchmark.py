"""The replayed-server benchmark (benchmarks/secagg_replay.py) on a tiny round."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def replay_module(benchmark_module):
    with benchmark_module("secagg_replay") as module:
        yield module


def test_a_recorded_round_replays_into_a_fresh_server(replay_module, monkeypatch):
    bench = replay_module.bench
    cfg = bench.Config(8, 40, 0.25)
    setup = bench._setup(cfg)
    log = replay_module.record_round(setup)
    stages = [name for name, _, _ in log]
    assert stages[0] == "receive_advertisement"
    assert stages[-1] == "receive_unmask"
    assert stages.count("receive_masked_input") == 8 - len(setup["dropped"]) > 0
    # Replaying runs every stage and finalize on a fresh server; the result is exact.
    from securefed.secagg.server import SecAggServer

    results = []
    original = SecAggServer.finalize

    def keep(self):
        results.append(original(self))
        return results[-1]

    monkeypatch.setattr(SecAggServer, "finalize", keep)
    seconds = replay_module.replay(setup, log)
    assert seconds > 0
    (result,) = results
    survivors = sorted(set(setup["inputs"]) - set(setup["dropped"]))
    assert list(result.survivors) == survivors
    bits = setup["context"].params.ring_bits
    expected = [
        sum(int(setup["inputs"][u].values[i]) for u in survivors) % (1 << bits)
        for i in range(cfg.m + 1)
    ]
    assert [int(v) for v in result.total] == expected
