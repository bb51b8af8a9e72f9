"""User-item interactions: the value every loader returns and every split consumes.

Users and items are dense indices (``0..n_users-1``, ``0..n_items-1``) so models can
use them as embedding rows; the original ids stay in ``user_ids`` / ``item_ids``
(index -> id) for reporting and for joining with side data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefed.errors import DataError

__all__ = ["Interactions"]


def readonly_array(values: object, dtype: type[np.generic], name: str) -> npt.NDArray[np.generic]:
    """A read-only 1-D view of ``values`` as ``dtype`` (no copy when it already is one).

    Shared by the values of this package (not exported). The caller's own array,
    if any, stays writable; only the returned view is read-only.

    Raises:
        DataError: ``values`` is not 1-D, or its kind does not fit ``dtype``
            (an integer field given floats, a numeric field given strings).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if np.issubdtype(dtype, np.integer):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{name} must hold integers, got {arr.dtype}")
        if arr.size and arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{name} exceeds the int64 range")
    elif arr.size and not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise DataError(f"{name} must hold real numbers, got {arr.dtype}")
    view = arr.astype(dtype, copy=False).view()
    view.flags.writeable = False
    return view


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 0:
        raise DataError(f"{name} must be a non-negative integer")
    return int(value)


def _check_index(values: npt.NDArray[np.int64], bound: int, name: str) -> None:
    if values.size and (int(values.min()) < 0 or int(values.max()) >= bound):
        raise DataError(f"{name} must lie in [0, {bound})")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Interactions:
    """Rated (or implicit) user-item interactions with a dense index.

    Arrays are stored as read-only views. ``eq=False``: NumPy arrays have no
    single truth value, so two values compare by identity.

    Attributes:
        users: dense user index of each interaction, int64 in ``[0, n_users)``.
        items: dense item index of each interaction, int64 in ``[0, n_items)``.
        ratings: float32, finite (1.0 for implicit feedback).
        timestamps: int64 (seconds for MovieLens; line order when a file has none).
        user_ids: original user id of each dense user (index -> id), int64, distinct.
        item_ids: original item id of each dense item (index -> id), int64, distinct.
        n_users: number of dense users (may exceed the users that occur, see
            :func:`securefed.data.to_implicit`).
        n_items: number of dense items.
        item_titles: per dense item, when the source has titles.
        item_genres: per dense item, when the source has genres (``()`` for none).
        source: where the data came from (free text, for reports).

    Raises:
        DataError: lengths differ, an index is out of range, a rating is not
            finite, ids repeat, or the title / genre tuples have the wrong length.
    """

    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    ratings: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.int64]
    user_ids: npt.NDArray[np.int64]
    item_ids: npt.NDArray[np.int64]
    n_users: int
    n_items: int
    item_titles: tuple[str, ...] | None = None
    item_genres: tuple[tuple[str, ...], ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        n_users = _check_count(self.n_users, "n_users")
        n_items = _check_count(self.n_items, "n_items")
        set_(self, "n_users", n_users)
        set_(self, "n_items", n_items)
        for name in ("users", "items", "timestamps", "user_ids", "item_ids"):
            set_(self, name, readonly_array(getattr(self, name), np.int64, name))
        set_(self, "ratings", readonly_array(self.ratings, np.float32, "ratings"))

        n = self.users.shape[0]
        for name in ("items", "ratings", "timestamps"):
            if getattr(self, name).shape[0] != n:
                raise DataError(f"{name} has {getattr(self, name).shape[0]} entries, users {n}")
        _check_index(self.users, n_users, "users")
        _check_index(self.items, n_items, "items")
        if not np.all(np.isfinite(self.ratings)):
            raise DataError("ratings contain NaN or infinite values")
        for name, ids, count in (
            ("user_ids", self.user_ids, n_users),
            ("item_ids", self.item_ids, n_items),
        ):
            if ids.shape[0] != count:
                raise DataError(f"{name} has {ids.shape[0]} entries, expected {count}")
            if np.unique(ids).shape[0] != count:
                raise DataError(f"{name} must be distinct")
        if self.item_titles is not None:
            titles = tuple(self.item_titles)
            if len(titles) != n_items or not all(isinstance(t, str) for t in titles):
                raise DataError(f"item_titles must be {n_items} strings")
            set_(self, "item_titles", titles)
        if self.item_genres is not None:
            genres = tuple(tuple(g) for g in self.item_genres)
            if len(genres) != n_items or not all(
                isinstance(name, str) for g in genres for name in g
            ):
                raise DataError(f"item_genres must be {n_items} tuples of strings")
            set_(self, "item_genres", genres)
        if not isinstance(self.source, str):
            raise DataError("source must be a string")

    def __len__(self) -> int:
        """The number of interactions."""
        return int(self.users.shape[0])

    def __repr__(self) -> str:
        return (
            f"Interactions(n={len(self)}, n_users={self.n_users}, n_items={self.n_items}, "
            f"source={self.source!r})"
        )

    def select(self, rows: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> Interactions:
        """The interactions at ``rows`` (indices or a boolean mask), same dense index.

        Args:
            rows: row indices (in the order wanted) or a mask of length ``len(self)``.

        Returns:
            A new value with the same ``n_users``, ``n_items``, ids, titles and genres.
        """
        return Interactions(
            users=self.users[rows],
            items=self.items[rows],
            ratings=self.ratings[rows],
            timestamps=self.timestamps[rows],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            n_users=self.n_users,
            n_items=self.n_items,
            item_titles=self.item_titles,
            item_genres=self.item_genres,
            source=self.source,
        )
