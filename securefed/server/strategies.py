"""Server optimisers over the securely aggregated mean update only.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2:
the mean client update ``delta`` (trained - received shared parameters) acts as a
pseudo-gradient. FedAvg: ``x += eta * delta``. FedAdam / FedYogi keep first and
second moments ``m``, ``v``:

    m = b1 * m + (1 - b1) * delta
    Adam: v = b2 * v + (1 - b2) * delta^2
    Yogi: v = v - (1 - b2) * delta^2 * sign(v - delta^2)
    x += eta * m / (sqrt(v) + tau)

``v`` starts at ``tau^2`` (the paper's v_{-1} >= tau^2), ``m`` at 0; no bias
correction (as in the paper). The strategies see only the aggregate: a strategy
is post-processing of the released sum and costs no privacy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.config import StrategyChoice, StrategyConfig

__all__ = ["FedAdam", "FedAvg", "FedYogi", "Strategy", "build_strategy"]

Vector = npt.NDArray[np.float32]


def _check_step(weights: Vector, delta: npt.NDArray[np.floating]) -> None:
    if weights.ndim != 1 or delta.shape != weights.shape:
        raise ValueError("weights and delta must be 1-D vectors of the same length")
    if not np.all(np.isfinite(delta)):
        raise ValueError("the aggregate update contains NaN or inf")


@dataclass(slots=True)
class FedAvg:
    """``x += server_lr * delta`` (server_lr = 1: plain federated averaging)."""

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError("server_lr must be positive")

    def step(self, weights: Vector, delta: npt.NDArray[np.floating]) -> Vector:
        """The new global weights after applying the mean update ``delta``."""
        _check_step(weights, delta)
        return (weights + self.server_lr * delta).astype(np.float32)

    def state(self) -> dict[str, npt.NDArray[np.float64]]:
        """What a checkpoint must keep to continue (FedAvg keeps nothing)."""
        return {}

    def load_state(self, state: Mapping[str, npt.NDArray[np.floating]]) -> None:
        """Restore :meth:`state` (nothing for FedAvg).

        Raises:
            ValueError: ``state`` holds anything.
        """
        if state:
            raise ValueError("FedAvg has no state to restore")


@dataclass(slots=True)
class _Adaptive:
    server_lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    _m: npt.NDArray[np.float64] | None = None
    _v: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ValueError("server_lr must be positive")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("beta1 and beta2 must be in [0, 1)")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError("tau must be positive")

    def _second_moment(
        self, v: npt.NDArray[np.float64], square: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def state(self) -> dict[str, npt.NDArray[np.float64]]:
        """The first and second moments (empty before the first step)."""
        if self._m is None or self._v is None:
            return {}
        return {"m": self._m.copy(), "v": self._v.copy()}

    def load_state(self, state: Mapping[str, npt.NDArray[np.floating]]) -> None:
        """Restore :meth:`state`.

        Raises:
            ValueError: not exactly the moments ``m`` and ``v`` of one shape, or empty.
        """
        if not state:
            self._m = self._v = None
            return
        if set(state) != {"m", "v"} or state["m"].shape != state["v"].shape:
            raise ValueError("an adaptive strategy's state is its moments m and v, one shape")
        self._m = np.asarray(state["m"], dtype=np.float64).copy()
        self._v = np.asarray(state["v"], dtype=np.float64).copy()

    def step(self, weights: Vector, delta: npt.NDArray[np.floating]) -> Vector:
        """The new global weights after applying the mean update ``delta``."""
        _check_step(weights, delta)
        d = delta.astype(np.float64)
        if self._m is None or self._v is None or self._m.shape != d.shape:
            self._m = np.zeros_like(d)
            self._v = np.full_like(d, self.tau**2)
        self._m = self.beta1 * self._m + (1 - self.beta1) * d
        self._v = self._second_moment(self._v, d * d)
        update = self.server_lr * self._m / (np.sqrt(self._v) + self.tau)
        return (weights.astype(np.float64) + update).astype(np.float32)


class FedAdam(_Adaptive):
    """Adam on the server (Reddi et al. 2021, Alg. 2)."""

    def _second_moment(
        self, v: npt.NDArray[np.float64], square: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return self.beta2 * v + (1 - self.beta2) * square


class FedYogi(_Adaptive):
    """Yogi on the server (Reddi et al. 2021, Alg. 2): additive second-moment updates."""

    def _second_moment(
        self, v: npt.NDArray[np.float64], square: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        return v - (1 - self.beta2) * square * np.sign(v - square)


Strategy = FedAvg | FedAdam | FedYogi


def build_strategy(config: StrategyConfig) -> Strategy:
    """A fresh strategy as configured (moments start empty)."""
    if config.kind is StrategyChoice.FEDAVG:
        return FedAvg(server_lr=config.server_lr)
    cls = FedAdam if config.kind is StrategyChoice.FEDADAM else FedYogi
    return cls(server_lr=config.server_lr, beta1=config.beta1, beta2=config.beta2, tau=config.tau)
