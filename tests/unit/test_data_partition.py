"""Partitioners: coverage, determinism, sizes, Dirichlet skew, argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from securefed.data import (
    POPULARITY_BUCKETS,
    ClientShard,
    Interactions,
    PartitionBy,
    Split,
    catalogue_features,
    decade_features,
    dirichlet_silos,
    genre_features,
    into_silos,
    leave_one_out,
    load_movielens,
    per_user,
    to_implicit,
    user_categories,
)
from securefed.errors import ConfigError, DataError

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "data" / "ml-latest-small"


@pytest.fixture(scope="module")
def split() -> Split:
    """The shipped data, positives only (rating >= 4): some users have little data."""
    return leave_one_out(to_implicit(load_movielens(SHIPPED), min_rating=4.0))


def small_split(*, genres: bool = True) -> Split:
    # user 3 has no interaction at all; user 4 has one (training only).
    users = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 4])
    items = np.array([0, 1, 2, 3, 1, 2, 4, 0, 2, 3, 4, 5, 5])
    data = Interactions(
        users=users,
        items=items,
        ratings=np.ones(users.size, dtype=np.float32),
        timestamps=np.arange(users.size),
        user_ids=np.arange(5) + 10,
        item_ids=np.arange(6) + 20,
        n_users=5,
        n_items=6,
        item_genres=(("Drama",), ("Comedy", "Drama"), (), ("Action",), ("Comedy",), ("Drama",))
        if genres
        else None,
        source="small",
    )
    return leave_one_out(data)


def triples(shards: list[ClientShard]) -> np.ndarray:
    """(global user, item, timestamp) of every training interaction of every shard."""
    parts = [
        np.stack([s.users[s.train_users], s.train_items, s.train_timestamps], axis=1)
        for s in shards
    ]
    return np.concatenate(parts) if parts else np.empty((0, 3), dtype=np.int64)


def assert_exact_cover(split: Split, shards: list[ClientShard]) -> None:
    """Every training interaction lands in exactly one shard; every user in one owner."""
    got = triples(shards)
    want = np.stack([split.train.users, split.train.items, split.train.timestamps], axis=1)
    assert got.shape == want.shape
    assert np.array_equal(np.unique(got, axis=0), np.unique(want, axis=0))
    assert np.unique(got, axis=0).shape[0] == got.shape[0]
    all_users = np.concatenate([s.users for s in shards])
    assert np.unique(all_users).size == all_users.size
    assert np.array_equal(np.sort(all_users), np.flatnonzero(split.train_counts() > 0))
    assert [s.owner_id for s in shards] == list(range(1, len(shards) + 1))
    for s in shards:
        assert np.array_equal(s.validation_items, split.validation_items[s.users])
        assert np.array_equal(s.test_items, split.test_items[s.users])
        assert np.all(np.diff(s.users) > 0)
        assert s.n_items == split.n_items


def assignment(shards: list[ClientShard], n_users: int) -> np.ndarray:
    owner = np.full(n_users, -1)
    for s in shards:
        owner[s.users] = s.owner_id
    return owner


def skew(split: Split, shards: list[ClientShard], by: PartitionBy) -> float:
    """Size-weighted mean total-variation distance of silo category mixes from the global mix."""
    codes, labels = user_categories(split, by)
    overall = np.bincount(codes[codes >= 0], minlength=len(labels)) / np.count_nonzero(codes >= 0)
    total, weight = 0.0, 0
    for s in shards:
        mix = np.bincount(codes[s.users], minlength=len(labels)) / s.n_users
        total += s.n_users * 0.5 * float(np.abs(mix - overall).sum())
        weight += s.n_users
    return total / weight


# -- per_user ----------------------------------------------------------------------------


def test_per_user_small():
    split = small_split()
    shards = per_user(split)
    assert [s.users.tolist() for s in shards] == [[0], [1], [2], [4]]
    assert_exact_cover(split, shards)
    user2 = shards[2]
    assert user2.owner_id == 3
    assert user2.train_users.tolist() == [0, 0, 0]
    assert user2.train_items.tolist() == [0, 2, 3]
    assert user2.test_items.tolist() == [5]
    assert user2.validation_items.tolist() == [4]
    assert shards[3].test_items.tolist() == [-1]
    assert "n_train=3" in repr(user2)


def test_per_user_shipped(split):
    shards = per_user(split)
    assert len(shards) == int(np.count_nonzero(split.train_counts() > 0))
    assert_exact_cover(split, shards)


# -- into_silos ----------------------------------------------------------------------------


def test_into_silos_cover_and_sizes(split):
    shards = into_silos(split, 7, seed=11)
    assert_exact_cover(split, shards)
    sizes = [s.n_users for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_into_silos_deterministic(split):
    a = assignment(into_silos(split, 5, seed=1), split.n_users)
    b = assignment(into_silos(split, 5, seed=1), split.n_users)
    c = assignment(into_silos(split, 5, seed=2), split.n_users)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_into_silos_does_not_touch_global_state(split):
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    into_silos(split, 3, seed=4)
    dirichlet_silos(split, 3, alpha=1.0, by=PartitionBy.POPULARITY, seed=4)
    assert np.array_equal(np.random.get_state()[1], before)


def test_one_silo_and_one_user_per_silo():
    split = small_split()
    (only,) = into_silos(split, 1, seed=0)
    assert only.users.tolist() == [0, 1, 2, 4]
    shards = into_silos(split, 4, seed=0)
    assert sorted(s.n_users for s in shards) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("count", "seed"), [(0, 1), (-1, 1), (5, 1), (True, 1), (2.0, 1), (2, -1), (2, "1"), (2, 1.5)]
)
def test_into_silos_arguments(count, seed):
    with pytest.raises(ConfigError):
        into_silos(small_split(), count, seed=seed)


# -- dirichlet_silos -------------------------------------------------------------------------


@pytest.mark.parametrize("by", list(PartitionBy))
def test_dirichlet_cover_nonempty_deterministic(split, by):
    shards = dirichlet_silos(split, 8, alpha=0.3, by=by, seed=5)
    assert_exact_cover(split, shards)
    assert all(s.n_users > 0 for s in shards)
    again = dirichlet_silos(split, 8, alpha=0.3, by=by, seed=5)
    other = dirichlet_silos(split, 8, alpha=0.3, by=by, seed=6)
    a = assignment(shards, split.n_users)
    assert np.array_equal(a, assignment(again, split.n_users))
    assert not np.array_equal(a, assignment(other, split.n_users))


@pytest.mark.parametrize("by", list(PartitionBy))
def test_dirichlet_skew_grows_as_alpha_shrinks(split, by):
    # Fixed seeds; averaged over a few so the check is about alpha, not one draw.
    def mean_skew(alpha: float) -> float:
        return float(
            np.mean(
                [
                    skew(split, dirichlet_silos(split, 5, alpha=alpha, by=by, seed=s), by)
                    for s in range(4)
                ]
            )
        )

    strong, mild, weak = mean_skew(0.05), mean_skew(1.0), mean_skew(1000.0)
    assert strong > mild > weak
    assert strong > 0.4
    assert weak < 0.1


def test_dirichlet_tiny_alpha_still_fills_every_silo():
    split = small_split()
    shards = dirichlet_silos(split, 4, alpha=1e-3, by=PartitionBy.GENRE, seed=0)
    assert sorted(s.n_users for s in shards) == [1, 1, 1, 1]
    assert_exact_cover(split, shards)


def test_user_categories_popularity(split):
    codes, labels = user_categories(split, PartitionBy.POPULARITY)
    assert labels == tuple(f"popularity-q{q}" for q in range(1, POPULARITY_BUCKETS + 1))
    eligible = split.train_counts() > 0
    assert np.all(codes[~eligible] == -1)
    sizes = np.bincount(codes[eligible], minlength=POPULARITY_BUCKETS)
    assert sizes.max() - sizes.min() <= 2  # quintiles


def test_user_categories_genre_small():
    split = small_split()
    # Training items: user 0 -> {0, 1} (Drama, Comedy: tie -> Comedy), user 1 -> {1}
    # (Comedy), user 2 -> {0, 2, 3} (Drama, none, Action: tie -> Action), user 3 none,
    # user 4 -> {5} (Drama).
    codes, labels = user_categories(split, PartitionBy.GENRE)
    assert labels == ("Action", "Comedy", "Drama")
    assert codes.tolist() == [1, 1, 0, -1, 2]


def test_user_categories_no_genre_label():
    users = np.array([0, 1])
    data = Interactions(
        users=users,
        items=np.array([0, 1]),
        ratings=np.ones(2, dtype=np.float32),
        timestamps=np.arange(2),
        user_ids=np.arange(2),
        item_ids=np.arange(2),
        n_users=2,
        n_items=2,
        item_genres=(("Drama",), ()),
    )
    codes, labels = user_categories(leave_one_out(data), PartitionBy.GENRE)
    assert labels == ("Drama", "(no genre)")
    assert codes.tolist() == [0, 1]


def test_genre_needs_genres():
    with pytest.raises(ConfigError, match="item_genres"):
        dirichlet_silos(small_split(genres=False), 2, alpha=1.0, by=PartitionBy.GENRE, seed=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": -1.0},
        {"alpha": float("nan")},
        {"alpha": float("inf")},
        {"alpha": True},
        {"by": "genre"},
        {"count": 5},
        {"count": 0},
        {"seed": -3},
    ],
)
def test_dirichlet_arguments(kwargs):
    args = {"count": 2, "alpha": 1.0, "by": PartitionBy.POPULARITY, "seed": 0} | kwargs
    count = args.pop("count")
    with pytest.raises(ConfigError):
        dirichlet_silos(small_split(), count, **args)


def test_partitioners_want_a_split():
    with pytest.raises(ConfigError):
        per_user("not a split")  # type: ignore[arg-type]


# -- ClientShard ---------------------------------------------------------------------------


def _shard_fields() -> dict[str, object]:
    return {
        "owner_id": 1,
        "users": np.array([2, 5]),
        "train_users": np.array([0, 1, 1]),
        "train_items": np.array([0, 3, 1]),
        "train_ratings": np.ones(3, dtype=np.float32),
        "train_timestamps": np.array([1, 2, 3]),
        "validation_items": np.array([1, -1]),
        "test_items": np.array([2, -1]),
        "n_items": 4,
    }


def test_client_shard_valid_and_read_only():
    shard = ClientShard(**_shard_fields())
    assert shard.n_users == 2
    assert shard.n_train == 3
    with pytest.raises(ValueError, match="read-only"):
        shard.train_items[0] = 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"owner_id": 0}, ConfigError),
        ({"owner_id": True}, ConfigError),
        ({"users": np.array([5, 2])}, DataError),
        ({"users": np.array([2, 2])}, DataError),
        ({"train_users": np.array([0, 1, 2])}, DataError),
        ({"train_items": np.array([0, 4, 1])}, DataError),
        ({"train_timestamps": np.array([1, 2])}, DataError),
        ({"train_ratings": np.array([1.0, np.nan, 1.0])}, DataError),
        ({"test_items": np.array([2])}, DataError),
        ({"validation_items": np.array([4, -1])}, DataError),
    ],
)
def test_client_shard_validation(change, error):
    with pytest.raises(error):
        ClientShard(**(_shard_fields() | change))


# --- fixed item features from the public catalogue ------------------------------------


def test_genre_features_small():
    split = small_split()
    features = genre_features(split.train, scale=3.0)
    # Columns: Action, Comedy, Drama (sorted); item 2 has no genre.
    s = 3.0 / np.sqrt(2.0)
    expected = [[0, 0, 3], [0, s, s], [0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]]
    np.testing.assert_allclose(features, expected, rtol=1e-12)


def _catalogue(titles, genres=None):
    n = len(titles)
    return Interactions(
        users=np.zeros(n, dtype=np.int64),
        items=np.arange(n),
        ratings=np.ones(n, dtype=np.float32),
        timestamps=np.arange(n),
        user_ids=np.array([7]),
        item_ids=np.arange(n) + 100,
        n_users=1,
        n_items=n,
        item_titles=tuple(titles),
        item_genres=genres,
        source="catalogue",
    )


def test_decade_features_read_the_year_that_ends_a_title():
    data = _catalogue(["A (1995)", "B (1999) ", "C (2003)", "No year", "1984 (1956)", "D (2010)"])
    features = decade_features(data, scale=4.0)
    # Decades present: 1950s, 1990s, 2000s, 2010s; "1984" in a title is not its year.
    expected = [[0, 4, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 4]]
    np.testing.assert_array_equal(features, expected)
    with pytest.raises(DataError, match=r"no item title ends with a \(year\)"):
        decade_features(_catalogue(["x", "y"]), scale=1.0)
    with pytest.raises(DataError, match="no item titles"):
        decade_features(small_split().train, scale=1.0)


def test_catalogue_features_stack_the_blocks_and_pad():
    data = _catalogue(["A (1995)", "B (2003)", "C"], genres=(("Drama",), ("Comedy", "Drama"), ()))
    features = catalogue_features(data, ["genres", "decade"], scale=2.0, width=6)
    assert features.dtype == np.float32
    s = 2.0 / np.sqrt(2.0)
    expected = [[0, 2, 2, 0, 0, 0], [s, s, 0, 2, 0, 0], [0, 0, 0, 0, 0, 0]]
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        catalogue_features(data, ["decade"], scale=2.0, width=3),
        [[2, 0, 0], [0, 2, 0], [0, 0, 0]],
    )
    with pytest.raises(DataError, match="need 4 columns, more than 3"):
        catalogue_features(data, ["genres", "decade"], scale=2.0, width=3)
    for blocks in ([], ["genres", "genres"]):
        with pytest.raises(ValueError, match="each once"):
            catalogue_features(data, blocks, scale=1.0, width=6)
    with pytest.raises(ValueError, match="unknown feature blocks"):
        catalogue_features(data, ["ratings"], scale=1.0, width=6)
    for width in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="width"):
            catalogue_features(data, ["genres"], scale=1.0, width=width)  # type: ignore[arg-type]


def test_catalogue_features_read_only_the_catalogue():
    # The same catalogue with other interactions gives the same features.
    split = small_split()
    other = split.train.select(np.array([0, 1]))
    np.testing.assert_array_equal(
        genre_features(split.train, scale=1.0), genre_features(other, scale=1.0)
    )


def test_catalogue_features_on_the_shipped_data(split):
    features = catalogue_features(split.train, ["genres", "decade"], scale=2.0, width=32)
    genres = features[:, :19]  # ml-latest-small lists 19 genres
    has_genre = np.array([len(g) > 0 for g in split.train.item_genres])
    np.testing.assert_allclose(np.linalg.norm(genres, axis=1)[has_genre], 2.0, rtol=1e-6)
    assert np.all(genres[~has_genre] == 0)
    decades = features[:, 19:]
    dated = (decades > 0).sum(axis=1)
    assert set(dated.tolist()) <= {0, 1}
    assert dated.mean() > 0.99  # almost every title ends with its year
    assert np.all(decades[:, decades.any(axis=0).sum() :] == 0)  # then zero padding


def test_feature_blocks_refuse_bad_input():
    with pytest.raises(DataError, match="no item genres"):
        genre_features(small_split(genres=False).train, scale=1.0)
    for block in (genre_features, decade_features):
        for scale in (0.0, -1.0, float("nan"), float("inf"), True):
            with pytest.raises(ValueError, match="scale"):
                block(small_split().train, scale=scale)
