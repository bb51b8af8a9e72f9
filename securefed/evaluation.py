"""Leave-one-out ranking metrics for recommendation (pure NumPy).

Each test user has one held-out positive item. Two protocols rank it:

* **sampled**: among itself and ``K = 99`` items drawn uniformly from the items the
  user has not interacted with (He et al. 2017, "Neural Collaborative Filtering", §4.1);
* **full**: among every item except the user's excluded ones (training items, and the
  validation item when scoring the test item). Krichene & Rendle 2020, "On Sampled
  Metrics for Item Recommendation", show that sampled metrics can rank models
  inconsistently, hence both.

Ranks are 0-based and **pessimistic on ties**: the rank of the positive is the number
of candidates scoring greater than *or equal to* it. A model that scores everything
alike therefore gets the worst rank, not the best, and cannot win by degeneracy.

Metric functions return per-user values; :class:`MetricSums` holds their sums over
users so that clients can add them up through secure aggregation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "SAMPLED_NEGATIVES",
    "TOP_K",
    "IntegerSource",
    "MetricSums",
    "NumpyIntegers",
    "auc_from_ranks",
    "candidates_full",
    "hit_rate_at",
    "ndcg_at",
    "ranks_full",
    "ranks_sampled",
    "sample_negatives",
]

#: Cut-off of the hit-rate and NDCG that :class:`MetricSums` records.
TOP_K = 10
#: Negatives per user in the sampled protocol (He et al. 2017, §4.1).
SAMPLED_NEGATIVES = 99

# MetricSums.from_vector's default: a user count this close to a whole number is
# accepted (float rounding only).
_USER_COUNT_TOLERANCE = 1e-6

Ranks = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def _scores(values: npt.ArrayLike, ndim: int, name: str) -> Floats:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    # NaN compares false with everything, which would give the best possible rank.
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def ranks_sampled(pos_scores: npt.ArrayLike, neg_scores: npt.ArrayLike) -> Ranks:
    """Rank of each positive among itself and its sampled negatives.

    Args:
        pos_scores: ``(U,)`` score of each user's positive item.
        neg_scores: ``(U, K)`` scores of each user's negatives.

    Returns:
        ``(U,)`` int64 ranks in ``[0, K]``: the number of negatives scoring ``>=`` the
        positive (ties count against the positive).

    Raises:
        ValueError: On mismatched shapes or NaN scores.
    """
    pos = _scores(pos_scores, 1, "pos_scores")
    neg = _scores(neg_scores, 2, "neg_scores")
    if neg.shape[0] != pos.shape[0]:
        raise ValueError(f"{pos.shape[0]} positives but {neg.shape[0]} rows of negatives")
    ranks: Ranks = np.count_nonzero(neg >= pos[:, None], axis=1).astype(np.int64)
    return ranks


def _exclusion_pairs(
    n_users: int, n_items: int, exclude: Sequence[npt.ArrayLike]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct (user, item) pairs to exclude, validated."""
    if len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} entries for {n_users} users")
    arrays = [np.asarray(e).reshape(-1) for e in exclude]
    for array in arrays:
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError("exclude entries must be integer item indices")
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=n_users)
    items = (
        np.concatenate(arrays).astype(np.int64) if lengths.sum() else np.zeros(0, dtype=np.int64)
    )
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"exclude holds item indices outside [0, {n_items})")
    users = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    flat = np.unique(users * n_items + items)
    return flat // n_items, flat % n_items


