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
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from securefed import __version__
from securefed.client.owner import AcceptedRound, DataOwner
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
    catalogue_features,
    dirichlet_silos,
    into_silos,
    leave_one_out,
    load_interactions_csv,
    load_movielens,
    per_user,
    to_implicit,
)
from securefed.errors import (
    ConfigError,
    IntegrityError,
    PolicyViolation,
    PrivacyBudgetExceeded,
    SecurefedError,
)
from securefed.evaluation import MetricSums
from securefed.ledger import EntryKind, Ledger
from securefed.ledger.bodies import (
    client_gaussian_event,
    dp_sgd_event,
    federation_created_body,
)
from securefed.ledger.canonical import (
    CanonicalValue,
    decimal_text,
    parse_uint,
    to_canonical,
    uint_text,
)
from securefed.models.recommendation import (
    Recommender,
    RecommenderSpec,
    architecture_hash,
    build_model,
    flatten_shared,
    is_private_name,
    set_item_biases,
    unflatten_into,
)
from securefed.plan import RoundPlan, steps_per_round
from securefed.prior import (
    PRIOR_QUANT_BITS,
    PRIOR_ROUND,
    honest_shares,
    item_log_odds,
    prior_event,
    prior_noise_multiplier,
    prior_plan,
    quantization_range,
    session_hash,
)
from securefed.privacy.accountant import Budget, OwnerAccountant, calibrate_noise_multiplier
from securefed.privacy.events import ClientGaussianEvent, ComposedEvent, DpSgdEvent, PrivacyUnit
from securefed.privacy.noise import CsprngStream, SecureGaussianNoise, StreamPurpose
from securefed.randomness import OsRandom, RandomSource
from securefed.run_files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LEDGER_EXPORT_FILE,
    LEDGER_FILE,
    LEDGER_KEY_FILE,
    METRICS_FILE,
    OWNER_KEYS_FILE,
    SUMMARY_FILE,
)
from securefed.secagg.context import PROTOCOL_VERSION, RoundContext, SecAggParams
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.primitives import ct_equal
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry
from securefed.server.coordinator import Coordinator
from securefed.server.recorder import RoundRecorder, global_model_hash
from securefed.simulation import RoundReport, run_secagg_round

__all__ = [
    "FederationResult",
    "LedgerState",
    "RoundMetrics",
    "read_ledger_state",
    "run_federation",
    "write_toml",
]

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
    epsilon_federation: float | None
    """The federation's client-level epsilon (None without [client_privacy])."""
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
    stop_reason: str = ""
    prior_noise_multiplier: float = 0.0
    """The item-popularity prior's noise multiplier (0: exact counts, or no prior)."""
    prior_released: bool = False
    """Whether the prior (round 0) was released and set the item biases."""


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
    data = (
        load_movielens(path, items=config.data.items.value)
        if movielens
        else load_interactions_csv(path)
    )
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


def _item_features(config: SecurefedConfig, split: Split) -> torch.Tensor | None:
    """The model's fixed item vectors, from public catalogue metadata only (or None)."""
    m = config.model
    if not m.item_features:
        return None
    blocks = [block.value for block in m.item_features]
    return torch.from_numpy(
        catalogue_features(split.train, blocks, scale=m.feature_scale, width=m.dim)
    )


def _generator(rng: RandomSource) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int.from_bytes(rng.random_bytes(8), "big") >> 1)
    return g


def calibrate(config: SecurefedConfig, *, prior_sigma: float | None = None) -> tuple[float, float]:
    """Noise multiplier so that an owner spends at most the target over all rounds.

    The mechanism is the same for every owner (rate q and steps come from the
    plan, not from the data), so one calibration covers all; the worst case is an
    owner that takes part in every planned round. The target is capped at what the
    owners' budget lets them spend (the budget less the audit margin), so the last
    planned round still fits. Returns ``(noise multiplier, planned epsilon)``, the
    latter checked to be at most that target.

    ``prior_sigma``: the item-popularity prior's noise multiplier, composed before
    the rounds (0: no noisy prior); default :func:`prior_noise` of ``config``.
    """
    p, t = config.privacy, config.training
    steps = steps_per_round(t.local_epochs, t.sampling_rate) * config.federation.rounds
    spendable = math.inf
    if prior_sigma is None:
        prior_sigma = prior_noise(config)
    prior = None if prior_sigma == 0 else prior_event(prior_sigma, p.unit)

    def event_for(sigma: float) -> DpSgdEvent | ComposedEvent:
        training = DpSgdEvent(
            sampling_rate=t.sampling_rate, noise_multiplier=sigma, steps=steps, unit=p.unit
        )
        return training if prior is None else ComposedEvent(events=(prior, training))

    if p.noise_multiplier is not None:
        sigma = p.noise_multiplier
    else:
        if p.target_epsilon is None:
            raise ConfigError("privacy: set noise_multiplier or target_epsilon")
        spendable = Budget(epsilon=_budget_epsilon(config), delta=p.delta).spendable
        # A hair below, so that float rounding can never refuse the last planned round.
        target = min(p.target_epsilon, spendable) * (1 - 1e-9)
        try:
            sigma = calibrate_noise_multiplier(
                epsilon=target,
                delta=p.delta,
                sampling_rate=t.sampling_rate,
                steps=steps,
                backend=p.accountant,
                event_factory=event_for,
            )
        except ValueError as exc:
            raise ConfigError(f"privacy: no noise multiplier meets the target: {exc}") from None
    planned = OwnerAccountant(
        unit=p.unit, budget=Budget(epsilon=1e12, delta=p.delta), backend=p.accountant
    ).epsilon_after(event_for(sigma))
    if p.target_epsilon is not None and planned > min(p.target_epsilon, spendable):
        raise ConfigError(  # pragma: no cover - calibration returns sigma within target
            f"calibration failed: planned epsilon {planned:.4g} > target {p.target_epsilon:g}"
        )
    return sigma, planned


