"""Collaborative-filtering models for federated training with DP-SGD (ghost clipping).

Each client (data owner) holds some users. The parameters whose names start with
:data:`PRIVATE_PREFIX` (the user embeddings) live only on that client and are never
sent; every other parameter is *shared* and federated. The shared update is dense
over the whole item table, because a sparse update would reveal which items a
client's users touched.

Input convention (one privacy unit per batch row):

* ``users``: ``LongTensor (B,)``, local user indices;
* ``items``: ``LongTensor (B, L)``, a positive item and its sampled negatives, or for
  the person-level unit all of one person's records with their negatives, padded;
* output: logits ``(B, L)``. The per-row loss sums over the row's valid positions
  (:class:`RowBCEWithLogitsLoss`), so Opacus ghost clipping clips each row as a unit.

Opacus constraints the models respect (checked by ``tests/unit/test_models.py``):

* Every trainable parameter belongs to an ``nn.Embedding`` or ``nn.Linear``, the
  layers with ghost-norm samplers. A bare ``nn.Parameter`` on the root module would
  make Opacus run functorch over the whole model with only its first input (it
  fails), so the global bias is an ``Embedding(1, 1)`` read at index 0.
* Layers keep the ``(B, L, ...)`` shape: flattening to ``(B * L, ...)`` before a
  ``Linear`` would make Opacus treat each position as its own sample.
* No ``padding_idx`` and no ``max_norm``: the embedding norm samplers ignore both,
  so padding is handled by the loss mask (a masked position has a zero gradient
  and contributes nothing to the ghost norm).
* Embeddings are :class:`RowEmbedding`, an ``nn.Embedding`` whose per-sample
  gradient norm (:func:`embedding_row_norms`, registered with Opacus) needs no sort
  over (row, id) pairs.
* Each layer runs once per forward (ghost clipping rejects parameter tying).

Privacy note: train the private user embeddings under the same DP optimizer as the
shared parameters (clipped jointly, noised). With record-level units, a user
embedding updated without noise would carry one record's influence into the
gradients of that user's other records, which standard DP-SGD accounting does not
cover.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from opacus.grad_sample.embedding import compute_embedding_grad_sample
from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample
from opacus.grad_sample.utils import register_grad_sampler, register_norm_sampler
from torch import Tensor, nn

__all__ = [
    "PRIVATE_PREFIX",
    "MatrixFactorization",
    "NeuMF",
    "Recommender",
    "RecommenderKind",
    "RecommenderSpec",
    "RowBCEWithLogitsLoss",
    "RowEmbedding",
    "architecture_hash",
    "build_model",
    "embedding_row_norms",
    "flatten_shared",
    "is_private_name",
    "load_shared_state",
    "model_architecture_hash",
    "private_parameter_names",
    "set_item_biases",
    "shared_layout",
    "shared_parameter_names",
    "shared_state",
    "unflatten_into",
]

#: Parameters whose names start with this prefix are private to the client.
PRIVATE_PREFIX = "user_"

# Embedding init: N(0, 0.01^2), as in He et al. 2017 (NCF), §4.1 "Parameter Settings".
_EMBEDDING_STD = 0.01
# score_all evaluates at most this many (user, item) pairs at once: bounds the
# intermediate activations of NeuMF's MLP (pairs x widest layer floats).
_SCORE_PAIRS_PER_CHUNK = 1 << 18


# Layers are created on the meta device and then given uninitialised CPU storage
# (what torch.nn.utils.skip_init does): their default initialisers would draw from
# torch's global RNG.


#: Rows at most this wide get :func:`embedding_row_norms`' id-equality matrix (a
#: record and its negatives: 5); wider ones, Opacus' sort (memory linear in the width).
_ID_MATRIX_MAX_WIDTH = 64


class RowEmbedding(nn.Embedding):
    """An ``nn.Embedding`` in every respect but its type.

    The type selects :func:`embedding_row_norms` as its per-sample gradient norm
    under Opacus ghost clipping (and Opacus' embedding per-sample gradient otherwise).
    """


def embedding_row_norms(
    layer: nn.Embedding, activations: list[Tensor], backprops: Tensor
) -> dict[Tensor, Tensor]:
    """Per-sample L2 norms of the gradient of ``layer.weight`` (Opacus' norm-sampler API).

    Sample ``b`` reads ids ``x[b, 0..k-1]`` and receives backprops ``g[b, j]`` (one
    ``d``-vector per position), so its gradient has one row per distinct id ``i``,
    ``sum_{j: x[b, j] = i} g[b, j]``, and its norm is the root of the sum of those
    rows' squared norms. The rows are summed first and squared after, as Opacus'
    ``compute_embedding_norm_sample`` does (squaring first would cancel: a negative
    that hits its own positive gets an opposite backprop), but through a ``k x k``
    id-equality matrix per sample instead of a sort over every (row, id) pair:
    ``S[b, j] = sum_l [x[b, l] = x[b, j]] g[b, l]``, counted at each id's first
    position. ``tests/unit/test_models.py`` compares it with Opacus' function and
    with per-row autograd. Rows wider than :data:`_ID_MATRIX_MAX_WIDTH` (long padded
    person rows: the matrix grows with k^2) and layers with ``padding_idx``,
    ``max_norm``, frequency scaling or sparse gradients go to Opacus' function.
    """
    ids = activations[0]
    batch = ids.shape[0]
    ids = ids.reshape(batch, -1)
    width = ids.shape[1]
    if (
        width > _ID_MATRIX_MAX_WIDTH
        or layer.padding_idx is not None
        or layer.max_norm is not None
        or layer.scale_grad_by_freq
        or layer.sparse
    ):
        fallback: dict[Tensor, Tensor] = compute_embedding_norm_sample(
            layer, activations, backprops
        )
        return fallback
    grads = backprops.reshape(batch, width, -1)
    if width == 1:
        squared = grads.square().sum(dim=(1, 2))
    else:
        same = ids.unsqueeze(2) == ids.unsqueeze(1)
        sums = torch.bmm(same.to(grads.dtype), grads)
        repeat = torch.tril(same, diagonal=-1).any(dim=2)  # the id came earlier in the row
        squared = (sums.square().sum(dim=2) * ~repeat).sum(dim=1)
    return {layer.weight: squared.sqrt()}


register_norm_sampler(RowEmbedding)(embedding_row_norms)
# Opacus' own per-sample gradient for embeddings. Ghost clipping uses the norm above;
# without a registered grad sampler, Opacus would also prepare a functorch copy of
# every RowEmbedding each time a model is wrapped (a deep copy of the table, unused).
register_grad_sampler(RowEmbedding)(compute_embedding_grad_sample)


def _embedding(num: int, dim: int, generator: torch.Generator) -> nn.Embedding:
    layer = RowEmbedding(num, dim, device="meta").to_empty(device="cpu")
    nn.init.normal_(layer.weight, mean=0.0, std=_EMBEDDING_STD, generator=generator)
    return layer


def _zeros_embedding(num: int, dim: int) -> nn.Embedding:
    layer = RowEmbedding(num, dim, device="meta").to_empty(device="cpu")
    nn.init.zeros_(layer.weight)
    return layer


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_generator(generator: torch.Generator) -> None:
    # nn.init falls back to torch's global RNG when generator is None: refuse that.
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _check_inputs(users: Tensor, items: Tensor) -> None:
    if users.dim() != 1 or items.dim() != 2 or users.shape[0] != items.shape[0]:
        raise ValueError(
            f"expected users (B,) and items (B, L), got {tuple(users.shape)} "
            f"and {tuple(items.shape)}"
        )
    if users.dtype != torch.long or items.dtype != torch.long:
        raise ValueError("users and items must be int64 (LongTensor) indices")


class Recommender(nn.Module):
    """Base class: ``forward(users (B,), items (B, L)) -> logits (B, L)``."""

    n_users: int
    n_items: int

    def __init__(self, n_users: int, n_items: int, generator: torch.Generator) -> None:
        super().__init__()
        self.n_users = _check_count("n_users", n_users)
        self.n_items = _check_count("n_items", n_items)
        _check_generator(generator)

    def _logits(self, users: Tensor, items: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Return the logits ``(B, L)`` of ``items`` for ``users``.

        Args:
            users: ``LongTensor (B,)`` of local user indices.
            items: ``LongTensor (B, L)`` of item indices.

        Returns:
            Logits ``(B, L)``.

        Raises:
            ValueError: If the shapes or dtypes are wrong.
        """
        _check_inputs(users, items)
        return self._logits(users, items)

    @torch.no_grad()
    def score_all(self, users: Tensor) -> Tensor:
        """Score every item for each user (for full ranking), in bounded memory.

        Args:
            users: ``LongTensor (B,)`` of local user indices.

        Returns:
            Logits ``(B, n_items)``, detached.
        """
        if users.dim() != 1 or users.dtype != torch.long:
            raise ValueError("users must be a LongTensor of shape (B,)")
        n_users = int(users.shape[0])
        reference = next(self.parameters())
        device = reference.device
        out = torch.empty(n_users, self.n_items, device=device, dtype=reference.dtype)
        if n_users == 0:
            return out
        chunk = max(1, _SCORE_PAIRS_PER_CHUNK // n_users)
        for start in range(0, self.n_items, chunk):
            stop = min(start + chunk, self.n_items)
            items = torch.arange(start, stop, device=device).expand(n_users, -1)
            out[:, start:stop] = self._logits(users, items)
        return out


class MatrixFactorization(Recommender):
    """Biased matrix factorisation: ``logit = <u, v_i> + b_i + b``.

    Private: ``user_embedding``. Shared: ``item_embedding``, ``item_bias`` and
    ``global_bias`` (an ``Embedding(1, 1)`` so Opacus can clip it; see the module
    docstring).

    With ``item_features``, ``v_i`` is row ``i`` of that fixed matrix instead: public
    item metadata (e.g. :func:`securefed.data.genre_features`), held as a buffer. It is
    not a parameter, so it is neither trained, noised nor federated; only the user
    embeddings and the biases are trained. The features must not be derived from
    anyone's interactions: nothing protects them (securefed.data.features says what
    the catalogue's item set still depends on).

    Args:
        n_users: number of the client's users (at least 1).
        n_items: size of the global item catalogue.
        dim: embedding dimension (with ``item_features``: their width).
        generator: the only randomness used for initialisation (CPU generator).
        item_features: optional fixed item vectors, finite, of shape ``(n_items, dim)``.
    """

    item_features: Tensor | None

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        dim: int = 32,
        generator: torch.Generator,
        item_features: Tensor | None = None,
    ) -> None:
        super().__init__(n_users, n_items, generator)
        self.dim = _check_count("dim", dim)
        self.user_embedding = _embedding(n_users, dim, generator)
        if item_features is None:
            self.item_embedding: nn.Embedding | None = _embedding(n_items, dim, generator)
            self.register_buffer("item_features", None)
        else:
            self.item_embedding = None
            self.register_buffer("item_features", _check_features(item_features, n_items, dim))
        self.item_bias = _zeros_embedding(n_items, 1)
        self.global_bias = _zeros_embedding(1, 1)

    def _fixed_features(self) -> Tensor:
        features = self.item_features
        if features is None:  # pragma: no cover - __init__ sets the table or the features
            raise RuntimeError("the model has neither an item table nor item features")
        return features

    def _item_vectors(self, items: Tensor) -> Tensor:
        if self.item_embedding is not None:
            out: Tensor = self.item_embedding(items)  # through the module: Opacus hooks it
            return out
        # A plain lookup (no parameter, so no Opacus hook): embedding() is a gather
        # several times faster than advanced indexing.
        return nn.functional.embedding(items, self._fixed_features())

    def _logits(self, users: Tensor, items: Tensor) -> Tensor:
        u: Tensor = self.user_embedding(users)  # (B, d)
        v = self._item_vectors(items)  # (B, L, d)
        item_bias: Tensor = self.item_bias(items)  # (B, L, 1)
        global_bias: Tensor = self.global_bias(torch.zeros_like(users))  # (B, 1)
        return torch.einsum("bd,bld->bl", u, v) + item_bias.squeeze(-1) + global_bias

    @torch.no_grad()
    def score_all(self, users: Tensor) -> Tensor:
        """Score every item for each user: one matrix product (see the base class)."""
        if users.dim() != 1 or users.dtype != torch.long:
            raise ValueError("users must be a LongTensor of shape (B,)")
        u: Tensor = self.user_embedding(users)
        bias = self.item_bias.weight.squeeze(-1) + self.global_bias.weight[0, 0]
        if self.item_embedding is not None:
            return u @ self.item_embedding.weight.T + bias
        return u @ self._fixed_features().T + bias


def _check_features(features: Tensor, n_items: int, dim: int) -> Tensor:
    if not isinstance(features, Tensor) or not features.dtype.is_floating_point:
        raise TypeError("item_features must be a floating-point Tensor")
    if tuple(features.shape) != (n_items, dim):
        raise ValueError(
            f"item_features must have shape ({n_items}, {dim}), got {tuple(features.shape)}"
        )
    stored = features.detach().to(device="cpu", dtype=torch.float32).clone()
    if not bool(torch.isfinite(stored).all()):  # after the cast: 1e300 becomes inf
        raise ValueError("item_features must be finite in float32")
    return stored


class NeuMF(Recommender):
    """Neural matrix factorisation (He et al. 2017, "Neural Collaborative Filtering", §3.4).

    A GMF branch ``u_mf * v_mf`` and an MLP branch over ``[u_mlp, v_mlp]`` (ReLU
    layers), concatenated and mapped to one logit by a linear output layer.

    Private: ``user_mf``, ``user_mlp``. Shared: ``item_mf``, ``item_mlp``, the MLP
    layers ``mlp.*`` and ``output``.

    The MLP input is ``[u_mlp, v_mlp]`` with each half ``mlp_dims[0] // 2`` wide, as
    in the NCF reference code.

    Args:
        n_users: number of the client's users (at least 1).
        n_items: size of the global item catalogue.
        mf_dim: GMF embedding dimension.
        mlp_dims: widths of the MLP layers; ``mlp_dims[0]`` (the input) must be even.
        generator: the only randomness used for initialisation (CPU generator).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        mf_dim: int = 16,
        mlp_dims: tuple[int, ...] = (32, 16, 8),
        generator: torch.Generator,
    ) -> None:
        super().__init__(n_users, n_items, generator)
        self.mf_dim = _check_count("mf_dim", mf_dim)
        _check_mlp_dims(mlp_dims)
        self.mlp_dims = tuple(mlp_dims)
        half = mlp_dims[0] // 2
        self.user_mf = _embedding(n_users, mf_dim, generator)
        self.item_mf = _embedding(n_items, mf_dim, generator)
        self.user_mlp = _embedding(n_users, half, generator)
        self.item_mlp = _embedding(n_items, half, generator)
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(mlp_dims):
            linear = nn.Linear(fan_in, fan_out, device="meta").to_empty(device="cpu")
            # Glorot uniform for the MLP layers, as in the NCF reference code.
            nn.init.xavier_uniform_(linear.weight, generator=generator)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(mf_dim + mlp_dims[-1], 1, device="meta").to_empty(device="cpu")
        # LeCun uniform (kaiming_uniform with a=1), as in the NCF reference code.
        nn.init.kaiming_uniform_(self.output.weight, a=1.0, generator=generator)
        nn.init.zeros_(self.output.bias)

    def _logits(self, users: Tensor, items: Tensor) -> Tensor:
        length = items.shape[1]
        gmf = self.user_mf(users).unsqueeze(1) * self.item_mf(items)  # (B, L, mf)
        u_mlp = self.user_mlp(users).unsqueeze(1).expand(-1, length, -1)
        # Keep (B, L, ·): Opacus' Linear ghost norm treats dim 0 as the privacy unit.
        hidden = self.mlp(torch.cat([u_mlp, self.item_mlp(items)], dim=-1))
        out: Tensor = self.output(torch.cat([gmf, hidden], dim=-1))
        return out.squeeze(-1)


def _check_mlp_dims(mlp_dims: tuple[int, ...]) -> None:
    if not isinstance(mlp_dims, tuple) or len(mlp_dims) < 1:
        raise ValueError("mlp_dims must be a non-empty tuple of positive ints")
    for width in mlp_dims:
        _check_count("mlp_dims entry", width)
    if mlp_dims[0] % 2:
        raise ValueError("mlp_dims[0] must be even (it is [user_mlp, item_mlp])")


class RecommenderKind(enum.Enum):
    """Which recommendation model to build."""

    MF = "mf"
    NEUMF = "neumf"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecommenderSpec:
    """Model architecture, shared by every client of a federation.

    Attributes:
        kind: the model family.
        dim: MF embedding dimension, or NeuMF's GMF dimension (``mf_dim``).
        mlp_dims: NeuMF's MLP widths; must be empty for MF.
    """

    kind: RecommenderKind
    dim: int = 32
    mlp_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, RecommenderKind):
            raise TypeError("kind must be a RecommenderKind")
        _check_count("dim", self.dim)
        if self.kind is RecommenderKind.MF:
            if self.mlp_dims != ():
                raise ValueError("mlp_dims must be empty for MF")
        else:
            _check_mlp_dims(self.mlp_dims)

    @classmethod
    def mf(cls, *, dim: int = 32) -> RecommenderSpec:
        """Matrix factorisation with embedding dimension ``dim``."""
        return cls(kind=RecommenderKind.MF, dim=dim)

    @classmethod
    def neumf(cls, *, mf_dim: int = 16, mlp_dims: tuple[int, ...] = (32, 16, 8)) -> RecommenderSpec:
        """NeuMF with GMF dimension ``mf_dim`` and MLP widths ``mlp_dims``."""
        return cls(kind=RecommenderKind.NEUMF, dim=mf_dim, mlp_dims=mlp_dims)


def build_model(
    spec: RecommenderSpec,
    n_users: int,
    n_items: int,
    generator: torch.Generator,
    *,
    item_features: Tensor | None = None,
) -> Recommender:
    """Build the model ``spec`` describes, initialised from ``generator`` only.

    ``item_features``: fixed public item vectors (MF only; see :class:`MatrixFactorization`).

    Raises:
        ValueError: If ``n_users`` or ``n_items`` is not a positive int, or
            ``item_features`` is given for NeuMF or does not fit the spec.
    """
    if spec.kind is RecommenderKind.MF:
        return MatrixFactorization(
            n_users, n_items, dim=spec.dim, generator=generator, item_features=item_features
        )
    if item_features is not None:
        raise ValueError("item_features: only a matrix factorisation model takes them")
    return NeuMF(n_users, n_items, mf_dim=spec.dim, mlp_dims=spec.mlp_dims, generator=generator)


def architecture_hash(
    spec: RecommenderSpec, n_items: int, item_features: Tensor | None = None
) -> bytes:
    """Digest of a model architecture (what an owner's policy allows; protocols/plan.md).

    Fixed item features are part of the model: their float32 little-endian C-order
    bytes are hashed in, so an owner that pins the digest refuses a plan for other
    features.
    """
    text = f"securefed/model/v1|{spec.kind.value}|{spec.dim}|{spec.mlp_dims}|{n_items}"
    if item_features is not None:
        raw = np.ascontiguousarray(item_features.detach().cpu().numpy(), dtype="<f4")
        text += f"|features={hashlib.sha256(raw.tobytes()).hexdigest()}"
    return hashlib.sha256(text.encode()).digest()


def model_architecture_hash(model: nn.Module) -> bytes:
    """:func:`architecture_hash` of a built model (an owner checks its own against its policy).

    Raises:
        TypeError: ``model`` is not one of securefed's recommenders.
    """
    inner = _unwrap(model)
    if isinstance(inner, MatrixFactorization):
        spec = RecommenderSpec.mf(dim=inner.dim)
        return architecture_hash(spec, inner.n_items, inner.item_features)
    if isinstance(inner, NeuMF):
        spec = RecommenderSpec.neumf(mf_dim=inner.mf_dim, mlp_dims=inner.mlp_dims)
        return architecture_hash(spec, inner.n_items)
    raise TypeError(f"not a securefed recommender: {type(inner).__name__}")


class RowBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy with logits, summed over each row's valid positions.

    ``reduction`` is a plain string because Opacus' ``DPLossFastGradientClipping``
    sets it to ``"none"`` to get the per-row (per privacy unit) losses.

    Args:
        reduction: ``"none"`` (per-row losses ``(B,)``), ``"sum"`` or ``"mean"`` (over rows).
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """Return the loss.

        Args:
            logits: ``(B, L)`` model output.
            labels: ``(B, L)`` targets in ``[0, 1]``.
            mask: ``(B, L)`` bool, ``True`` at valid (unpadded) positions.
        """
        if logits.shape != labels.shape or logits.shape != mask.shape or logits.dim() != 2:
            raise ValueError("logits, labels and mask must share one (B, L) shape")
        if mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor (True at valid positions)")
        per_position = nn.functional.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none"
        )
        # where (not multiply): a padded position gets an exact zero gradient.
        per_row = torch.where(mask, per_position, torch.zeros_like(per_position)).sum(dim=1)
        if self.reduction == "none":
            return per_row
        if self.reduction == "sum":
            return per_row.sum()
        if self.reduction == "mean":
            return per_row.mean()
        raise ValueError(f"unknown reduction {self.reduction!r}")


# --- the private/shared split and the federated parameter layout -----------------------


def is_private_name(name: str) -> bool:
    """Whether parameter ``name`` is private to the client (never leaves it)."""
    return name.startswith(PRIVATE_PREFIX)


def _unwrap(model: nn.Module) -> nn.Module:
    # Opacus' GradSampleModule wrappers keep the model as ``_module`` and prefix
    # parameter names with "_module."; the convention applies to the bare model.
    inner = getattr(model, "_module", None)
    while isinstance(inner, nn.Module):
        model = inner
        inner = getattr(model, "_module", None)
    return model


def _shared_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    named = dict(_unwrap(model).named_parameters())
    for name in sorted(named):
        if not is_private_name(name):
            yield name, named[name]


def private_parameter_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the private parameters (sorted)."""
    return tuple(sorted(n for n, _ in _unwrap(model).named_parameters() if is_private_name(n)))


def shared_parameter_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the shared (federated) parameters, in layout order (sorted)."""
    return tuple(name for name, _ in _shared_parameters(model))


def shared_layout(model: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The flat layout: ``(name, shape)`` of each shared parameter, in order."""
    return tuple((name, tuple(p.shape)) for name, p in _shared_parameters(model))


def shared_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the shared parameters, ordered by name."""
    return {name: p.detach().clone() for name, p in _shared_parameters(model)}


def load_shared_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Overwrite the shared parameters with ``state`` (strict).

    Raises:
        ValueError: If ``state`` does not have exactly the shared names, or a shape or
            dtype differs. Nothing is written in that case.
    """
    params = dict(_shared_parameters(model))
    if set(state) != set(params):
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        raise ValueError(f"shared state mismatch: missing {missing}, unexpected {unexpected}")
    for name, param in params.items():
        value = state[name]
        if not isinstance(value, Tensor):
            raise ValueError(f"{name}: expected a Tensor, got {type(value).__name__}")
        if value.shape != param.shape or value.dtype != param.dtype:
            raise ValueError(
                f"{name}: expected {tuple(param.shape)} {param.dtype}, "
                f"got {tuple(value.shape)} {value.dtype}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def flatten_shared(model: nn.Module) -> npt.NDArray[np.float32]:
    """The shared parameters as one float32 vector (sorted names, each in C order).

    The federated update is ``flatten_shared(after) - flatten_shared(before)``.
    """
    parts = [p.detach().cpu().reshape(-1).to(torch.float32) for _, p in _shared_parameters(model)]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    flat: npt.NDArray[np.float32] = torch.cat(parts).numpy().astype(np.float32, copy=True)
    return flat


def unflatten_into(model: nn.Module, flat: npt.ArrayLike) -> None:
    """Write a vector in :func:`flatten_shared`'s layout into the shared parameters.

    Raises:
        ValueError: If ``flat`` is not a 1-D floating-point vector of the layout's length.
    """
    array = np.asarray(flat)
    params = list(_shared_parameters(model))
    total = sum(p.numel() for _, p in params)
    if array.ndim != 1 or array.shape[0] != total:
        raise ValueError(f"expected a vector of {total} values, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected a floating-point vector, got dtype {array.dtype}")
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for _, param in params:
            size = param.numel()
            chunk = source[offset : offset + size].view(param.shape)
            param.copy_(chunk.to(device=param.device, dtype=param.dtype))
            offset += size


def set_item_biases(model: nn.Module, biases: npt.ArrayLike) -> None:
    """Overwrite a matrix factorisation's item biases (one value per item).

    Raises:
        ValueError: the model has no item biases, or ``biases`` has the wrong shape
            or non-finite values.
    """
    inner = _unwrap(model)
    if not isinstance(inner, MatrixFactorization):
        raise ValueError("only a matrix factorisation model has item biases")
    values = np.asarray(biases, dtype=np.float32)
    weight = inner.item_bias.weight
    if values.shape != (weight.shape[0],) or not np.all(np.isfinite(values)):
        raise ValueError(f"expected {weight.shape[0]} finite item biases, got shape {values.shape}")
    with torch.no_grad():
        weight.copy_(torch.from_numpy(values).view(-1, 1).to(device=weight.device))
