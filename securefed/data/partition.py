"""Split a :class:`~securefed.data.split.Split` among data owners (clients).

Three simulations of who holds which data:

- :func:`per_user`: cross-device; every user is a data owner.
- :func:`into_silos`: cross-silo; users spread evenly over ``count`` silos.
- :func:`dirichlet_silos`: cross-silo, non-IID; each category of users is spread
  over the silos in Dirichlet(alpha) proportions (Hsu, Qi and Brown 2019,
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", §3, applied to user categories instead of labels).

A user belongs to exactly one owner, with all of that user's training
interactions and held-out items. The partition is a public simulation choice,
not a secret, so it uses a seeded NumPy generator (a local ``Generator``, never
the global state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from securefed.data.interactions import readonly_array
from securefed.data.split import NO_ITEM, Split
from securefed.errors import ConfigError, DataError

__all__ = [
    "POPULARITY_BUCKETS",
    "ClientShard",
    "PartitionBy",
    "dirichlet_silos",
    "into_silos",
    "per_user",
    "user_categories",
]

POPULARITY_BUCKETS = 5
"""Quantile buckets (quintiles) of the users' mean training-item popularity."""

NO_GENRE_LABEL = "(no genre)"
"""Category of users whose training items carry no genre at all."""


class PartitionBy(Enum):
    """What makes users alike for :func:`dirichlet_silos`."""

    POPULARITY = "popularity"
    """Quintile of the mean popularity (training count) of the user's training items."""
    GENRE = "genre"
    """The most frequent first genre among the user's training items."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ClientShard:
    """One data owner's data: its users, their training interactions, their held-out items.

    Users are renumbered locally: local user ``k`` is global user ``users[k]``.
    Items keep their global index (every owner shares one item catalogue).
    ``eq=False``: arrays compare by identity.

    Attributes:
        owner_id: 1-based owner (client) id.
        users: the global dense user indices this owner holds, strictly ascending.
        train_users: local user index of each training interaction, in
            ``[0, len(users))``.
        train_items: global item index of each training interaction.
        train_ratings: rating of each training interaction (float32).
        train_timestamps: timestamp of each training interaction.
        validation_items: per local user, the validation item or -1.
        test_items: per local user, the test item or -1.
        n_items: size of the global item index.

    Raises:
        DataError: inconsistent lengths or out-of-range indices.
        ConfigError: ``owner_id`` is not a positive integer.
    """

    owner_id: int
    users: npt.NDArray[np.int64]
    train_users: npt.NDArray[np.int64]
    train_items: npt.NDArray[np.int64]
    train_ratings: npt.NDArray[np.float32]
    train_timestamps: npt.NDArray[np.int64]
    validation_items: npt.NDArray[np.int64]
    test_items: npt.NDArray[np.int64]
    n_items: int

    def __post_init__(self) -> None:
        if (
            isinstance(self.owner_id, bool)
            or not isinstance(self.owner_id, int | np.integer)
            or self.owner_id < 1
        ):
            raise ConfigError("owner_id must be a positive integer")
        if isinstance(self.n_items, bool) or not isinstance(self.n_items, int | np.integer):
            raise DataError("n_items must be an integer")
        set_ = object.__setattr__
        set_(self, "owner_id", int(self.owner_id))
        set_(self, "n_items", int(self.n_items))
        for name in (
            "users",
            "train_users",
            "train_items",
            "train_timestamps",
            "validation_items",
            "test_items",
        ):
            set_(self, name, readonly_array(getattr(self, name), np.int64, name))
        set_(self, "train_ratings", readonly_array(self.train_ratings, np.float32, "train_ratings"))

        n_local = self.users.shape[0]
        if n_local and (int(self.users[0]) < 0 or np.any(np.diff(self.users) <= 0)):
            raise DataError("users must be non-negative and strictly ascending")
        n_train = self.train_users.shape[0]
        for name in ("train_items", "train_ratings", "train_timestamps"):
            if getattr(self, name).shape[0] != n_train:
                raise DataError(f"{name} has {getattr(self, name).shape[0]} entries, not {n_train}")
        if not np.all(np.isfinite(self.train_ratings)):
            raise DataError("train_ratings contain NaN or infinite values")
        if n_train and (int(self.train_users.min()) < 0 or int(self.train_users.max()) >= n_local):
            raise DataError(f"train_users must lie in [0, {n_local})")
        if n_train and (
            int(self.train_items.min()) < 0 or int(self.train_items.max()) >= self.n_items
        ):
            raise DataError(f"train_items must lie in [0, {self.n_items})")
        for name in ("validation_items", "test_items"):
            held = getattr(self, name)
            if held.shape[0] != n_local:
                raise DataError(f"{name} has {held.shape[0]} entries, users {n_local}")
            if n_local and (int(held.min()) < NO_ITEM or int(held.max()) >= self.n_items):
                raise DataError(f"{name} must lie in [-1, {self.n_items})")

    @property
    def n_users(self) -> int:
        """The number of users this owner holds."""
        return int(self.users.shape[0])

    @property
    def n_train(self) -> int:
        """The number of training interactions this owner holds."""
        return int(self.train_users.shape[0])

    def __repr__(self) -> str:
        return (
            f"ClientShard(owner_id={self.owner_id}, n_users={self.n_users}, "
            f"n_train={self.n_train}, n_items={self.n_items})"
        )


# -- helpers -------------------------------------------------------------------------


def _eligible(split: Split) -> npt.NDArray[np.int64]:
    """Users with at least one training interaction, ascending."""
    return np.flatnonzero(split.train_counts() > 0).astype(np.int64)


def _shard(split: Split, owner_id: int, users: npt.NDArray[np.int64]) -> ClientShard:
    """Owner ``owner_id`` holding ``users`` (global indices, ascending)."""
    starts = split.train_indptr[users]
    lengths = split.train_indptr[users + 1] - starts
    total = int(lengths.sum())
    # Positions into train_row_index: each user's range, concatenated in user order.
    block_starts = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - block_starts, lengths) + np.arange(total, dtype=np.int64)
    rows = split.train_row_index[positions]
    train = split.train
    return ClientShard(
        owner_id=owner_id,
        users=users,
        train_users=np.repeat(np.arange(users.shape[0], dtype=np.int64), lengths),
        train_items=train.items[rows],
        train_ratings=train.ratings[rows],
        train_timestamps=train.timestamps[rows],
        validation_items=split.validation_items[users],
        test_items=split.test_items[users],
        n_items=split.n_items,
    )


def _check_split(split: Split) -> None:
    if not isinstance(split, Split):
        raise ConfigError("split must be a Split")


def _check_count(count: int, available: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer):
        raise ConfigError("count must be an integer")
    if count < 1:
        raise ConfigError("count must be at least 1")
    if count > available:
        raise ConfigError(
            f"count {count} exceeds the {available} users with training data: "
            "some silo would be empty"
        )
    return int(count)


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError("seed must be a non-negative integer")
    return np.random.default_rng(int(seed))


# -- partitioners --------------------------------------------------------------------


def per_user(split: Split) -> list[ClientShard]:
    """Cross-device: one data owner per user that has training data.

    Args:
        split: the split to distribute.

    Returns:
        Shards with owner ids 1..N in ascending user order; users without
        training interactions are left out.
    """
    _check_split(split)
    return [
        _shard(split, owner, np.array([user], dtype=np.int64))
        for owner, user in enumerate(_eligible(split).tolist(), start=1)
    ]


def into_silos(split: Split, count: int, *, seed: int) -> list[ClientShard]:
    """Cross-silo, IID: users shuffled and cut into ``count`` near-equal silos.

    Silo sizes differ by at most one user. Only users with training data are
    placed.

    Args:
        split: the split to distribute.
        count: the number of silos, in ``[1, number of users with training data]``.
        seed: seeds the (public) shuffle.

    Returns:
        ``count`` shards with owner ids 1..count.

    Raises:
        ConfigError: a bad count or seed.
    """
    _check_split(split)
    eligible = _eligible(split)
    count = _check_count(count, eligible.shape[0])
    shuffled = _rng(seed).permutation(eligible)
    return [
        _shard(split, owner, np.sort(part))
        for owner, part in enumerate(np.array_split(shuffled, count), start=1)
    ]


def user_categories(split: Split, by: PartitionBy) -> tuple[npt.NDArray[np.int64], tuple[str, ...]]:
    """Every user's category for :func:`dirichlet_silos`.

    ``POPULARITY``: an item's popularity is its number of training interactions;
    a user's score is the mean popularity of their training interactions' items;
    categories are the :data:`POPULARITY_BUCKETS` quantile buckets of the scores
    (``popularity-q1`` = least popular taste). ``GENRE``: the most frequent first
    genre among the user's training items (ties go to the alphabetically first
    genre); users whose items have no genre get :data:`NO_GENRE_LABEL`.

    Args:
        split: the split.
        by: the kind of category.

    Returns:
        The category code of every user (-1 for users without training data) and
        the label of every code.

    Raises:
        ConfigError: ``by`` is not a :class:`PartitionBy`, or ``GENRE`` is asked
            for data without genres.
    """
    _check_split(split)
    if not isinstance(by, PartitionBy):
        raise ConfigError(f"by must be a PartitionBy, got {by!r}")
    train = split.train
    counts = split.train_counts()
    eligible = counts > 0
    codes = np.full(split.n_users, -1, dtype=np.int64)
    if by is PartitionBy.POPULARITY:
        popularity = np.bincount(train.items, minlength=split.n_items).astype(np.float64)
        totals = np.bincount(train.users, weights=popularity[train.items], minlength=split.n_users)
        scores = totals[eligible] / counts[eligible]
        if scores.size:
            levels = np.arange(1, POPULARITY_BUCKETS) / POPULARITY_BUCKETS
            edges = np.quantile(scores, levels)
            codes[eligible] = np.searchsorted(edges, scores, side="right")
        labels = tuple(f"popularity-q{q}" for q in range(1, POPULARITY_BUCKETS + 1))
        return codes, labels

    genres = train.item_genres
    if genres is None:
        raise ConfigError("PartitionBy.GENRE needs item_genres; this data has none")
    names = sorted({g[0] for g in genres if g})
    code_of = {name: k for k, name in enumerate(names)}
    item_code = np.array([code_of[g[0]] if g else -1 for g in genres], dtype=np.int64)
    row_code = item_code[train.items]
    known = row_code >= 0
    g = len(names)
    table = np.bincount(
        train.users[known] * g + row_code[known], minlength=split.n_users * g
    ).reshape(split.n_users, g)
    has_genre = table.sum(axis=1) > 0 if g else np.zeros(split.n_users, dtype=np.bool_)
    if g:
        codes[has_genre] = np.argmax(table[has_genre], axis=1)  # first maximum: alphabetical
    no_genre = eligible & ~has_genre
    labels = tuple(names)
    if no_genre.any():
        codes[no_genre] = g
        labels += (NO_GENRE_LABEL,)
    return codes, labels


def dirichlet_silos(
    split: Split, count: int, *, alpha: float, by: PartitionBy, seed: int
) -> list[ClientShard]:
    """Cross-silo, non-IID: each category's users spread in Dirichlet(alpha) proportions.

    For every category (see :func:`user_categories`), in code order, the
    category's users are shuffled, proportions ``p ~ Dirichlet(alpha, ..., alpha)``
    over the ``count`` silos are drawn, and the users are cut in those
    proportions. Small ``alpha`` concentrates each category in few silos (strong
    skew); large ``alpha`` approaches an even spread.

    Every silo must hold someone: a silo left empty receives one user, drawn from
    the currently largest silo, until none is empty. Moving single users barely
    changes the skew, and unlike redrawing it always ends.

    Args:
        split: the split to distribute.
        count: the number of silos, in ``[1, number of users with training data]``.
        alpha: Dirichlet concentration, positive and finite.
        by: what makes users alike.
        seed: seeds the (public) draws.

    Returns:
        ``count`` non-empty shards with owner ids 1..count.

    Raises:
        ConfigError: a bad count, alpha, category kind or seed, or ``GENRE`` for
            data without genres.
    """
    _check_split(split)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float | np.number)
        or not math.isfinite(float(alpha))
        or alpha <= 0
    ):
        raise ConfigError("alpha must be a positive, finite number")
    codes, labels = user_categories(split, by)
    eligible = np.flatnonzero(codes >= 0)
    count = _check_count(count, eligible.shape[0])
    rng = _rng(seed)
    silo = np.full(split.n_users, -1, dtype=np.int64)
    for code in range(len(labels)):
        members = np.flatnonzero(codes == code)
        if not members.size:
            continue
        members = rng.permutation(members)
        shares = rng.dirichlet(np.full(count, float(alpha)))
        cuts = np.floor(np.cumsum(shares)[:-1] * members.size).astype(np.int64)
        cuts = np.clip(cuts, 0, members.size)
        for k, part in enumerate(np.split(members, cuts)):
            silo[part] = k
    sizes = np.bincount(silo[eligible], minlength=count)
    for empty in np.flatnonzero(sizes == 0).tolist():
        donor = int(np.argmax(sizes))  # holds >= 2 users while any silo is empty
        candidates = np.flatnonzero(silo == donor)
        silo[candidates[rng.integers(candidates.shape[0])]] = empty
        sizes[donor] -= 1
        sizes[empty] += 1
    return [_shard(split, k + 1, np.flatnonzero(silo == k).astype(np.int64)) for k in range(count)]