def prior_noise(config: SecurefedConfig) -> float:
    """The prior's noise multiplier: 0 without a prior or without DP (exact counts).

    The smallest whose one release alone spends ``prior.epsilon_share`` of each
    owner's spendable budget (securefed.prior); DP-SGD gets the rest.
    """
    p = config.privacy
    if not config.prior.enabled or not p.enabled:
        return 0.0
    budget = Budget(epsilon=_budget_epsilon(config), delta=p.delta)
    if p.noise_multiplier is None and p.target_epsilon is not None:
        # The share is of what the run may spend: the target, within the budget.
        budget = Budget(epsilon=min(budget.epsilon, p.target_epsilon), delta=p.delta)
    return prior_noise_multiplier(config.prior.epsilon_share, budget, backend=p.accountant)


def _budget_epsilon(config: SecurefedConfig) -> float:
    p = config.privacy
    budget = p.budget_epsilon if p.budget_epsilon is not None else p.target_epsilon
    if budget is None:
        raise ConfigError("privacy.budget_epsilon is required")
    return budget


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
        stream_rng: RandomSource | None = None,
    ) -> None:
        """Build the federation.

        Args:
            config: the federation's configuration.
            root: folder that a relative ``data.path`` is resolved against.
            rng: the randomness every key, stream and model draws from (default: OS).
            device: where owners train (default: CUDA when present, else CPU).
            centralised: build a one-owner baseline (all users on one owner, driven
                through its :class:`DataOwner` directly; no round is aggregated).
            stream_rng: what keys every sampling and noise stream (default: ``rng``);
                a resumed run passes fresh OS randomness here, so that no noise or
                sample drawn before the crash is ever drawn again, while ``rng``
                rebuilds the same identities.

        Raises:
            ConfigError: fewer owners than secure aggregation needs (or, with
                ``centralised``, more than one).
        """
        self.config = config
        self._root = root
        self._rng = rng or OsRandom()
        self._streams = stream_rng or self._rng
        self.recorder: RoundRecorder | None = None
        self.server_view: dict[int, OwnerAccountant] = {}
        """The coordinator's own accountant per owner (from the spends it recorded), for its
        check before each round; the owners' accountants stay authoritative."""
        self.checkpoint_path: Path | None = None
        """Where a resumable run checkpoints, just before each round's release is recorded."""
        self.on_spent: Callable[[int], None] | None = None
        """Called after a round's spends are durable, before any owner trains (tests)."""
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
        if config.prior.enabled and config.client_privacy.enabled:
            raise ConfigError("prior: not with client_privacy (round 0 would not be covered)")
        if config.prior.enabled and not centralised:
            limit = min(config.secagg.full_graph_up_to, config.secagg.max_clients)
            if len(self.shards) > limit:
                raise ConfigError(
                    f"prior: {len(self.shards)} data owners, but the prior runs one full-graph "
                    f"session of every owner (at most {limit}: secagg.full_graph_up_to)"
                )
        self.prior_noise_multiplier = prior_noise(config) if not centralised else 0.0
        n_items = self.split.n_items
        self.spec = _spec(config)
        self.item_features = _item_features(config, self.split)
        server_model = self._build(1, _generator(self._rng))
        initial = flatten_shared(server_model)
        self.model_hash = architecture_hash(self.spec, n_items, self.item_features)
        self.plan_hash = hashlib.sha256(
            _TRAINING_PROCEDURE + b"|" + config.training.optimizer.value.encode()
        ).digest()
        p = config.privacy
        unit_counts = [self._units(s) for s in self.shards]
        if p.enabled:
            self.noise_multiplier, self.planned_epsilon = calibrate(
                config, prior_sigma=self.prior_noise_multiplier
            )
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
        client = config.client_privacy
        self.coordinator = Coordinator(
            config=config,
            initial_shared=initial,
            model_hash=self.model_hash,
            plan_hash=self.plan_hash,
            roster_hash=self.roster.digest(),
            stream=CsprngStream(self._streams),
            population=len(self.shards),
            noise=SecureGaussianNoise(CsprngStream(self._streams, purpose=StreamPurpose.DP_NOISE))
            if client.enabled
            else None,
        )
        self.federation_accountant: OwnerAccountant | None = None
        """The federation's client-level accountant (only with [client_privacy])."""
        if client.enabled and client.budget_epsilon is not None:
            self.federation_accountant = OwnerAccountant(
                unit=PrivacyUnit.CLIENT,
                budget=Budget(epsilon=client.budget_epsilon, delta=client.delta),
                backend=p.accountant,  # the one the ledger's genesis names
            )
        self.metric_params = _metric_params(config, max(len(s.users) for s in self.shards))
        if p.enabled:
            budget = Budget(epsilon=_budget_epsilon(config), delta=p.delta)
            self.server_view = {
                oid: OwnerAccountant(unit=p.unit, budget=budget, backend=p.accountant)
                for oid in self.owners
            }

    def _units(self, shard: ClientShard) -> int:
        if self.config.privacy.unit.value == "record":
            return int(shard.train_items.size)
        return int(np.unique(shard.train_users).size)

    def _owner(self, shard: ClientShard, units: int, initial: npt.NDArray[np.float32]) -> DataOwner:
        p, t = self.config.privacy, self.config.training
        key = self.identities[shard.owner_id]
        if p.enabled:
            budget: Budget | None = Budget(epsilon=_budget_epsilon(self.config), delta=p.delta)
            min_sigma = self.noise_multiplier
        else:
            budget, min_sigma = None, 0.0
        in_prior = self.config.prior.enabled and len(self.shards) >= 2
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
            prior_min_cohort=len(self.shards) if in_prior else 0,
            corrupt_fraction=self.config.secagg.threat.corrupt_fraction,
            security_bits=self.config.secagg.threat.sigma,
            min_cohort=self.config.secagg.min_clients,
            # The prior's own floor: exactly the calibrated prior (0 without DP).
            prior_min_noise_multiplier=self.prior_noise_multiplier if in_prior else 0.0,
        )
        model = self._build(len(shard.users), _generator(self._rng))
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
            stream=CsprngStream(self._streams),
            eval_stream=CsprngStream(self._streams, purpose=StreamPurpose.EVALUATION_SAMPLING),
            device=self.device,
            identity=key,
            accounting=p.accountant,
        )

    # -- the ledger -----------------------------------------------------------------------

    def bind_ledger(self, recorder: RoundRecorder) -> None:
        """Record every round in ``recorder``'s ledger.

        Owners then train a DP round only after countersigning its durable SPEND entry.
        """
        self.recorder = recorder
        writer = recorder.ledger.writer_public_key
        for owner in self.owners.values():
            owner.bind_ledger(writer_key=writer, ledger_id=recorder.ledger_id)

    def genesis_body(self) -> dict[str, CanonicalValue]:
        """The FEDERATION_CREATED fields: resolved configuration, roster hash, versions."""
        return federation_created_body(
            federation_id=self.config.federation.federation_id,
            securefed_version=__version__,
            roster_hash=self.roster.digest(),
            protocol_versions={
                "secagg": str(PROTOCOL_VERSION),
                "ledger": "securefed/ledger/v1",
                "plan": "securefed/plan/v1",
                "training": _TRAINING_PROCEDURE.decode(),
                "accounting_online": self.config.privacy.accountant.value,
            },
            config=_canonical_config(self.config, self._root),
        )

    # -- one round ------------------------------------------------------------------------

    def train_round(
        self, round_id: int, *, on_client: Callable[[int, int], None] | None = None
    ) -> tuple[RoundReport | None, dict[str, int], float, int]:
        """Cohort, plan, acceptance, durable spends, local training, protected aggregation.

        With a ledger bound, the round is recorded in the order the "budget first"
        invariant needs: ROUND_PLANNED and MECHANISM, then each accepting owner's
        SPEND (durable) and its countersignature, and only then training, masking
        and aggregation; DROPOUTS and AGGREGATE_RELEASED follow. An owner whose
        budget would be overspent refuses the round (recorded once as
        BUDGET_EXHAUSTED) and never trains.

        Returns (secure-aggregation report, refusals by reason, update norm, cohort size).
        """
        c = self.coordinator
        recorder = self.recorder
        p = self.config.privacy
        cohort = c.select_cohort(list(self.owners))
        plan = c.plan(round_id, unit=p.unit, noise_multiplier=self.noise_multiplier)
        context = c.context(plan)
        sent = c.weights.copy()
        refused = {"policy": 0, "budget": 0}
        client_seconds: dict[int, float] = {}
        accepted: dict[int, AcceptedRound] = {}
        affordable = self.affordable(plan, cohort)
        for oid in cohort:
            owner = self.owners[oid]
            if oid not in affordable:  # the server's own check: the owner is not asked
                refused["budget"] += 1
                self._owner_exhausted(oid, round_id)
                continue
            start = time.process_time()
            try:
                accepted[oid] = owner.accept(plan)
            except PolicyViolation:
                refused["policy"] += 1
            except PrivacyBudgetExceeded:
                refused["budget"] += 1
                self._owner_exhausted(oid, round_id)
            client_seconds[oid] = time.process_time() - start
        event = next((a.event for a in accepted.values() if a.event is not None), None)
        for oid, acc in accepted.items():
            if acc.event is not None and oid in self.server_view:
                self.server_view[oid].compose_recorded(acc.event)
        client_event = self.client_event() if accepted else None
        if recorder is not None:
            recorder.planned(
                plan,
                cohort=cohort,
                cohort_rate=self.config.federation.cohort_rate,
                accepted=accepted,
                event=event,
                client_level=client_event is not None,
            )
        if client_event is not None and self.federation_accountant is not None:
            # The server's own spend: recorded (durably) before anything is released.
            eps = self.federation_accountant.spend(client_event)
            if recorder is not None:
                recorder.federation_spend(
                    event=client_event,
                    sensitivity=c.sensitivity,
                    delta=self.federation_accountant.budget.delta,
                    epsilon_after=eps,
                )
        if recorder is not None:
            for oid, acc in accepted.items():
                if acc.event is None:
                    continue
                owner = self.owners[oid]
                entry = recorder.spend(
                    oid, event=acc.event, delta=p.delta, epsilon_after=acc.epsilon_after
                )
                start = time.process_time()
                receipt = owner.countersign_spend(entry, ledger_id=recorder.ledger_id)
                client_seconds[oid] += time.process_time() - start
                recorder.countersignature(receipt)
        if self.on_spent is not None:
            self.on_spent(round_id)
        inputs = {}
        clipped = 0
        for done, (oid, acc) in enumerate(accepted.items()):
            if on_client is not None:
                on_client(done, len(accepted))
            owner = self.owners[oid]
            start = time.process_time()
            update, _ = owner.train_round(acc, sent, optimizer=self.config.training.optimizer)
            quantized, was_clipped = owner.protect(
                update, c.params.quantization, clip_norm=self.config.update.clip_norm
            )
            clipped += int(was_clipped)
            inputs[oid] = quantized
            client_seconds[oid] += time.process_time() - start
        self._last_clipped = clipped / max(1, len(inputs))
        self._last_client_seconds = client_seconds
        if len(inputs) < c.params.min_clients:
            if recorder is not None and inputs:
                recorder.dropouts({"too_few_inputs": list(inputs)})
            self._send_head()
            return None, refused, 0.0, len(cohort)
        report = run_secagg_round(
            roster=self.roster,
            identities={i: self.identities[i] for i in inputs},
            context=context,
            inputs=inputs,
            pinned_threat=self._pins(inputs),
            min_cohort=self._floors(inputs),
        )
        for oid, secs in client_seconds.items():
            report.client_seconds[oid] = report.client_seconds.get(oid, 0.0) + secs
        self._last_client_seconds = dict(report.client_seconds)
        if report.unverified_signers:
            logger.warning(
                "round %d: consistency signatures that did not verify, not counted "
                "(client: signers; a corrupt signer or a tampering server): %s",
                round_id,
                report.unverified_signers,
            )
        if recorder is not None:
            if report.result is not None:
                recorder.dropouts(report.result.dropped)
            else:
                recorder.dropouts({"aborted": list(inputs)})
        if report.result is None:
            self._send_head()
            return report, refused, 0.0, len(cohort)
        if report.result.inconsistent_shares:
            logger.warning(
                "round %d: wrong shares were decoded around; (owner, holder) pairs off "
                "the decoded polynomial (a lead, not proof; protocols/secagg.md 3.5): %s",
                round_id,
                list(report.result.inconsistent_shares),
            )
        outcome = c.apply(round_id, report.result)
        if self.checkpoint_path is not None:
            _write_checkpoint(self, self.checkpoint_path, round_id)
        if recorder is not None:
            recorder.released(
                mean=outcome.released,
                weight=outcome.aggregate.total_weight,
                new_weights=c.weights,
                survivors=outcome.aggregate.survivors,
            )
        self._send_head()
        return report, refused, outcome.update_norm, len(cohort)

    def prior_round(self) -> RoundReport | None:
        """Round 0: the item-popularity prior (securefed.prior), before any training round.

        Every owner is asked; each checks the plan and its budget (recording the
        spend), and with a ledger bound the round is recorded like a training
        round: ROUND_PLANNED (its ``release`` object names the noise placement and
        the honest-share assumption), MECHANISM, each countersigned SPEND, then the
        contributions go through one full-graph secure-aggregation session whose
        cohort floor every owner's client enforces, then DROPOUTS and
        AGGREGATE_RELEASED. The released sum sets the global model's item biases.

        Returns the secure-aggregation report (None when an owner refused: nothing
        is aggregated and the model keeps its initial biases).

        Raises:
            ConfigError: the prior is not configured, or the model has no item biases.
        """
        config = self.config
        if not config.prior.enabled:
            raise ConfigError("prior: not enabled")
        c = self.coordinator
        recorder = self.recorder
        p = config.privacy
        threat = ThreatModel(**config.secagg.threat.model_dump())
        plan = prior_plan(
            unit=p.unit, noise_multiplier=self.prior_noise_multiplier, model_hash=self.model_hash
        )
        ids = sorted(self.owners)
        floor = len(ids)
        # One divisor for every owner (bound into the session): the smallest any
        # owner's own pinned assumptions allow, at most the configuration's.
        honest = min(
            [honest_shares(floor, threat)]
            + [honest_shares(floor, o.policy.threat()) for o in self.owners.values()]
        )
        refused = []
        accepted: dict[int, AcceptedRound] = {}
        event = plan.dp_event()
        for oid in ids:
            if event is not None and oid in self.server_view and not self._fits(oid, event):
                refused.append(oid)
                continue
            try:
                accepted[oid] = self.owners[oid].accept_prior(plan, divisor=honest)
            except (PolicyViolation, PrivacyBudgetExceeded) as exc:
                logger.info("prior: owner %d refused: %s", oid, exc)
                refused.append(oid)
        for oid, acc in accepted.items():
            if acc.event is not None and oid in self.server_view:
                self.server_view[oid].compose_recorded(acc.event)
        if recorder is not None:
            recorder.planned(
                plan,
                cohort=ids,
                cohort_rate=1.0,
                accepted=accepted,
                event=event if accepted else None,
                release={
                    "kind": "item_counts",
                    "contribution_bound": decimal_text(plan.clip_norm),
                    "noise": "distributed" if event is not None else "none",
                    "min_cohort": uint_text(floor),
                    "honest_shares": uint_text(honest),
                    "corrupt_fraction": decimal_text(threat.corrupt_fraction),
                },
            )
            for oid, acc in accepted.items():
                if acc.event is None:
                    continue
                entry = recorder.spend(
                    oid, event=acc.event, delta=p.delta, epsilon_after=acc.epsilon_after
                )
                receipt = self.owners[oid].countersign_spend(entry, ledger_id=recorder.ledger_id)
                recorder.countersignature(receipt)
        if refused:
            # The session's floor is every owner: with one missing it cannot run.
            if recorder is not None and accepted:
                recorder.dropouts({"refused": sorted(accepted)})
            self._send_head()
            return None
        noise_std = self.prior_noise_multiplier / math.sqrt(honest)
        public = max(o.policy.public_units for o in self.owners.values())
        s = config.secagg
        params = SecAggParams(
            quantization=QuantizationSpec(
                bits=PRIOR_QUANT_BITS,
                clip=quantization_range(public, noise_std),
                max_weight=1,
            ),
            vector_length=self.split.n_items,
            max_clients=s.max_clients,
            threat=threat,
            graph=GraphKind.FULL,
            full_graph_up_to=s.full_graph_up_to,
            min_clients=floor,
        )
        context = RoundContext(
            federation_id=config.federation.federation_id,
            round_id=PRIOR_ROUND,
            model_hash=session_hash(plan, honest),
            roster_hash=self.roster.digest(),
            params=params,
        )
        inputs = {
            oid: self.owners[oid].prior_contribution(acc, context) for oid, acc in accepted.items()
        }
        report = run_secagg_round(
            roster=self.roster,
            identities={i: self.identities[i] for i in inputs},
            context=context,
            inputs=inputs,
            min_cohort={oid: self.owners[oid].policy.prior_min_cohort for oid in inputs},
            pinned_threat=self._pins(inputs),
            full_graph_only=True,
        )
        if recorder is not None:
            recorder.dropouts(
                report.result.dropped if report.result is not None else {"aborted": list(inputs)}
            )
        if report.result is None:
            self._send_head()
            return report
        mean, weight = dequantize(report.result.total, params.quantization)
        total = mean * weight
        self.set_item_prior(total)
        if self.checkpoint_path is not None:
            _write_checkpoint(self, self.checkpoint_path, PRIOR_ROUND)
        if recorder is not None:
            recorder.released(
                mean=total, weight=weight, new_weights=c.weights, survivors=report.result.survivors
            )
        self._send_head()
        return report

    def set_item_prior(self, counts: npt.NDArray[np.float64]) -> None:
        """Set the global model's item biases from (released) item counts.

        Post-processing of the counts (:func:`~securefed.prior.item_log_odds`); the
        prior round calls it with the securely aggregated total, a one-owner baseline
        with its exact counts.
        """
        model = self._build(1, torch.Generator())
        unflatten_into(model, self.coordinator.weights)
        set_item_biases(model, item_log_odds(counts, self.config.training.negatives))
        self.coordinator.weights = flatten_shared(model)

    def _build(self, n_users: int, generator: torch.Generator) -> Recommender:
        """A fresh model of the federation's architecture (with its fixed item features)."""
        return build_model(
            self.spec, n_users, self.split.n_items, generator, item_features=self.item_features
        )

    def _pins(self, owner_ids: Iterable[int]) -> dict[int, ThreatModel]:
        """Each owner's own secure-aggregation assumptions, which its client enforces."""
        return {oid: self.owners[oid].policy.threat() for oid in owner_ids}

    def _floors(self, owner_ids: Iterable[int]) -> dict[int, int]:
        """Each owner's own cohort floor for training and evaluation sessions."""
        return {oid: self.owners[oid].policy.min_cohort for oid in owner_ids}

    def client_event(self) -> ClientGaussianEvent | None:
        """One round of the client-level mechanism, as accounted (None without [client_privacy]).

        Accounted at rate 1, i.e. without amplification by cohort sampling: who
        was sampled is seen by the server and recorded in the ledger (ROUND_PLANNED,
        SPEND), so the sample is not secret from anyone the guarantee should hold
        against. Every client is then covered as if it took part in every round.
        """
        client = self.config.client_privacy
        if not client.enabled or client.noise_multiplier is None:
            return None
        return ClientGaussianEvent(
            cohort_rate=1.0, noise_multiplier=client.noise_multiplier, rounds=1
        )

    def federation_affords(self) -> bool:
        """The server's dry run of the federation budget for one more round."""
        event = self.client_event()
        if event is None or self.federation_accountant is None:
            return True
        try:
            self.federation_accountant.check(event)
        except PrivacyBudgetExceeded:
            return False
        return True

    def federation_epsilon(self) -> float | None:
        """The federation's client-level epsilon (None without [client_privacy])."""
        accountant = self.federation_accountant
        return None if accountant is None else accountant.epsilon()

    def affordable(self, plan: RoundPlan, owners: Iterable[int]) -> set[int]:
        """Those of ``owners`` whose budget the plan's event fits (the coordinator's dry run).

        Uses the coordinator's view of each owner's recorded spends and the
        configured budget; each owner still checks its own accountant and policy.
        """
        event = plan.dp_event()
        if event is None or not self.server_view:
            return set(owners)
        return {oid for oid in owners if self._fits(oid, event)}

    def can_run(self, plan: RoundPlan) -> bool:
        """Whether any owner's budget fits the plan (stops at the first that does)."""
        event = plan.dp_event()
        if event is None or not self.server_view:
            return True
        return any(self._fits(oid, event) for oid in self.server_view)

    def _fits(self, owner_id: int, event: DpSgdEvent) -> bool:
        try:
            self.server_view[owner_id].check(event)
        except PrivacyBudgetExceeded:
            return False
        return True

    def _owner_exhausted(self, owner_id: int, round_id: int) -> None:
        """Record (once) that ``owner_id`` cannot afford ``round_id``, in the server's figures."""
        view = self.server_view.get(owner_id)
        if self.recorder is not None and view is not None:
            self.recorder.owner_exhausted(owner_id, round_id=round_id, spent=view)

    def _send_head(self) -> None:
        """Every owner receives the ledger head after each round."""
        if self.recorder is None:
            return
        head = self.recorder.head()
        for owner in self.owners.values():
            owner.receive_head(head)

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
                pinned_threat=self._pins(members),
                min_cohort=self._floors(members),
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


