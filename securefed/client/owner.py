"""A data owner: signed policy, budget, local DP training, evaluation, protected update.

The owner keeps its users' embeddings and its accountant across rounds. What
leaves it is only ever a quantised input handed to its secure-aggregation
session (the server never sees a plaintext update or metric).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from securefed.client.policy import OwnerPolicy, SignedPolicy, accept_plan
from securefed.client.trainer import DpTrainer, LocalInteractions, StepStats
from securefed.config import OptimizerKind
from securefed.errors import IntegrityError, PolicyViolation, ProtocolError
from securefed.evaluation import (
    MetricSums,
    ranks_full,
    ranks_sampled,
    sample_negatives,
)
from securefed.ledger import Countersignature, Entry, EntryKind
from securefed.ledger.bodies import spend_body
from securefed.ledger.canonical import encode
from securefed.models.recommendation import (
    Recommender,
    flatten_shared,
    model_architecture_hash,
    unflatten_into,
)
from securefed.plan import RoundPlan
from securefed.prior import (
    CONTRIBUTION_BOUND,
    PRIOR_PROCEDURE_HASH,
    PRIOR_QUANT_BITS,
    PRIOR_ROUND,
    count_ceiling,
    honest_shares,
    quantization_range,
    session_hash,
    unit_contributions,
)
from securefed.privacy.accountant import OwnerAccountant
from securefed.privacy.accounting import ONLINE_DEFAULT, Backend
from securefed.privacy.events import DpSgdEvent
from securefed.privacy.noise import CsprngStream, SecureGaussianNoise, StreamPurpose
from securefed.secagg.client_input import QuantizedInput, quantize
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import GraphKind
from securefed.secagg.quantize import QuantizationSpec
from securefed.secagg.roster import IdentityKey

__all__ = ["AcceptedRound", "DataOwner", "clip_l2"]

logger = logging.getLogger(__name__)


def clip_l2(vector: npt.NDArray[np.floating], bound: float) -> tuple[npt.NDArray[np.float64], bool]:
    """Scale ``vector`` to L2 norm at most ``bound``; returns (clipped, whether it was)."""
    v = vector.astype(np.float64)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm):
        raise ValueError("update contains NaN or inf")
    if norm <= bound:
        return v, False
    return v * (bound / norm), True


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedRound:
    """The plan an owner accepted and the spend it recorded before training.

    ``event`` is None only for a non-private baseline (noise multiplier 0, which
    the owner's policy must explicitly allow); its epsilon is then infinite.
    """

    plan: RoundPlan
    """Its sampling rate and steps are the round's (``plan.sampling_rate``, ``plan.steps``)."""
    event: DpSgdEvent | None
    epsilon_after: float


class DataOwner:
    """One data owner's side of the federation.

    Args:
        signed_policy: the owner's policy, verified under ``owner_public_key``.
        owner_public_key: the owner's pinned Ed25519 key.
        model: the owner's model instance (private user rows for its users only).
        train: the owner's training positives.
        validation_items, test_items: per local user, -1 when the user has none.
        stream: the owner's CSPRNG for training (sampling, negatives, noise, rounding).
        eval_stream: a separate CSPRNG for evaluation negatives, so that how often
            one evaluates never changes the training run (default: a fresh one).
        identity: the owner's identity key, with which it countersigns its spend
            entries (:meth:`countersign_spend`). Once :meth:`bind_ledger` is called,
            the owner trains, and so releases a masked input, for a DP round only
            after it has countersigned the ledger's durable SPEND entry for it.
        accounting: the owner's own online accountant, on which it enforces its
            budget (a coordinator planning on a looser one gets its last rounds refused).

    Raises:
        PolicyViolation: ``model``'s architecture hash (fixed item features
            included) is not among the policy's allowed model hashes.
    """

    def __init__(
        self,
        *,
        signed_policy: SignedPolicy,
        owner_public_key: bytes,
        model: Recommender,
        train: LocalInteractions,
        validation_items: npt.NDArray[np.int64],
        test_items: npt.NDArray[np.int64],
        stream: CsprngStream,
        eval_stream: CsprngStream | None = None,
        device: torch.device | None = None,
        identity: IdentityKey | None = None,
        accounting: Backend = ONLINE_DEFAULT,
    ) -> None:
        self.policy: OwnerPolicy = signed_policy.verified(owner_public_key)
        self.owner_id = self.policy.owner_id
        # The owner holds its model (and any fixed item features) itself: it must be
        # one its policy pins, so a plan's model hash describes what it really trains.
        self.model_hash = model_architecture_hash(model)
        """The architecture hash of the model this owner holds (plans must name it)."""
        if self.model_hash not in self.policy.allowed_model_hashes:
            raise PolicyViolation(
                f"owner {self.owner_id}: its own model is not an architecture its policy allows"
            )
        budget = self.policy.budget
        self.accountant = (
            None
            if budget is None
            else OwnerAccountant(unit=self.policy.unit, budget=budget, backend=accounting)
        )
        self._stream = stream
        self._eval_stream = eval_stream or CsprngStream(purpose=StreamPurpose.EVALUATION_SAMPLING)
        self._train = train
        self._validation = validation_items
        self._test = test_items
        self.trainer = DpTrainer(
            model=model,
            data=train,
            unit=self.policy.unit,
            stream=stream,
            public_units=self.policy.public_units,
            device=device,
        )
        self.accepted: list[AcceptedRound] = []
        self._identity = identity
        self.receipts: list[Countersignature] = []
        """Countersignatures of this owner's spend entries (its evidence for an audit)."""
        self.head: tuple[int, bytes] | None = None
        """The latest ledger head the coordinator sent (sequence number, entry hash)."""
        self._receipt_for: AcceptedRound | None = None
        self._ledger_bound = False
        self._writer_key: bytes | None = None
        self._ledger_id: bytes | None = None
        self._last_seq = -1
        self._last_round: int | None = None
        self._pending: AcceptedRound | None = None
        self._prior_honest: int | None = None
        order = np.lexsort((train.items, train.users))
        users, items = train.users[order], train.items[order]
        bounds = np.searchsorted(users, np.arange(train.n_users + 1))
        self._seen = [np.unique(items[bounds[u] : bounds[u + 1]]) for u in range(train.n_users)]

    @property
    def model(self) -> Recommender:
        """The owner's model (shared part as last received or trained)."""
        return self.trainer.model

    def epsilon(self) -> float:
        """Epsilon spent so far (infinite once a non-private round ran)."""
        if any(a.event is None for a in self.accepted):
            return math.inf
        return 0.0 if self.accountant is None else self.accountant.epsilon()

    def units(self) -> int:
        """Number of privacy units this owner holds (public to itself only)."""
        return self._train.units(self.policy.unit)

    def accept(self, plan: RoundPlan) -> AcceptedRound:
        """Check ``plan`` against the policy and the budget, then record the spend.

        The decision uses public values only (the plan, the policy and the plans
        accepted before), never the data. The spend is recorded in the owner's
        accountant before any training (in memory in this version: a restarted
        owner must restore its accountant; the signed ledger makes it durable).
        The returned token buys exactly one :meth:`train_round`.

        Raises:
            PolicyViolation: the plan is weaker than the policy allows, replays a
                round id not above the last accepted one, or names another model
                than the one the owner holds.
            PrivacyBudgetExceeded: the round would overspend the owner's budget.
        """
        if self._last_round is not None and plan.round_id <= self._last_round:
            raise PolicyViolation(
                f"owner {self.owner_id} refuses the plan: round {plan.round_id} is not "
                f"after the last accepted round {self._last_round} (replay)"
            )
        accept_plan(self.policy, plan)
        if plan.model_hash != self.model_hash:
            # Allowed by the policy, but not what this owner trains: the plan (and
            # the ledger that records it) would misstate the model.
            raise PolicyViolation(
                f"owner {self.owner_id} refuses the plan: it names another model than the "
                "one the owner holds"
            )
        return self._spend_and_hold(plan)  # the event's unit is the policy's (checked)

    def _spend_and_hold(self, plan: RoundPlan) -> AcceptedRound:
        """Spend an accepted plan's event (or refuse it by budget) and hold its token."""
        event = plan.dp_event()
        epsilon = math.inf
        if event is not None:
            if self.accountant is None:
                raise ValueError("a DP plan needs the owner's budget")
            epsilon = self.accountant.spend(event)
        accepted = AcceptedRound(plan=plan, event=event, epsilon_after=epsilon)
        self.accepted.append(accepted)
        self._last_round = plan.round_id
        self._pending = accepted
        return accepted

    def accept_prior(self, plan: RoundPlan, *, divisor: int) -> AcceptedRound:
        """Check round 0's plan (the item-popularity prior) and record its spend.

        The owner takes part only if its policy names a ``prior_min_cohort``, only
        before any other round, and only in the prior's exact form: round 0, the
        prior's procedure hash, sampling rate 1, one step, the contribution bound as
        clip norm, its own unit, an allowed model and at least the policy's
        ``prior_min_noise_multiplier``. ``divisor`` is the noise
        divisor ``h`` every owner of the session uses (the coordinator sends one
        figure to all; :func:`~securefed.prior.session_hash` binds it into the
        session, so owners given different figures cannot aggregate together). The
        owner refuses an ``h`` above the fewest honest inputs a session of its
        ``prior_min_cohort`` can release under its own pinned assumptions
        (``OwnerPolicy.threat``, which its client enforces on the session). The
        returned token buys one :meth:`prior_contribution`.

        Raises:
            PolicyViolation: the owner takes no part in a prior, the prior comes
                after another round, or the plan is not the prior's.
            PrivacyBudgetExceeded: the release would overspend the owner's budget.
        """
        policy = self.policy
        if policy.prior_min_cohort < 2:
            raise PolicyViolation(f"owner {self.owner_id} takes no part in a prior")
        if self.accepted or self._last_round is not None:
            raise PolicyViolation(f"owner {self.owner_id}: the prior must come before any round")
        problems = []
        if plan.round_id != PRIOR_ROUND or plan.plan_hash != PRIOR_PROCEDURE_HASH:
            problems.append("not the prior's round or procedure")
        if plan.sampling_rate != 1.0 or plan.local_epochs != 1:
            problems.append("not one full-batch release")
        if plan.clip_norm != CONTRIBUTION_BOUND:
            problems.append(f"bound {plan.clip_norm:g} != {CONTRIBUTION_BOUND:g}")
        if plan.unit is not policy.unit:
            problems.append(f"privacy unit {plan.unit.value} != policy {policy.unit.value}")
        if plan.model_hash not in policy.allowed_model_hashes:
            problems.append("model architecture not allowed by the owner")
        elif plan.model_hash != self.model_hash:
            problems.append("another model than the one the owner holds")
        if policy.min_noise_multiplier > 0 and plan.noise_multiplier == 0:
            problems.append("the owner's policy requires DP: no noiseless release")
        if plan.noise_multiplier < policy.prior_min_noise_multiplier:
            problems.append(
                f"noise multiplier {plan.noise_multiplier:g} < the prior's minimum "
                f"{policy.prior_min_noise_multiplier:g}"
            )
        own = honest_shares(policy.prior_min_cohort, policy.threat())
        if isinstance(divisor, bool) or not isinstance(divisor, int) or not 1 <= divisor <= own:
            problems.append(f"noise divisor {divisor} outside [1, {own}]")
        if problems:
            raise PolicyViolation(
                f"owner {self.owner_id} refuses the prior: " + "; ".join(problems)
            )
        accepted = self._spend_and_hold(plan)
        self._prior_honest = divisor
        return accepted

    def prior_contribution(self, accepted: AcceptedRound, context: RoundContext) -> QuantizedInput:
        """The owner's bounded item counts plus its noise share, quantised for ``context``.

        The noise share is N(0, (sigma * bound)^2 / h) per item, ``h`` from
        :meth:`accept_prior`. The owner checks the session before it computes
        anything from its data: round 0, the model hash that binds the accepted
        plan and ``h`` (:func:`~securefed.prior.session_hash`), the full graph, its
        own cohort floor and pinned assumptions, at least
        :data:`~securefed.prior.PRIOR_QUANT_BITS` bits and a range at least the one
        it derives from public values alone (its public unit count and its noise
        share, :func:`~securefed.prior.quantization_range`). A noisy coordinate past
        that range (odds below 1e-30) is saturated, which is post-processing. The
        input carries the context's spec: a session with another one refuses it.

        Raises:
            PolicyViolation: ``accepted`` is not the pending prior token, or the
                session is not the one the owner accepted.
            ProtocolError: with a ledger bound, the spend is not countersigned yet.
        """
        if accepted is not self._pending or self._prior_honest is None:
            raise PolicyViolation("the prior needs the token of the accepted prior plan, once")
        std = accepted.plan.noise_multiplier * CONTRIBUTION_BOUND / math.sqrt(self._prior_honest)
        p = context.params
        spec = p.quantization
        problems = []
        if context.round_id != PRIOR_ROUND:
            problems.append("not round 0")
        if context.model_hash != session_hash(accepted.plan, self._prior_honest):
            problems.append("the session does not bind the accepted plan and noise divisor")
        if p.graph is not GraphKind.FULL or p.min_clients < self.policy.prior_min_cohort:
            problems.append("not a full-graph session of at least its cohort floor")
        if not p.threat.at_least(self.policy.threat()):
            problems.append("weaker secure-aggregation assumptions than its own")
        if spec.bits < PRIOR_QUANT_BITS or spec.clip < quantization_range(
            self.policy.public_units, std
        ):
            problems.append(f"quantisation ({spec.bits} bits, range {spec.clip:g}) below its own")
        if problems:
            raise PolicyViolation(
                f"owner {self.owner_id} refuses the prior session: " + "; ".join(problems)
            )
        if self._ledger_bound and accepted.event is not None and self._receipt_for is not accepted:
            raise ProtocolError(
                "the prior's spend is not durable in the ledger yet (no countersigned SPEND "
                "entry): the owner releases nothing"
            )
        self._pending = None
        vector = unit_contributions(
            self._train.users, self._train.items, self._train.n_items, self.policy.unit
        )
        vector = np.minimum(vector, count_ceiling(self.policy.public_units))
        if accepted.event is not None:
            noise = SecureGaussianNoise(
                CsprngStream(self._stream.random_source(), purpose=StreamPurpose.DP_NOISE)
            ).sample(vector.size, std, dtype=torch.float64)
            vector = vector + noise.numpy()
        return quantize(vector, spec, weight=1, rng=self._stream.random_source())

    def countersign_spend(self, entry: Entry, *, ledger_id: bytes) -> Countersignature:
        """Check the ledger's SPEND entry for the pending round, countersign it, keep the receipt.

        The entry must record exactly this owner's spend (the event it accepted,
        its delta and epsilon) byte for byte; the returned countersignature goes
        back to the coordinator for the ledger and stays with the owner as a receipt.

        Raises:
            ProtocolError: no DP round is pending, the owner holds no identity
                key, or the entry is not this owner's spend for that round.
        """
        pending = self._pending
        if self._identity is None:
            raise ProtocolError("this owner is not bound to a ledger (no identity key)")
        if pending is None or pending.event is None or self.accountant is None:
            raise ProtocolError("no DP round is pending: nothing to countersign")
        expected = spend_body(
            owner_id=self.owner_id,
            round_id=pending.plan.round_id,
            event=pending.event,
            delta=self.accountant.budget.delta,
            epsilon_after=pending.epsilon_after,
        )
        refuse = ProtocolError(
            f"owner {self.owner_id}: the ledger entry does not record its spend "
            f"for round {pending.plan.round_id}"
        )
        if entry.kind is not EntryKind.SPEND or entry.body != encode(expected):
            raise refuse
        if self._ledger_id is not None and ledger_id != self._ledger_id:
            raise refuse
        # The hash it countersigns must be the hash of exactly this entry (body, seq,
        # history), and the entry must be signed by the pinned writer key.
        try:
            entry.check_signed(ledger_id, self._writer_key)
        except IntegrityError:
            raise refuse from None
        if entry.seq <= max(self._last_seq, self.head[0] if self.head else -1):
            raise refuse
        receipt = Countersignature.sign(
            ledger_id=ledger_id,
            entry_seq=entry.seq,
            entry_hash=entry.entry_hash,
            owner_id=self.owner_id,
            owner_key=self._identity,
        )
        self.receipts.append(receipt)
        self._receipt_for = pending
        self._last_seq = entry.seq
        return receipt

    def bind_ledger(
        self, *, writer_key: bytes | None = None, ledger_id: bytes | None = None
    ) -> None:
        """From now on, require a countersigned, durable SPEND before each DP round's training.

        Args:
            writer_key: the ledger writer's public key the owner pins: a SPEND entry
                must carry a valid signature under it (default: only the entry's
                own hash is checked).
            ledger_id: the ledger the owner pins: it countersigns nothing else.

        Raises:
            ProtocolError: the owner holds no identity key to countersign with.
            ValueError: a key or id is not 32 bytes.
        """
        if self._identity is None:
            raise ProtocolError("binding to a ledger needs the owner's identity key")
        for name, value in (("writer_key", writer_key), ("ledger_id", ledger_id)):
            if value is not None and len(value) != 32:
                raise ValueError(f"{name} must be 32 bytes")
        self._writer_key = writer_key
        self._ledger_id = ledger_id
        self._ledger_bound = True

    def receive_head(self, head: tuple[int, bytes]) -> None:
        """Keep the ledger head the coordinator sent (a later one replaces an earlier one).

        Raises:
            ProtocolError: the head goes backwards (a cut or rewritten ledger).
        """
        seq, digest = head
        if self.head is not None and seq < self.head[0]:
            raise ProtocolError(f"owner {self.owner_id}: the ledger head went back to {seq}")
        if len(digest) != 32:
            raise ValueError("a head hash is 32 bytes")
        self.head = (seq, digest)

    def restore_spends(self, events: list[tuple[int, DpSgdEvent]]) -> None:
        """After a restart: compose the spends the ledger records, in order (all counted).

        ``events`` are (round id, event) pairs of this owner's SPEND entries.
        Rounds up to the last one are then refused as replays.

        Raises:
            ValueError: the owner already holds spends, or has no accountant.
        """
        if self.accepted or self.accountant is None:
            raise ValueError("restore_spends needs a fresh owner with a budget")
        for _, event in events:
            self.accountant.compose_recorded(event)
        if events:
            self._last_round = max(r for r, _ in events)

    def train_round(
        self,
        accepted: AcceptedRound,
        global_shared: npt.NDArray[np.float32],
        *,
        optimizer: OptimizerKind,
    ) -> tuple[npt.NDArray[np.float64], StepStats]:
        """Train from the received shared weights; return (update, stats).

        The update is trained minus received shared parameters (dense over the
        whole item table).
        """
        if accepted is not self._pending:
            raise PolicyViolation("training needs the token of the last accepted plan, once")
        if self._ledger_bound and accepted.event is not None and self._receipt_for is not accepted:
            raise ProtocolError(
                "the spend of this round is not durable in the ledger yet (no countersigned "
                "SPEND entry): the owner does not train or release an update"
            )
        self._pending = None
        if accepted.event is None and self.policy.min_noise_multiplier > 0:
            raise PolicyViolation("the owner's policy requires DP: no non-private round")
        unflatten_into(self.model, global_shared)
        plan = accepted.plan
        if accepted.event is None:
            stats = self.trainer.train_nonprivate(
                rate=plan.sampling_rate,
                steps=plan.steps,
                learning_rate=plan.learning_rate,
                negatives=plan.negatives,
                optimizer=optimizer,
            )
        else:
            stats = self.trainer.train(
                event=accepted.event,
                clip_norm=plan.clip_norm,
                learning_rate=plan.learning_rate,
                negatives=plan.negatives,
                optimizer=optimizer,
            )
        update = flatten_shared(self.model).astype(np.float64) - global_shared.astype(np.float64)
        return update, stats

    def protect(
        self, update: npt.NDArray[np.float64], spec: QuantizationSpec, *, clip_norm: float
    ) -> tuple[QuantizedInput, bool]:
        """L2-clip to ``clip_norm`` (so no coordinate exceeds the quantiser's range), quantise.

        Returns:
            The quantised input for the secure-aggregation session and whether the
            L2 clip changed the update.
        """
        if clip_norm > spec.clip:
            raise ValueError("the update clip must not exceed the quantisation range")
        clipped, was_clipped = clip_l2(update, clip_norm)
        return quantize(clipped, spec, weight=1, rng=self._stream.random_source()), was_clipped

    def protect_metrics(self, sums: MetricSums, spec: QuantizationSpec) -> QuantizedInput:
        """Quantise metric sums exactly as they are (no clipping: out of range is an error)."""
        vector = sums.to_vector()
        if np.any(np.abs(vector) > spec.clip):
            raise ValueError("metric sums exceed the agreed quantisation range")
        return quantize(vector, spec, weight=1, rng=self._stream.random_source())

    def evaluate(
        self,
        global_shared: npt.NDArray[np.float32] | None,
        *,
        split: str,
        k: int,
        sampled_negatives: int,
    ) -> MetricSums:
        """Leave-one-out metrics over this owner's users, with its private embeddings.

        ``split`` is ``"validation"`` or ``"test"``; for test, the validation item
        is excluded from the candidates as well as the training items.
        """
        if global_shared is not None:
            unflatten_into(self.model, global_shared)
        targets = self._validation if split == "validation" else self._test
        users = np.flatnonzero(targets >= 0)
        if users.size == 0:
            return MetricSums.zero()
        n_items = self._train.n_items
        excludes = []
        for u in users:
            seen = self._seen[u]
            if split == "test" and self._validation[u] >= 0:
                seen = np.union1d(seen, [self._validation[u]])
            excludes.append(seen)
        model = self.model
        model.eval()
        with torch.no_grad():
            scores = model.score_all(torch.as_tensor(users, dtype=torch.long)).cpu().numpy()
        positives = targets[users]
        full = ranks_full(scores, positives, excludes)
        negatives = np.stack(
            [
                sample_negatives(self._stream, n_items, np.union1d(ex, [pos]), k=sampled_negatives)
                for ex, pos in zip(excludes, positives, strict=True)
            ]
        )
        pos_scores = scores[np.arange(users.size), positives]
        neg_scores = np.take_along_axis(scores, negatives, axis=1)
        sampled = ranks_sampled(pos_scores, neg_scores)
        candidates_full = np.array([n_items - ex.size for ex in excludes])
        return MetricSums.from_ranks(
            full=full,
            sampled=sampled,
            k=k,
            full_candidates=candidates_full,
            sampled_candidates=sampled_negatives + 1,
        )
