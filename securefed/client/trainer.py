"""Local DP-SGD on one data owner's interactions (Opacus ghost clipping, CSPRNG noise).

Every trained parameter, the owner's private user embeddings included, is
updated only by the DP optimiser. Per step:

1. Poisson sampling of the owner's privacy units at rate ``q`` from the CSPRNG
   (record: one interaction; person: all records of one user of this owner);
2. for each sampled unit, ``negatives`` items per positive drawn uniformly over
   the whole catalogue, independently of the data;
3. per-unit clipping to ``clip_norm`` by Opacus' ghost clipping (two backward
   passes; no per-example gradients materialised);
4. Gaussian noise of std ``noise_multiplier * clip_norm`` from the CSPRNG with
   the floating-point mitigation of Opacus' secure mode, added to the clipped sum,
   divided by ``q * public_units`` (a public constant); then the local optimiser.

An empty Poisson sample still takes a step: noise only, as the accounting assumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn

from securefed.config import OptimizerKind
from securefed.models.recommendation import Recommender, RowBCEWithLogitsLoss
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.privacy.noise import CsprngStream, SecureGaussianNoise, poisson_sample

__all__ = ["DpTrainer", "LocalInteractions", "StepStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalInteractions:
    """One owner's training positives: local user index and global item index."""

    n_users: int
    n_items: int
    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError("an owner needs at least one user and one item")
        if self.users.shape != self.items.shape or self.users.ndim != 1 or not self.users.size:
            raise ValueError("users and items must be equal-length non-empty vectors")
        if self.users.min() < 0 or self.users.max() >= self.n_users:
            raise ValueError("local user index out of range")
        if self.items.min() < 0 or self.items.max() >= self.n_items:
            raise ValueError("item index out of range")

    def units(self, unit: PrivacyUnit) -> int:
        """How many privacy units this owner holds."""
        if unit is PrivacyUnit.RECORD:
            return int(self.users.size)
        return int(np.unique(self.users).size)


def _optimizer(
    kind: OptimizerKind, params: list[nn.Parameter], learning_rate: float
) -> torch.optim.Optimizer:
    if kind is OptimizerKind.SGD:
        return torch.optim.SGD(params, lr=learning_rate)
    return torch.optim.Adam(params, lr=learning_rate)