def ranks_full(
    scores: npt.ArrayLike, positives: npt.ArrayLike, exclude: Sequence[npt.ArrayLike]
) -> Ranks:
    """Rank of each positive among all items except the user's excluded ones.

    Args:
        scores: ``(U, n_items)`` scores of every item for each user.
        positives: ``(U,)`` the held-out item of each user.
        exclude: per user, item indices to drop from the candidates (training items,
            and the validation item when scoring test); duplicates are allowed.

    Returns:
        ``(U,)`` int64 ranks: the number of non-excluded items other than the positive
        scoring ``>=`` the positive (ties count against the positive).

    Raises:
        ValueError: On mismatched shapes, NaN scores, out-of-range items, or a
            positive that is also excluded.
    """
    table = _scores(scores, 2, "scores")
    n_users, n_items = table.shape
    pos = np.asarray(positives)
    if pos.shape != (n_users,) or (pos.size and not np.issubdtype(pos.dtype, np.integer)):
        raise ValueError(f"positives must be ({n_users},) integer item indices")
    pos = pos.astype(np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= n_items):
        raise ValueError(f"positives hold item indices outside [0, {n_items})")
    ex_users, ex_items = _exclusion_pairs(n_users, n_items, exclude)
    if np.any(ex_items == pos[ex_users]):
        raise ValueError("a positive item is also in its user's exclude set")
    rows = np.arange(n_users)
    at_least = table >= table[rows, pos][:, None]  # includes the positive itself
    above: Ranks = np.count_nonzero(at_least, axis=1).astype(np.int64) - 1
    excluded_above = np.bincount(ex_users, weights=at_least[ex_users, ex_items], minlength=n_users)
    return above - excluded_above.astype(np.int64)


def candidates_full(n_items: int, exclude: Sequence[npt.ArrayLike]) -> Ranks:
    """Number of candidates per user in the full protocol (the positive included).

    Args:
        n_items: size of the catalogue.
        exclude: as for :func:`ranks_full` (the positive must not be in it).

    Returns:
        ``(U,)`` int64: ``n_items`` minus the number of distinct excluded items.
    """
    ex_users, _ = _exclusion_pairs(len(exclude), n_items, exclude)
    counts = np.bincount(ex_users, minlength=len(exclude)).astype(np.int64)
    return n_items - counts


def _ranks(ranks: npt.ArrayLike) -> Ranks:
    array = np.asarray(ranks)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError("ranks must be a 1-D integer array")
    if array.size and array.min() < 0:
        raise ValueError("ranks must be non-negative")
    return array.astype(np.int64)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


def hit_rate_at(ranks: npt.ArrayLike, k: int = TOP_K) -> Floats:
    """Per-user hit indicator: 1.0 if ``rank < k`` else 0.0 (take ``.mean()`` for HR@k)."""
    _check_k(k)
    return (_ranks(ranks) < k).astype(np.float64)


def ndcg_at(ranks: npt.ArrayLike, k: int = TOP_K) -> Floats:
    """Per-user NDCG@k with one relevant item: ``1 / log2(rank + 2)`` if ``rank < k`` else 0."""
    _check_k(k)
    r = _ranks(ranks)
    return np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)


