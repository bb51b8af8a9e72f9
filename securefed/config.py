"""Configuration: TOML in, validated by pydantic, unknown keys rejected.

Every knob has a typed field; modes are enums, never free strings. The resolved
configuration converts into the protocol's own parameter types.
"""

from __future__ import annotations

import enum
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from securefed.errors import ConfigError
from securefed.privacy.accounting import ONLINE_DEFAULT, Backend
from securefed.privacy.events import PrivacyUnit
from securefed.secagg.context import SecAggParams
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.quantize import QuantizationSpec

__all__ = [
    "DEFAULT_FULL_GRAPH_UP_TO",
    "ClientPrivacyConfig",
    "FederationConfig",
    "GraphChoice",
    "PriorConfig",
    "QuantizationConfig",
    "SecAggConfig",
    "SecurefedConfig",
    "ThreatConfig",
    "load_config",
    "parse_config",
]

DEFAULT_FULL_GRAPH_UP_TO = 100
"""Full graph up to this cohort size, sparse above: the crossover measured by
``benchmarks/secagg.py`` (protocols/secagg.md §5.3, BENCHMARKS.md)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraphChoice(enum.StrEnum):
    """Which neighbour graph a round uses."""

    AUTO = "auto"
    FULL = "full"
    SPARSE = "sparse"


class QuantizationConfig(_Strict):
    """How updates are quantised into the ring (protocols/secagg.md §3.7)."""

    bits: int = Field(16, ge=1, le=48)
    clip: float = Field(1.0, gt=0, allow_inf_nan=False)
    max_weight: int = Field(1, ge=1)


class ThreatConfig(_Strict):
    """Stated assumptions for the graph and threshold (protocols/secagg.md §5)."""

    corrupt_fraction: float = Field(0.2, ge=0, lt=0.5)
    dropout_fraction: float = Field(0.1, ge=0, lt=1)
    sigma: int = Field(40, ge=1, le=256)
    eta: int = Field(20, ge=1, le=256)


class SecAggConfig(_Strict):
    """Secure-aggregation settings of a federation."""

    quantization: QuantizationConfig = QuantizationConfig()
    threat: ThreatConfig = ThreatConfig()
    max_clients: int = Field(1000, ge=2, lt=2**32)
    min_clients: int = Field(3, ge=2)
    graph: GraphChoice = GraphChoice.AUTO
    full_graph_up_to: int = Field(DEFAULT_FULL_GRAPH_UP_TO, ge=0)

    def to_params(self, vector_length: int) -> SecAggParams:
        """The protocol parameters for updates of ``vector_length`` coordinates.

        Raises:
            ConfigError: the combination is unsafe (e.g. the sum could wrap).
        """
        try:
            threat = ThreatModel(**self.threat.model_dump())
            quantization = QuantizationSpec(**self.quantization.model_dump())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        graph = None if self.graph is GraphChoice.AUTO else GraphKind[self.graph.name]
        return SecAggParams(
            quantization=quantization,
            vector_length=vector_length,
            max_clients=self.max_clients,
            threat=threat,
            graph=graph,
            full_graph_up_to=self.full_graph_up_to,
            min_clients=self.min_clients,
        )


class FederationConfig(_Strict):
    """Identity and schedule of the federation.

    The cohort of each round is Poisson-sampled from the data owners at rate
    ``cohort_rate`` with the OS CSPRNG; a fixed ``cohort_size`` may be asked for
    instead while no client-level DP mechanism is configured (record- and
    person-level accounting takes no amplification from cohort sampling: the
    server picks and sees the cohort).
    """

    federation_id: str = Field("securefed-demo", min_length=1, max_length=256)
    rounds: int = Field(20, ge=1, le=100_000)
    cohort_rate: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    cohort_size: int | None = Field(None, ge=1)


class DataFormat(enum.StrEnum):
    """How ``data.path`` is read."""

    MOVIELENS = "movielens"
    """A MovieLens directory: latest / 20M / 25M CSV, 100K ``u.data``, 1M ``.dat``."""
    CSV = "csv"
    """A CSV file with columns user, item, rating, timestamp."""


class PartitionKind(enum.StrEnum):
    """How users are spread over data owners."""

    PER_USER = "per_user"
    """Cross-device: one data owner per user."""
    SILOS = "silos"
    """Cross-silo: users split into ``silos`` owners of near-equal size."""
    DIRICHLET = "dirichlet"
    """Cross-silo, non-IID: Dirichlet(alpha) proportions per user category."""


class DirichletBy(enum.StrEnum):
    """The user category the Dirichlet partition skews."""

    POPULARITY = "popularity"
    GENRE = "genre"


class ItemSet(enum.StrEnum):
    """Which items a MovieLens data set has (securefed.data.load_movielens)."""

    RATED = "rated"
    """The movies that occur in the ratings: the item set depends on who rated what."""
    LISTED = "listed"
    """Every movie the movies file lists (the published catalogue), rated or not."""


class DataConfig(_Strict):
    """Where the interactions come from and how they are split and partitioned."""

    path: str = Field("examples/data/ml-latest-small", min_length=1)
    format: DataFormat = DataFormat.MOVIELENS
    items: ItemSet = ItemSet.RATED
    """MovieLens only: the rated movies, or the whole listed catalogue."""
    min_rating: float | None = Field(None, allow_inf_nan=False)
    partition: PartitionKind = PartitionKind.SILOS
    silos: int = Field(10, ge=1)
    dirichlet_alpha: float = Field(0.5, gt=0, allow_inf_nan=False)
    dirichlet_by: DirichletBy = DirichletBy.POPULARITY
    seed: int = Field(0, ge=0)
    """Seed of the (public) partition; not used for anything secret."""


class ModelKind(enum.StrEnum):
    """Reference recommender architectures (securefed.models)."""

    MF = "mf"
    NEUMF = "neumf"


class ItemFeature(enum.StrEnum):
    """A block of fixed item vectors from the public catalogue (securefed.data.features)."""

    GENRES = "genres"
    """The item's genres, multi-hot."""
    DECADE = "decade"
    """The item's release decade (from a MovieLens title's year), one-hot."""


