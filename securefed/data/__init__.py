"""Data for federated recommendation: loading, implicit feedback, splits, partitions.

Serves clients and examples only (DESIGN layering: ``models/`` and ``data/`` sit
beside the protocol stack, never under it). Typical use::

    from securefed.data import PartitionBy, dirichlet_silos, leave_one_out, load_movielens
    from securefed.data import to_implicit

    data = to_implicit(load_movielens("examples/data/ml-latest-small"), min_rating=4.0)
    split = leave_one_out(data)
    shards = dirichlet_silos(split, 5, alpha=0.5, by=PartitionBy.GENRE, seed=0)
"""

from __future__ import annotations

from securefed.data.features import (
    CATALOGUE_BLOCKS,
    catalogue_features,
    decade_features,
    genre_features,
)
from securefed.data.interactions import Interactions
from securefed.data.loaders import MOVIELENS_100K_GENRES, load_interactions_csv, load_movielens
from securefed.data.partition import (
    POPULARITY_BUCKETS,
    ClientShard,
    PartitionBy,
    dirichlet_silos,
    into_silos,
    per_user,
    user_categories,
)
from securefed.data.split import MIN_INTERACTIONS_FOR_HOLDOUT, Split, leave_one_out, to_implicit

__all__ = [
    "CATALOGUE_BLOCKS",
    "MIN_INTERACTIONS_FOR_HOLDOUT",
    "MOVIELENS_100K_GENRES",
    "POPULARITY_BUCKETS",
    "ClientShard",
    "Interactions",
    "PartitionBy",
    "Split",
    "catalogue_features",
    "decade_features",
    "dirichlet_silos",
    "genre_features",
    "into_silos",
    "leave_one_out",
    "load_interactions_csv",
    "load_movielens",
    "per_user",
    "to_implicit",
    "user_categories",
]
