"""Implicit feedback and the leave-one-out split used to evaluate recommenders.

Leave-one-out (each user's latest interaction is the test item, the one before it
the validation item) is the protocol of He et al. 2017, "Neural Collaborative
Filtering", §4.1, and of most federated-recommendation papers that follow it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from securefed.data.interactions import Interactions, readonly_array
from securefed.errors import ConfigError, DataError

__all__ = ["MIN_INTERACTIONS_FOR_HOLDOUT", "Split", "leave_one_out", "to_implicit"]

MIN_INTERACTIONS_FOR_HOLDOUT = 3
"""A user needs this many interactions to give one validation and one test item and
keep at least one for training; users with fewer keep everything in training."""

NO_ITEM = -1
"""Marks "no held-out item" in ``validation_items`` / ``test_items``."""


def to_implicit(data: Interactions, *, min_rating: float | None = None) -> Interactions:
    """Turn ratings into implicit feedback: "the user interacted with the item".

    Keeps the interactions with ``rating >= min_rating`` (all when ``None``; the
    comparison is in float32, the type of the ratings), sets every rating to 1.0
    and collapses repeated (user, item) pairs to one interaction at the earliest
    timestamp (the earliest row in file order on a tie). The result keeps the
    input's row order.

    The dense index does not change: users and items that lose all their
    interactions stay in ``n_users`` / ``n_items`` (with their ids, titles and
    genres), so indices stay comparable with the input and across thresholds.
    Such users have no training data and are left out by the partitioners.

    Args:
        data: the interactions.
        min_rating: the smallest rating that counts as a positive, or ``None``.

    Returns:
        Implicit interactions over the same index.

    Raises:
        ConfigError: ``min_rating`` is not a finite number.
    """
    if min_rating is None:
        rows = np.arange(len(data), dtype=np.int64)
    else:
        if isinstance(min_rating, bool) or not isinstance(min_rating, int | float | np.number):
            raise ConfigError("min_rating must be a number or None")
        if not math.isfinite(float(min_rating)):
            raise ConfigError("min_rating must be finite")
        rows = np.flatnonzero(data.ratings >= np.float32(min_rating))
    users = data.users[rows]
    items = data.items[rows]
    # lexsort is stable: within equal (user, item, timestamp) the earlier row comes first.
    order = np.lexsort((data.timestamps[rows], items, users))
    first = np.ones(order.shape[0], dtype=np.bool_)
    first[1:] = (users[order][1:] != users[order][:-1]) | (items[order][1:] != items[order][:-1])
    kept = np.sort(rows[order[first]])
    return Interactions(
        users=data.users[kept],
        items=data.items[kept],
        ratings=np.ones(kept.shape[0], dtype=np.float32),
        timestamps=data.timestamps[kept],
        user_ids=data.user_ids,
        item_ids=data.item_ids,
        n_users=data.n_users,
        n_items=data.n_items,
        item_titles=data.item_titles,
        item_genres=data.item_genres,
        source=data.source,
    )


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Split:
    """Training interactions plus at most one validation and one test item per user.

    The CSR index is derived from ``train``: user ``u``'s training items are
    ``train_item_index[train_indptr[u]:train_indptr[u + 1]]`` (ascending item
    index), and the rows of ``train`` that hold them are ``train_row_index`` over
    the same range (in ``train`` order). ``eq=False``: arrays compare by identity.

    Attributes:
        train: the training interactions (same dense index as the source data).
        validation_items: per user, the validation item or -1.
        test_items: per user, the test item or -1.
        train_indptr: ``n_users + 1`` offsets into the two arrays below.
        train_item_index: training items grouped by user, ascending within a user.
        train_row_index: rows of ``train`` grouped by user, in ``train`` order.

    Raises:
        DataError: arrays of the wrong length or range, a held-out item that is
            also one of the user's training items, or a validation item equal to
            the test item.
    """

    train: Interactions
    validation_items: npt.NDArray[np.int64]
    test_items: npt.NDArray[np.int64]
    train_indptr: npt.NDArray[np.int64] = field(init=False)
    train_item_index: npt.NDArray[np.int64] = field(init=False, repr=False)
    train_row_index: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.train, Interactions):
            raise TypeError("train must be Interactions")
        set_ = object.__setattr__
        n_users, n_items = self.train.n_users, self.train.n_items
        for name in ("validation_items", "test_items"):
            held = readonly_array(getattr(self, name), np.int64, name)
            if held.shape[0] != n_users:
                raise DataError(f"{name} has {held.shape[0]} entries, n_users is {n_users}")
            if held.size and (int(held.min()) < NO_ITEM or int(held.max()) >= n_items):
                raise DataError(f"{name} must lie in [-1, {n_items})")
            set_(self, name, held)
        both = (self.validation_items >= 0) & (self.validation_items == self.test_items)
        if both.any():
            user = int(np.flatnonzero(both)[0])
            raise DataError(f"user {user}: the validation item is also the test item")

        users, items = self.train.users, self.train.items
        counts = np.bincount(users, minlength=n_users).astype(np.int64)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        by_item = np.lexsort((items, users))
        item_index = items[by_item]
        row_index = np.argsort(users, kind="stable").astype(np.int64)
        set_(self, "train_indptr", readonly_array(indptr, np.int64, "train_indptr"))
        set_(self, "train_item_index", readonly_array(item_index, np.int64, "train_item_index"))
        set_(self, "train_row_index", readonly_array(row_index, np.int64, "train_row_index"))

        # Held-out items must not be training items of the same user: the evaluation
        # ranks them among the items the user has not trained on.
        keys = users[by_item] * n_items + item_index  # ascending: sorted by (user, item)
        for name in ("validation_items", "test_items"):
            held = getattr(self, name)
            who = np.flatnonzero(held >= 0)
            if not who.size or not keys.size:
                continue
            wanted = who * n_items + held[who]
            at = np.minimum(np.searchsorted(keys, wanted), keys.shape[0] - 1)
            clash = np.flatnonzero(keys[at] == wanted)
            if clash.size:
                user = int(who[clash[0]])
                raise DataError(
                    f"user {user}: {name[:-6]} item {int(held[user])} is also a training item"
                )

    @property
    def n_users(self) -> int:
        """The number of dense users (``train.n_users``)."""
        return self.train.n_users

    @property
    def n_items(self) -> int:
        """The number of dense items (``train.n_items``)."""
        return self.train.n_items

    def train_items_of(self, user: int) -> npt.NDArray[np.int64]:
        """User ``user``'s training items, ascending (a read-only view)."""
        if not 0 <= user < self.n_users:
            raise IndexError(f"user {user} is not in [0, {self.n_users})")
        return self.train_item_index[self.train_indptr[user] : self.train_indptr[user + 1]]

    def train_counts(self) -> npt.NDArray[np.int64]:
        """The number of training interactions of every user."""
        return np.diff(self.train_indptr)

    def __repr__(self) -> str:
        held = int(np.count_nonzero(self.test_items >= 0))
        return (
            f"Split(train={len(self.train)}, users_with_test={held}, "
            f"n_users={self.n_users}, n_items={self.n_items})"
        )


