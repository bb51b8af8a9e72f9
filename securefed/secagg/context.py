"""Round parameters and the round context that binds every key, mask and message.

(protocols/secagg.md §3.1.) The context digest covers the protocol version, the
federation, the round id, the hash of the global model and training plan the
client received, the roster hash and every public parameter. It salts every KDF,
is signed into every key advertisement and sits in the header of every message,
so clients that disagree on any of it cannot complete a round together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from securefed.errors import ConfigError
from securefed.secagg.encoding import Writer
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.primitives import KEY_BYTES, sha256
from securefed.secagg.quantize import MAX_RING_BITS, QuantizationSpec, ring_bits

__all__ = ["PROTOCOL_VERSION", "RoundContext", "SecAggParams", "model_digest"]

PROTOCOL_VERSION = 1
CONTEXT_LABEL = b"securefed/secagg/v1/context"
MODEL_LABEL = b"securefed/model/v1"
MAX_ROUND_ID = (1 << 64) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggParams:
    """Public secure-aggregation parameters of a round.

    Attributes:
        quantization: how updates enter the ring.
        vector_length: ``M``, update coordinates per client (the weight is extra).
        max_clients: ``n_max``; with the quantisation it fixes the ring size.
        threat: assumptions behind the graph degree and threshold.
        graph: force the full or sparse graph; ``None`` uses the crossover rule.
        full_graph_up_to: the crossover: the full graph up to this cohort size.
        min_clients: a round with fewer advertised clients aborts.
    """

    quantization: QuantizationSpec
    vector_length: int
    max_clients: int
    threat: ThreatModel
    graph: GraphKind | None = None
    full_graph_up_to: int = 100
    min_clients: int = 3

    def __post_init__(self) -> None:
        if self.vector_length < 1:
            raise ConfigError("vector_length must be >= 1")
        if not 2 <= self.max_clients < (1 << 32):
            raise ConfigError("max_clients must be in [2, 2^32)")
        if not 2 <= self.min_clients <= self.max_clients:
            raise ConfigError("min_clients must be in [2, max_clients]")
        if self.full_graph_up_to < 0:
            raise ConfigError("full_graph_up_to must be >= 0")
        bits = ring_bits(
            quantization_bits=self.quantization.bits,
            max_weight=self.quantization.max_weight,
            max_clients=self.max_clients,
        )
        if bits > MAX_RING_BITS:
            raise ConfigError(
                f"the sum could wrap: {bits} ring bits are needed "
                f"(quantisation {self.quantization.bits} + weight "
                f"{math.ceil(math.log2(self.quantization.max_weight))} + clients "
                f"{math.ceil(math.log2(self.max_clients))}), at most {MAX_RING_BITS} are supported"
            )

    @property
    def ring_bits(self) -> int:
        """``b = q + ceil(log2 w_max) + ceil(log2 n_max)``."""
        return ring_bits(
            quantization_bits=self.quantization.bits,
            max_weight=self.quantization.max_weight,
            max_clients=self.max_clients,
        )

    def encode(self, w: Writer) -> None:
        """Append the canonical encoding (floats as IEEE-754 binary64 big-endian bits)."""
        q = self.quantization
        w.u32(q.bits).fixed(np.float64(q.clip).astype(">f8").tobytes(), 8).u64(q.max_weight)
        w.u64(self.vector_length).u32(self.max_clients).u32(self.min_clients)
        t = self.threat
        w.fixed(np.float64(t.corrupt_fraction).astype(">f8").tobytes(), 8)
        w.fixed(np.float64(t.dropout_fraction).astype(">f8").tobytes(), 8)
        w.u32(t.sigma).u32(t.eta)
        w.u8(0 if self.graph is None else int(self.graph)).u32(self.full_graph_up_to)
        w.u8(self.ring_bits)
        w.u8(0)  # input-validation stage: reserved, 0 = off in protocol version 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundContext:
    """Everything a round is bound to. Equal contexts have equal digests."""

    federation_id: str
    round_id: int
    model_hash: bytes
    roster_hash: bytes
    params: SecAggParams
    _digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.federation_id:
            raise ValueError("federation_id must not be empty")
        if not 0 <= self.round_id <= MAX_ROUND_ID:
            raise ValueError("round_id must fit in 64 bits")
        if len(self.model_hash) != KEY_BYTES or len(self.roster_hash) != KEY_BYTES:
            raise ValueError("model_hash and roster_hash must be 32 bytes")
        object.__setattr__(self, "_digest", sha256(self.to_bytes()))

    def to_bytes(self) -> bytes:
        """Canonical encoding (protocols/secagg.md §3.1)."""
        w = Writer().fixed(CONTEXT_LABEL, len(CONTEXT_LABEL)).u8(PROTOCOL_VERSION)
        w.text(self.federation_id).u64(self.round_id)
        w.fixed(self.model_hash, KEY_BYTES).fixed(self.roster_hash, KEY_BYTES)
        self.params.encode(w)
        return w.getvalue()

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (computed once)."""
        return self._digest


def model_digest(tensors: Mapping[str, object], plan: bytes = b"") -> bytes:
    """Hash of a global model and training plan over a canonical tensor encoding.

    (protocols/secagg.md §3.2.) Tensors are taken in ascending order of their
    UTF-8 names; each contributes its name, NumPy dtype string in little-endian
    form (e.g. ``<f4``), shape, and C-order little-endian bytes. Torch tensors are
    accepted (via ``.detach().cpu().numpy()``). ``plan`` is the canonical bytes of
    the training plan.
    """
    w = Writer().fixed(MODEL_LABEL, len(MODEL_LABEL)).u32(len(tensors))
    for name in sorted(tensors, key=lambda s: s.encode("utf-8")):
        value = tensors[name]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        array = np.ascontiguousarray(np.asarray(value))
        if array.dtype.hasobject:
            raise TypeError("model tensors must have a numeric dtype")
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        w.text(name).text(little.dtype.str).u32(array.ndim)
        for dim in array.shape:
            w.u64(dim)
        w.var(little.tobytes())
    w.var(plan)
    return sha256(w.getvalue())
