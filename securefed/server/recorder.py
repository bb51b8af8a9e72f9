"""The coordinator's side of the ledger: one entry per privacy-relevant step of a round.

:class:`RoundRecorder` wraps a :class:`~securefed.ledger.Ledger` (the coordinator
is its writer) and enforces the order the "budget first" invariant needs, per
round: ROUND_PLANNED and MECHANISM, then each accepting owner's SPEND (durable
when :meth:`spend` returns) and the owner's COUNTERSIGNATURE, then DROPOUTS and
at most one AGGREGATE_RELEASED. A release before the round's spends, or a second
release of a round, is refused; so is planning a round id not above the last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.errors import ProtocolError
from securefed.ledger import BudgetScope, Countersignature, Entry, EntryKind, Ledger, ProtectionMode
from securefed.ledger.bodies import (
    aggregate_released_body,
    budget_exhausted_body,
    dropouts_body,
    federation_spend_body,
    mechanism_body,
    round_planned_body,
    spend_body,
)
from securefed.ledger.canonical import CanonicalValue, decimal_text, uint_text
from securefed.plan import RoundPlan
from securefed.privacy.accountant import OwnerAccountant
from securefed.privacy.events import ClientGaussianEvent, DpSgdEvent

__all__ = ["RoundRecorder", "aggregate_hash", "global_model_hash", "plan_fields"]


def aggregate_hash(round_id: int, mean: npt.NDArray[np.floating], weight: int) -> bytes:
    """SHA-256 of a released aggregate (round id, total weight, the float64 mean)."""
    h = hashlib.sha256(b"securefed/aggregate/v1|")
    h.update(round_id.to_bytes(8, "big") + weight.to_bytes(8, "big"))
    h.update(np.ascontiguousarray(mean, dtype="<f8").tobytes())
    return h.digest()


def global_model_hash(weights: npt.NDArray[np.float32]) -> bytes:
    """SHA-256 of the global shared weights (little-endian float32)."""
    data = np.ascontiguousarray(weights, dtype="<f4").tobytes()
    return hashlib.sha256(b"securefed/global-model/v1|" + data).digest()


def plan_fields(plan: RoundPlan) -> dict[str, CanonicalValue]:
    """The plan's fields as a canonical object (what ROUND_PLANNED's ``plan`` records)."""
    return {
        "round_id": uint_text(plan.round_id),
        "unit": plan.unit.value,
        "noise_multiplier": decimal_text(plan.noise_multiplier),
        "clip_norm": decimal_text(plan.clip_norm),
        "local_epochs": uint_text(plan.local_epochs),
        "sampling_rate": decimal_text(plan.sampling_rate),
        "steps": uint_text(plan.steps),
        "learning_rate": decimal_text(plan.learning_rate),
        "negatives": uint_text(plan.negatives),
        "model_hash": plan.model_hash.hex(),
        "training_procedure_hash": plan.plan_hash.hex(),
    }


@dataclass(slots=True)
class _RoundState:
    round_id: int
    accepted: frozenset[int]
    private: bool
    client_level: bool
    spent: set[int] = field(default_factory=set)
    federation_spent: bool = False
    released: bool = False


class RoundRecorder:
    """Writes a federation's rounds to its ledger, in the order the invariants need.

    Args:
        ledger: the open ledger (the coordinator holds its writer key).
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._round: _RoundState | None = None
        self._last_round: int | None = None
        self._exhausted_owners: set[int] = set()

    @property
    def ledger_id(self) -> bytes:
        """The ledger's id (what owners countersign under)."""
        return self.ledger.ledger_id

    def head(self) -> tuple[int, bytes]:
        """The current head (sequence number, entry hash): sent to every owner each round."""
        return self.ledger.head()

    def resume_after(self, round_id: int, exhausted_owners: Iterable[int] = ()) -> None:
        """Continue a ledger whose last planned round is ``round_id`` (after a restart)."""
        self._last_round = round_id
        self._exhausted_owners = set(exhausted_owners)

    def planned(
        self,
        plan: RoundPlan,
        *,
        cohort: Iterable[int],
        cohort_rate: float,
        accepted: Iterable[int],
        event: DpSgdEvent | None,
        protection: ProtectionMode = ProtectionMode.SECAGG,
        client_level: bool = False,
        release: Mapping[str, CanonicalValue] | None = None,
    ) -> None:
        """ROUND_PLANNED (cohort, rate, plan hash, who accepted) and MECHANISM.

        ``client_level``: the server adds client-level noise this round, so its
        FEDERATION_SPEND must be recorded before the release. ``release``: what a
        round other than training releases and how its noise is placed (recorded
        in the plan object under ``release``; the prior's, protocols/ledger.md §5.12).

        Raises:
            ProtocolError: the round id is not above the last planned one.
        """
        r = plan.round_id
        if self._last_round is not None and r <= self._last_round:
            raise ProtocolError(f"round {r} is not after the last planned round {self._last_round}")
        accepted_ids = frozenset(accepted)
        self.ledger.append(
            EntryKind.ROUND_PLANNED,
            round_planned_body(
                round_id=r,
                cohort=cohort,
                sampling_rate=cohort_rate,
                protection=protection,
                plan_hash=plan.digest(),
                accepted=accepted_ids,
                plan=plan_fields(plan)
                if release is None
                else {**plan_fields(plan), "release": dict(release)},
            ),
        )
        if event is not None:
            self.ledger.append(
                EntryKind.MECHANISM,
                mechanism_body(round_id=r, event=event, clip_norm=plan.clip_norm),
            )
        self._round = _RoundState(
            round_id=r, accepted=accepted_ids, private=event is not None, client_level=client_level
        )
        self._last_round = r

    def spend(
        self, owner_id: int, *, event: DpSgdEvent, delta: float, epsilon_after: float
    ) -> Entry:
        """One accepting owner's SPEND, durable when this returns.

        Raises:
            ProtocolError: no round is planned, the owner did not accept it, or
                its spend is already recorded.
        """
        state = self._current()
        if owner_id not in state.accepted or owner_id in state.spent:
            raise ProtocolError(
                f"owner {owner_id} has no outstanding spend in round {state.round_id}"
            )
        entry = self.ledger.append(
            EntryKind.SPEND,
            spend_body(
                owner_id=owner_id,
                round_id=state.round_id,
                event=event,
                delta=delta,
                epsilon_after=epsilon_after,
            ),
        )
        state.spent.add(owner_id)
        return entry

    def federation_spend(
        self,
        *,
        event: ClientGaussianEvent,
        sensitivity: float,
        delta: float,
        epsilon_after: float,
    ) -> Entry:
        """The federation's client-level spend for the planned round, durable when this returns.

        Raises:
            ProtocolError: no round is planned, or its federation spend is recorded.
        """
        state = self._current()
        if state.federation_spent:
            raise ProtocolError(f"round {state.round_id}: the federation spend is recorded")
        entry = self.ledger.append(
            EntryKind.FEDERATION_SPEND,
            federation_spend_body(
                round_id=state.round_id,
                event=event,
                sensitivity=sensitivity,
                delta=delta,
                epsilon_after=epsilon_after,
            ),
        )
        state.federation_spent = True
        return entry

    def countersignature(self, receipt: Countersignature) -> Entry:
        """Record an owner's countersignature of its spend (checked by the ledger)."""
        return self.ledger.add_countersignature(receipt)

    def dropouts(self, dropped: Mapping[str, Iterable[int]]) -> None:
        """One DROPOUTS entry per protocol stage that lost owners."""
        state = self._current()
        for stage, ids in sorted(dropped.items()):
            ids = list(ids)
            if ids:
                self.ledger.append(
                    EntryKind.DROPOUTS,
                    dropouts_body(round_id=state.round_id, stage=stage, dropped=ids),
                )

    def released(
        self,
        *,
        mean: npt.NDArray[np.floating],
        weight: int,
        new_weights: npt.NDArray[np.float32],
        survivors: Iterable[int],
    ) -> Entry:
        """AGGREGATE_RELEASED: the aggregate's and the new global model's hashes.

        Raises:
            ProtocolError: a survivor's spend is not recorded, or the round was
                already released.
        """
        state = self._current()
        if state.released:
            raise ProtocolError(f"round {state.round_id} was already released")
        if state.client_level and not state.federation_spent:
            raise ProtocolError(f"round {state.round_id}: the federation spend is not recorded")
        missing = set(survivors) - state.spent
        if state.private and missing:
            raise ProtocolError(
                f"round {state.round_id}: no recorded spend for survivors {sorted(missing)}"
            )
        entry = self.ledger.append(
            EntryKind.AGGREGATE_RELEASED,
            aggregate_released_body(
                round_id=state.round_id,
                aggregate_hash=aggregate_hash(state.round_id, mean, weight),
                model_hash=global_model_hash(new_weights),
            ),
        )
        state.released = True
        return entry

    def owner_exhausted(self, owner_id: int, *, round_id: int, spent: OwnerAccountant) -> bool:
        """BUDGET_EXHAUSTED for one owner that cannot afford ``round_id`` (once per owner).

        ``spent`` is the accountant whose figures (epsilon so far, budget, delta)
        the entry records. Returns whether an entry was written (False if the
        owner's stop is already recorded).
        """
        if owner_id in self._exhausted_owners:
            return False
        self._exhausted(round_id, BudgetScope.OWNER, spent, owner_id=owner_id)
        self._exhausted_owners.add(owner_id)
        return True

    def federation_exhausted(self, round_id: int, *, spent: OwnerAccountant) -> None:
        """BUDGET_EXHAUSTED for the federation: ``round_id`` would overspend and never starts."""
        self._exhausted(round_id, BudgetScope.FEDERATION, spent)

    def _exhausted(
        self,
        round_id: int,
        scope: BudgetScope,
        spent: OwnerAccountant,
        *,
        owner_id: int | None = None,
    ) -> None:
        self.ledger.append(
            EntryKind.BUDGET_EXHAUSTED,
            budget_exhausted_body(
                round_id=round_id,
                scope=scope,
                owner_id=owner_id,
                epsilon_spent=spent.epsilon(),
                epsilon_budget=spent.budget.epsilon,
                delta=spent.budget.delta,
            ),
        )

    def seal(self, reason: str) -> None:
        """Close the ledger (the federation finished)."""
        self.ledger.seal(reason=reason)

    def _current(self) -> _RoundState:
        if self._round is None:
            raise ProtocolError("no round is planned")
        return self._round