class ModelConfig(_Strict):
    """The recommender. User embeddings stay on their owner; the rest is federated."""

    kind: ModelKind = ModelKind.MF
    dim: int = Field(32, ge=1, le=4096)
    """Embedding width (with genre features: the genres, then zero columns)."""
    mlp_dims: tuple[int, ...] = (32, 16, 8)
    item_features: tuple[ItemFeature, ...] = ()
    """MF only: fixed item vectors from these public catalogue blocks instead of a
    learned item table (empty: learned). They are not trained, noised or federated;
    DP-SGD then trains the user embeddings and the biases."""
    feature_scale: float = Field(3.0, gt=0, le=1e6, allow_inf_nan=False)
    """L2 norm of an item's row within each feature block."""


class OptimizerKind(enum.StrEnum):
    """The client's local optimiser (wrapped by the DP optimiser)."""

    SGD = "sgd"
    ADAM = "adam"


class TrainingConfig(_Strict):
    """Local training on each data owner."""

    local_epochs: int = Field(1, ge=1, le=1000)
    """Expected passes over an owner's units per round: ``ceil(1/q)`` steps each."""
    sampling_rate: float = Field(0.05, gt=0, le=1, allow_inf_nan=False)
    """Poisson rate q of each step, the same for every owner (never derived from an
    owner's private unit count, so the mechanism and its accounting are public)."""
    learning_rate: float = Field(0.05, gt=0, allow_inf_nan=False)
    optimizer: OptimizerKind = OptimizerKind.SGD
    negatives: int = Field(4, ge=1, le=1000)
    public_units_digits: int = Field(2, ge=1, le=18)
    """Each simulated owner declares its unit count rounded to this many significant
    digits as public (it divides the noisy sum; it never sets q or the steps)."""
    """Negatives per positive, drawn uniformly over the catalogue (independent of the data)."""


MIN_AUDIT_DELTA = 1e-12
"""The smallest delta a PLD or PRV run may target: its independent audit backend (PRV,
or PLD) re-accounts it (PRV raises below about 1e-13)."""


class PrivacyConfig(_Strict):
    """Record- or person-level DP-SGD on every data owner.

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set when
    ``enabled``: a target is turned into the noise multiplier that spends it
    over all planned rounds, assuming the owner takes part in every one.
    """

    enabled: bool = True
    unit: PrivacyUnit = PrivacyUnit.RECORD
    noise_multiplier: float | None = Field(None, gt=0, allow_inf_nan=False)
    target_epsilon: float | None = Field(8.0, gt=0, allow_inf_nan=False)
    delta: float = Field(1e-5, gt=0, lt=1)
    clip_norm: float = Field(1.0, gt=0, allow_inf_nan=False)
    budget_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Each owner's budget (default: ``target_epsilon``, else unlimited is refused)."""
    accountant: Backend = ONLINE_DEFAULT
    """The online accountant budgets are calibrated and enforced on, by the owners
    and the coordinator alike: ``rdp`` (default; an upper bound, fast), ``pld``
    (tighter: about 10% less epsilon for the same noise; each spend takes 0.2-0.4 s
    instead of under 1 ms) or ``prv``. The ledger names it, and the audit
    re-accounts with another."""


class ClientPrivacyConfig(_Strict):
    """Client-level DP (DP-FedAvg): the server adds Gaussian noise to the unmasked sum.

    Each round's sum of L2-clipped updates gets N(0, (noise_multiplier x S)^2)
    per coordinate, S being one client's L2 bound (``update.clip_norm`` plus the
    quantisation slack), and is divided by the expected cohort size; cohorts are
    Poisson-sampled at ``federation.cohort_rate``. The noise is added centrally
    after unmasking, so this guarantee trusts the server. The federation's
    budget applies only when this is enabled.
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(None, gt=0, allow_inf_nan=False)
    delta: float = Field(1e-5, gt=0, lt=1)
    budget_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)
    """The federation's budget; required when enabled."""