def auc_from_ranks(ranks: npt.ArrayLike, n_candidates: int | npt.ArrayLike) -> Floats:
    """Per-user AUC: the fraction of negatives ranked below the positive.

    ``1 - rank / (n_candidates - 1)``; pessimistic on ties, like the ranks.

    Args:
        ranks: ``(U,)`` 0-based ranks.
        n_candidates: candidates per user including the positive (an int, or ``(U,)``
            as :func:`candidates_full` returns); at least 2.

    Raises:
        ValueError: If ``n_candidates < 2`` or a rank is ``>= n_candidates``.
    """
    r = _ranks(ranks)
    n = np.broadcast_to(np.asarray(n_candidates), r.shape)
    if n.size and not np.issubdtype(n.dtype, np.integer):
        raise ValueError("n_candidates must be integers")
    if n.size and n.min() < 2:
        raise ValueError("n_candidates must be at least 2")
    if np.any(r >= n):
        raise ValueError("a rank is not below its number of candidates")
    return 1.0 - r / (n - 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSums:
    """Sums over users of HR@10, NDCG@10 and AUC for both protocols.

    Clients add these up through secure aggregation (:meth:`to_vector`); the server
    divides by ``users`` (:meth:`means`).
    """

    users: int = 0
    sampled_hr10: float = 0.0
    sampled_ndcg10: float = 0.0
    sampled_auc: float = 0.0
    full_hr10: float = 0.0
    full_ndcg10: float = 0.0
    full_auc: float = 0.0

    #: Vector layout of :meth:`to_vector` (fixed: it is part of the wire format).
    ORDER: ClassVar[tuple[str, ...]] = (
        "users",
        "sampled_hr10",
        "sampled_ndcg10",
        "sampled_auc",
        "full_hr10",
        "full_ndcg10",
        "full_auc",
    )

    def __post_init__(self) -> None:
        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 0:
            raise ValueError("users must be a non-negative int")
        # No [0, users] range check: sums that went through quantised aggregation
        # may sit slightly outside it.
        for name in self.ORDER[1:]:
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")

    @classmethod
    def zero(cls) -> MetricSums:
        """No users: the identity of ``+``."""
        return cls()

    @classmethod
    def from_ranks(
        cls,
        *,
        sampled: npt.ArrayLike,
        full: npt.ArrayLike,
        full_candidates: int | npt.ArrayLike,
        sampled_candidates: int = SAMPLED_NEGATIVES + 1,
        k: int = TOP_K,
    ) -> MetricSums:
        """Sums for one group of users, ranked under both protocols.

        Args:
            sampled: ``(U,)`` ranks from :func:`ranks_sampled`.
            full: ``(U,)`` ranks from :func:`ranks_full`, same users in the same order.
            full_candidates: from :func:`candidates_full`.
            sampled_candidates: the positive plus its negatives (default 100).
            k: the cut-off; must be :data:`TOP_K` (the field names and the vector
                layout record HR@10 and NDCG@10).

        Raises:
            ValueError: On mismatched ranks, or ``k != TOP_K``.
        """
        if k != TOP_K:
            raise ValueError(f"MetricSums records HR@{TOP_K} and NDCG@{TOP_K}, not k={k!r}")
        sampled_ranks, full_ranks = _ranks(sampled), _ranks(full)
        if sampled_ranks.shape != full_ranks.shape:
            raise ValueError("sampled and full ranks must cover the same users")
        return cls(
            users=int(sampled_ranks.size),
            sampled_hr10=float(hit_rate_at(sampled_ranks).sum()),
            sampled_ndcg10=float(ndcg_at(sampled_ranks).sum()),
            sampled_auc=float(auc_from_ranks(sampled_ranks, sampled_candidates).sum()),
            full_hr10=float(hit_rate_at(full_ranks).sum()),
            full_ndcg10=float(ndcg_at(full_ranks).sum()),
            full_auc=float(auc_from_ranks(full_ranks, full_candidates).sum()),
        )

    def __add__(self, other: MetricSums) -> MetricSums:
        if not isinstance(other, MetricSums):
            return NotImplemented
        return MetricSums(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def means(self) -> dict[str, float]:
        """Per-user means of the six metrics (keys as the field names).

        Raises:
            ValueError: If there are no users.
        """
        if self.users == 0:
            raise ValueError("no users to average over")
        return {name: getattr(self, name) / self.users for name in self.ORDER[1:]}

    def to_vector(self) -> npt.NDArray[np.float64]:
        """The sums as a float64 vector in :attr:`ORDER`."""
        return np.array([getattr(self, name) for name in self.ORDER], dtype=np.float64)

    @classmethod
    def from_vector(
        cls, vector: npt.ArrayLike, *, count_tolerance: float = _USER_COUNT_TOLERANCE
    ) -> MetricSums:
        """Inverse of :meth:`to_vector`.

        The user count is rounded to the nearest whole number if it is within
        ``count_tolerance`` of it. The default allows float rounding only; after a
        quantised aggregation pass the aggregate's error bound (for
        :mod:`securefed.secagg.quantize`: clients x one quantisation step), which
        must stay below 0.5 for the count to be recoverable.

        Raises:
            ValueError: On a wrong length, or a user count further than
                ``count_tolerance`` from a whole number.
        """
        if not 0.0 <= count_tolerance < 0.5:
            raise ValueError("count_tolerance must lie in [0, 0.5)")
        array = np.asarray(vector, dtype=np.float64)
        if array.shape != (len(cls.ORDER),):
            raise ValueError(f"expected a vector of {len(cls.ORDER)} values, got {array.shape}")
        users = float(array[0])
        if not np.isfinite(users) or abs(users - round(users)) > count_tolerance:
            raise ValueError("the user count must be a whole number")
        values = {name: float(v) for name, v in zip(cls.ORDER[1:], array[1:], strict=True)}
        return cls(users=round(users), **values)


# --- negative sampling -------------------------------------------------------------------


@runtime_checkable
class IntegerSource(Protocol):
    """Unbiased uniform integers: ``integers(n, high)`` gives ``n`` int64 draws in ``[0, high)``."""

    def integers(self, n: int, high: int) -> npt.NDArray[np.int64]:
        """Return ``n`` independent uniform int64 values in ``[0, high)``."""
        ...


class NumpyIntegers:
    """An :class:`IntegerSource` over a NumPy ``Generator`` (for tests and experiments)."""

    __slots__ = ("_generator",)

    def __init__(self, generator: np.random.Generator) -> None:
        self._generator = generator

    def integers(self, n: int, high: int) -> npt.NDArray[np.int64]:
        """Return ``n`` uniform int64 values in ``[0, high)``."""
        return self._generator.integers(0, high, size=n, dtype=np.int64)

    def __repr__(self) -> str:
        return "NumpyIntegers(<generator>)"


def sample_negatives(
    rng: IntegerSource,
    n_items: int,
    exclude_sorted: npt.ArrayLike,
    k: int = SAMPLED_NEGATIVES,
) -> npt.NDArray[np.int64]:
    """Draw ``k`` distinct items uniformly from the items not in ``exclude_sorted``.

    The first ``k`` distinct values of a sequence of independent uniform draws form a
    uniform random ``k``-subset; draws are made in batches and mapped from
    ``[0, n_items - len(exclude))`` onto the allowed items.

    Args:
        rng: the randomness.
        n_items: size of the catalogue.
        exclude_sorted: strictly increasing item indices in ``[0, n_items)`` (the
            user's training, validation and test items).
        k: how many negatives.

    Returns:
        ``(k,)`` int64 item indices, sorted.

    Raises:
        ValueError: If fewer than ``k`` items are allowed, or on malformed arguments.
    """
    _check_k(k)
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
        raise ValueError(f"n_items must be a positive int, got {n_items!r}")
    excluded = np.asarray(exclude_sorted)
    if excluded.ndim != 1 or (excluded.size and not np.issubdtype(excluded.dtype, np.integer)):
        raise ValueError("exclude_sorted must be a 1-D integer array")
    excluded = excluded.astype(np.int64)
    if excluded.size and (
        excluded[0] < 0 or excluded[-1] >= n_items or np.any(np.diff(excluded) <= 0)
    ):
        raise ValueError(f"exclude_sorted must be strictly increasing within [0, {n_items})")
    allowed = n_items - excluded.size
    if allowed < k:
        raise ValueError(f"only {allowed} candidate items for {k} negatives")

    chosen = np.zeros(0, dtype=np.int64)
    while chosen.size < k:
        draws = np.asarray(rng.integers(2 * (k - chosen.size) + 16, allowed), dtype=np.int64)
        if draws.size and (draws.min() < 0 or draws.max() >= allowed):
            raise ValueError("the integer source returned values out of range")
        sequence = np.concatenate([chosen, draws])
        _, first = np.unique(sequence, return_index=True)
        chosen = sequence[np.sort(first)][:k]
    # The r-th allowed item is r plus the number of excluded items at or below it;
    # excluded[j] - j counts the allowed items below excluded[j].
    shifted = excluded - np.arange(excluded.size, dtype=np.int64)
    items = chosen + np.searchsorted(shifted, chosen, side="right")
    return np.sort(items)