def _changed_keys(
    recorded: object, current: object, default: object, prefix: str = ""
) -> list[str]:
    """The dotted keys at which a current canonical configuration differs from a recorded one.

    A key the recorded configuration lacks (a field a later securefed added) is no
    change while its current value is its default, the behaviour the recorded run had.
    """
    if isinstance(recorded, dict) and isinstance(current, dict):
        defaults = default if isinstance(default, dict) else {}
        changed = []
        for key in sorted(set(recorded) | set(current)):
            if key not in recorded and key in defaults and current[key] == defaults[key]:
                continue
            changed += _changed_keys(
                recorded.get(key), current.get(key), defaults.get(key), f"{prefix}{key}."
            )
        return changed
    return [] if recorded == current else [prefix.rstrip(".") or "(root)"]


def _canonical_config(config: SecurefedConfig, root: Path | None) -> dict[str, CanonicalValue]:
    """The resolved configuration (every default explicit, the data path absolute)."""
    value = to_canonical(_resolved_config(config, root).model_dump(mode="json"))
    if not isinstance(value, dict):  # pragma: no cover - a model dumps to a mapping
        raise TypeError("configuration must dump to a mapping")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerState:
    """What a ledger says about a federation in progress (for a restart)."""

    last_planned: int
    """The last planned round id (0 before any)."""
    last_released: int | None
    """The last round whose aggregate was released (None before any; 0 is the prior)."""
    released_model_hash: bytes | None
    spends: dict[int, list[tuple[int, DpSgdEvent]]]
    federation_spends: list[ClientGaussianEvent]
    exhausted: frozenset[int]
    planned_model_hashes: frozenset[bytes] = frozenset()
    """The model (architecture) hashes the recorded round plans carry."""


