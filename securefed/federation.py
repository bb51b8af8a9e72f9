"""A whole federated recommender in one process, through the client and server code.

``run_federation`` loads and partitions the data, provisions one identity, one
signed policy and one model per data owner, then runs rounds: the coordinator
samples a cohort and sends a plan; each owner checks it against its policy and
budget (the spend is recorded first), trains with DP-SGD, clips and quantises
its update; secure aggregation (``run_secagg_round``: every message encoded and
decoded) releases only the survivors' sum; the coordinator applies its strategy.
Evaluation runs on every owner with its private user embeddings, and the
per-owner metric sums travel through secure aggregation too.

The held-out metrics are a release that DP does not cover (they are not noised):
the report lists them as outside the guarantee.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from securefed.client.owner import DataOwner
from securefed.client.policy import OwnerPolicy
from securefed.client.trainer import LocalInteractions
from securefed.config import (
    DataFormat,
    DirichletBy,
    ModelKind,
    PartitionKind,
    SecurefedConfig,
)
from securefed.data import (
    ClientShard,
    PartitionBy,
    Split,
    dirichlet_silos,
    into_silos,
    leave_one_out,
    load_interactions_csv,
    load_movielens,
    per_user,
    to_implicit,
)
from securefed.errors import ConfigError, PolicyViolation, PrivacyBudgetExceeded, SecurefedError
from securefed.evaluation import MetricSums
from securefed.models.recommendation import RecommenderSpec, build_model, flatten_shared
from securefed.plan import steps_per_round
from securefed.privacy.accountant import Budget, OwnerAccountant, calibrate_noise_multiplier
from securefed.privacy.events import DpSgdEvent
from securefed.privacy.noise import CsprngStream, StreamPurpose
from securefed.randomness import OsRandom, RandomSource
from securefed.secagg.context import RoundContext, SecAggParams
from securefed.secagg.graph import ThreatModel
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry
from securefed.server.coordinator import Coordinator
from securefed.simulation import RoundReport, run_secagg_round

__all__ = ["FederationResult", "RoundMetrics", "run_federation", "write_toml"]

logger = logging.getLogger(__name__)

_TRAINING_PROCEDURE = b"securefed/recommendation/dp-sgd/v1"
"""Names the training procedure owners allow: BCE over (positive, uniform negatives)
rows, Opacus ghost clipping, CSPRNG Poisson sampling and noise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundMetrics:
    """One line of ``metrics.jsonl``."""

    round: int
    cohort: int
    survivors: int
    dropouts: dict[str, int]
    refused: dict[str, int]
    metrics: dict[str, float] | None
    epsilon_max: float
    epsilon_median: float
    bytes_up_per_client: float
    bytes_down_per_client: float
    client_seconds_mean: float
    client_seconds_max: float
    server_seconds: float
    update_norm: float
    l2_clipped_fraction: float
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready mapping (infinite epsilon as the string ``"inf"``)."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = "inf" if isinstance(value, float) and math.isinf(value) else value
        return out


@dataclass(slots=True, kw_only=True)
class FederationResult:
    """Every round's metrics and the final evaluation."""

    rounds: list[RoundMetrics] = field(default_factory=list)
    final_test: dict[str, float] | None = None
    noise_multiplier: float = 0.0
    planned_epsilon: float = math.inf
    """The largest epsilon any owner would reach taking part in every planned round."""
    owners: int = 0
    parameters: int = 0


def resolve_data_path(config: SecurefedConfig, root: Path | None) -> Path:
    """``data.path``, made absolute against ``root`` (the configuration file's folder)."""
    path = Path(config.data.path).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    return path.resolve()


def _load(config: SecurefedConfig, root: Path | None) -> Split:
    d = config.data
    path = resolve_data_path(config, root)
    movielens = d.format is DataFormat.MOVIELENS
    data = load_movielens(path) if movielens else load_interactions_csv(path)
    return leave_one_out(to_implicit(data, min_rating=d.min_rating))


