"""Local DP-SGD: every parameter (private user rows included) only moves through the
DP optimiser, noise is calibrated and comes from the CSPRNG, never torch's generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from securefed.client.trainer import DpTrainer, LocalInteractions
from securefed.config import OptimizerKind
from securefed.models.recommendation import RecommenderSpec, build_model, flatten_shared
from securefed.plan import steps_per_round
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.privacy.noise import CsprngStream
from securefed.randomness import DeterministicRandom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_USERS, N_ITEMS = 6, 40


def _rng(label: str) -> DeterministicRandom:
    return DeterministicRandom(hashlib.sha256(label.encode()).digest())


def _data() -> LocalInteractions:
    users = np.repeat(np.arange(N_USERS), [3, 5, 2, 7, 4, 1]).astype(np.int64)
    items = (np.arange(users.size) * 7 % N_ITEMS).astype(np.int64)
    return LocalInteractions(n_users=N_USERS, n_items=N_ITEMS, users=users, items=items)


def _trainer(unit: PrivacyUnit, label: str = "t", dim: int = 4) -> DpTrainer:
    g = torch.Generator().manual_seed(5)
    model = build_model(RecommenderSpec.mf(dim=dim), N_USERS, N_ITEMS, g)
    data = _data()
    return DpTrainer(
        model=model,
        data=data,
        unit=unit,
        stream=CsprngStream(_rng(label)),
        public_units=data.units(unit),
    )


def _all_params(trainer: DpTrainer) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).numpy().copy()


def _event(trainer: DpTrainer, *, sigma: float, rate: float = 0.25, epochs: int = 1) -> DpSgdEvent:
    return DpSgdEvent(
        sampling_rate=rate,
        noise_multiplier=sigma,
        steps=steps_per_round(epochs, rate),
        unit=trainer.unit,
    )


def test_round_shape():
    assert steps_per_round(2, 0.25) == 8
    assert steps_per_round(1, 1.0) == 1
    assert steps_per_round(1, 0.3) == 4


@pytest.mark.parametrize("unit", [PrivacyUnit.RECORD, PrivacyUnit.PERSON])
def test_torch_and_numpy_global_generators_are_never_used(unit, monkeypatch):
    trainer = _trainer(unit)
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()

    def forbidden(*args, **kwargs):
        raise AssertionError("global generator used")

    for name in ("normal", "randn", "rand", "randint", "bernoulli", "randperm", "multinomial"):
        monkeypatch.setattr(torch, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "normal_", forbidden)
    monkeypatch.setattr(torch.Tensor, "uniform_", forbidden)
    trainer.train(
        event=_event(trainer, sigma=1.0),
        clip_norm=1.0,
        learning_rate=0.1,
        negatives=3,
        optimizer=OptimizerKind.SGD,
    )
    monkeypatch.undo()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_noise_is_calibrated_per_coordinate_on_every_parameter():
    # One SGD step with lr 1 moves each coordinate by -(clipped sum + N(0, (sigma C)^2))
    # / (q N). With sigma = 1000 the noise dominates the clipped sum (at most C per unit):
    # the empirical std over all coordinates must be sigma C / (q N) within 3%
    # (dim 256: about 12,000 coordinates; the sampling error of a std estimate is
    # about 1/sqrt(2 n) = 0.6%, so 3% is 5 standard errors: a false alarm rate
    # below 1e-6, and fixed by the deterministic seed anyway).
    trainer = _trainer(PrivacyUnit.RECORD, dim=256)
    before = _all_params(trainer)
    each = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    event = DpSgdEvent(sampling_rate=0.5, noise_multiplier=1000.0, steps=1, unit=PrivacyUnit.RECORD)
    trainer.train(
        event=event, clip_norm=0.01, learning_rate=1.0, negatives=3, optimizer=OptimizerKind.SGD
    )
    moved = _all_params(trainer) - before
    # Independent noise for each parameter (one draw is split among them): the
    # leading coordinates of any two parameters are uncorrelated (100 pairs: the
    # sample correlation has std 0.1, so |r| > 0.5 is a 5-sigma event).
    steps = {
        n: (p.detach() - each[n]).reshape(-1)[:100].numpy()
        for n, p in trainer.model.named_parameters()
        if p.numel() >= 100
    }
    assert len(steps) >= 2
    names = sorted(steps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert abs(np.corrcoef(steps[a], steps[b])[0, 1]) < 0.5, (a, b)
    units = trainer.data.units(PrivacyUnit.RECORD)
    expected = 1000.0 * 0.01 / (0.5 * units)
    assert np.std(moved) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(moved)) < 5 * expected / np.sqrt(moved.size)
    # Every parameter moved, private user rows of users not sampled included.
    assert np.all(moved != 0)


def test_an_empty_poisson_sample_still_takes_a_noise_step():
    trainer = _trainer(PrivacyUnit.RECORD)
    before = _all_params(trainer)
    # q tiny: the sample is empty with probability (1 - 1e-9)^22.
    event = DpSgdEvent(sampling_rate=1e-9, noise_multiplier=1.0, steps=1, unit=PrivacyUnit.RECORD)
    stats = trainer.train(
        event=event, clip_norm=1.0, learning_rate=1e-3, negatives=2, optimizer=OptimizerKind.SGD
    )
    assert stats.sampled_units == 0
    assert np.all(_all_params(trainer) != before)


def test_same_seed_same_model_different_seed_different_model():
    def run(label: str) -> np.ndarray:
        trainer = _trainer(PrivacyUnit.RECORD, label)
        trainer.train(
            event=_event(trainer, sigma=1.0),
            clip_norm=1.0,
            learning_rate=0.1,
            negatives=3,
            optimizer=OptimizerKind.ADAM,
        )
        return flatten_shared(trainer.model)

    assert np.array_equal(run("a"), run("a"))
    assert not np.array_equal(run("a"), run("b"))


def test_record_batches_pair_each_positive_with_uniform_catalogue_negatives():
    trainer = _trainer(PrivacyUnit.RECORD)
    chosen = np.arange(trainer.data.units(PrivacyUnit.RECORD), dtype=np.int64)
    counts = np.zeros(N_ITEMS, dtype=np.int64)
    positives_seen = 0
    for _ in range(200):
        _users, items, labels, mask = trainer._batch(chosen, 5)
        assert items.shape == (chosen.size, 6)
        assert torch.all(labels[:, 0] == 1)
        assert torch.all(labels[:, 1:] == 0)
        assert torch.all(mask)
        negs = items[:, 1:].numpy()
        counts += np.bincount(negs.ravel(), minlength=N_ITEMS)
        # Negatives are not filtered against the data: a user's own positives appear.
        own = items[:, :1].numpy()
        positives_seen += int((negs == own).sum())
    assert positives_seen > 0
    # Chi-square uniformity over the catalogue (39 dof; 99.99th percentile 78.3).
    expected = counts.sum() / N_ITEMS
    assert float(((counts - expected) ** 2 / expected).sum()) < 78.3


def test_person_batches_hold_all_records_of_each_sampled_person():
    trainer = _trainer(PrivacyUnit.PERSON)
    data = trainer.data
    assert data.units(PrivacyUnit.PERSON) == N_USERS
    chosen = np.array([1, 3, 5], dtype=np.int64)
    users, items, labels, mask = trainer._batch(chosen, 2)
    lengths = [5, 7, 1]
    assert items.shape == (3, 7 * 3)
    for row, (person, length) in enumerate(zip(chosen, lengths, strict=True)):
        assert int(users[row]) == person
        own = np.sort(data.items[data.users == person])
        assert np.array_equal(np.sort(items[row, :length].numpy()), own)
        assert int(labels[row].sum()) == length
        assert int(mask[row].sum()) == length * 3
        assert not mask[row, length * 3 :].any()


def test_nonprivate_baseline_uses_the_same_sampling_without_noise():
    trainer = _trainer(PrivacyUnit.RECORD)
    stats = trainer.train_nonprivate(
        rate=0.2, steps=5, learning_rate=0.1, negatives=3, optimizer=OptimizerKind.SGD
    )
    assert stats.steps == 5
    assert stats.sampled_units > 0


def test_event_unit_must_match():
    trainer = _trainer(PrivacyUnit.RECORD)
    event = DpSgdEvent(sampling_rate=0.5, noise_multiplier=1.0, steps=1, unit=PrivacyUnit.PERSON)
    with pytest.raises(ValueError, match="unit"):
        trainer.train(
            event=event, clip_norm=1.0, learning_rate=0.1, negatives=1,
            optimizer=OptimizerKind.SGD,
        )  # fmt: skip


def test_add_noise_gives_every_parameter_its_own_slice_of_one_draw_once():
    # The optimiser draws once per dtype and device and splits the draw in parameter
    # order: with a recording noise source, each gradient must be its summed
    # gradient plus exactly its own slice (no overlap, no reuse, none skipped), at
    # std sigma * C, and a second add_noise without zero_grad must refuse.
    from types import SimpleNamespace

    from securefed.client.trainer import _CsprngDpOptimizer

    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[int, float, torch.dtype]] = []

        def sample(self, shape, std, *, dtype, device):
            self.calls.append((shape, std, dtype))
            return torch.arange(shape, dtype=dtype) + 1000.0 * len(self.calls)

    shapes = [((3, 2), torch.float32), ((4,), torch.float32), ((1, 1), torch.float32),
              ((5,), torch.float64)]  # fmt: skip
    params = []
    for i, (shape, dtype) in enumerate(shapes):
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.summed_grad = torch.full(shape, float(i), dtype=dtype)
        params.append(p)
    noise = Recording()
    fake = SimpleNamespace(
        params=params, noise_multiplier=2.0, max_grad_norm=0.5, _securefed_noise=noise
    )
    _CsprngDpOptimizer.add_noise(fake)
    assert noise.calls == [(11, 1.0, torch.float32), (5, 1.0, torch.float64)]
    first = torch.arange(11, dtype=torch.float32) + 1000.0
    torch.testing.assert_close(params[0].grad, 0.0 + first[0:6].view(3, 2))
    torch.testing.assert_close(params[1].grad, 1.0 + first[6:10])
    torch.testing.assert_close(params[2].grad, 2.0 + first[10:11].view(1, 1))
    torch.testing.assert_close(params[3].grad, 3.0 + torch.arange(5, dtype=torch.float64) + 2000.0)
    with pytest.raises(ValueError, match="zero_grad"):
        _CsprngDpOptimizer.add_noise(fake)
    assert len(noise.calls) == 2  # the refusal drew nothing
