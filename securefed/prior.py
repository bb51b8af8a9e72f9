"""The item-popularity prior: one distributed-Gaussian release of item counts (round 0).

Before the first training round, each data owner contributes how often each item
occurs among its privacy units, every unit's contribution scaled to L2 norm at most
:data:`CONTRIBUTION_BOUND` (a record adds 1 to one item; a person's counts are
scaled down to norm 1 if larger), plus its **share** of Gaussian noise, and the
contributions are summed by secure aggregation. The server initialises the item
biases of the global model from the released total (a monotone map of the noisy
counts to the log-odds that an item is a positive against uniform negatives).
Everything after that is post-processing.

Privacy (protocols/ledger.md §5.12). Adding or removing one unit changes the sum by
at most 1 in L2, and the released sum carries Gaussian noise of variance at least
``(noise_multiplier * bound)**2``: one Gaussian mechanism, accounted exactly as one
full-batch DP-SGD step (sampling rate 1, one step, clip norm = the bound) in the
owner's accountant and the ledger. The noise is **distributed**: each owner adds
variance ``(noise_multiplier * bound)**2 / h``, where ``h`` is the fewest honest
contributions any sum the session can release holds: the session uses the full
graph with at least ``min_cohort`` clients (each owner's secure-aggregation client
enforces that floor itself), so every released sum holds at least ``t`` inputs of
which at most ``n_c`` are corrupt, ``h = t - n_c`` (``t``, ``n_c`` of the full
graph at ``min_cohort`` under the stated threat model; ``t - n_c`` never decreases
as the cohort grows). Every owner uses the one ``h`` the coordinator sends, which
each refuses above its own figure and which :func:`session_hash` binds into the
session (owners told different figures cannot aggregate together); each owner
also checks the session's graph, floor, threat model and quantisation itself
before it touches its data. So the guarantee holds against the server and up to ``n_c``
colluding owners, as long as secure aggregation holds; it does **not** hold against
a server that sees one owner's input in the clear (that is what secure aggregation
prevents), and it is weaker than the owners' local DP-SGD, which holds even then.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

from securefed.plan import RoundPlan
from securefed.privacy.accountant import Budget, calibrate_noise_multiplier
from securefed.privacy.accounting import ONLINE_DEFAULT, Backend
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.secagg.graph import ThreatModel, full_parameters

__all__ = [
    "CONTRIBUTION_BOUND",
    "PRIOR_PROCEDURE_HASH",
    "PRIOR_QUANT_BITS",
    "PRIOR_ROUND",
    "count_ceiling",
    "honest_shares",
    "item_log_odds",
    "prior_event",
    "prior_noise_multiplier",
    "prior_plan",
    "quantization_range",
    "session_hash",
    "unit_contributions",
]

PRIOR_ROUND = 0
"""The prior's round id (training rounds are 1, 2, ...)."""
PRIOR_PROCEDURE_HASH = hashlib.sha256(b"securefed/prior/item-counts/v1").digest()
"""The prior's procedure hash (the ledger's ``training_procedure_hash`` of round 0)."""
CONTRIBUTION_BOUND = 1.0
"""L2 bound of one unit's contribution to the count vector (the release's sensitivity)."""
PRIOR_QUANT_BITS = 24
"""Quantisation bits of the prior's counts (a step far below one noise share's std)."""
NOISE_MARGIN_STDS = 12.0
"""Quantisation range margin, in standard deviations of an owner's noise share."""


def honest_shares(min_cohort: int, threat: ThreatModel) -> int:
    """Fewest honest inputs in any sum a full-graph session of ``min_cohort``+ clients releases.

    ``t - n_c`` of :func:`~securefed.secagg.graph.full_parameters` at ``min_cohort``;
    it never decreases as the cohort grows (``n -> n + 1`` raises ``n_c`` by at most 1
    and ``floor((n + n_c) / 2)`` by at least as much as ``n_c`` minus 1).

    Raises:
        ValueError: fewer than 2 clients, or no feasible threshold.
    """
    graph = full_parameters(min_cohort, threat)
    return graph.threshold - graph.corrupt_bound


def session_hash(plan: RoundPlan, honest: int) -> bytes:
    """The prior session's model hash: binds the plan and the noise divisor ``h``.

    It enters the session's mask-seed KDF and share AEAD, so owners given
    different plans or divisors cannot complete one session together.
    """
    if honest < 1:
        raise ValueError("honest shares must be at least 1")
    return hashlib.sha256(
        b"securefed/prior/session/v1|" + plan.digest() + honest.to_bytes(4, "big")
    ).digest()


def prior_event(noise_multiplier: float, unit: PrivacyUnit) -> DpSgdEvent:
    """The release as accounted: one full-batch Gaussian step (rate 1, one step)."""
    return DpSgdEvent(sampling_rate=1.0, noise_multiplier=noise_multiplier, steps=1, unit=unit)


