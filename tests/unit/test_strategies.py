"""Server strategies (Reddi et al. 2021, Algorithm 2) on the aggregate update."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.config import StrategyChoice, StrategyConfig
from securefed.server.strategies import FedAdam, FedAvg, FedYogi, build_strategy


def test_fedavg_adds_the_scaled_mean_update():
    w = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    d = np.array([0.1, 0.2, -0.3])
    out = FedAvg(server_lr=0.5).step(w, d)
    np.testing.assert_allclose(out, w + 0.5 * d, rtol=1e-6)
    assert out.dtype == np.float32


def _reference(kind: str, deltas, lr, b1, b2, tau):
    # Reddi et al. 2021, Alg. 2, written out scalar by scalar.
    x = np.zeros_like(deltas[0])
    m = np.zeros_like(x)
    v = np.full_like(x, tau * tau)
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if kind == "adam":
            v = b2 * v + (1 - b2) * d * d
        else:
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize(("cls", "kind"), [(FedAdam, "adam"), (FedYogi, "yogi")])
def test_adaptive_strategies_follow_the_paper(cls, kind):
    data = np.random.default_rng(3)
    deltas = [data.normal(0, s, 5) for s in (1.0, 0.1, 2.0, 0.01)]
    strategy = cls(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    w = np.zeros(5, dtype=np.float32)
    for d in deltas:
        w = strategy.step(w, d)
    np.testing.assert_allclose(w, _reference(kind, deltas, 0.1, 0.9, 0.99, 1e-3), rtol=1e-5)


def test_yogi_and_adam_differ_once_the_second_moment_shrinks():
    big, small = np.full(3, 1.0), np.full(3, 1e-3)
    adam, yogi = FedAdam(server_lr=0.1), FedYogi(server_lr=0.1)
    wa = wy = np.zeros(3, dtype=np.float32)
    for d in (big, small, small):
        wa, wy = adam.step(wa, d), yogi.step(wy, d)
    assert not np.allclose(wa, wy)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0.0]), np.array([np.inf, 0.0]), np.zeros(3)])
def test_bad_aggregates_are_refused_and_change_nothing(bad):
    strategy = FedAdam(server_lr=0.1)
    w = np.ones(2, dtype=np.float32)
    strategy.step(w, np.array([0.5, 0.5]))
    state = (strategy._m.copy(), strategy._v.copy())
    with pytest.raises(ValueError, match=r"NaN|same length"):
        strategy.step(w, bad)
    np.testing.assert_array_equal(strategy._m, state[0])
    np.testing.assert_array_equal(strategy._v, state[1])


def test_build_strategy_maps_each_choice():
    for choice, cls in [
        (StrategyChoice.FEDAVG, FedAvg),
        (StrategyChoice.FEDADAM, FedAdam),
        (StrategyChoice.FEDYOGI, FedYogi),
    ]:
        assert type(build_strategy(StrategyConfig(kind=choice, server_lr=0.5))) is cls


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan")])
def test_invalid_learning_rates_are_refused(lr):
    with pytest.raises(ValueError, match="server_lr"):
        FedAvg(server_lr=lr)
    with pytest.raises(ValueError, match="server_lr"):
        FedAdam(server_lr=lr)


@pytest.mark.parametrize("cls", [FedAdam, FedYogi])
def test_an_adaptive_strategy_resumes_from_its_state(cls):
    rng = np.random.default_rng(3)
    w = rng.normal(size=8).astype(np.float32)
    deltas = [rng.normal(size=8) for _ in range(4)]
    a = cls(server_lr=0.1)
    for d in deltas[:2]:
        w = a.step(w, d)
    b = cls(server_lr=0.1)
    b.load_state(a.state())
    wa = wb = w
    for d in deltas[2:]:
        wa, wb = a.step(wa, d), b.step(wb, d)
    assert np.array_equal(wa, wb)
    with pytest.raises(ValueError, match="moments"):
        b.load_state({"m": np.zeros(8)})
    assert FedAvg().state() == {}
    with pytest.raises(ValueError, match="no state"):
        FedAvg().load_state({"m": np.zeros(8)})