class _CsprngDpOptimizer(DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Opacus' ghost-clipping optimiser with noise from securefed's CSPRNG."""

    def __init__(self, *args: Any, noise: SecureGaussianNoise, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._securefed_noise = noise

    def add_noise(self) -> None:
        # As Opacus' own add_noise, with noise from the CSPRNG; the processed flag
        # stops a summed gradient from being noised (and released) twice. One draw
        # of i.i.d. values serves every parameter of a dtype and device, split in
        # parameter order: the same distribution as one draw per parameter, without
        # a per-call cost that dominates small tensors (the biases).
        std = self.noise_multiplier * self.max_grad_norm
        groups: dict[tuple[torch.dtype, torch.device], list[Any]] = {}
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            groups.setdefault((p.summed_grad.dtype, p.summed_grad.device), []).append(p)
        for (dtype, device), params in groups.items():
            total = sum(p.summed_grad.numel() for p in params)
            flat = self._securefed_noise.sample(total, std, dtype=dtype, device=device)
            offset = 0
            for p in params:
                summed = p.summed_grad
                noise = flat[offset : offset + summed.numel()].view_as(summed)
                offset += summed.numel()
                p.grad = (summed + noise).view_as(p)
                _mark_as_processed(summed)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStats:
    """What one round of local training did (counts only; nothing about the data)."""

    steps: int
    sampling_rate: float
    units: int
    sampled_units: int
    seconds: float


class DpTrainer:
    """Runs DP-SGD rounds on one owner's model; keeps the private parameters between rounds.

    Args:
        model: the owner's model (private ``user_*`` parameters and shared ones).
        data: the owner's training positives.
        unit: the privacy unit.
        stream: the owner's CSPRNG (sampling, negatives and noise).
        public_units: the owner's declared public unit count; the noisy clipped
            sum is divided by ``q * public_units`` (a public constant: the private
            count never sets the rate, the steps or the step size).
        device: where to train.
    """

    def __init__(
        self,
        *,
        model: Recommender,
        data: LocalInteractions,
        unit: PrivacyUnit,
        stream: CsprngStream,
        public_units: int,
        device: torch.device | None = None,
    ) -> None:
        if public_units < 1:
            raise ValueError("public_units must be >= 1")
        self.public_units = public_units
        self.data = data
        self.unit = unit
        self.device = device or torch.device("cpu")
        self._stream = stream
        self._noise = SecureGaussianNoise(stream)
        self.model = model.to(self.device)
        self._criterion = RowBCEWithLogitsLoss(reduction="mean")
        order = np.lexsort((data.items, data.users))
        self._users = data.users[order]
        self._items = data.items[order]
        self._person_ids, starts = np.unique(self._users, return_index=True)
        self._person_bounds = np.append(starts, self._users.size)

    def train_nonprivate(
        self,
        *,
        rate: float,
        steps: int,
        learning_rate: float,
        negatives: int,
        optimizer: OptimizerKind,
    ) -> StepStats:
        """The same sampling, batches and step size without clipping or noise (a baseline)."""
        start = time.process_time()
        units = self.data.units(self.unit)
        params = [p for p in self.model.parameters() if p.requires_grad]
        base = _optimizer(optimizer, params, learning_rate)
        self.model.train()
        sampled = 0
        criterion = RowBCEWithLogitsLoss(reduction="none")
        for _ in range(steps):
            chosen = poisson_sample(self._stream, units, rate)
            sampled += int(chosen.size)
            if chosen.size == 0:
                continue
            users, items, labels, mask = self._batch(chosen, negatives)
            base.zero_grad(set_to_none=True)
            loss = criterion(self.model(users, items), labels, mask).sum() / (
                rate * self.public_units
            )
            loss.backward()
            base.step()
        return StepStats(
            steps=steps, sampling_rate=rate, units=units, sampled_units=sampled,
            seconds=time.process_time() - start,
        )  # fmt: skip

    def train(
        self,
        *,
        event: DpSgdEvent,
        clip_norm: float,
        learning_rate: float,
        negatives: int,
        optimizer: OptimizerKind,
    ) -> StepStats:
        """Run ``event.steps`` DP-SGD steps (the caller has made the spend durable)."""
        if event.unit is not self.unit:
            raise ValueError("event unit does not match the trainer's")
        start = time.process_time()
        units = self.data.units(self.unit)
        params = [p for p in self.model.parameters() if p.requires_grad]
        base = _optimizer(optimizer, params, learning_rate)
        module = GradSampleModuleFastGradientClipping(
            self.model,
            batch_first=True,
            loss_reduction="mean",
            max_grad_norm=clip_norm,
            use_ghost_clipping=True,
        )
        try:
            dp_optimizer = _CsprngDpOptimizer(
                base,
                noise=self._noise,
                noise_multiplier=event.noise_multiplier,
                max_grad_norm=clip_norm,
                # A public constant (not the private count): the divisor must be
                # the same on neighbouring datasets.
                expected_batch_size=event.sampling_rate * self.public_units,
                loss_reduction="mean",
            )
            loss_fn = DPLossFastGradientClipping(
                module, dp_optimizer, self._criterion, loss_reduction="mean"
            )
            module.train()
            sampled = 0
            for _ in range(event.steps):
                chosen = poisson_sample(self._stream, units, event.sampling_rate)
                sampled += int(chosen.size)
                dp_optimizer.zero_grad(set_to_none=True)
                if chosen.size == 0:
                    for p in params:
                        p.grad = torch.zeros_like(p)
                else:
                    users, items, labels, mask = self._batch(chosen, negatives)
                    logits = module(users, items)
                    loss = loss_fn(logits, labels, mask)
                    loss.backward()
                dp_optimizer.step()
            dp_optimizer.zero_grad(set_to_none=True)
        finally:
            module._close()
        return StepStats(
            steps=event.steps,
            sampling_rate=event.sampling_rate,
            units=units,
            sampled_units=sampled,
            seconds=time.process_time() - start,
        )

    def _batch(
        self, chosen: npt.NDArray[np.int64], negatives: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of (positive, negatives...) per record, or per person all its records."""
        n_items = self.data.n_items
        if self.unit is PrivacyUnit.RECORD:
            users = self._users[chosen]
            positives = self._items[chosen][:, None]
            negs = self._stream.integers(chosen.size * negatives, n_items).reshape(-1, negatives)
            items = np.concatenate([positives, negs], axis=1)
            labels = np.zeros(items.shape, dtype=np.float32)
            labels[:, 0] = 1.0
            mask = np.ones(items.shape, dtype=bool)
        else:
            lengths = self._person_bounds[chosen + 1] - self._person_bounds[chosen]
            width = int(lengths.max()) * (1 + negatives)
            users = self._person_ids[chosen]
            items = np.zeros((chosen.size, width), dtype=np.int64)
            labels = np.zeros((chosen.size, width), dtype=np.float32)
            mask = np.zeros((chosen.size, width), dtype=bool)
            negs = self._stream.integers(int(lengths.sum()) * negatives, n_items)
            used = 0
            for row, (person, length) in enumerate(zip(chosen, lengths, strict=True)):
                lo = self._person_bounds[person]
                count = int(length) * negatives
                cols = int(length) * (1 + negatives)
                items[row, :length] = self._items[lo : lo + length]
                items[row, length:cols] = negs[used : used + count]
                used += count
                labels[row, :length] = 1.0
                mask[row, :cols] = True
        return (
            torch.as_tensor(users, dtype=torch.long, device=self.device),
            torch.as_tensor(items, dtype=torch.long, device=self.device),
            torch.as_tensor(labels, device=self.device),
            torch.as_tensor(mask, device=self.device),
        )