def _partition(config: SecurefedConfig, split: Split) -> list[ClientShard]:
    d = config.data
    if d.partition is PartitionKind.PER_USER:
        return per_user(split)
    if d.partition is PartitionKind.SILOS:
        return into_silos(split, d.silos, seed=d.seed)
    by = PartitionBy.GENRE if d.dirichlet_by is DirichletBy.GENRE else PartitionBy.POPULARITY
    return dirichlet_silos(split, d.silos, alpha=d.dirichlet_alpha, by=by, seed=d.seed)


def _spec(config: SecurefedConfig) -> RecommenderSpec:
    m = config.model
    if m.kind is ModelKind.MF:
        return RecommenderSpec.mf(dim=m.dim)
    return RecommenderSpec.neumf(mf_dim=m.dim, mlp_dims=tuple(m.mlp_dims))


def architecture_hash(spec: RecommenderSpec, n_items: int) -> bytes:
    """Digest of a model architecture (what an owner's policy allows)."""
    text = f"securefed/model/v1|{spec.kind.value}|{spec.dim}|{spec.mlp_dims}|{n_items}"
    return hashlib.sha256(text.encode()).digest()


def _generator(rng: RandomSource) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int.from_bytes(rng.random_bytes(8), "big") >> 1)
    return g


def calibrate(config: SecurefedConfig) -> tuple[float, float]:
    """Noise multiplier so that an owner spends at most the target over all rounds.

    The mechanism is the same for every owner (rate q and steps come from the
    plan, not from the data), so one calibration covers all; the worst case is an
    owner that takes part in every planned round. Returns ``(noise multiplier,
    planned epsilon)``, the latter checked to be at most the target.
    """
    p, t = config.privacy, config.training
    steps = steps_per_round(t.local_epochs, t.sampling_rate) * config.federation.rounds
    if p.noise_multiplier is not None:
        sigma = p.noise_multiplier
    else:
        if p.target_epsilon is None:
            raise ConfigError("privacy: set noise_multiplier or target_epsilon")
        sigma = calibrate_noise_multiplier(
            epsilon=p.target_epsilon, delta=p.delta, sampling_rate=t.sampling_rate, steps=steps
        )
    event = DpSgdEvent(
        sampling_rate=t.sampling_rate, noise_multiplier=sigma, steps=steps, unit=p.unit
    )
    planned = OwnerAccountant(
        unit=p.unit, budget=Budget(epsilon=1e12, delta=p.delta)
    ).epsilon_after(event)
    if p.target_epsilon is not None and planned > p.target_epsilon:
        raise ConfigError(  # pragma: no cover - calibration returns sigma within target
            f"calibration failed: planned epsilon {planned:.4g} > target {p.target_epsilon:g}"
        )
    return sigma, planned


