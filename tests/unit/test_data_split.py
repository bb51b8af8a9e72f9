"""Interactions validation, implicit feedback and the leave-one-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    MIN_INTERACTIONS_FOR_HOLDOUT,
    Interactions,
    Split,
    leave_one_out,
    load_movielens,
    to_implicit,
)
from securefed.errors import ConfigError, DataError

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "data" / "ml-latest-small"


def make(
    users: list[int],
    items: list[int],
    timestamps: list[int] | None = None,
    ratings: list[float] | None = None,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
) -> Interactions:
    n_users = n_users if n_users is not None else max(users, default=-1) + 1
    n_items = n_items if n_items is not None else max(items, default=-1) + 1
    n = len(users)
    return Interactions(
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        ratings=np.array(ratings if ratings is not None else [1.0] * n, dtype=np.float32),
        timestamps=np.array(timestamps if timestamps is not None else range(n), dtype=np.int64),
        user_ids=np.arange(100, 100 + n_users, dtype=np.int64),
        item_ids=np.arange(500, 500 + n_items, dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
        source="test",
    )


@pytest.fixture(scope="module")
def shipped() -> Interactions:
    return load_movielens(SHIPPED)


# -- Interactions ----------------------------------------------------------------------


def test_interactions_accepts_other_integer_dtypes_without_touching_the_input():
    users = np.array([0, 1], dtype=np.int32)
    data = Interactions(
        users=users,
        items=np.array([1, 0]),
        ratings=np.array([1.0, 2.0]),
        timestamps=np.array([5, 6]),
        user_ids=np.array([7, 8]),
        item_ids=np.array([9, 10]),
        n_users=2,
        n_items=2,
    )
    assert data.users.dtype == np.int64
    assert data.ratings.dtype == np.float32
    assert not data.users.flags.writeable
    users[0] = 1  # the caller's array stays writable
    assert len(data) == 2
    assert "n_users=2" in repr(data)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"items": np.array([0])}, "items has 1 entries"),
        ({"users": np.array([0, 2])}, "users must lie in"),
        ({"items": np.array([-1, 0])}, "items must lie in"),
        ({"ratings": np.array([1.0, np.nan])}, "NaN"),
        ({"ratings": np.array([1.0, np.inf])}, "NaN or infinite"),
        ({"users": np.array([0.0, 1.0])}, "must hold integers"),
        ({"ratings": np.array(["a", "b"])}, "real numbers"),
        ({"users": np.zeros((2, 1), dtype=np.int64)}, "1-D"),
        ({"user_ids": np.array([7, 7])}, "user_ids must be distinct"),
        ({"item_ids": np.array([9])}, "item_ids has 1 entries"),
        ({"n_users": -1}, "n_users"),
        ({"n_items": True}, "n_items"),
        ({"item_titles": ("a",)}, "item_titles"),
        ({"item_genres": (("a",), (3,))}, "item_genres"),
        ({"users": np.array([0, 2**63], dtype=np.uint64)}, "int64 range"),
    ],
)
def test_interactions_validation(change, fragment):
    fields = {
        "users": np.array([0, 1]),
        "items": np.array([1, 0]),
        "ratings": np.array([1.0, 2.0]),
        "timestamps": np.array([5, 6]),
        "user_ids": np.array([7, 8]),
        "item_ids": np.array([9, 10]),
        "n_users": 2,
        "n_items": 2,
    }
    fields.update(change)
    with pytest.raises(DataError, match=fragment):
        Interactions(**fields)


# -- to_implicit -----------------------------------------------------------------------


def test_to_implicit_threshold_and_ones():
    data = make([0, 0, 1, 1], [0, 1, 0, 2], ratings=[4.0, 3.5, 5.0, 1.0])
    implicit = to_implicit(data, min_rating=4.0)
    assert implicit.users.tolist() == [0, 1]
    assert implicit.items.tolist() == [0, 0]
    assert implicit.ratings.tolist() == [1.0, 1.0]
    everything = to_implicit(data)
    assert len(everything) == 4
    assert np.all(everything.ratings == 1.0)


def test_to_implicit_collapses_duplicates_to_earliest():
    data = make(
        [0, 0, 1, 0, 0, 1],
        [3, 1, 2, 3, 3, 2],
        timestamps=[50, 10, 7, 20, 20, 7],
        ratings=[5, 5, 5, 5, 5, 5],
    )
    implicit = to_implicit(data)
    # (0, 3) at 20 twice and 50: the row at index 3 (first of the 20s) survives;
    # (1, 2) twice at 7: the first row survives. Input order is kept.
    assert implicit.users.tolist() == [0, 1, 0]
    assert implicit.items.tolist() == [1, 2, 3]
    assert implicit.timestamps.tolist() == [10, 7, 20]


def test_to_implicit_keeps_the_index_stable():
    data = make([0, 1, 2], [0, 1, 2], ratings=[5.0, 1.0, 5.0])
    implicit = to_implicit(data, min_rating=4.5)
    assert implicit.n_users == 3
    assert implicit.n_items == 3
    assert implicit.user_ids.tolist() == data.user_ids.tolist()
    assert implicit.users.tolist() == [0, 2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "4", True])
def test_to_implicit_rejects_bad_threshold(bad):
    with pytest.raises(ConfigError):
        to_implicit(make([0], [0]), min_rating=bad)


def test_to_implicit_on_shipped(shipped):
    implicit = to_implicit(shipped, min_rating=4.0)
    assert len(implicit) == int(np.count_nonzero(shipped.ratings >= 4.0))
    assert implicit.n_users == 610
    assert implicit.item_titles is shipped.item_titles


# -- leave_one_out ---------------------------------------------------------------------


def test_test_item_is_the_latest_and_validation_the_one_before():
    # user 0: items 5 (t=3), 2 (t=1), 7 (t=9), 4 (t=5) -> test 7, validation 4
    data = make([0, 0, 0, 0], [5, 2, 7, 4], timestamps=[3, 1, 9, 5], n_items=8)
    split = leave_one_out(data)
    assert split.test_items.tolist() == [7]
    assert split.validation_items.tolist() == [4]
    assert split.train_items_of(0).tolist() == [2, 5]
    assert split.train.timestamps.tolist() == [1, 3]


def test_ties_in_time_break_by_item_index_whatever_the_row_order():
    users = [0, 0, 0, 0, 1, 1, 1]
    items = [6, 3, 1, 9, 2, 8, 4]
    stamps = [10, 10, 10, 10, 1, 5, 5]
    split = leave_one_out(make(users, items, stamps, n_items=10))
    assert split.test_items.tolist() == [9, 8]
    assert split.validation_items.tolist() == [6, 4]
    rng = np.random.default_rng(3)
    for _ in range(5):
        perm = rng.permutation(len(users))
        shuffled = make(
            [users[i] for i in perm],
            [items[i] for i in perm],
            [stamps[i] for i in perm],
            n_items=10,
        )
        again = leave_one_out(shuffled)
        assert again.test_items.tolist() == [9, 8]
        assert again.validation_items.tolist() == [6, 4]
        assert again.train.items.tolist() == split.train.items.tolist()


def test_short_and_absent_users_keep_everything_in_training():
    # user 0: 3 interactions (held out); user 1: 2; user 2: 1; user 3: none.
    data = make([0, 0, 0, 1, 1, 2], [0, 1, 2, 0, 1, 2], [1, 2, 3, 1, 2, 1], n_users=4)
    split = leave_one_out(data)
    assert MIN_INTERACTIONS_FOR_HOLDOUT == 3
    assert split.test_items.tolist() == [2, -1, -1, -1]
    assert split.validation_items.tolist() == [1, -1, -1, -1]
    assert split.train_items_of(0).tolist() == [0]
    assert split.train_items_of(1).tolist() == [0, 1]
    assert split.train_items_of(2).tolist() == [2]
    assert split.train_items_of(3).tolist() == []
    assert split.train_counts().tolist() == [1, 2, 1, 0]
    assert split.n_users == 4
    with pytest.raises(IndexError):
        split.train_items_of(4)


def test_repeated_pairs_are_refused():
    data = make([0, 0, 0, 0], [1, 2, 1, 3], [1, 2, 3, 4])
    with pytest.raises(DataError, match="user id 100 has item id 501 more than once"):
        leave_one_out(data)
    assert leave_one_out(to_implicit(data)).test_items.tolist() == [3]


def test_shipped_split(shipped):
    data = to_implicit(shipped)
    split = leave_one_out(data)
    # Every ml-latest-small user rated at least 20 movies: everyone is held out.
    assert np.all(split.test_items >= 0)
    assert np.all(split.validation_items >= 0)
    assert len(split.train) == len(data) - 2 * 610
    assert np.all(split.validation_items != split.test_items)
    # The test item is the user's latest interaction.
    order = np.lexsort((data.items, data.timestamps, data.users))
    last = np.r_[np.flatnonzero(np.diff(data.users[order])), len(data) - 1]
    assert np.array_equal(split.test_items, data.items[order][last])
    latest_train = np.full(610, -1, dtype=np.int64)
    np.maximum.at(latest_train, split.train.users, split.train.timestamps)
    test_time = data.timestamps[order][last]
    assert np.all(latest_train <= test_time)
    # No held-out item is among the user's training items.
    for user in range(610):
        train_items = split.train_items_of(user)
        assert split.test_items[user] not in train_items
        assert split.validation_items[user] not in train_items
    # The CSR index agrees with the training interactions.
    assert split.train_indptr[-1] == len(split.train)
    rows = split.train_row_index
    assert np.array_equal(np.repeat(np.arange(610), split.train_counts()), split.train.users[rows])


def test_split_validation():
    train = make([0, 0, 1], [0, 1, 2], n_items=4)
    Split(train=train, validation_items=np.array([2, -1]), test_items=np.array([3, -1]))
    with pytest.raises(DataError, match="test item 1 is also a training item"):
        Split(train=train, validation_items=np.array([-1, -1]), test_items=np.array([1, -1]))
    with pytest.raises(DataError, match="validation item 2 is also a training item"):
        Split(train=train, validation_items=np.array([-1, 2]), test_items=np.array([-1, 3]))
    with pytest.raises(DataError, match="validation item is also the test item"):
        Split(train=train, validation_items=np.array([3, -1]), test_items=np.array([3, -1]))
    with pytest.raises(DataError, match="entries"):
        Split(train=train, validation_items=np.array([-1]), test_items=np.array([-1, -1]))
    with pytest.raises(DataError, match="must lie in"):
        Split(train=train, validation_items=np.array([-2, -1]), test_items=np.array([-1, -1]))
    with pytest.raises(DataError, match="must lie in"):
        Split(train=train, validation_items=np.array([-1, -1]), test_items=np.array([4, -1]))
    with pytest.raises(TypeError):
        Split(train="x", validation_items=np.array([-1]), test_items=np.array([-1]))  # type: ignore[arg-type]