class PriorConfig(_Strict):
    """The item-popularity prior (securefed.prior): round 0 before any training round.

    Each owner contributes its bounded item counts plus a share of Gaussian noise
    through one full-graph secure-aggregation session of every owner; the server
    initialises the item biases from the released sum. With ``privacy.enabled``
    the release alone spends ``epsilon_share`` of each owner's spendable budget
    and DP-SGD is calibrated on what remains; without it the counts are summed
    exactly. Needs a model with item biases (``model.kind = "mf"``).
    """

    enabled: bool = False
    epsilon_share: float = Field(0.25, gt=0, lt=1, allow_inf_nan=False)


class UpdateConfig(_Strict):
    """Client-level post-processing of each update before quantisation."""

    clip_norm: float = Field(1.0, gt=0, allow_inf_nan=False)
    """L2 bound on an update; also the quantiser's per-coordinate range."""


class StrategyChoice(enum.StrEnum):
    """Server optimiser over the aggregate (Reddi et al. 2021)."""

    FEDAVG = "fedavg"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


class StrategyConfig(_Strict):
    """The server strategy."""

    kind: StrategyChoice = StrategyChoice.FEDAVG
    server_lr: float = Field(1.0, gt=0, allow_inf_nan=False)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0, allow_inf_nan=False)


class EvaluationConfig(_Strict):
    """Leave-one-out evaluation, run on each owner with its private user embeddings."""

    every: int = Field(1, ge=1)
    k: int = Field(10, ge=1)
    sampled_negatives: int = Field(99, ge=1)
    split: str = Field("validation", pattern="^(validation|test)$")


class SecurefedConfig(_Strict):
    """The whole configuration file."""

    federation: FederationConfig = FederationConfig()
    secagg: SecAggConfig = SecAggConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    client_privacy: ClientPrivacyConfig = ClientPrivacyConfig()
    prior: PriorConfig = PriorConfig()
    update: UpdateConfig = UpdateConfig()
    strategy: StrategyConfig = StrategyConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> SecurefedConfig:
    """Validate a configuration mapping.

    Raises:
        ConfigError: unknown keys, wrong types or out-of-range values, naming ``source``.
    """
    try:
        config = SecurefedConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    if config.secagg.min_clients > config.secagg.max_clients:
        raise ConfigError(f"{source}: secagg.min_clients exceeds secagg.max_clients")
    privacy = config.privacy
    if privacy.enabled and (privacy.noise_multiplier is None) == (privacy.target_epsilon is None):
        raise ConfigError(
            f"{source}: privacy: set exactly one of noise_multiplier and target_epsilon"
        )
    if privacy.enabled and privacy.budget_epsilon is None and privacy.target_epsilon is None:
        raise ConfigError(f"{source}: privacy.budget_epsilon is required with noise_multiplier")
    tight = privacy.accountant is not Backend.RDP
    if privacy.enabled and tight and privacy.delta < MIN_AUDIT_DELTA:
        raise ConfigError(
            f"{source}: privacy: with the {privacy.accountant.value} accountant, delta must be "
            f"at least {MIN_AUDIT_DELTA:g} (the independent audit backend cannot re-account "
            'smaller ones); use accountant = "rdp" (audited with PLD)'
        )
    if privacy.unit is PrivacyUnit.CLIENT:
        raise ConfigError(
            f"{source}: privacy.unit: DP-SGD protects a record or a person; client-level "
            "DP is configured in [client_privacy]"
        )
    if config.data.items is ItemSet.LISTED and config.data.format is not DataFormat.MOVIELENS:
        raise ConfigError(f"{source}: data.items = 'listed' needs a MovieLens catalogue")
    features = config.model.item_features
    if features and config.model.kind is not ModelKind.MF:
        raise ConfigError(
            f"{source}: model.item_features: fixed item features need model.kind = mf"
        )
    if len(set(features)) != len(features):
        raise ConfigError(f"{source}: model.item_features: a block is named twice")
    if config.prior.enabled and config.model.kind is not ModelKind.MF:
        raise ConfigError(f"{source}: prior: needs a model with item biases (model.kind = mf)")
    if config.prior.enabled and config.client_privacy.enabled:
        raise ConfigError(
            f"{source}: prior: not with client_privacy (round 0 releases each owner's counts "
            "without the client-level mechanism, which would then not cover the run)"
        )
    client = config.client_privacy
    if client.enabled:
        if client.noise_multiplier is None or client.budget_epsilon is None:
            raise ConfigError(
                f"{source}: client_privacy: noise_multiplier and budget_epsilon are required"
            )
        if config.federation.cohort_size is not None:
            raise ConfigError(
                f"{source}: client_privacy needs Poisson cohorts (federation.cohort_rate), "
                "not a fixed federation.cohort_size"
            )
    return config


def load_config(path: str | Path) -> SecurefedConfig:
    """Read and validate a TOML configuration file.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or fails validation.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, source=str(p))