def public_units(count: int, digits: int) -> int:
    """``count`` rounded to ``digits`` significant digits (at least 1).

    What a simulated owner declares public as its size; only the step size
    depends on it (never the rate, the steps or the noise).
    """
    if count < 1:
        raise ValueError("an owner holds at least one unit")
    scale = 10 ** max(0, len(str(count)) - digits)
    rounded: int = (count + scale // 2) // scale * scale
    return max(1, rounded)


def _metric_params(config: SecurefedConfig, max_users: int) -> SecAggParams:
    bound = 1 << max(0, math.ceil(math.log2(max(1, max_users))))
    s = config.secagg
    return SecAggParams(
        quantization=QuantizationSpec(bits=24, clip=float(bound), max_weight=1),
        vector_length=len(MetricSums.zero().to_vector()),
        max_clients=s.max_clients,
        threat=ThreatModel(**s.threat.model_dump()),
        graph=None,
        full_graph_up_to=s.full_graph_up_to,
        min_clients=min(s.min_clients, 2),
    )


class Federation:
    """Everything one simulated federation holds (owners, coordinator, roster)."""

    def __init__(
        self,
        config: SecurefedConfig,
        *,
        root: Path | None = None,
        rng: RandomSource | None = None,
        device: torch.device | None = None,
        centralised: bool = False,
    ) -> None:
        """Build the federation.

        Args:
            config: the federation's configuration.
            root: folder that a relative ``data.path`` is resolved against.
            rng: the randomness every key, stream and model draws from (default: OS).
            device: where owners train (default: CUDA when present, else CPU).
            centralised: build a one-owner baseline (all users on one owner, driven
                through its :class:`DataOwner` directly; no round is aggregated).

        Raises:
            ConfigError: fewer owners than secure aggregation needs (or, with
                ``centralised``, more than one).
        """
        self.config = config
        self._rng = rng or OsRandom()
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.split = _load(config, root)
        self.shards = _partition(config, self.split)
        if centralised and len(self.shards) != 1:
            raise ConfigError("a centralised baseline needs data.partition = silos, silos = 1")
        if not centralised and len(self.shards) < config.secagg.min_clients:
            raise ConfigError(
                f"{len(self.shards)} data owner(s) but secure aggregation needs at least "
                f"secagg.min_clients = {config.secagg.min_clients}: no round could complete"
            )
        n_items = self.split.n_items
        self.spec = _spec(config)
        server_model = build_model(self.spec, 1, n_items, _generator(self._rng))
        initial = flatten_shared(server_model)
        self.model_hash = architecture_hash(self.spec, n_items)
        self.plan_hash = hashlib.sha256(
            _TRAINING_PROCEDURE + b"|" + config.training.optimizer.value.encode()
        ).digest()
        p = config.privacy
        unit_counts = [self._units(s) for s in self.shards]
        if p.enabled:
            self.noise_multiplier, self.planned_epsilon = calibrate(config)
        else:
            self.noise_multiplier, self.planned_epsilon = 0.0, math.inf
        self.identities = {s.owner_id: IdentityKey.generate(self._rng) for s in self.shards}
        self.roster = Roster(
            federation_id=config.federation.federation_id,
            version=1,
            entries=tuple(
                RosterEntry(client_id=i, name=f"owner-{i}", identity_key=k.public_key)
                for i, k in sorted(self.identities.items())
            ),
        )
        self.owners: dict[int, DataOwner] = {}
        for shard, units in zip(self.shards, unit_counts, strict=True):
            self.owners[shard.owner_id] = self._owner(shard, units, initial)
        self.coordinator = Coordinator(
            config=config,
            initial_shared=initial,
            model_hash=self.model_hash,
            plan_hash=self.plan_hash,
            roster_hash=self.roster.digest(),
            stream=CsprngStream(self._rng),
        )
        self.metric_params = _metric_params(config, max(len(s.users) for s in self.shards))

    def _units(self, shard: ClientShard) -> int:
        if self.config.privacy.unit.value == "record":
            return int(shard.train_items.size)
        return int(np.unique(shard.train_users).size)

    def _owner(self, shard: ClientShard, units: int, initial: npt.NDArray[np.float32]) -> DataOwner:
        p, t = self.config.privacy, self.config.training
        key = self.identities[shard.owner_id]
        if p.enabled:
            budget_eps = p.budget_epsilon if p.budget_epsilon is not None else p.target_epsilon
            if budget_eps is None:
                raise ConfigError("privacy.budget_epsilon is required")
            budget: Budget | None = Budget(epsilon=budget_eps, delta=p.delta)
            min_sigma = self.noise_multiplier
        else:
            budget, min_sigma = None, 0.0
        policy = OwnerPolicy(
            owner_id=shard.owner_id,
            unit=p.unit,
            min_noise_multiplier=min_sigma,
            max_clip_norm=p.clip_norm,
            max_local_epochs=t.local_epochs,
            max_sampling_rate=t.sampling_rate,
            public_units=public_units(units, t.public_units_digits),
            allowed_model_hashes=frozenset({self.model_hash}),
            allowed_plan_hashes=frozenset({self.plan_hash}),
            budget=budget,
        )
        model = build_model(self.spec, len(shard.users), self.split.n_items, _generator(self._rng))
        return DataOwner(
            signed_policy=policy.sign(key),
            owner_public_key=key.public_key,
            model=model,
            train=LocalInteractions(
                n_users=len(shard.users),
                n_items=self.split.n_items,
                users=shard.train_users,
                items=shard.train_items,
            ),
            validation_items=shard.validation_items,
            test_items=shard.test_items,
            stream=CsprngStream(self._rng),
            eval_stream=CsprngStream(self._rng, purpose=StreamPurpose.EVALUATION_SAMPLING),
            device=self.device,
        )

    # -- one round ------------------------------------------------------------------------

    def train_round(
        self, round_id: int, *, on_client: Callable[[int, int], None] | None = None
    ) -> tuple[RoundReport | None, dict[str, int], float, int]:
        """Cohort, plan, local training, protected aggregation, strategy step.

        Returns (secure-aggregation report, refusals by reason, update norm, cohort size).
        """
        c = self.coordinator
        cohort = c.select_cohort(list(self.owners))
        plan = c.plan(round_id, unit=self.config.privacy.unit,
                      noise_multiplier=self.noise_multiplier)  # fmt: skip
        context = c.context(plan)
        sent = c.weights.copy()
        inputs = {}
        refused = {"policy": 0, "budget": 0}
        clipped = 0
        client_seconds: dict[int, float] = {}
        for done, oid in enumerate(cohort):
            if on_client is not None:
                on_client(done, len(cohort))
            owner = self.owners[oid]
            start = time.process_time()
            try:
                accepted = owner.accept(plan)
            except PolicyViolation:
                refused["policy"] += 1
                continue
            except PrivacyBudgetExceeded:
                refused["budget"] += 1
                continue
            update, _ = owner.train_round(accepted, sent, optimizer=self.config.training.optimizer)
            quantized, was_clipped = owner.protect(
                update, c.params.quantization, clip_norm=self.config.update.clip_norm
            )
            clipped += int(was_clipped)
            inputs[oid] = quantized
            client_seconds[oid] = time.process_time() - start
        self._last_clipped = clipped / max(1, len(inputs))
        if len(inputs) < c.params.min_clients:
            self._last_client_seconds = client_seconds
            return None, refused, 0.0, len(cohort)
        report = run_secagg_round(
            roster=self.roster,
            identities={i: self.identities[i] for i in inputs},
            context=context,
            inputs=inputs,
        )
        for oid, secs in client_seconds.items():
            report.client_seconds[oid] = report.client_seconds.get(oid, 0.0) + secs
        self._last_client_seconds = dict(report.client_seconds)
        if report.result is None:
            return report, refused, 0.0, len(cohort)
        outcome = c.apply(round_id, report.result)
        return report, refused, outcome.update_norm, len(cohort)

    def evaluate(self, round_id: int, *, split: str) -> tuple[dict[str, float], RoundReport]:
        """Every owner evaluates the global model; the metric sums are securely aggregated.

        Owners are split into groups of at most ``secagg.full_graph_up_to`` (full-graph
        rounds, cheap per client); each group's sum is released and the sums added.
        So the server learns group sums of the metrics, never one owner's.
        """
        ev = self.config.evaluation
        weights = self.coordinator.weights
        params = self.metric_params
        inputs = {}
        for oid, owner in self.owners.items():
            sums = owner.evaluate(weights, split=split, k=ev.k,
                                  sampled_negatives=ev.sampled_negatives)  # fmt: skip
            inputs[oid] = owner.protect_metrics(sums, params.quantization)
        ids = sorted(inputs)
        size = max(params.min_clients, self.config.secagg.full_graph_up_to)
        groups = max(1, math.ceil(len(ids) / size))
        total = MetricSums.zero()
        report: RoundReport | None = None
        model_hash = hashlib.sha256(
            b"securefed/evaluation/v1|" + split.encode() + weights.tobytes()
        ).digest()
        roster_hash = self.roster.digest()
        for g in range(groups):
            members = ids[g::groups]
            context = RoundContext(
                federation_id=self.config.federation.federation_id,
                round_id=(1 << 62) | (round_id << 16) | g,
                model_hash=model_hash,
                roster_hash=roster_hash,
                params=params,
            )
            report = run_secagg_round(
                roster=self.roster,
                identities={i: self.identities[i] for i in members},
                context=context,
                inputs={i: inputs[i] for i in members},
            )
            if report.result is None:
                raise SecurefedError(f"evaluation aggregation aborted: {report.error}")
            mean, weight = dequantize(report.result.total, params.quantization)
            # Each owner's count is off by under one quantisation step after aggregation.
            tolerance = weight * params.quantization.step
            total = total + MetricSums.from_vector(mean * weight, count_tolerance=tolerance)
        if report is None:  # pragma: no cover - there is always at least one group
            raise SecurefedError("no owner to evaluate")
        return total.means(), report

    def epsilons(self) -> list[float]:
        """Each owner's epsilon spent so far."""
        return [o.epsilon() for o in self.owners.values()]


def run_federation(
    config: SecurefedConfig,
    *,
    root: Path | None = None,
    out_dir: Path | None = None,
    rng: RandomSource | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    on_start: Callable[[Federation], None] | None = None,
    on_client: Callable[[int, int], None] | None = None,
) -> FederationResult:
    """Run the configured federation; write ``metrics.jsonl`` and ``config.toml`` to ``out_dir``."""
    fed = Federation(config, root=root, rng=rng)
    if on_start is not None:
        on_start(fed)
    result = FederationResult(
        noise_multiplier=fed.noise_multiplier,
        planned_epsilon=fed.planned_epsilon,
        owners=len(fed.owners),
        parameters=int(fed.coordinator.weights.size),
    )
    metrics_file = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        # The resolved configuration: every default explicit, the data path absolute.
        resolved = config.model_copy(
            update={"data": config.data.model_copy(
                update={"path": str(resolve_data_path(config, root))}
            )}
        )  # fmt: skip
        (out_dir / "config.toml").write_text(write_toml(resolved.model_dump(mode="json")))
        metrics_file = (out_dir / "metrics.jsonl").open("w", encoding="utf-8")
    try:
        for r in range(1, config.federation.rounds + 1):
            wall = time.perf_counter()
            report, refused, norm, cohort = fed.train_round(r, on_client=on_client)
            metrics = None
            if r % config.evaluation.every == 0 or r == config.federation.rounds:
                metrics, _ = fed.evaluate(r, split=config.evaluation.split)
            eps = [e for e in fed.epsilons()]
            survivors = len(report.result.survivors) if report and report.result else 0
            dropped = (
                {k: len(v) for k, v in report.result.dropped.items()}
                if report and report.result
                else {}
            )
            senders = list(report.bytes_up) if report else []
            secs = list(fed._last_client_seconds.values()) or [0.0]
            row = RoundMetrics(
                round=r,
                cohort=cohort,
                survivors=survivors,
                dropouts=dropped,
                refused=refused,
                metrics=metrics,
                epsilon_max=max(eps),
                epsilon_median=float(statistics.median(eps)),
                bytes_up_per_client=float(np.mean([report.bytes_up[i] for i in senders]))
                if report and senders
                else 0.0,
                bytes_down_per_client=float(np.mean([report.bytes_down[i] for i in senders]))
                if report and senders
                else 0.0,
                client_seconds_mean=float(np.mean(secs)),
                client_seconds_max=float(np.max(secs)),
                server_seconds=report.server_seconds if report else 0.0,
                update_norm=norm,
                l2_clipped_fraction=fed._last_clipped,
                wall_seconds=time.perf_counter() - wall,
            )
            result.rounds.append(row)
            if metrics_file is not None:
                metrics_file.write(json.dumps(row.to_json(), sort_keys=True) + "\n")
                metrics_file.flush()
            if on_round is not None:
                on_round(row)
        result.final_test, _ = fed.evaluate(config.federation.rounds + 1, split="test")
    finally:
        if metrics_file is not None:
            metrics_file.close()
    if out_dir is not None and result.final_test is not None:
        (out_dir / "summary.json").write_text(
            json.dumps(
                {
                    "final_test": result.final_test,
                    "noise_multiplier": result.noise_multiplier,
                    "planned_epsilon_max": fed.planned_epsilon
                    if math.isfinite(fed.planned_epsilon)
                    else "inf",
                    "owners": result.owners,
                    "parameters": result.parameters,
                },
                indent=2,
                sort_keys=True,
            )
        )
    return result


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_toml(data: Mapping[str, Any]) -> str:
    """A TOML document for a two-level mapping of tables (None values are omitted)."""
    lines = ["# Resolved securefed configuration (every default made explicit)."]
    for table, values in data.items():
        lines.append(f"\n[{table}]")
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, Mapping):
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in values.items():
            if isinstance(value, Mapping):
                lines.append(f"\n[{table}.{key}]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
    return "\n".join(lines) + "\n"
