"""The data owner's signed policy bounds every round plan (a server cannot weaken DP)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from securefed.client.policy import OwnerPolicy, accept_plan
from securefed.errors import IntegrityError, PolicyViolation
from securefed.plan import RoundPlan
from securefed.privacy.accountant import Budget
from securefed.privacy.events import PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

MODEL = hashlib.sha256(b"model").digest()
PLAN = hashlib.sha256(b"plan").digest()


def _policy(**overrides) -> OwnerPolicy:
    fields = {
        "owner_id": 7,
        "unit": PrivacyUnit.RECORD,
        "min_noise_multiplier": 0.8,
        "max_clip_norm": 1.0,
        "max_local_epochs": 2,
        "max_sampling_rate": 0.5,
        "public_units": 1200,
        "allowed_model_hashes": frozenset({MODEL}),
        "allowed_plan_hashes": frozenset({PLAN}),
        "budget": Budget(epsilon=8.0, delta=1e-5),
    }
    fields.update(overrides)
    return OwnerPolicy(**fields)


def _plan(**overrides) -> RoundPlan:
    fields = {
        "round_id": 3,
        "unit": PrivacyUnit.RECORD,
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "local_epochs": 1,
        "sampling_rate": 0.1,
        "learning_rate": 0.1,
        "negatives": 4,
        "model_hash": MODEL,
        "plan_hash": PLAN,
    }
    fields.update(overrides)
    return RoundPlan(**fields)


def test_a_plan_within_the_policy_is_accepted():
    plan = _plan()
    assert accept_plan(_policy(), plan) is plan


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"noise_multiplier": 0.5}, "noise multiplier"),
        ({"noise_multiplier": 0.0}, "noise multiplier"),  # a server cannot set sigma = 0
        ({"clip_norm": 2.0}, "clip norm"),
        ({"local_epochs": 3}, "local epochs"),
        ({"unit": PrivacyUnit.PERSON}, "privacy unit"),
        ({"model_hash": hashlib.sha256(b"other").digest()}, "model architecture"),
        ({"plan_hash": hashlib.sha256(b"other").digest()}, "training plan"),
        ({"sampling_rate": 0.9}, "sampling rate"),
    ],
)
def test_weaker_plans_are_refused(overrides, reason):
    with pytest.raises(PolicyViolation, match=reason):
        accept_plan(_policy(), _plan(**overrides))


def test_every_broken_rule_is_named():
    with pytest.raises(PolicyViolation) as info:
        accept_plan(_policy(), _plan(noise_multiplier=0.1, clip_norm=5.0))
    assert "noise multiplier" in str(info.value)
    assert "clip norm" in str(info.value)


def test_signed_policy_verifies_only_untampered_under_the_owners_key():
    rng = DeterministicRandom(hashlib.sha256(b"policy-test").digest())
    owner, other = IdentityKey.generate(rng), IdentityKey.generate(rng)
    policy = _policy(prior_min_cohort=3, prior_min_noise_multiplier=1.2)
    signed = policy.sign(owner)
    assert signed.verified(owner.public_key) == policy
    with pytest.raises(IntegrityError):
        signed.verified(other.public_key)
    # Any field changed after signing breaks the signature.
    for change in [
        {"min_noise_multiplier": 0.1},
        {"max_clip_norm": 10.0},
        {"max_local_epochs": 100},
        {"max_sampling_rate": 1.0},
        {"public_units": 1300},
        {"unit": PrivacyUnit.PERSON},
        {"allowed_model_hashes": frozenset({MODEL, PLAN})},
        {"allowed_plan_hashes": frozenset({PLAN, MODEL})},
        {"budget": Budget(epsilon=80.0, delta=1e-5)},
        {"owner_id": 8},
        {"prior_min_cohort": 5},
        {"corrupt_fraction": 0.1},
        {"security_bits": 20},
        {"min_cohort": 5},
        {"prior_min_noise_multiplier": 0.5},
    ]:
        forged = dataclasses.replace(signed, policy=dataclasses.replace(policy, **change))
        with pytest.raises(IntegrityError):
            forged.verified(owner.public_key)


def test_a_prior_needs_its_own_noise_floor_exactly_when_dp_is_required():
    with pytest.raises(ValueError, match="prior_min_noise_multiplier"):
        _policy(prior_min_cohort=3)  # takes part in a prior, requires DP, no floor
    with pytest.raises(ValueError, match="prior_min_noise_multiplier"):
        _policy(prior_min_noise_multiplier=1.0)  # a floor for a prior it takes no part in
    with pytest.raises(ValueError, match="prior_min_noise_multiplier"):
        _policy(prior_min_cohort=3, prior_min_noise_multiplier=float("nan"))
    assert _policy(prior_min_cohort=3, prior_min_noise_multiplier=1.0).prior_min_cohort == 3
    open_policy = _policy(min_noise_multiplier=0.0, budget=None, prior_min_cohort=3)
    assert open_policy.prior_min_noise_multiplier == 0.0  # no DP: exact counts allowed


def test_signature_not_in_repr():
    rng = DeterministicRandom(hashlib.sha256(b"policy-repr").digest())
    signed = _policy().sign(IdentityKey.generate(rng))
    assert signed.signature.hex() not in repr(signed)


def test_opting_out_of_dp_needs_an_explicit_policy():
    # min noise 0 (a non-private baseline) is allowed only without a budget, and vice versa.
    with pytest.raises(ValueError, match="budget"):
        _policy(min_noise_multiplier=0.0)
    with pytest.raises(ValueError, match="budget"):
        _policy(budget=None)
    open_policy = _policy(min_noise_multiplier=0.0, budget=None)
    assert accept_plan(open_policy, _plan(noise_multiplier=0.0))


@pytest.mark.parametrize(
    "overrides",
    [
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"clip_norm": 0.0},
        {"sampling_rate": 0.0},
        {"sampling_rate": 1.5},
        {"negatives": 10**6},
        {"model_hash": b"short"},
        {"learning_rate": float("inf")},
    ],
)
def test_malformed_plans_are_rejected(overrides):
    with pytest.raises(ValueError):  # noqa: PT011 - several field messages
        _plan(**overrides)


def test_plan_digest_covers_every_field():
    base = _plan()
    changed = [
        _plan(round_id=4),
        _plan(noise_multiplier=1.5),
        _plan(clip_norm=0.5),
        _plan(local_epochs=2),
        _plan(sampling_rate=0.2),
        _plan(learning_rate=0.2),
        _plan(negatives=5),
        _plan(unit=PrivacyUnit.PERSON),
        _plan(model_hash=PLAN),
        _plan(plan_hash=MODEL),
    ]
    digests = {p.digest() for p in changed}
    assert base.digest() not in digests
    assert len(digests) == len(changed)


def test_a_plan_names_the_event_an_owner_spends():
    plan = _plan()
    event = plan.dp_event()
    assert event is not None
    assert (event.sampling_rate, event.noise_multiplier, event.steps, event.unit) == (
        plan.sampling_rate,
        plan.noise_multiplier,
        plan.steps,
        plan.unit,
    )
    assert _plan(noise_multiplier=0.0).dp_event() is None
