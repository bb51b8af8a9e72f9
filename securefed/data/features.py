"""Fixed item vectors from public catalogue metadata (no interaction enters them).

A shop's catalogue, with each item's genres and release date, is public: it is what
the shop shows everyone. Vectors built from it cost no privacy budget and can serve
as fixed item embeddings (``[model] item_features``), so DP-SGD trains only the user
embeddings and the biases, far fewer noised parameters than a learned item table.

The values come from each item's metadata only. Which items there are is the
loader's choice: by default the MovieLens loaders index the movies that occur in
the ratings, so the item set (``n_items``, as for a learned table), and with it the
genres and decades present, depends on which movies anyone rated at all, which is
outside the DP guarantee. ``[data] items = "listed"`` takes every movie the movies
file lists instead (the published catalogue), so nothing about the features or the
model hash depends on the ratings; the shipped job does that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from securefed.data.interactions import Interactions
from securefed.errors import DataError

__all__ = ["CATALOGUE_BLOCKS", "catalogue_features", "decade_features", "genre_features"]

_YEAR = re.compile(r"\((\d{4})\)\s*$")
"""A MovieLens title's release year: four digits in parentheses at its end."""


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError("scale must be a positive finite number")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("scale must be a positive finite number")
    return float(scale)


def _where(data: Interactions) -> str:
    return data.source or "the data"


def _unit_rows(columns: npt.NDArray[np.float64], scale: float) -> npt.NDArray[np.float64]:
    """Each non-zero row scaled to L2 norm ``scale``; zero rows stay zero."""
    norms = np.linalg.norm(columns, axis=1, keepdims=True)
    np.divide(columns, norms, out=columns, where=norms > 0)
    columns *= scale
    return columns


def genre_features(data: Interactions, *, scale: float) -> npt.NDArray[np.float64]:
    """One row per item: its genres as a multi-hot vector scaled to L2 norm ``scale``.

    Columns are the catalogue's genre names in sorted order; an item with no genre
    gets a zero row. Reads only ``data.item_genres``, never the interactions.

    Raises:
        ValueError: ``scale`` is not a positive finite number.
        DataError: the data has no genres (e.g. a generic CSV without a catalogue),
            or no item has any genre.
    """
    scale = _check_scale(scale)
    if data.item_genres is None:
        raise DataError(f"{_where(data)}: no item genres (genre features need a catalogue)")
    names = sorted({name for genres in data.item_genres for name in genres})
    if not names:
        raise DataError(f"{_where(data)}: no item has a genre")
    column = {name: j for j, name in enumerate(names)}
    out = np.zeros((data.n_items, len(names)), dtype=np.float64)
    for row, genres in enumerate(data.item_genres):
        for name in genres:
            out[row, column[name]] = 1.0
    return _unit_rows(out, scale)


def decade_features(data: Interactions, *, scale: float) -> npt.NDArray[np.float64]:
    """One row per item: its release decade, one-hot, times ``scale``.

    The year is the ``(YYYY)`` that ends a MovieLens title; columns are the decades
    that occur in the catalogue, in order; an item whose title has no year gets a zero
    row. Reads only ``data.item_titles``, never the interactions.

    Raises:
        ValueError: ``scale`` is not a positive finite number.
        DataError: the data has no titles, or no title has a year.
    """
    scale = _check_scale(scale)
    if data.item_titles is None:
        raise DataError(f"{_where(data)}: no item titles (decade features need a catalogue)")
    decades = np.full(data.n_items, -1, dtype=np.int64)
    for row, title in enumerate(data.item_titles):
        match = _YEAR.search(title)
        if match is not None:
            decades[row] = int(match.group(1)) // 10
    present = np.unique(decades[decades >= 0])
    if present.size == 0:
        raise DataError(f"{_where(data)}: no item title ends with a (year)")
    out = np.zeros((data.n_items, present.size), dtype=np.float64)
    dated = np.flatnonzero(decades >= 0)
    out[dated, np.searchsorted(present, decades[dated])] = scale
    return out


CATALOGUE_BLOCKS: dict[str, Callable[..., npt.NDArray[np.float64]]] = {
    "genres": genre_features,
    "decade": decade_features,
}
"""The catalogue feature blocks by name (``[model] item_features``)."""


def catalogue_features(
    data: Interactions, blocks: Sequence[str], *, scale: float, width: int
) -> npt.NDArray[np.float32]:
    """The named blocks side by side, each row of each block of norm ``scale``, zero-padded.

    Args:
        data: the catalogue (only its titles and genres are read).
        blocks: names from :data:`CATALOGUE_BLOCKS`, in column order, each once.
        scale: the L2 norm of an item's row within each block.
        width: the number of columns (the model's embedding width); the blocks take
            the first ones, the rest are zero.

    Raises:
        ValueError: no block, an unknown or repeated block, a bad ``scale``, or
            ``width`` not a positive int.
        DataError: the data lacks what a block needs, or the blocks need more than
            ``width`` columns.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError("width must be a positive int")
    names = list(blocks)
    if not names or len(set(names)) != len(names):
        raise ValueError("blocks must name at least one block, each once")
    unknown = [name for name in names if name not in CATALOGUE_BLOCKS]
    if unknown:
        raise ValueError(f"unknown feature blocks {unknown}; known: {sorted(CATALOGUE_BLOCKS)}")
    parts = [CATALOGUE_BLOCKS[name](data, scale=scale) for name in names]
    used = sum(part.shape[1] for part in parts)
    if used > width:
        raise DataError(
            f"{_where(data)}: the item features {names} need {used} columns, more than "
            f"{width} (raise model.dim)"
        )
    out = np.zeros((data.n_items, width), dtype=np.float32)
    out[:, :used] = np.concatenate(parts, axis=1)
    return out
