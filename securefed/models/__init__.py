"""Models for clients and examples (not used by the protocol layers)."""

from __future__ import annotations

from securefed.models.recommendation import (
    PRIVATE_PREFIX,
    MatrixFactorization,
    NeuMF,
    Recommender,
    RecommenderKind,
    RecommenderSpec,
    RowBCEWithLogitsLoss,
    RowEmbedding,
    build_model,
    embedding_row_norms,
    flatten_shared,
    is_private_name,
    load_shared_state,
    private_parameter_names,
    set_item_biases,
    shared_layout,
    shared_parameter_names,
    shared_state,
    unflatten_into,
)

__all__ = [
    "PRIVATE_PREFIX",
    "MatrixFactorization",
    "NeuMF",
    "Recommender",
    "RecommenderKind",
    "RecommenderSpec",
    "RowBCEWithLogitsLoss",
    "RowEmbedding",
    "build_model",
    "embedding_row_norms",
    "flatten_shared",
    "is_private_name",
    "load_shared_state",
    "private_parameter_names",
    "set_item_biases",
    "shared_layout",
    "shared_parameter_names",
    "shared_state",
    "unflatten_into",
]