def leave_one_out(data: Interactions) -> Split:
    """Hold out each user's last interaction for test and the one before for validation.

    A user's interactions are ordered by (timestamp, item index), so ties in time
    break the same way on every run. Users with fewer than
    :data:`MIN_INTERACTIONS_FOR_HOLDOUT` interactions keep everything in training
    and get -1 for both held-out items. The training interactions come out sorted
    by (user, timestamp, item).

    Args:
        data: interactions with at most one interaction per (user, item) pair
            (:func:`to_implicit` makes that so); explicit ratings are fine.

    Returns:
        The split.

    Raises:
        DataError: a (user, item) pair occurs more than once: its copies could
            land in both training and test.
    """
    users, items = data.users, data.items
    by_pair = np.lexsort((items, users))
    pu, pi = users[by_pair], items[by_pair]
    repeated = np.flatnonzero((pu[1:] == pu[:-1]) & (pi[1:] == pi[:-1]))
    if repeated.size:
        j = int(repeated[0])
        raise DataError(
            f"user id {int(data.user_ids[pu[j]])} has item id {int(data.item_ids[pi[j]])} "
            "more than once; leave_one_out needs one interaction per (user, item) pair "
            "(use to_implicit first)"
        )
    order = np.lexsort((items, data.timestamps, users))
    sorted_items = items[order]
    counts = np.bincount(users, minlength=data.n_users)
    ends = np.cumsum(counts)
    held = counts >= MIN_INTERACTIONS_FOR_HOLDOUT
    test_at = ends[held] - 1
    validation_at = ends[held] - 2
    test_items = np.full(data.n_users, NO_ITEM, dtype=np.int64)
    validation_items = np.full(data.n_users, NO_ITEM, dtype=np.int64)
    test_items[held] = sorted_items[test_at]
    validation_items[held] = sorted_items[validation_at]
    in_train = np.ones(order.shape[0], dtype=np.bool_)
    in_train[test_at] = False
    in_train[validation_at] = False
    return Split(
        train=data.select(order[in_train]),
        validation_items=validation_items,
        test_items=test_items,
    )
