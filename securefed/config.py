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
from securefed.secagg.context import SecAggParams
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.quantize import QuantizationSpec

__all__ = [
    "DEFAULT_FULL_GRAPH_UP_TO",
    "FederationConfig",
    "GraphChoice",
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
    """Identity of the federation."""

    federation_id: str = Field("securefed-demo", min_length=1, max_length=256)


class SecurefedConfig(_Strict):
    """The whole configuration file."""

    federation: FederationConfig = FederationConfig()
    secagg: SecAggConfig = SecAggConfig()


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