def read_ledger_state(ledger: Ledger) -> LedgerState:
    """Scan a verified ledger: each owner's spends, the last planned and released rounds."""
    planned = 0
    released: int | None = None
    model_hash: bytes | None = None
    spends: dict[int, list[tuple[int, DpSgdEvent]]] = {}
    exhausted: set[int] = set()
    federation: list[ClientGaussianEvent] = []
    models: set[bytes] = set()
    for entry in ledger.entries():
        body = entry.fields()
        if entry.kind is EntryKind.ROUND_PLANNED:
            planned = max(planned, parse_uint(body["round_id"]))
            plan = body.get("plan")
            if isinstance(plan, dict) and isinstance(plan.get("model_hash"), str):
                models.add(bytes.fromhex(str(plan["model_hash"])))
        elif entry.kind is EntryKind.SPEND:
            owner = parse_uint(body["owner_id"])
            spends.setdefault(owner, []).append((parse_uint(body["round_id"]), dp_sgd_event(body)))
        elif entry.kind is EntryKind.AGGREGATE_RELEASED:
            released = parse_uint(body["round_id"])
            model_hash = bytes.fromhex(str(body["model_hash"]))
        elif entry.kind is EntryKind.FEDERATION_SPEND:
            federation.append(client_gaussian_event(body))
        elif entry.kind is EntryKind.BUDGET_EXHAUSTED and "owner_id" in body:
            exhausted.add(parse_uint(body["owner_id"]))
    return LedgerState(
        last_planned=planned,
        last_released=released,
        released_model_hash=model_hash,
        spends=spends,
        federation_spends=federation,
        exhausted=frozenset(exhausted),
        planned_model_hashes=frozenset(models),
    )


