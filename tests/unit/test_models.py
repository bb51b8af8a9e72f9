"""Recommendation models: the private/shared split, the flat layout, and Opacus ghost clipping."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator

from securefed.models import (
    MatrixFactorization,
    NeuMF,
    Recommender,
    RecommenderKind,
    RecommenderSpec,
    RowBCEWithLogitsLoss,
    architecture_hash,
    build_model,
    flatten_shared,
    load_shared_state,
    model_architecture_hash,
    private_parameter_names,
    shared_layout,
    shared_parameter_names,
    shared_state,
    unflatten_into,
)

N_USERS = 5
N_ITEMS = 13


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mf(seed: int = 0) -> Recommender:
    return MatrixFactorization(N_USERS, N_ITEMS, dim=4, generator=_gen(seed))


def _neumf(seed: int = 0) -> Recommender:
    return NeuMF(N_USERS, N_ITEMS, mf_dim=3, mlp_dims=(8, 4, 2), generator=_gen(seed))


def _features() -> torch.Tensor:
    return torch.empty(N_ITEMS, 4).uniform_(-1.0, 1.0, generator=_gen(99))


def _mf_features(seed: int = 0) -> Recommender:
    return MatrixFactorization(
        N_USERS, N_ITEMS, dim=4, generator=_gen(seed), item_features=_features()
    )


BUILDERS: dict[str, Callable[[int], Recommender]] = {
    "mf": _mf,
    "neumf": _neumf,
    "mf-features": _mf_features,
}
both_models = pytest.mark.parametrize("builder", list(BUILDERS.values()), ids=list(BUILDERS))


# --- construction, split, layout -------------------------------------------------------


def test_private_shared_split_mf() -> None:
    model = _mf()
    assert private_parameter_names(model) == ("user_embedding.weight",)
    assert shared_parameter_names(model) == (
        "global_bias.weight",
        "item_bias.weight",
        "item_embedding.weight",
    )
    assert dict(shared_layout(model)) == {
        "global_bias.weight": (1, 1),
        "item_bias.weight": (N_ITEMS, 1),
        "item_embedding.weight": (N_ITEMS, 4),
    }


def test_private_shared_split_neumf() -> None:
    model = _neumf()
    assert private_parameter_names(model) == ("user_mf.weight", "user_mlp.weight")
    assert shared_parameter_names(model) == (
        "item_mf.weight",
        "item_mlp.weight",
        "mlp.0.bias",
        "mlp.0.weight",
        "mlp.2.bias",
        "mlp.2.weight",
        "output.bias",
        "output.weight",
    )
    # Every parameter is either private or shared, and no user-sized table is shared.
    names = {n for n, _ in model.named_parameters()}
    assert names == set(private_parameter_names(model)) | set(shared_parameter_names(model))
    # The shared embedding tables are item-sized; nothing shared is indexed by user.
    for name, shape in shared_layout(model):
        if name.startswith("item_"):
            assert shape[0] == N_ITEMS, name


def test_fixed_item_features_are_a_buffer_not_a_parameter() -> None:
    features = _features()
    model = MatrixFactorization(N_USERS, N_ITEMS, dim=4, generator=_gen(0), item_features=features)
    assert model.item_embedding is None
    assert private_parameter_names(model) == ("user_embedding.weight",)
    # Neither trained, noised nor federated: only the biases are shared.
    assert shared_parameter_names(model) == ("global_bias.weight", "item_bias.weight")
    assert flatten_shared(model).shape == (N_ITEMS + 1,)
    assert "item_features" in dict(model.named_buffers())
    # The model keeps its own copy: changing the caller's tensor changes nothing.
    features.zero_()
    assert model.item_features is not None
    assert bool(model.item_features.abs().sum() > 0)
    users, items = torch.tensor([0, 3]), torch.tensor([[1, 2], [12, 0]])
    u = model.user_embedding(users)
    assert model.item_features is not None
    expected = (u[:, None, :] * model.item_features[items]).sum(-1) + model.item_bias(
        items
    ).squeeze(-1)
    torch.testing.assert_close(model(users, items), expected)


def test_fixed_item_features_are_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        MatrixFactorization(3, 10, dim=4, generator=_gen(0), item_features=torch.zeros(10, 5))
    with pytest.raises(ValueError, match="shape"):
        MatrixFactorization(3, 10, dim=4, generator=_gen(0), item_features=torch.zeros(9, 4))
    bad = torch.zeros(10, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        MatrixFactorization(3, 10, dim=4, generator=_gen(0), item_features=bad)
    huge = torch.full((10, 4), 1e300, dtype=torch.float64)  # finite, but inf in float32
    with pytest.raises(ValueError, match="finite"):
        MatrixFactorization(3, 10, dim=4, generator=_gen(0), item_features=huge)
    with pytest.raises(TypeError, match="floating-point"):
        MatrixFactorization(
            3, 10, dim=4, generator=_gen(0), item_features=torch.zeros(10, 4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="only a matrix factorisation"):
        build_model(
            RecommenderSpec.neumf(mf_dim=4, mlp_dims=(6, 3)),
            3,
            10,
            _gen(0),
            item_features=torch.zeros(10, 4),
        )


@both_models
def test_forward_and_score_all_shapes(builder: Callable[[int], Recommender]) -> None:
    model = builder(0)
    users = torch.tensor([0, 4, 2])
    items = torch.tensor([[0, 1, 2, 3], [12, 11, 0, 0], [5, 5, 6, 7]])
    logits = model(users, items)
    assert logits.shape == (3, 4)
    scores = model.score_all(users)
    assert scores.shape == (3, N_ITEMS)
    assert not scores.requires_grad
    torch.testing.assert_close(scores.gather(1, items), logits.detach())


def test_score_all_chunks_match(monkeypatch: pytest.MonkeyPatch) -> None:
    import securefed.models.recommendation as rec

    model = _neumf()
    users = torch.arange(N_USERS)
    whole = model.score_all(users)
    monkeypatch.setattr(rec, "_SCORE_PAIRS_PER_CHUNK", 7)  # one item per chunk
    torch.testing.assert_close(model.score_all(users), whole)


@both_models
def test_forward_rejects_bad_shapes(builder: Callable[[int], Recommender]) -> None:
    model = builder(0)
    with pytest.raises(ValueError, match="expected users"):
        model(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="expected users"):
        model(torch.tensor([[0]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="int64"):
        model(torch.tensor([0], dtype=torch.int32), torch.tensor([[0, 1]], dtype=torch.int32))


@pytest.mark.parametrize(
    ("n_users", "n_items", "kwargs"),
    [
        (0, 10, {}),
        (3, 0, {}),
        (-1, 10, {}),
        (3, 10, {"dim": 0}),
        (True, 10, {}),
    ],
)
def test_mf_rejects_bad_arguments(n_users: int, n_items: int, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive int"):
        MatrixFactorization(n_users, n_items, generator=_gen(0), **kwargs)


def test_models_refuse_a_missing_generator() -> None:
    # nn.init would silently fall back to torch's global RNG.
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        MatrixFactorization(3, 10, generator=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        NeuMF(3, 10, generator=np.random.default_rng(0))  # type: ignore[arg-type]


@pytest.mark.parametrize("mlp_dims", [(), (7, 4), (8, 0), [8, 4]])
def test_neumf_rejects_bad_mlp_dims(mlp_dims: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="mlp_dims"):
        NeuMF(3, 10, mlp_dims=mlp_dims, generator=_gen(0))
    with pytest.raises(ValueError, match="n_users"):
        NeuMF(0, 10, generator=_gen(0))


def test_spec_and_factory() -> None:
    mf = build_model(RecommenderSpec.mf(dim=6), 3, 10, _gen(1))
    assert isinstance(mf, MatrixFactorization)
    assert mf.item_embedding.weight.shape == (10, 6)
    neumf = build_model(RecommenderSpec.neumf(mf_dim=5, mlp_dims=(6, 3)), 3, 10, _gen(1))
    assert isinstance(neumf, NeuMF)
    assert neumf.item_mf.weight.shape == (10, 5)
    assert neumf.output.weight.shape == (1, 8)
    with pytest.raises(ValueError, match="empty for MF"):
        RecommenderSpec(kind=RecommenderKind.MF, mlp_dims=(4, 2))
    with pytest.raises(ValueError, match="mlp_dims"):
        RecommenderSpec(kind=RecommenderKind.NEUMF)
    with pytest.raises(TypeError, match="RecommenderKind"):
        RecommenderSpec(kind="mf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_users"):
        build_model(RecommenderSpec.mf(), 0, 10, _gen(1))


@both_models
def test_initialisation_uses_only_the_given_generator(
    builder: Callable[[int], Recommender],
) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = builder(7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    second = builder(7)
    other = builder(8)
    for (name, a), (_, b), (_, c) in zip(
        first.named_parameters(),
        second.named_parameters(),
        other.named_parameters(),
        strict=True,
    ):
        assert torch.equal(a, b), name
        if a.numel() > 1 and a.abs().sum() > 0:
            assert not torch.equal(a, c), name
        assert torch.isfinite(a).all(), name


# --- flat layout and loading -----------------------------------------------------------


@both_models
def test_flatten_unflatten_round_trip(builder: Callable[[int], Recommender]) -> None:
    model = builder(0)
    flat = flatten_shared(model)
    assert flat.dtype == np.float32
    assert flat.shape == (sum(int(np.prod(s)) for _, s in shared_layout(model)),)
    expected = np.concatenate([v.numpy().ravel() for v in shared_state(model).values()])
    np.testing.assert_array_equal(flat, expected)

    target = builder(1)
    private_before = {n: p.detach().clone() for n, p in target.named_parameters()}
    unflatten_into(target, flat)
    np.testing.assert_array_equal(flatten_shared(target), flat)
    for name in private_parameter_names(target):
        assert torch.equal(target.get_parameter(name), private_before[name])

    # The update of a training step is the difference of two flattenings.
    delta = np.arange(flat.size, dtype=np.float32) / flat.size
    unflatten_into(target, flat + delta)
    np.testing.assert_allclose(flatten_shared(target) - flat, delta, atol=1e-6)


def test_unflatten_rejects_bad_vectors() -> None:
    model = _mf()
    size = flatten_shared(model).size
    with pytest.raises(ValueError, match="vector of"):
        unflatten_into(model, np.zeros(size + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="vector of"):
        unflatten_into(model, np.zeros((1, size), dtype=np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        unflatten_into(model, np.zeros(size, dtype=np.int64))


@both_models
def test_load_shared_state(builder: Callable[[int], Recommender]) -> None:
    source, target = builder(0), builder(1)
    state = shared_state(source)
    assert list(state) == sorted(state)
    private_before = {
        n: target.get_parameter(n).detach().clone() for n in private_parameter_names(target)
    }
    load_shared_state(target, state)
    np.testing.assert_array_equal(flatten_shared(target), flatten_shared(source))
    for name, value in private_before.items():
        assert torch.equal(target.get_parameter(name), value)
    # shared_state is a snapshot, not a view.
    state[next(iter(state))].add_(1.0)
    np.testing.assert_array_equal(flatten_shared(target), flatten_shared(source))


def test_load_shared_state_rejects_mismatches() -> None:
    model = _mf()
    before = flatten_shared(model)
    good = shared_state(_mf(1))
    cases: list[dict[str, torch.Tensor]] = [
        {k: v for k, v in good.items() if k != "item_bias.weight"},
        {**good, "user_embedding.weight": torch.zeros(N_USERS, 4)},
        {**good, "extra": torch.zeros(1)},
        {**good, "item_bias.weight": torch.zeros(N_ITEMS + 1, 1)},
        {**good, "item_bias.weight": torch.zeros(N_ITEMS, 1, dtype=torch.float64)},
    ]
    for bad in cases:
        with pytest.raises(ValueError, match=r"shared state|expected"):
            load_shared_state(model, bad)
        np.testing.assert_array_equal(flatten_shared(model), before)
    with pytest.raises(ValueError, match="missing"):
        load_shared_state(_neumf(), good)


def test_row_loss() -> None:
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.0, 0.5, -3.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_row = torch.stack([bce[0, :2].sum(), bce[1].sum()])
    torch.testing.assert_close(RowBCEWithLogitsLoss("none")(logits, labels, mask), per_row)
    torch.testing.assert_close(RowBCEWithLogitsLoss("sum")(logits, labels, mask), per_row.sum())
    torch.testing.assert_close(RowBCEWithLogitsLoss("mean")(logits, labels, mask), per_row.mean())
    # A padded position gets an exact zero gradient, even with an extreme logit.
    logits = logits.clone().requires_grad_(True)
    logits.data[0, 2] = 1e30
    RowBCEWithLogitsLoss()(logits, labels, mask).backward()
    assert logits.grad is not None
    assert logits.grad[0, 2] == 0.0
    with pytest.raises(ValueError, match="bool"):
        RowBCEWithLogitsLoss()(logits, labels, mask.float())
    with pytest.raises(ValueError, match="reduction"):
        RowBCEWithLogitsLoss("avg")(logits, labels, mask)


# --- Opacus ------------------------------------------------------------------------------


@both_models
def test_opacus_validator_accepts(builder: Callable[[int], Recommender]) -> None:
    assert ModuleValidator.validate(builder(0), strict=True) == []


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows share users and items; one item repeats inside a row; some positions are padding."""
    users = torch.tensor([0, 1, 0, 2, 3, 1, 4, 2])
    items = torch.tensor(
        [
            [3, 7, 1, 9, 0],
            [3, 2, 8, 8, 0],  # item 8 twice in one row (a person-level unit)
            [5, 7, 12, 4, 6],
            [1, 7, 2, 0, 0],  # two padded positions
            [10, 11, 3, 6, 2],
            [8, 3, 7, 1, 0],  # one padded position
            [0, 12, 5, 9, 11],
            [2, 6, 7, 4, 3],
        ]
    )
    labels = torch.zeros(items.shape)
    labels[:, 0] = 1.0
    labels[1, 2] = 1.0
    mask = torch.ones(items.shape, dtype=torch.bool)
    mask[3, 3:] = False
    mask[5, 4] = False
    return users, items, labels, mask


