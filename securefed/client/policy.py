"""A data owner's signed local policy, and the round plans it accepts.

The policy lives with the client, is signed by the owner's own Ed25519 key, and
bounds what any round plan may ask: a malicious or misconfigured server cannot
lower the noise, raise the clipping norm or the epochs, change the privacy unit,
or run a model or plan the owner did not allow. The client records the plan it
accepted.

Both are signed over a canonical binary encoding: a label, then each field in
a fixed order (u32/u64 big-endian integers, IEEE 754 binary64 big-endian floats,
length-prefixed byte strings, sorted hash lists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from securefed.errors import PolicyViolation
from securefed.plan import RoundPlan, f64, positive
from securefed.privacy.accountant import Budget
from securefed.privacy.events import PrivacyUnit
from securefed.secagg.encoding import Writer
from securefed.secagg.graph import ThreatModel
from securefed.secagg.primitives import ed25519_verify
from securefed.secagg.roster import IdentityKey

__all__ = ["OwnerPolicy", "SignedPolicy", "accept_plan"]

_POLICY_LABEL = b"securefed/owner-policy/v1"


def _hashes(w: Writer, hashes: frozenset[bytes]) -> Writer:
    w.u32(len(hashes))
    for h in sorted(hashes):
        w.fixed(h, 32)
    return w


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerPolicy:
    """What a data owner allows any round plan to ask of it.

    Attributes:
        owner_id: the owner's client id in the roster.
        unit: the privacy unit every plan must use.
        min_noise_multiplier: plans with less noise are refused. 0 is an explicit
            opt-out of DP (a non-private baseline); it requires ``budget=None``.
        max_clip_norm: plans with a larger per-unit clipping norm are refused.
        max_local_epochs: plans with more local epochs are refused.
        max_sampling_rate: plans with a larger Poisson rate are refused.
        public_units: the unit count the owner declares public (e.g. a rounded
            figure). It only scales the step: DP-SGD divides the noisy clipped sum
            by ``q * public_units``. A fixed parameter of the mechanism, never
            recomputed from the data, so neighbouring datasets use the same one.
        allowed_model_hashes: digests of the model architectures the owner allows.
        allowed_plan_hashes: digests of the training procedures the owner allows.
        budget: the owner's (epsilon, delta) budget for ``unit`` (None only with
            ``min_noise_multiplier == 0``).
        prior_min_cohort: the smallest secure-aggregation cohort in which the owner
            contributes to the item-popularity prior (:mod:`securefed.prior`); its
            noise share assumes a session at least this large, and its client
            refuses a smaller one. 0: the owner takes no part in a prior.
        corrupt_fraction: the share of a secure-aggregation cohort the owner assumes
            may collude with the server; its client refuses a round context that
            assumes less (a lower threshold), and the prior's noise share counts on
            no more honest inputs than this leaves.
        security_bits: the statistical security (``sigma``) the owner requires of
            a sparse graph; a context with less is refused.
        min_cohort: the smallest secure-aggregation cohort (advertised clients) in
            which the owner sends a masked input, for training and evaluation
            alike; its client refuses a smaller one, whatever the round context says.
        prior_min_noise_multiplier: the smallest noise multiplier of a prior the
            owner contributes to (its own floor, separate from the training rounds':
            one full-batch release needs more noise than a subsampled step for the
            same epsilon). Required (> 0) when the owner takes part in a prior and
            requires DP; 0 otherwise.
    """

    owner_id: int
    unit: PrivacyUnit
    min_noise_multiplier: float
    max_clip_norm: float
    max_local_epochs: int
    max_sampling_rate: float
    public_units: int
    allowed_model_hashes: frozenset[bytes]
    allowed_plan_hashes: frozenset[bytes]
    budget: Budget | None
    prior_min_cohort: int = 0
    corrupt_fraction: float = 0.2
    security_bits: int = 40
    min_cohort: int = 2
    prior_min_noise_multiplier: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.owner_id < 2**32:
            raise ValueError("owner_id must be in [1, 2^32)")
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier >= 0):
            raise ValueError("min_noise_multiplier must be finite and >= 0")
        if (self.budget is None) != (self.min_noise_multiplier == 0):
            raise ValueError("a budget is required exactly when DP is required (min noise > 0)")
        positive("max_clip_norm", self.max_clip_norm)
        if self.max_local_epochs < 1:
            raise ValueError("max_local_epochs must be >= 1")
        if not 0 < self.max_sampling_rate <= 1:
            raise ValueError("max_sampling_rate must be in (0, 1]")
        if self.public_units < 1:
            raise ValueError("public_units must be >= 1")
        if not (math.isfinite(self.corrupt_fraction) and 0.0 <= self.corrupt_fraction < 0.5):
            raise ValueError("corrupt_fraction must be in [0, 0.5)")
        if not 1 <= self.security_bits <= 256:
            raise ValueError("security_bits must be in [1, 256]")
        if not 2 <= self.min_cohort < 2**32:
            raise ValueError("min_cohort must be at least 2")
        if not 0 <= self.prior_min_cohort < 2**32 or self.prior_min_cohort == 1:
            raise ValueError("prior_min_cohort must be 0 (no prior) or at least 2")
        floor = self.prior_min_noise_multiplier
        if not (math.isfinite(floor) and floor >= 0):
            raise ValueError("prior_min_noise_multiplier must be finite and >= 0")
        if (self.prior_min_cohort >= 2 and self.min_noise_multiplier > 0) != (floor > 0):
            raise ValueError(
                "prior_min_noise_multiplier is required (> 0) exactly when the owner "
                "takes part in a prior and requires DP"
            )
        for hashes in (self.allowed_model_hashes, self.allowed_plan_hashes):
            if not hashes or any(len(h) != 32 for h in hashes):
                raise ValueError("allowed hash lists must be non-empty sets of 32-byte digests")

    def to_bytes(self) -> bytes:
        """The canonical encoding the owner signs."""
        w = Writer().var(_POLICY_LABEL).u32(self.owner_id).var(self.unit.value.encode())
        f64(w, self.min_noise_multiplier)
        f64(w, self.max_clip_norm)
        w.u32(self.max_local_epochs)
        f64(w, self.max_sampling_rate)
        w.u64(self.public_units)
        _hashes(w, self.allowed_model_hashes)
        _hashes(w, self.allowed_plan_hashes)
        f64(w, 0.0 if self.budget is None else self.budget.epsilon)
        f64(w, 0.0 if self.budget is None else self.budget.delta)
        w.u32(self.prior_min_cohort)
        f64(w, self.corrupt_fraction)
        w.u32(self.security_bits)
        w.u32(self.min_cohort)
        f64(w, self.prior_min_noise_multiplier)
        return w.getvalue()

    def threat(self) -> ThreatModel:
        """The owner's pinned secure-aggregation assumptions (what its client enforces)."""
        return ThreatModel(corrupt_fraction=self.corrupt_fraction, sigma=self.security_bits)

    def sign(self, owner_key: IdentityKey) -> SignedPolicy:
        """Sign this policy with the owner's key."""
        return SignedPolicy(policy=self, signature=owner_key.sign(self.to_bytes()))


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedPolicy:
    """A policy with the owner's Ed25519 signature over :meth:`OwnerPolicy.to_bytes`."""

    policy: OwnerPolicy
    signature: bytes = field(repr=False)

    def verified(self, owner_public_key: bytes) -> OwnerPolicy:
        """The policy, if the signature verifies under the owner's pinned key.

        Raises:
            IntegrityError: bad signature or key.
        """
        ed25519_verify(owner_public_key, self.signature, self.policy.to_bytes())
        return self.policy