def _write_checkpoint(fed: Federation, path: Path, round_id: int) -> None:
    """The global model, the strategy's moments and each owner's private parameters.

    Written just before the round's AGGREGATE_RELEASED is recorded; the previous
    checkpoint is kept as ``<name>.prev`` so that a crash between this write and
    the release resumes from the previous round. Simulation only (both sides live
    in one process; a deployment keeps each side's state on its own machine). An
    owner's shared parameters are never saved: after local training they are the
    global model plus its own update, which only secure aggregation may see. The
    private user embeddings saved are DP-SGD outputs (covered by each owner's
    record- or person-level guarantee). The ledger's model hash authenticates it.
    """
    state: dict[str, Any] = {
        "round": round_id,
        "weights": torch.from_numpy(fed.coordinator.weights.copy()),
        "strategy": {k: torch.from_numpy(v) for k, v in fed.coordinator.strategy.state().items()},
        "owners": {
            oid: {k: v for k, v in o.model.state_dict().items() if is_private_name(k)}
            for oid, o in fed.owners.items()
        },
    }
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        torch.save(state, out)
        out.flush()
        os.fsync(out.fileno())
    if path.exists():
        path.replace(path.with_name(path.name + ".prev"))
    partial.replace(path)


def _resume(fed: Federation, ledger: Ledger, checkpoint: Path) -> int:
    """Restore a restarted federation from its ledger; returns the next round id.

    Every SPEND the ledger holds is composed into its owner's accountant (a round
    that was planned and spent but never released stays counted: crashes may
    over-count, never under-count); rounds up to the last planned one are never
    run again, so nothing is released twice. The global model comes from the
    checkpoint, whose hash must be the one the last AGGREGATE_RELEASED recorded.

    Raises:
        IntegrityError: the roster, or the checkpoint, is not the one the ledger records.
        ConfigError: the resolved configuration is not the one the ledger's genesis
            records (a resumed run may not change its accountant, targets or plan),
            or the model's hash is not the one its recorded rounds were planned for.
    """
    genesis = next(iter(ledger.entries())).fields()
    # The whole resolved configuration, data path included (a field added since, at
    # its default, is no change); checked first, so that a changed key is named.
    recorded = genesis.get("config")
    current = fed.genesis_body()["config"]
    changed = _changed_keys(recorded, current, _canonical_config(SecurefedConfig(), None))
    if changed:
        raise ConfigError(
            "resume: the configuration differs from the one the ledger records at "
            + ", ".join(changed[:5])
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        )
    if genesis["roster_hash"] != fed.roster.digest().hex():
        raise IntegrityError()
    state = read_ledger_state(ledger)
    if state.planned_model_hashes - {fed.model_hash}:
        # The configuration is the same, but the model is not: the catalogue the
        # fixed item features come from (or the item set) changed on disk.
        raise ConfigError(
            "resume: the model differs from the one the ledger's rounds were planned for "
            "(has the data or its item catalogue changed?)"
        )
    for oid, events in state.spends.items():
        fed.owners[oid].restore_spends(events)
        for _, event in events:
            if oid in fed.server_view:
                fed.server_view[oid].compose_recorded(event)
    if fed.federation_accountant is not None:
        for client_event in state.federation_spends:
            fed.federation_accountant.compose_recorded(client_event)
    if state.last_released is not None:
        candidates = [checkpoint, checkpoint.with_name(checkpoint.name + ".prev")]
        loaded = [torch.load(c, weights_only=True) for c in candidates if c.is_file()]
        matching = [c for c in loaded if c["round"] == state.last_released]
        if not matching or state.released_model_hash is None:
            raise IntegrityError()
        saved = matching[0]
        weights = saved["weights"].numpy()
        if not ct_equal(global_model_hash(weights), state.released_model_hash):
            raise IntegrityError()
        fed.coordinator.weights = weights.astype(np.float32)
        fed.coordinator.strategy.load_state({k: v.numpy() for k, v in saved["strategy"].items()})
        for oid, owner_state in saved["owners"].items():
            fed.owners[int(oid)].model.load_state_dict(owner_state, strict=False)
    recorder = RoundRecorder(ledger)
    recorder.resume_after(state.last_planned, state.exhausted)
    fed.bind_ledger(recorder)
    logger.info(
        "resumed: last planned round %d, last released %s", state.last_planned, state.last_released
    )
    return state.last_planned + 1