def _row_gradients(
    model: Recommender, batch: tuple[torch.Tensor, ...], criterion: RowBCEWithLogitsLoss
) -> list[dict[str, torch.Tensor]]:
    users, items, labels, mask = batch
    grads = []
    params = dict(model.named_parameters())
    for row in range(users.shape[0]):
        sl = slice(row, row + 1)
        loss = criterion(model(users[sl], items[sl]), labels[sl], mask[sl]).sum()
        values = torch.autograd.grad(loss, list(params.values()))
        grads.append(dict(zip(params, values, strict=True)))
    return grads


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@both_models
def test_ghost_clipping_clips_each_row_as_one_unit(
    builder: Callable[[int], Recommender], dtype: torch.dtype, reduction: str
) -> None:
    """Opacus ghost clipping == sum over rows of min(1, C/||g_row||) g_row (global norm).

    With ``loss_reduction="mean"`` the optimizer then divides by the expected batch size.
    """
    model = builder(3).to(dtype)
    with torch.no_grad():  # larger weights: row gradients of order 1, well spread
        noise = _gen(11)
        for p in model.parameters():
            p.add_(torch.empty_like(p).uniform_(-0.5, 0.5, generator=noise))
    batch = _batch()
    users, items, labels, mask = batch
    labels = labels.to(dtype)
    reference = _row_gradients(model, (users, items, labels, mask), RowBCEWithLogitsLoss("none"))
    norms = torch.stack(
        [torch.sqrt(sum((g.double() ** 2).sum() for g in row.values())) for row in reference]
    )
    ordered = norms.sort().values
    clip = float(ordered[3] + ordered[4]) / 2  # four rows clipped, four not
    assert (norms > clip).sum() == 4

    divisor = len(reference) if reduction == "mean" else 1

    def clipped_sum(factors: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            name: sum(f * row[name].double() for f, row in zip(factors, reference, strict=True))
            / divisor
            for name in reference[0]
        }

    exact = clipped_sum(torch.clamp(clip / norms, max=1.0))
    # Opacus computes min(1, C / (norm + 1e-6)) (GradSampleHooksFastGradientClipping.
    # get_clipping_coef): a relative deviation below 1e-6 / norm from the exact rule.
    stabilised = clipped_sum(torch.clamp(clip / (norms + 1e-6), max=1.0))

    gsm = GradSampleModuleFastGradientClipping(
        model, max_grad_norm=clip, use_ghost_clipping=True, loss_reduction=reduction
    )
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(gsm.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=users.shape[0],
        loss_reduction=reduction,
    )
    criterion = RowBCEWithLogitsLoss(reduction)
    dp_loss = DPLossFastGradientClipping(gsm, optimizer, criterion, loss_reduction=reduction)
    # The split sees through Opacus' wrapper (its parameter names gain "_module.").
    assert shared_parameter_names(gsm) == shared_parameter_names(model)
    assert private_parameter_names(gsm) == private_parameter_names(model)
    optimizer.zero_grad()
    with warnings.catch_warnings():
        # Embedding inputs are indices: torch warns that full backward hooks see no input grads.
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        loss = dp_loss(gsm(users, items), labels, mask)
        loss.backward()
    torch.testing.assert_close(
        gsm.per_sample_gradient_norms.double(),
        norms,
        rtol=1e-5 if dtype == torch.float32 else 1e-9,
        atol=0.0,
    )
    # The clipped sum is in p.grad now; pre_step accumulates it into p.summed_grad, adds
    # the (zero) noise and, for "mean", divides by expected_batch_size, back into p.grad.
    optimizer.pre_step()

    for name, param in model.named_parameters():
        assert param.grad is not None, name
        got = param.grad.double()
        error = float(torch.linalg.vector_norm(got - exact[name]))
        assert error <= 1e-5 * float(torch.linalg.vector_norm(exact[name])), (name, error)
        if dtype == torch.float64:  # and the residual is exactly the stabiliser
            error = float(torch.linalg.vector_norm(got - stabilised[name]))
            assert error <= 1e-12 * float(torch.linalg.vector_norm(exact[name])), (name, error)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("batch", "width", "vocab"), [(64, 5, 7), (50, 1, 30), (33, 12, 4), (9, 64, 3)]
)
def test_the_sort_free_embedding_norm_is_opacus_norm(batch, width, vocab, dtype):
    # Small vocabularies: many ids repeat inside a row, which is where the two
    # computations could part. Opacus' compute_embedding_norm_sample is the reference.
    from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample

    from securefed.models import RowEmbedding, embedding_row_norms

    generator = _gen(batch * 100 + width)
    layer = RowEmbedding(vocab, 6).to(dtype)
    shape = (batch,) if width == 1 else (batch, width)
    ids = torch.randint(0, vocab, shape, generator=generator)
    backprops = torch.randn((*shape, 6), generator=generator, dtype=dtype)
    backprops[::7] = 0.0  # masked positions have zero backprops
    ours = embedding_row_norms(layer, [ids], backprops)[layer.weight]
    reference = compute_embedding_norm_sample(layer, [ids], backprops)[layer.weight]
    assert ours.shape == (batch,)
    torch.testing.assert_close(ours, reference, rtol=1e-12 if dtype == torch.float64 else 1e-5,
                               atol=1e-12 if dtype == torch.float64 else 1e-6)  # fmt: skip
    # And against the per-sample gradient itself.
    flat_ids, flat_grads = ids.reshape(batch, -1), backprops.reshape(batch, -1, 6)
    for b in range(0, batch, 5):
        grad = torch.zeros(vocab, 6, dtype=dtype).index_add(0, flat_ids[b], flat_grads[b])
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(
            ours[b], torch.linalg.matrix_norm(grad), rtol=tolerance, atol=tolerance
        )