def accept_plan(policy: OwnerPolicy, plan: RoundPlan) -> RoundPlan:
    """Return ``plan`` if the owner's policy allows it.

    Every rule compares public values only (the plan and the policy), so whether
    an owner accepts reveals nothing about its data.

    Raises:
        PolicyViolation: naming every rule the plan breaks.
    """
    problems = []
    if plan.unit is not policy.unit:
        problems.append(f"privacy unit {plan.unit.value} != policy {policy.unit.value}")
    if plan.noise_multiplier < policy.min_noise_multiplier:
        problems.append(
            f"noise multiplier {plan.noise_multiplier:g} < minimum {policy.min_noise_multiplier:g}"
        )
    if plan.clip_norm > policy.max_clip_norm:
        problems.append(f"clip norm {plan.clip_norm:g} > maximum {policy.max_clip_norm:g}")
    if plan.local_epochs > policy.max_local_epochs:
        problems.append(f"local epochs {plan.local_epochs} > maximum {policy.max_local_epochs}")
    if plan.sampling_rate > policy.max_sampling_rate:
        problems.append(
            f"sampling rate {plan.sampling_rate:g} > maximum {policy.max_sampling_rate:g}"
        )
    if plan.model_hash not in policy.allowed_model_hashes:
        problems.append("model architecture not allowed by the owner")
    if plan.plan_hash not in policy.allowed_plan_hashes:
        problems.append("training plan not allowed by the owner")
    if problems:
        raise PolicyViolation(f"owner {policy.owner_id} refuses the plan: " + "; ".join(problems))
    return plan