def run_federation(
    config: SecurefedConfig,
    *,
    root: Path | None = None,
    out_dir: Path | None = None,
    rng: RandomSource | None = None,
    writer_key: IdentityKey | None = None,
    resume: bool = False,
    on_round: Callable[[RoundMetrics], None] | None = None,
    on_start: Callable[[Federation], None] | None = None,
    on_client: Callable[[int, int], None] | None = None,
    on_spent: Callable[[int], None] | None = None,
) -> FederationResult:
    """Run the configured federation.

    With ``out_dir``, it writes ``metrics.jsonl``, ``config.toml`` and
    ``summary.json``, and keeps the signed ledger ``ledger.db`` (its writer's
    public key in ``ledger.pub``, the owners' in ``owner_keys.json``; sealed and
    exported to ``ledger.jsonl`` when the run ends). Given a ``writer_key``, the
    run is resumable: a checkpoint (global model, strategy moments and, since both
    sides live in this one process, each owner's private parameters) is written
    just before each round's release is recorded.

    Args:
        config: the federation's configuration.
        root: folder a relative ``data.path`` is resolved against.
        out_dir: where the run's files go (no ledger without it).
        rng: the randomness every key, stream and model draws from (default: OS).
        writer_key: the ledger writer's key (default: a fresh one, kept in memory
            only, and no checkpoint is written: the run can then not be resumed).
        resume: continue the run in ``out_dir`` after a crash (needs ``writer_key``
            and the same ``rng`` seed, so the roster is the one the ledger records).
        on_round: called with each round's metrics.
        on_start: called with the built federation before the first round.
        on_client: called with (clients done, clients in the round) during training.
        on_spent: called with the round id once a round's spends are durable,
            before any owner trains (for crash tests).

    Raises:
        ConfigError: ``resume`` without ``out_dir`` or ``writer_key``, or (without
            ``resume``) ``out_dir`` already holds a ledger, or (with ``resume``) the
            configuration differs from the one the ledger records.
        IntegrityError: on resume, the roster or checkpoint does not match the ledger.
    """
    if resume and (out_dir is None or writer_key is None):
        raise ConfigError("resume needs out_dir and the ledger's writer key")
    if not resume and out_dir is not None and (out_dir / LEDGER_FILE).exists():
        raise ConfigError(
            f"{out_dir} already holds a run ({LEDGER_FILE}): a ledger is never overwritten; "
            "choose another output folder, remove this one, or resume it"
        )
    # A resumed run rebuilds its identities from ``rng`` (the roster the ledger records)
    # but keys every noise and sampling stream afresh: reusing them would repeat noise.
    fed = Federation(config, root=root, rng=rng, stream_rng=OsRandom() if resume else None)
    fed.on_spent = on_spent
    if on_start is not None:
        on_start(fed)
    result = FederationResult(
        noise_multiplier=fed.noise_multiplier,
        planned_epsilon=fed.planned_epsilon,
        owners=len(fed.owners),
        parameters=int(fed.coordinator.weights.size),
        prior_noise_multiplier=fed.prior_noise_multiplier,
    )
    metrics_file = None
    ledger: Ledger | None = None
    first_round = 1
    stop_reason = f"federation finished: {config.federation.rounds} rounds"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ledger_path = out_dir / LEDGER_FILE
        if writer_key is not None:
            fed.checkpoint_path = out_dir / CHECKPOINT_FILE
        if resume:
            assert writer_key is not None  # noqa: S101 - checked above
            pinned = bytes.fromhex((out_dir / LEDGER_KEY_FILE).read_text().strip())
            ledger = Ledger.open(ledger_path, writer_key, pinned_key=pinned)
            if ledger.sealed:
                ledger.close()
                raise ConfigError(f"{ledger_path}: the run is finished (sealed): nothing to resume")
            try:
                first_round = _resume(fed, ledger, out_dir / CHECKPOINT_FILE)
            except BaseException:
                ledger.close()
                raise
        else:
            key = writer_key or IdentityKey.generate(fed._rng)
            ledger = Ledger.create(ledger_path, key, federation=fed.genesis_body(), rng=fed._rng)
            (out_dir / LEDGER_KEY_FILE).write_text(key.public_key.hex() + "\n")
            (out_dir / OWNER_KEYS_FILE).write_text(
                json.dumps({str(i): k.public_key.hex() for i, k in sorted(fed.identities.items())})
            )
            fed.bind_ledger(RoundRecorder(ledger))
            (out_dir / CONFIG_FILE).write_text(
                write_toml(_resolved_config(config, root).model_dump(mode="json"))
            )
        metrics_file = (out_dir / METRICS_FILE).open("a" if resume else "w", encoding="utf-8")
    try:
        if config.prior.enabled and not resume:
            # Round 0 (never re-run on resume: its spends are counted, its release kept
            # only if the checkpoint of round 0 matches the ledger).
            report = fed.prior_round()
            result.prior_released = report is not None and report.result is not None
            logger.info("prior: %s", "released" if result.prior_released else "not released")
        for r in range(first_round, config.federation.rounds + 1):
            plan = fed.coordinator.plan(
                r, unit=config.privacy.unit, noise_multiplier=fed.noise_multiplier
            )
            if not fed.federation_affords():
                accountant = fed.federation_accountant
                if fed.recorder is not None and accountant is not None:
                    fed.recorder.federation_exhausted(r, spent=accountant)
                stop_reason = (
                    f"the federation's client-level budget is exhausted: stopped before round "
                    f"{r} of {config.federation.rounds}"
                )
                logger.info(stop_reason)
                break
            if not fed.can_run(plan):
                for oid in fed.owners:
                    fed._owner_exhausted(oid, r)
                stop_reason = (
                    f"every data owner's budget is exhausted: stopped before round {r} "
                    f"of {config.federation.rounds}"
                )
                logger.info(stop_reason)
                break
            wall = time.perf_counter()
            report, refused, norm, cohort = fed.train_round(r, on_client=on_client)
            metrics = None
            if r % config.evaluation.every == 0 or r == config.federation.rounds:
                metrics, _ = fed.evaluate(r, split=config.evaluation.split)
            row = _round_metrics(fed, r, report, refused, norm, cohort, metrics, wall)
            result.rounds.append(row)
            if metrics_file is not None:
                metrics_file.write(json.dumps(row.to_json(), sort_keys=True) + "\n")
                metrics_file.flush()
            if on_round is not None:
                on_round(row)
        result.final_test, _ = fed.evaluate(config.federation.rounds + 1, split="test")
        if ledger is not None and out_dir is not None:
            ledger.seal(reason=stop_reason)
            ledger.export_jsonl(out_dir / LEDGER_EXPORT_FILE)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if ledger is not None:
            ledger.close()
    result.stop_reason = stop_reason
    if out_dir is not None and result.final_test is not None:
        (out_dir / SUMMARY_FILE).write_text(
            json.dumps(
                {
                    "final_test": result.final_test,
                    "noise_multiplier": result.noise_multiplier,
                    "planned_epsilon_max": fed.planned_epsilon
                    if math.isfinite(fed.planned_epsilon)
                    else "inf",
                    "owners": result.owners,
                    "parameters": result.parameters,
                    "rounds_run": len(result.rounds),
                    "stop_reason": stop_reason,
                    "prior": {
                        "enabled": config.prior.enabled,
                        "released": result.prior_released,
                        "noise_multiplier": result.prior_noise_multiplier,
                    },
                },
                indent=2,
                sort_keys=True,
            )
        )
    return result


