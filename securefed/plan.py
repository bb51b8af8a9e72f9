"""The round plan: what the server asks every data owner of a cohort to do in one round.

Encoded canonically (a label, then each field in a fixed order: u32/u64
big-endian integers, IEEE 754 binary64 big-endian floats, fixed 32-byte
digests); its bytes enter the round's model digest, so clients that were sent
different plans cannot have their masks cancel (protocols/secagg.md §3.2).
Owners check it against their signed policy (securefed.client.policy).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.secagg.encoding import Writer

__all__ = ["MAX_LOCAL_EPOCHS", "MAX_NEGATIVES", "RoundPlan", "f64", "positive", "steps_per_round"]

_PLAN_LABEL = b"securefed/round-plan/v1"
MAX_LOCAL_EPOCHS = 1000
MAX_NEGATIVES = 1000
"""Bounds that keep a plan from exhausting an owner's memory or time."""


def steps_per_round(local_epochs: int, rate: float) -> int:
    """``epochs * ceil(1 / q)`` steps: one epoch is ``1/q`` Poisson steps in expectation."""
    return local_epochs * math.ceil(1.0 / rate - 1e-12)


def f64(w: Writer, value: float) -> Writer:
    """Append an IEEE 754 binary64 big-endian float."""
    return w.fixed(struct.pack(">d", value), 8)


def positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is positive and finite."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundPlan:
    """What the server asks each owner to do in one round.

    Every quantity that shapes the DP mechanism is here and data-independent:
    the Poisson rate ``sampling_rate`` (the same for every owner, never derived
    from an owner's private unit count), the step count ``steps`` =
    ``local_epochs * ceil(1 / sampling_rate)``, the noise multiplier and the
    clipping norm. So an owner's accounting, and whether it accepts, depend on
    public values only.
    """

    round_id: int
    unit: PrivacyUnit
    noise_multiplier: float
    clip_norm: float
    local_epochs: int
    sampling_rate: float
    """Poisson rate q: each of an owner's units is in a step's sample with probability q."""
    learning_rate: float
    negatives: int
    model_hash: bytes
    plan_hash: bytes

    def __post_init__(self) -> None:
        if self.round_id < 0:
            raise ValueError("round_id must be >= 0")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError("noise_multiplier must be finite and >= 0 (0: no DP)")
        positive("clip_norm", self.clip_norm)
        positive("learning_rate", self.learning_rate)
        if not 1 <= self.local_epochs <= MAX_LOCAL_EPOCHS:
            raise ValueError(f"local_epochs must be in [1, {MAX_LOCAL_EPOCHS}]")
        if not 1 <= self.negatives <= MAX_NEGATIVES:
            raise ValueError(f"negatives must be in [1, {MAX_NEGATIVES}]")
        if not (math.isfinite(self.sampling_rate) and 0 < self.sampling_rate <= 1):
            raise ValueError("sampling_rate must be in (0, 1]")
        if len(self.model_hash) != 32 or len(self.plan_hash) != 32:
            raise ValueError("model_hash and plan_hash must be 32-byte digests")

    def to_bytes(self) -> bytes:
        """Canonical encoding (its hash enters the round's model digest)."""
        w = Writer().var(_PLAN_LABEL).u64(self.round_id).var(self.unit.value.encode())
        f64(w, self.noise_multiplier)
        f64(w, self.clip_norm)
        w.u32(self.local_epochs)
        f64(w, self.sampling_rate)
        f64(w, self.learning_rate)
        w.u32(self.negatives)
        w.fixed(self.model_hash, 32).fixed(self.plan_hash, 32)
        return w.getvalue()

    @property
    def steps(self) -> int:
        """DP-SGD steps per round: ``local_epochs * ceil(1 / q)`` (one epoch is 1/q steps)."""
        return steps_per_round(self.local_epochs, self.sampling_rate)

    def dp_event(self) -> DpSgdEvent | None:
        """What one owner's round under this plan spends (None for noise 0: not private)."""
        if self.noise_multiplier == 0:
            return None
        return DpSgdEvent(
            sampling_rate=self.sampling_rate,
            noise_multiplier=self.noise_multiplier,
            steps=self.steps,
            unit=self.unit,
        )

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()