def test_every_embedding_of_the_models_uses_the_sort_free_norm() -> None:
    from securefed.models import RowEmbedding

    for model in (_mf(3), _neumf(3)):
        embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        assert embeddings
        assert all(type(m) is RowEmbedding for m in embeddings)
    assert RowEmbedding in GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    # With a grad sampler registered too, wrapping a model prepares no functorch copy
    # of any table (Opacus deep-copies each layer it prepares, on every wrap).
    assert RowEmbedding in GradSampleModuleFastGradientClipping.GRAD_SAMPLERS
    for builder in BUILDERS.values():
        model = builder(0)
        gsm = GradSampleModuleFastGradientClipping(model, use_ghost_clipping=True)
        try:
            assert not any(hasattr(m, "ft_compute_sample_grad") for m in model.modules())
        finally:
            gsm._close()


def test_the_embedding_norm_sums_before_it_squares() -> None:
    # A negative that hits its own positive gets an opposite backprop: squaring each
    # position first and cancelling afterwards would lose the true norm in float32.
    from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample

    from securefed.models import RowEmbedding, embedding_row_norms

    layer = RowEmbedding(3, 1)
    ids = torch.tensor([[0, 0], [1, 2]])
    backprops = torch.tensor([[[1e4], [-1e4 + 1.0]], [[3.0], [4.0]]], dtype=torch.float32)
    ours = embedding_row_norms(layer, [ids], backprops)[layer.weight]
    reference = compute_embedding_norm_sample(layer, [ids], backprops)[layer.weight]
    torch.testing.assert_close(ours, torch.tensor([1.0, 5.0]), rtol=0, atol=0)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_wide_rows_go_to_opacus_sort() -> None:
    # Long padded person rows: the id-equality matrix would grow with the width squared.
    from opacus.grad_sample.embedding_norm_sample import compute_embedding_norm_sample

    from securefed.models import RowEmbedding, embedding_row_norms

    generator = _gen(7)
    layer = RowEmbedding(50, 4)
    ids = torch.randint(0, 50, (3, 400), generator=generator)
    backprops = torch.randn((3, 400, 4), generator=generator)
    ours = embedding_row_norms(layer, [ids], backprops)[layer.weight]
    reference = compute_embedding_norm_sample(layer, [ids], backprops)[layer.weight]
    assert torch.equal(ours, reference)


def test_a_built_models_architecture_hash_is_its_specs() -> None:
    features = _features()
    cases = [
        (RecommenderSpec.mf(dim=4), None),
        (RecommenderSpec.mf(dim=4), features),
        (RecommenderSpec.neumf(mf_dim=3, mlp_dims=(8, 4, 2)), None),
    ]
    digests = set()
    for spec, item_features in cases:
        model = build_model(spec, N_USERS, N_ITEMS, _gen(0), item_features=item_features)
        digest = architecture_hash(spec, N_ITEMS, item_features)
        assert model_architecture_hash(model) == digest
        # The user count is the owner's own business: not part of the architecture.
        other = build_model(spec, N_USERS + 3, N_ITEMS, _gen(1), item_features=item_features)
        assert model_architecture_hash(other) == digest
        digests.add(digest)
    assert len(digests) == 3
    changed = features.clone()
    changed[2, 1] += 1e-3
    assert architecture_hash(RecommenderSpec.mf(dim=4), N_ITEMS, changed) not in digests
    with pytest.raises(TypeError, match="not a securefed recommender"):
        model_architecture_hash(torch.nn.Linear(2, 2))