def _resolved_config(config: SecurefedConfig, root: Path | None) -> SecurefedConfig:
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"path": str(resolve_data_path(config, root))})
        }
    )


def _round_metrics(
    fed: Federation,
    r: int,
    report: RoundReport | None,
    refused: dict[str, int],
    norm: float,
    cohort: int,
    metrics: dict[str, float] | None,
    wall: float,
) -> RoundMetrics:
    eps = fed.epsilons()
    result = report.result if report is not None else None
    survivors = len(result.survivors) if result is not None else 0
    dropped = {k: len(v) for k, v in result.dropped.items()} if result is not None else {}
    senders = list(report.bytes_up) if report is not None else []
    secs = list(fed._last_client_seconds.values()) or [0.0]
    return RoundMetrics(
        round=r,
        cohort=cohort,
        survivors=survivors,
        dropouts=dropped,
        refused=refused,
        metrics=metrics,
        epsilon_max=max(eps),
        epsilon_median=float(statistics.median(eps)),
        epsilon_federation=fed.federation_epsilon(),
        bytes_up_per_client=float(np.mean([report.bytes_up[i] for i in senders]))
        if report is not None and senders
        else 0.0,
        bytes_down_per_client=float(np.mean([report.bytes_down[i] for i in senders]))
        if report is not None and senders
        else 0.0,
        client_seconds_mean=float(np.mean(secs)),
        client_seconds_max=float(np.max(secs)),
        server_seconds=report.server_seconds if report is not None else 0.0,
        update_norm=norm,
        l2_clipped_fraction=fed._last_clipped,
        wall_seconds=time.perf_counter() - wall,
    )


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
