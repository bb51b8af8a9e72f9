"""Fixed item vectors from public catalogue metadata (no interaction enters them).

A shop's catalogue, with each item's genres, is public: it is what the shop shows
everyone. Vectors built from it cost no privacy budget and can serve as fixed item
embeddings (``[model] item_features``), so DP-SGD trains only the user embeddings
and the biases, far fewer noised parameters than a learned item table.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from securefed.data.interactions import Interactions
from securefed.errors import DataError

__all__ = ["genre_features"]


def genre_features(data: Interactions, *, scale: float, width: int) -> npt.NDArray[np.float32]:
    """One row per item: its genres as a multi-hot vector scaled to L2 norm ``scale``.

    The first columns are the catalogue's genre names in sorted order, the rest (up
    to ``width``) are zero; an item with no genre gets a zero row (it is then ranked
    by its bias alone). Reads only ``data.item_genres``, never the interactions.

    Raises:
        ValueError: ``scale`` is not a positive finite number, or ``width`` not a
            positive int.
        DataError: the data has no genres (e.g. a generic CSV without a catalogue),
            no item has any genre, or there are more genres than ``width``.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError("width must be a positive int")
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError("scale must be a positive finite number")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError("scale must be a positive finite number")
    where = data.source or "the data"
    if data.item_genres is None:
        raise DataError(f"{where}: no item genres (genre features need a catalogue)")
    names = sorted({name for genres in data.item_genres for name in genres})
    if not names:
        raise DataError(f"{where}: no item has a genre")
    if len(names) > width:
        raise DataError(
            f"{where}: {len(names)} genres do not fit in {width} columns (raise model.dim)"
        )
    column = {name: j for j, name in enumerate(names)}
    out = np.zeros((data.n_items, width), dtype=np.float64)
    for row, genres in enumerate(data.item_genres):
        for name in genres:
            out[row, column[name]] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    out *= float(scale)
    return out.astype(np.float32)