def prior_noise_multiplier(
    share: float, budget: Budget, *, backend: Backend = ONLINE_DEFAULT
) -> float:
    """The noise multiplier whose release alone spends ``share`` of the spendable budget.

    ``backend`` is the accountant the budget is enforced on.

    Raises:
        ValueError: ``share`` is not in (0, 1).
    """
    if isinstance(share, bool) or not (0.0 < share < 1.0):
        raise ValueError("the prior's share of the budget must be in (0, 1)")
    return calibrate_noise_multiplier(
        epsilon=share * budget.spendable,
        delta=budget.delta,
        sampling_rate=1.0,
        steps=1,
        backend=backend,
        event_factory=lambda sigma: prior_event(sigma, PrivacyUnit.RECORD),
    )


def prior_plan(*, unit: PrivacyUnit, noise_multiplier: float, model_hash: bytes) -> RoundPlan:
    """Round 0's plan: what each owner checks before it contributes to the prior.

    The training-only fields are fixed (``local_epochs`` 1, ``negatives`` 1,
    ``learning_rate`` 1): they are unused and part of the plan's hash only.
    """
    return RoundPlan(
        round_id=PRIOR_ROUND,
        unit=unit,
        noise_multiplier=noise_multiplier,
        clip_norm=CONTRIBUTION_BOUND,
        local_epochs=1,
        sampling_rate=1.0,
        learning_rate=1.0,
        negatives=1,
        model_hash=model_hash,
        plan_hash=PRIOR_PROCEDURE_HASH,
    )


def unit_contributions(
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    n_items: int,
    unit: PrivacyUnit,
) -> npt.NDArray[np.float64]:
    """The owner's count vector: the sum over its units of each unit's bounded contribution.

    ``record``: every interaction adds 1 to its item (one record moves one count by 1).
    ``person``: each person's item counts, scaled to L2 norm at most
    :data:`CONTRIBUTION_BOUND`.

    Raises:
        ValueError: mismatched arrays, an item out of range, or a client-level unit.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError("users and items must be 1-D arrays of the same length")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError("an item id is outside [0, n_items)")
    if unit is PrivacyUnit.RECORD:
        counts: npt.NDArray[np.float64] = np.bincount(items, minlength=n_items).astype(np.float64)
        return counts * CONTRIBUTION_BOUND
    if unit is not PrivacyUnit.PERSON:
        raise ValueError("the prior protects a record or a person")
    total = np.zeros(n_items, dtype=np.float64)
    if items.size == 0:
        return total
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], users.size]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        person_items, person_counts = np.unique(items[lo:hi], return_counts=True)
        values = person_counts.astype(np.float64)
        norm = float(np.sqrt(np.sum(values * values)))
        if norm > CONTRIBUTION_BOUND:
            values *= CONTRIBUTION_BOUND / norm
        total[person_items] += values
    return total


def count_ceiling(public_units: int) -> float:
    """The most any coordinate of an owner's contribution may hold before noise.

    Twice the public unit count (a true count is below 1.5 times it); an owner clips
    its counts to this before adding noise. Clipping each coordinate is 1-Lipschitz,
    so one unit still moves the sum by at most the bound, and the noisy value then
    stays inside :func:`quantization_range` unless the noise itself is extreme, even
    if the public count were understated.
    """
    if public_units < 1:
        raise ValueError("need a positive unit count")
    return 2.0 * public_units * CONTRIBUTION_BOUND


def quantization_range(max_public_units: int, noise_std: float) -> float:
    """A power of two that bounds every coordinate of any owner's noisy contribution.

    From public values only. A count is at most the owner's unit count, which is
    below twice its public count (rounded to at least one significant digit: at
    most 1.5 times); the noise share gets
    :data:`NOISE_MARGIN_STDS` of its standard deviation.
    """
    if max_public_units < 1 or not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError("need a positive unit count and a finite noise std")
    bound = count_ceiling(max_public_units) + NOISE_MARGIN_STDS * noise_std + 1.0
    return float(2.0 ** math.ceil(math.log2(bound)))


def item_log_odds(total: npt.NDArray[np.float64], negatives: int) -> npt.NDArray[np.float32]:
    """Item biases from the released (noisy) counts.

    For a positive against ``negatives`` negatives drawn uniformly from ``n`` items, the
    log-odds that item ``i`` is the positive is ``log(c_i / (negatives * N / n))``. Noisy
    counts may be small or negative, so ``c`` goes through the strictly increasing
    ``g(c) = (c + sqrt(c^2 + 1)) / 2`` (``g(c) ~ c`` for large ``c``, positive for all):
    the released order of the items is kept in full, ties included.
    """
    counts = np.asarray(total, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or not np.all(np.isfinite(counts)):
        raise ValueError("the released counts must be a non-empty finite vector")
    if negatives < 1:
        raise ValueError("negatives must be at least 1")
    root = np.sqrt(counts * counts + 1.0)
    # c + sqrt(c^2 + 1) = 1 / (sqrt(c^2 + 1) - c): no cancellation for negative c.
    smooth = np.empty_like(counts)
    up = counts >= 0
    smooth[up] = (counts[up] + root[up]) / 2.0
    smooth[~up] = 0.5 / (root[~up] - counts[~up])
    n_pos = max(float(np.sum(np.maximum(counts, 0.0))), 1.0)
    base = math.log(negatives * n_pos / counts.size)
    return (np.log(smooth) - base).astype(np.float32)
