"""The coordinator: cohorts, plans, one secure-aggregation session per round, strategy.

It holds the global shared weights and sees only protected updates and what
secure aggregation releases (the survivors' weighted mean); it has no code path
that accepts a plaintext update (``require_protected`` and an import-linter
contract keep it so).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from securefed.config import SecurefedConfig
from securefed.errors import ConfigError
from securefed.plan import RoundPlan
from securefed.privacy.events import PrivacyUnit
from securefed.privacy.noise import CsprngStream, SecureGaussianNoise
from securefed.secagg.context import RoundContext, SecAggParams, model_digest
from securefed.secagg.server import AggregateResult
from securefed.server.aggregation import SecureAggregate, aggregate_mean
from securefed.server.strategies import Strategy, build_strategy

__all__ = ["Coordinator", "RoundOutcome", "shared_model_hash"]

logger = logging.getLogger(__name__)


def shared_model_hash(shared: npt.NDArray[np.float32], plan: RoundPlan) -> bytes:
    """The model digest a round is bound to: the shared weights sent and the plan."""
    return model_digest({"shared": shared}, plan.to_bytes())


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundOutcome:
    """What one round released and did to the global model."""

    round_id: int
    aggregate: SecureAggregate = field(repr=False)
    released: npt.NDArray[np.float64] = field(repr=False)
    """The update the strategy applied: the survivors' mean, or with client-level DP the
    noisy sum divided by the expected cohort size."""
    update_norm: float


class Coordinator:
    """The federation's server side (sans-I/O: the caller moves the messages).

    Args:
        config: the federation's configuration.
        initial_shared: the initial global shared weights (float32, flat).
        model_hash: digest of the model architecture the owners allow.
        plan_hash: digest of the training procedure the owners allow.
        roster_hash: digest of the signed roster.
        stream: the server's CSPRNG (cohort sampling).
        population: how many data owners the roster holds (client-level DP divides
            the noisy sum by the expected cohort size ``cohort_rate * population``).
        noise: the server's CSPRNG Gaussian noise (client-level DP only).
    """

    def __init__(
        self,
        *,
        config: SecurefedConfig,
        initial_shared: npt.NDArray[np.float32],
        model_hash: bytes,
        plan_hash: bytes,
        roster_hash: bytes,
        stream: CsprngStream,
        population: int | None = None,
        noise: SecureGaussianNoise | None = None,
    ) -> None:
        if initial_shared.ndim != 1 or initial_shared.dtype != np.float32:
            raise ValueError("global weights must be a flat float32 vector")
        self.config = config
        self.weights = initial_shared.copy()
        self.model_hash = model_hash
        self.plan_hash = plan_hash
        self.roster_hash = roster_hash
        self.strategy: Strategy = build_strategy(config.strategy)
        self._stream = stream
        self._params: SecAggParams = config.secagg.to_params(int(initial_shared.size))
        self._population = population
        self._noise = noise
        if config.client_privacy.enabled and (population is None or noise is None):
            raise ConfigError("client-level DP needs the population size and a noise source")

    @property
    def sensitivity(self) -> float:
        """One client's L2 bound on its contribution to the aggregated sum.

        The update clip plus stochastic rounding: each of the d coordinates moves
        by less than one quantisation step, so ||Q(x)|| < clip + step * sqrt(d).
        """
        step = self._params.quantization.step
        return self.config.update.clip_norm + step * math.sqrt(self.weights.size)

    @property
    def expected_cohort(self) -> float:
        """``cohort_rate * population``: the fixed denominator of client-level DP."""
        if self._population is None:
            raise ConfigError("the population size is unknown")
        return self.config.federation.cohort_rate * self._population

    @property
    def params(self) -> SecAggParams:
        """The secure-aggregation parameters of every training round."""
        return self._params

    def select_cohort(self, owners: Sequence[int]) -> tuple[int, ...]:
        """This round's cohort: Poisson sampling at ``cohort_rate`` (CSPRNG), or a fixed size.

        Raises:
            ConfigError: a fixed size larger than the number of owners.
        """
        fed = self.config.federation
        ids = sorted(owners)
        if fed.cohort_size is not None:
            if fed.cohort_size > len(ids):
                raise ConfigError("federation.cohort_size exceeds the number of data owners")
            chosen = np.sort(self._stream.sample_indices(len(ids), fed.cohort_size))
        elif fed.cohort_rate >= 1.0:
            chosen = np.arange(len(ids))
        else:
            chosen = np.flatnonzero(self._stream.bernoulli(len(ids), fed.cohort_rate))
        return tuple(ids[int(i)] for i in chosen)

    def plan(self, round_id: int, *, unit: PrivacyUnit, noise_multiplier: float) -> RoundPlan:
        """The plan every owner of this round's cohort receives."""
        t = self.config.training
        return RoundPlan(
            round_id=round_id,
            unit=unit,
            noise_multiplier=noise_multiplier,
            clip_norm=self.config.privacy.clip_norm,
            local_epochs=t.local_epochs,
            sampling_rate=t.sampling_rate,
            learning_rate=t.learning_rate,
            negatives=t.negatives,
            model_hash=self.model_hash,
            plan_hash=self.plan_hash,
        )

    def context(self, plan: RoundPlan) -> RoundContext:
        """The secure-aggregation context of a training round (bound to weights and plan)."""
        return RoundContext(
            federation_id=self.config.federation.federation_id,
            round_id=plan.round_id,
            model_hash=shared_model_hash(self.weights, plan),
            roster_hash=self.roster_hash,
            params=self._params,
        )

    def apply(self, round_id: int, result: AggregateResult) -> RoundOutcome:
        """Dequantise the released sum into the mean update and step the strategy."""
        aggregate = aggregate_mean(result, self._params.quantization)
        released = aggregate.mean
        client = self.config.client_privacy
        if client.enabled:
            if self._noise is None or client.noise_multiplier is None:  # checked at init
                raise ConfigError("client-level DP is not configured")
            total = aggregate.mean * aggregate.total_weight
            std = client.noise_multiplier * self.sensitivity
            noise = self._noise.sample(total.size, std, dtype=torch.float64).numpy()
            released = (total + noise) / self.expected_cohort
        before = self.weights
        self.weights = self.strategy.step(before, released)
        norm = float(np.linalg.norm(released))
        logger.info("round %d: %d survivors, |released update| %.4g", round_id,
                    len(aggregate.survivors), norm)  # fmt: skip
        return RoundOutcome(
            round_id=round_id, aggregate=aggregate, released=released, update_norm=norm
        )
