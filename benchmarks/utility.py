"""Utility benchmark: what DP and federation cost in ranking quality, against baselines.

Usage::

    python benchmarks/utility.py [--quick] [--write] [--rows GLOB ...] [--seeds N] [--passes R]
    python benchmarks/utility.py --write-only          # re-render BENCHMARKS.md from the JSON

On MovieLens latest-small (all ratings as implicit interactions, leave-one-out by
time: the test item is each user's last interaction, the validation item the one
before), every trained row fits the same model (MF, dim 32, 4 uniform negatives per
positive) with the same number ``R`` of passes over the training data, and every
row is scored by the test HR@10 / NDCG@10 with 99 sampled negatives and with full
ranking, plus AUC (full ranking), through :mod:`securefed.evaluation`'s protocol
(pessimistic ties; the user's training items and validation item excluded).

Rows (``--rows`` takes globs over these names):

* ``popularity``: rank by the training count of each item (a strong floor).
* ``dp-popularity-e{1,3,8}``: the counts plus Gaussian noise, one release,
  record-level (L2 sensitivity 1), calibrated with dp_accounting's PLD accountant.
* ``central``: one data owner holding every user, non-private, ``R`` epochs
  through the federation's own ``DataOwner`` / ``DpTrainer`` (no secure aggregation:
  a single owner is the server, there is nothing to protect).
* ``fed-nonprivate``: 10 silos, FedAvg, ``R`` rounds of one local epoch.
* ``dp-silo-record-e{1,3,8}``: 10 silos, record-level DP-SGD.
* ``dp-silo-person-e{1,3,8}``: 10 silos, person-level DP-SGD.
* ``dp-device-record-e{1,3,8}``: one owner per user, 10% Poisson cohorts, record-level.
* ``*-prior*``: the same, starting from the item-popularity prior (round 0);
  ``-pld``: calibrated on the PLD accountant.
* ``fed-nonprivate-unmasked``, ``dp-silo-record-e8-unmasked``: the paired check of
  what secure aggregation changes. Each seed runs its base row twice, back to back
  with the same seeds: once as is, once with the benchmark harness (outside the
  server) replacing every round's dequantised aggregate by the exact float mean of
  the owners' clipped updates. Every draw the owners and the coordinator make
  (sampling, negatives, noise, stochastic rounding, cohorts) is the same in both
  runs; only the secure-aggregation keys and masks are fresh OS randomness, and
  they cancel exactly. So only the applied aggregate differs.

Every (row, seed) runs in this process, one after the other. With ``--write`` the
results JSON (``benchmarks/results/utility.json``) is saved after every finished
run, merged with what the file already holds (so a long run can be done in parts),
and the BENCHMARKS.md section between the utility markers is rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sections import write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "utility.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- utility:begin -->", "<!-- utility:end -->"
DEFAULT_DATA = ROOT / "examples" / "data" / "ml-latest-small"

DELTA = 1e-5
EPSILONS = (1.0, 3.0, 8.0)
DIM = 32
NEGATIVES = 4  # training negatives per positive
TOP_K = 10
SAMPLED = 99  # evaluation negatives per user
SILOS = 10
UPDATE_CLIP = 20.0  # update.clip_norm and the quantiser's range
QUANT_BITS = 20
DEFAULT_PASSES = 10
DEFAULT_SEEDS = 3
PRIOR_SHARE = 0.5
QUICK_ROWS = ("popularity", "dp-popularity-e8", "central", "fed-nonprivate", "dp-silo-record-e8")
METRICS = ("sampled_hr10", "sampled_ndcg10", "full_hr10", "full_ndcg10", "full_auc")
"""The table's metric columns, in order."""
STORED = (*METRICS, "sampled_auc")
"""What the JSON keeps of every run's test metrics."""
SCHEMA = 1
"""Version of the results JSON layout (bump when a field changes meaning)."""


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the table: a method and its privacy target."""

    name: str
    kind: str  # popularity | dp-popularity | central | federated | paired
    epsilon: float | None = None
    partition: str = "silos"  # silos | per_user
    unit: str = "record"  # record | person
    q: float = 0.0064  # Poisson rate per step (about 64 records of a 10-silo shop)
    lr: float = 5.0
    local_epochs: int = 1
    cohort_rate: float = 1.0
    clip: float = 1.0
    server_lr: float = 1.0
    prior_share: float | None = None  # item-popularity prior's share of the budget
    accountant: str = "rdp"  # privacy.accountant: calibration and budgets
    features: tuple[str, ...] = ()  # fixed item vectors from these catalogue blocks
    feature_scale: float = 3.0  # model.feature_scale, with features
    items: str = "rated"  # data.items: the rated movies, or the listed catalogue
    pair: str | None = None  # unmasked-sum rows: the base row they pair with

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    def setting(self) -> str:
        """A one-line description of the row's training settings."""
        if self.kind == "popularity":
            return "training counts"
        if self.kind == "dp-popularity":
            return "counts + N(0, s²), one release"
        if self.pair is not None:
            return f"as {self.pair}, run twice per seed: SecAgg vs an unmasked exact mean"
        if self.kind == "central":
            text = f"1 owner, SGD lr {self.lr:g}, Poisson rate {self.q:g}"
            return text + (", item biases from counts" if self.prior_share is not None else "")
        where = (
            f"{SILOS} silos"
            if self.partition == "silos"
            else f"1 owner/user, cohort {self.cohort_rate:g}"
        )
        text = (
            f"{where}, {self.local_epochs} local ep., rate {self.q:g} of "
            f"{'persons' if self.unit == 'person' else 'records'}, lr {self.lr:g}"
        )
        if self.private:
            text += f", clip {self.clip:g}"
        if self.server_lr != 1.0:
            text += f", server lr {self.server_lr:g}"
        if self.prior_share is not None:
            text += f", prior ({self.prior_share:g} of ε)" if self.private else ", prior (exact)"
        if self.private and self.accountant != "rdp":
            text += f", {self.accountant.upper()} accounting"
        if self.items == "listed":
            text += ", listed catalogue"
        if self.features:
            blocks = " + ".join(self.features)
            text += f", fixed item vectors: {blocks} (norm {self.feature_scale:g})"
        return text


def all_rows() -> list[Row]:
    rows = [Row(name="popularity", kind="popularity")]
    rows += [Row(name=f"dp-popularity-e{e:g}", kind="dp-popularity", epsilon=e) for e in EPSILONS]
    rows += [
        Row(name="central", kind="central", q=0.00064),  # about 64 of 99,600 records
        # The same owner, its item biases first set from its exact training counts
        # (what the prior gives a federation, for a like-for-like reference).
        Row(name="central-prior", kind="central", q=0.00064, prior_share=PRIOR_SHARE),
        # FedAvg with server_lr = silos adds the silos' updates instead of averaging
        # them (picked on validation HR@10: 0.71 vs 0.61 after 10 rounds).
        Row(name="fed-nonprivate", kind="federated", server_lr=10.0),
        # The same, starting from the item-popularity prior (round 0, exact counts).
        Row(name="fed-nonprivate-prior", kind="federated", server_lr=10.0, prior_share=PRIOR_SHARE),
    ]
    rows += [
        Row(name=f"dp-silo-record-e{e:g}", kind="federated", epsilon=e, q=0.05, lr=2.0)
        for e in EPSILONS
    ]
    # Round 0: the item-popularity prior (securefed.prior), half of each owner's
    # budget (picked on validation AUC at epsilon 8, seed 0: shares 0.25 / 0.4 / 0.55
    # gave 0.835 / 0.840 / 0.841), DP-SGD calibrated on the rest.
    rows += [
        Row(
            name=f"dp-silo-record-prior-e{e:g}",
            kind="federated",
            epsilon=e,
            q=0.05,
            lr=2.0,
            prior_share=PRIOR_SHARE,
        )
        for e in EPSILONS
    ]
    prior_rows = [r for r in rows if r.name.startswith("dp-silo-record-prior-e")]
    # The same, calibrated on the PLD accountant (as the DP-popularity rows are)
    # instead of RDP's looser upper bound: less noise for the same epsilon.
    rows += [
        dataclasses.replace(r, name=r.name.replace("-prior-", "-prior-pld-"), accountant="pld")
        for r in prior_rows
    ]
    # Fixed item vectors from the public catalogue instead of a learned item table:
    # DP-SGD trains only the user embeddings and the biases (9,743 shared parameters
    # instead of 321,487). Genres alone, then genres and release decade. The norms
    # were picked on validation HR@10 at epsilon 8, with an experiment script whose
    # runs draw other randomness than the stored ones (so its figures are not in
    # utility.json). Genres: seed 0, in an experiment build with 19 columns, norms
    # 1 / 3 / 5 / 10 gave 0.610 / 0.626 / 0.613 / 0.597; seeds 1 and 2: norm 3 0.630 /
    # 0.623, norm 5 0.625 / 0.620 (the learned table: 0.592 on seed 1). Genres and
    # decade, seeds 0-2: norm 3 0.685 / 0.680 / 0.680, norm 4 0.689 / 0.684 / 0.684.
    # Genres and decade train at q = 0.2 and lr 10 (the shipped default; validation,
    # seeds 0-2: 0.689 / 0.684 / 0.707 against 0.689 / 0.684 / 0.684 at q = 0.05 and
    # lr 2; q = 0.2 with lr 2 / 5 gave means 0.652 / 0.687).
    for blocks, label, scale, q, lr in (
        (("genres",), "genre", 3.0, 0.05, 2.0),
        (("genres", "decade"), "genre-decade", 4.0, 0.2, 10.0),
    ):
        # The whole listed catalogue (data.items), as the shipped job: 9,742 items
        # instead of the 9,724 rated ones, so nothing in the model depends on who
        # rated what.
        fixed = {"features": blocks, "feature_scale": scale, "q": q, "lr": lr, "items": "listed"}
        rows += [
            dataclasses.replace(r, name=r.name.replace("-prior-", f"-{label}-prior-"), **fixed)
            for r in prior_rows
        ]
        # The same model without DP (exact prior), at q = 0.05 and lr 2: without
        # per-record clipping, lr 10 at q = 0.2 overshoots (validation 0.62 against
        # 0.69 with DP), so the twin keeps the learned-table DP rows' step.
        rows.append(
            dataclasses.replace(
                prior_rows[0],
                name=f"fed-nonprivate-{label}-prior",
                epsilon=None,
                **{**fixed, "q": 0.05, "lr": 2.0},
            )
        )
    rows += [
        Row(
            name=f"dp-silo-person-e{e:g}",
            kind="federated",
            epsilon=e,
            unit="person",
            q=0.25,
            lr=2.0,
        )
        for e in EPSILONS
    ]
    rows += [
        Row(
            name=f"dp-silo-person-prior-e{e:g}",
            kind="federated",
            epsilon=e,
            unit="person",
            q=0.25,
            lr=0.2,  # validation, seed 0: HR@10 0.480 at lr 0.2, 0.469 at 0.05 (epsilon 8)
            prior_share=PRIOR_SHARE,
        )
        for e in EPSILONS
    ]
    # Secure aggregation against an unmasked exact mean, paired seed by seed.
    base = {r.name: r for r in rows}
    rows += [
        dataclasses.replace(base[name], name=f"{name}-unmasked", kind="paired", pair=name)
        for name in ("fed-nonprivate", "dp-silo-record-e8")
    ]
    rows += [
        Row(
            name=f"dp-device-record-e{e:g}",
            kind="federated",
            epsilon=e,
            partition="per_user",
            q=0.25,
            lr=1.0,
            local_epochs=10,
            cohort_rate=0.1,
        )
        for e in EPSILONS
    ]
    return rows


ROW_ORDER = [r.name for r in all_rows()]


def select_rows(patterns: list[str] | None, *, quick: bool) -> list[Row]:
    rows = all_rows()
    if patterns:
        keep = [r for r in rows if any(fnmatch.fnmatch(r.name, p) for p in patterns)]
        if not keep:
            raise SystemExit(f"no row matches {patterns}; rows: {', '.join(ROW_ORDER)}")
        return keep
    if quick:
        return [r for r in rows if r.name in QUICK_ROWS]
    return rows


def seed_bytes(*labels: object) -> bytes:
    """A 32-byte seed for :class:`~securefed.randomness.DeterministicRandom`."""
    return hashlib.sha256("/".join(str(x) for x in labels).encode()).digest()


# -- statistics ----------------------------------------------------------------------------


def mean_interval(values: list[float], *, level: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width of the two-sided t-interval (None for fewer than 2 values)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, None
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * sem


def difference_interval(
    a: list[float], b: list[float], *, level: float = 0.95
) -> tuple[float, float | None]:
    """mean(a) - mean(b) and the half-width of Welch's two-sided t-interval.

    None when either side has fewer than 2 values, or both have no spread.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return diff, None
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return diff, None
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return diff, float(stats.t.ppf(0.5 + level / 2, df) * se)


def gap_closed(value: float, popularity: float, central: float) -> float | None:
    """(row - popularity) / (central - popularity); None when the gap is zero."""
    gap = central - popularity
    if gap == 0:
        return None
    return (value - popularity) / gap


# -- data and evaluation of a global item ranking ------------------------------------------


def data_format(path: Path) -> str:
    """``csv`` for a file (columns user, item, rating, timestamp), else ``movielens``."""
    return "csv" if path.is_file() else "movielens"


def load_split(path: Path) -> Any:
    """All ratings of ``path`` as implicit interactions, leave-one-out by time.

    The same loading as :func:`securefed.federation.run_federation` (``min_rating``
    unset, the rated item set), so the baselines see the same split as every row
    but the fixed-vector ones: those load the listed catalogue (``Row.items``), the
    same interactions with 18 never-rated movies more among the candidates.
    """
    from securefed.data import leave_one_out, load_interactions_csv, load_movielens, to_implicit

    loaded = load_interactions_csv(path) if data_format(path) == "csv" else load_movielens(path)
    return leave_one_out(to_implicit(loaded))


def popularity_counts(split: Any) -> npt.NDArray[np.float64]:
    """Training interactions per item (validation and test items are not counted)."""
    counts: npt.NDArray[np.float64] = np.bincount(
        split.train.items, minlength=split.n_items
    ).astype(np.float64)
    return counts


def evaluate_item_scores(
    split: Any,
    item_scores: npt.NDArray[np.float64],
    stream: Any,
    *,
    negatives: int = SAMPLED,
    chunk: int = 1024,
) -> dict[str, float]:
    """Test metrics of one score per item, the same for every user.

    Follows :meth:`securefed.client.owner.DataOwner.evaluate` for the test split:
    users with a test item, in ascending order; the user's training items and
    validation item are excluded from the full ranking; ``negatives`` sampled
    negatives per user from the items the user never interacted with (training,
    validation and test items excluded) through ``sample_negatives(stream, ...)``.
    """
    from securefed.evaluation import MetricSums, ranks_full, ranks_sampled, sample_negatives

    n_items = split.n_items
    scores = np.asarray(item_scores, dtype=np.float64)
    if scores.shape != (n_items,):
        raise ValueError(f"expected {n_items} item scores, got shape {scores.shape}")
    users = np.flatnonzero(split.test_items >= 0)
    total = MetricSums.zero()
    for lo in range(0, users.size, chunk):
        part = users[lo : lo + chunk]
        excludes, negs = [], []
        positives = split.test_items[part]
        for u, pos in zip(part.tolist(), positives.tolist(), strict=True):
            seen = np.asarray(split.train_items_of(u))
            validation = int(split.validation_items[u])
            if validation >= 0:
                seen = np.union1d(seen, [validation])
            excludes.append(seen)
            negs.append(sample_negatives(stream, n_items, np.union1d(seen, [pos]), k=negatives))
        table = np.broadcast_to(scores, (part.size, n_items))
        full = ranks_full(table, positives, excludes)
        sampled = ranks_sampled(scores[positives], scores[np.stack(negs)])
        total = total + MetricSums.from_ranks(
            sampled=sampled,
            full=full,
            full_candidates=np.array([n_items - ex.size for ex in excludes]),
            sampled_candidates=negatives + 1,
            k=TOP_K,
        )
    means = total.means()
    return {k: means[k] for k in STORED}


_SIGMAS: dict[tuple[float, float], float] = {}


def dp_popularity_sigma(epsilon: float, delta: float = DELTA) -> float:
    """Std of the Gaussian noise per count for (epsilon, delta), L2 sensitivity 1.

    The smallest s whose single Gaussian release meets the target under dp_accounting's
    PLD accountant (add/remove one interaction: one count moves by 1).
    """
    key = (epsilon, delta)
    if key not in _SIGMAS:
        import dp_accounting
        from dp_accounting import pld

        _SIGMAS[key] = float(
            dp_accounting.calibrate_dp_mechanism(
                pld.PLDAccountant, dp_accounting.GaussianDpEvent, epsilon, delta
            )
        )
    return _SIGMAS[key]


def gaussian_epsilon(sigma: float, delta: float = DELTA) -> float:
    """Epsilon of one Gaussian release with noise multiplier ``sigma`` (PLD accountant)."""
    import dp_accounting
    from dp_accounting import pld

    accountant = pld.PLDAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma))
    return float(accountant.get_epsilon(delta))


def dp_popularity_counts(
    counts: npt.NDArray[np.float64], sigma: float, stream: Any
) -> npt.NDArray[np.float64]:
    """``counts`` plus i.i.d. N(0, sigma^2) per item from ``stream``.

    The noise goes through :class:`~securefed.privacy.noise.SecureGaussianNoise`
    (``CsprngStream.normal`` with the library's floating-point mitigation), the
    library's one path for DP noise.
    """
    import torch

    from securefed.privacy.noise import SecureGaussianNoise

    noise = SecureGaussianNoise(stream).sample(counts.size, sigma, dtype=torch.float64)
    noisy: npt.NDArray[np.float64] = counts + noise.numpy()
    return noisy


def negatives_stream(seed: int) -> Any:
    """The sampled-negative stream of the popularity rows (shared by them per seed)."""
    from securefed.privacy.noise import CsprngStream, StreamPurpose
    from securefed.randomness import DeterministicRandom

    return CsprngStream(
        DeterministicRandom(seed_bytes("utility", "negatives", seed)),
        purpose=StreamPurpose.EVALUATION_SAMPLING,
    )


def noise_stream(row: str, seed: int) -> Any:
    """The DP-noise stream of a DP-popularity row for one seed."""
    from securefed.privacy.noise import CsprngStream, StreamPurpose
    from securefed.randomness import DeterministicRandom

    return CsprngStream(
        DeterministicRandom(seed_bytes("utility", row, seed)), purpose=StreamPurpose.DP_NOISE
    )


def run_popularity(split: Any, seed: int, *, negatives: int = SAMPLED) -> dict[str, Any]:
    test = evaluate_item_scores(
        split, popularity_counts(split), negatives_stream(seed), negatives=negatives
    )
    return {"test": test, "epsilon_target": None, "epsilon_final": None}


def run_dp_popularity(
    split: Any, seed: int, epsilon: float, *, negatives: int = SAMPLED
) -> dict[str, Any]:
    sigma = dp_popularity_sigma(epsilon)
    noise = noise_stream(f"dp-popularity-e{epsilon:g}", seed)
    noisy = dp_popularity_counts(popularity_counts(split), sigma, noise)
    test = evaluate_item_scores(split, noisy, negatives_stream(seed), negatives=negatives)
    return {
        "test": test,
        "sigma": sigma,
        "epsilon_target": epsilon,
        "epsilon_final": gaussian_epsilon(sigma),
        "delta": DELTA,
    }


# -- trained rows --------------------------------------------------------------------------


def federated_config(row: Row, seed: int, passes: int, data: Path) -> Any:
    """The securefed configuration of a trained row (``central``: one silo, R local epochs)."""
    from securefed.config import parse_config

    central = row.kind == "central"
    privacy: dict[str, Any] = {"enabled": False}
    if row.private:
        privacy = {
            "enabled": True,
            "unit": row.unit,
            "target_epsilon": row.epsilon,
            "delta": DELTA,
            "clip_norm": row.clip,
            "accountant": row.accountant,
        }
    return parse_config(
        {
            "federation": {
                "federation_id": f"utility-{row.name}-{seed}",
                "rounds": 1 if central else passes,
                "cohort_rate": row.cohort_rate,
            },
            "secagg": {"quantization": {"bits": QUANT_BITS, "clip": UPDATE_CLIP}},
            "data": {
                "path": str(data),
                "format": data_format(data),
                "items": row.items,
                "partition": row.partition,
                "silos": 1 if central else SILOS,
                "seed": seed,
            },
            "model": {"kind": "mf", "dim": DIM}
            | (
                {"item_features": list(row.features), "feature_scale": row.feature_scale}
                if row.features
                else {}
            ),
            "training": {
                "local_epochs": passes if central else row.local_epochs,
                "sampling_rate": row.q,
                "learning_rate": row.lr,
                "optimizer": "sgd",
                "negatives": NEGATIVES,
            },
            "privacy": privacy,
            "update": {"clip_norm": UPDATE_CLIP},
            "strategy": {"kind": "fedavg", "server_lr": row.server_lr},
            "prior": {
                "enabled": row.prior_share is not None,
                "epsilon_share": row.prior_share if row.prior_share is not None else 0.25,
            },
            "evaluation": {
                # Cross-device: 610 owners evaluate, so only at the end; silos: every
                # round on validation (cheap), kept as the learning curve.
                "every": passes if row.partition == "per_user" else 1,
                "k": TOP_K,
                "sampled_negatives": SAMPLED,
                "split": "validation",
            },
        },
        source=f"utility/{row.name}",
    )


def run_central(row: Row, seed: int, passes: int, data: Path) -> dict[str, Any]:
    """One owner, every user, R epochs of the federation's non-private training path.

    Built by :class:`securefed.federation.Federation` with a single silo (same data,
    model, owner policy and trainer as the federated rows); the owner accepts one
    plan of ``R`` local epochs, trains from the coordinator's initial weights and
    evaluates its own model. No round goes through secure aggregation.
    """
    from securefed.config import OptimizerKind
    from securefed.federation import Federation
    from securefed.randomness import DeterministicRandom

    config = federated_config(row, seed, passes, data)
    fed = Federation(
        config, rng=DeterministicRandom(seed_bytes("utility", row.name, seed)), centralised=True
    )
    (owner,) = fed.owners.values()
    if row.prior_share is not None:  # exact counts: one owner holds every record
        fed.set_item_prior(popularity_counts(fed.split))
    plan = fed.coordinator.plan(1, unit=config.privacy.unit, noise_multiplier=0.0)
    accepted = owner.accept(plan)
    _, stats = owner.train_round(
        accepted, fed.coordinator.weights, optimizer=OptimizerKind(config.training.optimizer)
    )
    sums = owner.evaluate(None, split="test", k=TOP_K, sampled_negatives=SAMPLED)
    means = sums.means()
    return {
        "test": {k: means[k] for k in STORED},
        "epsilon_target": None,
        "epsilon_final": None,
        "owners": 1,
        "steps": stats.steps,
        "train_cpu_s": stats.seconds,
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def run_federated(
    row: Row, seed: int, passes: int, data: Path, *, verbose: bool = False
) -> dict[str, Any]:
    from securefed.federation import RoundMetrics, run_federation
    from securefed.randomness import DeterministicRandom

    config = federated_config(row, seed, passes, data)

    def on_round(m: RoundMetrics) -> None:
        if verbose:
            val = m.metrics or {}
            print(
                f"  {row.name} seed {seed} round {m.round}: cohort {m.cohort}, "
                f"eps {m.epsilon_max:.3g}, client {m.client_seconds_mean:.2f}s, "
                f"val HR@10 {val.get('sampled_hr10', float('nan')):.3f} "
                f"[{m.wall_seconds:.1f}s]",
                flush=True,
            )

    result = run_federation(
        config,
        rng=DeterministicRandom(seed_bytes("utility", row.pair or row.name, seed)),
        on_round=on_round,
    )
    if result.final_test is None:  # pragma: no cover - run_federation always evaluates
        raise RuntimeError(f"{row.name}: no final evaluation")
    rounds = result.rounds
    last = rounds[-1]
    return {
        "test": {k: result.final_test[k] for k in STORED},
        "epsilon_target": row.epsilon,
        "epsilon_final": _finite(last.epsilon_max),
        "delta": DELTA if row.private else None,
        "noise_multiplier": result.noise_multiplier,
        "owners": result.owners,
        "parameters": result.parameters,
        "cost": {
            "cohort_mean": float(np.mean([m.cohort for m in rounds])),
            "client_cpu_s": float(np.mean([m.client_seconds_mean for m in rounds])),
            "server_cpu_s": float(np.mean([m.server_seconds for m in rounds])),
            "bytes_up_per_client": float(np.mean([m.bytes_up_per_client for m in rounds])),
            "round_wall_s": float(np.mean([m.wall_seconds for m in rounds])),
        },
        "rounds": [
            {
                "round": m.round,
                "cohort": m.cohort,
                "survivors": m.survivors,
                "refused": m.refused,
                "epsilon_max": _finite(m.epsilon_max),
                "update_norm": m.update_norm,
                "l2_clipped_fraction": m.l2_clipped_fraction,
                "validation": m.metrics,
            }
            for m in rounds
        ],
    }


@contextlib.contextmanager
def unmasked_mean() -> Iterator[list[float]]:
    """Within: every training round applies the exact mean of the owners' clipped updates.

    The benchmark's own instrument, outside the library: it records what each
    owner's ``protect`` clips (and still lets it quantise, so that every random
    draw is unchanged) and, in ``Coordinator.apply``, replaces the dequantised
    aggregate's mean by the survivors' exact float mean. Yields the largest
    difference seen between the two means (per round, max over coordinates).
    """
    import securefed.server.coordinator as coordinator_module
    from securefed.client.owner import DataOwner, clip_l2

    sent: dict[int, npt.NDArray[np.float64]] = {}
    gaps: list[float] = []
    protect = DataOwner.protect
    aggregate_mean = getattr(coordinator_module, "aggregate_mean")  # noqa: B009 (no re-export)

    def recording_protect(self: Any, update: Any, spec: Any, *, clip_norm: float) -> Any:
        sent[self.owner_id] = clip_l2(update, clip_norm)[0]
        return protect(self, update, spec, clip_norm=clip_norm)

    def exact_mean(result: Any, spec: Any) -> Any:
        secure = aggregate_mean(result, spec)
        exact = np.mean([sent[i] for i in secure.survivors], axis=0)
        gaps.append(float(np.max(np.abs(exact - secure.mean))))
        sent.clear()
        return dataclasses.replace(secure, mean=exact)

    DataOwner.protect = recording_protect  # type: ignore[method-assign]
    setattr(coordinator_module, "aggregate_mean", exact_mean)  # noqa: B010
    try:
        yield gaps
    finally:
        DataOwner.protect = protect  # type: ignore[method-assign]
        setattr(coordinator_module, "aggregate_mean", aggregate_mean)  # noqa: B010


def run_paired(row: Row, seed: int, passes: int, data: Path, *, verbose: bool) -> dict[str, Any]:
    """The base row through secure aggregation, then the same seed with the exact mean."""
    if row.pair is None:
        raise ValueError(f"{row.name}: a paired row names its base row")
    base = dataclasses.replace(row, name=row.pair, kind="federated", pair=None)
    masked = run_federated(base, seed, passes, data, verbose=verbose)
    with unmasked_mean() as gaps:
        out = run_federated(base, seed, passes, data, verbose=verbose)
    out["paired_secagg_test"] = masked["test"]
    out["max_mean_difference"] = max(gaps) if gaps else None
    return out


def run_one(
    row: Row, seed: int, passes: int, data: Path, split: Any, *, verbose: bool = False
) -> dict[str, Any]:
    started = time.perf_counter()
    cpu = time.process_time()
    if row.kind == "popularity":
        out = run_popularity(split, seed)
    elif row.kind == "dp-popularity":
        assert row.epsilon is not None
        out = run_dp_popularity(split, seed, row.epsilon)
    elif row.kind == "central":
        out = run_central(row, seed, passes, data)
    elif row.kind == "paired":
        out = run_paired(row, seed, passes, data, verbose=verbose)
    else:
        out = run_federated(row, seed, passes, data, verbose=verbose)
    trained = row.kind in ("central", "federated", "paired")
    return {
        "row": row.name,
        "seed": seed,
        "passes": passes if trained else None,
        **out,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
    }


# -- results file --------------------------------------------------------------------------


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    ram = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram": ram,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "opacus": _version("opacus"),
        "dp_accounting": _version("dp-accounting"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def empty_results(passes: int, data: Path) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "passes": passes,
        "data": _display_path(data),
        "sampled_negatives": SAMPLED,
        "sessions": [],
        "runs": {},
    }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def load_results(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_results(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def record(data: dict[str, Any], run: dict[str, Any], session: int) -> None:
    data["runs"].setdefault(run["row"], {})[str(run["seed"])] = {**run, "session": session}


# -- markdown ------------------------------------------------------------------------------


def _cell(values: list[float], digits: int = 3) -> str:
    mean, half = mean_interval(values)
    if half is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _eps_cell(runs: list[dict[str, Any]]) -> str:
    target = runs[0].get("epsilon_target")
    if target is None:
        return "∞ (non-private)"
    finals = [r["epsilon_final"] for r in runs if r.get("epsilon_final") is not None]
    final = f"{max(finals):.3g}" if finals else "?"
    return f"{target:g} / {final}"


def _fmt_bytes(x: float) -> str:
    return f"{x / 1e6:.2f} MB" if x >= 1e6 else f"{x / 1e3:.1f} kB"


def summarise(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row (table order): seeds, seed means and intervals, gap closed, cost."""
    rows = []
    for name in [*ROW_ORDER, *sorted(set(data["runs"]) - set(ROW_ORDER))]:
        by_seed = data["runs"].get(name)
        if not by_seed:
            continue
        runs = [by_seed[s] for s in sorted(by_seed, key=int)]
        summary: dict[str, Any] = {
            "row": name,
            "runs": runs,
            "seeds": [r["seed"] for r in runs],
            "mean": {k: float(np.mean([r["test"][k] for r in runs])) for k in METRICS},
        }
        rows.append(summary)
    means = {r["row"]: r["mean"] for r in rows}
    for r in rows:
        r["gap"] = {}
        for k in ("sampled_hr10", "full_hr10"):
            if "popularity" in means and "central" in means:
                r["gap"][k] = gap_closed(r["mean"][k], means["popularity"][k], means["central"][k])
            else:
                r["gap"][k] = None
    return rows


def markdown(data: dict[str, Any]) -> str:
    rows = summarise(data)
    passes = data["passes"]
    k = data.get("sampled_negatives", SAMPLED)
    sampled = f"sampled ({k} negatives)"
    lines = [
        BEGIN,
        "## Utility (`benchmarks/utility.py`)",
        "",
    ]
    for s in data["sessions"]:
        m = s["machine"]
        lines.append(
            f"Command: `{s['command']}` — {s['runtime_s'] / 60:.1f} min, {s['runs']} run(s).  "
        )
        lines.append(
            f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, shared and noisy; "
            f"Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, "
            f"opacus {m['opacus']}, dp-accounting {m['dp_accounting']}; {m['date']}.  "
        )
    lines += [
        "",
        f"Data: `{data['data']}`, every rating as an implicit interaction, leave-one-out by "
        "time (test item = the user's last interaction, validation item = the one before). "
        f"Every trained row fits MF (dim {DIM}, {NEGATIVES} uniform negatives per positive) "
        f"with R = {passes} passes over the training data. Test metrics over the users with "
        f"a test item; mean ± 95% t-interval over seeds (seeds 0, 1, …; no interval with one "
        f"seed). Sampled: the test item among {k} items drawn uniformly from those the "
        "user never interacted with; full: among every item except the user's training and "
        "validation items. Ties count against the test item. ε: target / largest spent "
        f"(δ = {DELTA:g}).",
        "",
        f"| row | setting | ε target / final max | HR@10 {sampled} | NDCG@10 {sampled} "
        "| HR@10 full ranking | NDCG@10 full ranking | AUC full ranking "
        f"| gap closed, HR@10 {sampled} | gap closed, HR@10 full ranking | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_name = {r.name: r for r in all_rows()}
    for r in rows:
        runs = r["runs"]
        row = by_name.get(r["row"])
        gap = [f"{g:+.2f}" if g is not None else "—" for g in r["gap"].values()]
        cells = [_cell([x["test"][m] for x in runs]) for m in METRICS]
        lines.append(
            f"| {r['row']} | {row.setting() if row else ''} | {_eps_cell(runs)} "
            f"| {' | '.join(cells)} | {gap[0]} | {gap[1]} | {len(runs)} |"
        )
    costly = [r for r in rows if r["runs"][0].get("cost") or r["row"] == "central"]
    if costly:
        lines += [
            "",
            "Cost. Per round, averaged over rounds and seeds: client CPU = mean over the "
            "round's clients of local training, clipping, quantisation and the client's "
            "secure-aggregation calls (`RoundMetrics.client_seconds_mean`); server CPU = the "
            "secure-aggregation server; bytes up = what each client sends in the round. "
            "Wall = the whole run (rounds, every evaluation, setup).",
            "",
            "| row | owners | clients / round | noise multiplier σ | client CPU / round (s) "
            "| server CPU / round (s) | bytes up / client / round | wall / run (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in costly:
            runs = r["runs"]
            wall = float(np.mean([x["wall_s"] for x in runs]))
            if r["row"] == "central":
                cpu = float(np.mean([x["train_cpu_s"] for x in runs]))
                lines.append(
                    f"| central | 1 | — | — | {cpu:.1f} (all {passes} epochs, one owner) "
                    f"| — | — | {wall:.0f} |"
                )
                continue
            c = {k: float(np.mean([x["cost"][k] for x in runs])) for k in runs[0]["cost"]}
            sigma = float(np.mean([x["noise_multiplier"] for x in runs]))
            lines.append(
                f"| {r['row']} | {runs[0]['owners']} | {c['cohort_mean']:.1f} "
                f"| {f'{sigma:.3f}' if sigma else '— (non-private)'} "
                f"| {c['client_cpu_s']:.2f} | {c['server_cpu_s']:.3f} "
                f"| {_fmt_bytes(c['bytes_up_per_client'])} | {wall:.0f} |"
            )
    lines += targets(rows)
    lines += ["", *notes(data, rows)]
    lines.append(END)
    return "\n".join(lines) + "\n"


#: The issue's bars: non-private federated gap closed, and DP at epsilon 8 above both
#: popularity baselines on every metric (gap closed 0.40 the target, 0.60 the stretch).
NONPRIVATE_GAP_BARS = {"sampled_hr10": 0.8, "sampled_ndcg10": 0.8, "full_hr10": 0.6,
                       "full_ndcg10": 0.6}  # fmt: skip
GAP_METRICS = ("sampled_hr10", "sampled_ndcg10", "full_hr10", "full_ndcg10")
DP_TARGET_ROWS = (
    "dp-silo-record-e8",
    "dp-silo-record-prior-e8",
    "dp-silo-record-prior-pld-e8",
    "dp-silo-record-genre-prior-e8",
    "dp-silo-record-genre-decade-prior-e8",
)
NONPRIVATE_TARGET_ROWS = ("fed-nonprivate", "fed-nonprivate-prior")


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's utility bars, each against the measured seeds (omitted rows skipped)."""
    by = {r["row"]: r for r in rows}
    if "popularity" not in by or "central" not in by:
        return []

    def values(name: str, metric: str) -> list[float]:
        return [x["test"][metric] for x in by[name]["runs"]]

    def gap(name: str, metric: str) -> float | None:
        pop, cen = by["popularity"]["mean"][metric], by["central"]["mean"][metric]
        return gap_closed(by[name]["mean"][metric], pop, cen)

    labels = {
        "sampled_hr10": "HR@10 s.",
        "sampled_ndcg10": "NDCG@10 s.",
        "full_hr10": "HR@10 full",
        "full_ndcg10": "NDCG@10 full",
        "full_auc": "AUC",
    }
    header = " | ".join(
        f"gap closed, {labels[m]} (bar {NONPRIVATE_GAP_BARS[m]:.2f})" for m in GAP_METRICS
    )
    out = [
        "",
        "Targets. Gap closed = (row − popularity) / (central − popularity) on seed means "
        "(s. = sampled, 99 negatives; full = full ranking). Differences: row mean − bar "
        "mean with the half-width of Welch's 95% interval; an interval that contains 0 "
        "means the seeds cannot tell the two apart. Bars are judged on the seed means.",
        "",
        f"| row | {header} | bars met |",
        "|---|---|---|---|---|---|",
    ]
    for name in NONPRIVATE_TARGET_ROWS:
        if name not in by:
            continue
        gaps = [gap(name, m) for m in GAP_METRICS]
        met = sum(
            g is not None and g >= NONPRIVATE_GAP_BARS[m]
            for g, m in zip(gaps, GAP_METRICS, strict=True)
        )
        cells = [f"{g:.3f}" if g is not None else "—" for g in gaps]
        out.append(f"| {name} ({len(by[name]['runs'])} seeds) | {' | '.join(cells)} "
                   f"| {met} / {len(GAP_METRICS)} |")  # fmt: skip
    paired = [r for r in rows if all("paired_secagg_test" in x for x in r["runs"])]
    if paired:
        out += [
            "",
            "Secure aggregation against an unmasked exact mean, the same seeds (bar: HR@10 "
            "moves by < 0.005): abs. Δ = |SecAgg run − unmasked run| per seed; the largest "
            "mean difference is, within the unmasked run, the largest gap between the "
            "secure aggregate and the exact mean of the same round (any round, any "
            "coordinate). One HR@10 flip among the ~610 test users is 0.0016.",
            "",
            "| pair | seeds | abs. Δ HR@10 s., mean / max | abs. Δ HR@10 full, mean / max "
            "| abs. Δ NDCG@10 s., max | largest mean difference | bar met |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in paired:
            deltas = {
                m: [abs(x["paired_secagg_test"][m] - x["test"][m]) for x in r["runs"]]
                for m in ("sampled_hr10", "full_hr10", "sampled_ndcg10")
            }
            applied: list[float] = [
                x["max_mean_difference"]
                for x in r["runs"]
                if x.get("max_mean_difference") is not None
            ]
            worst = max(max(deltas["sampled_hr10"]), max(deltas["full_hr10"]))
            out.append(
                f"| {r['row']} | {len(r['runs'])} "
                f"| {np.mean(deltas['sampled_hr10']):.4f} / {max(deltas['sampled_hr10']):.4f} "
                f"| {np.mean(deltas['full_hr10']):.4f} / {max(deltas['full_hr10']):.4f} "
                f"| {max(deltas['sampled_ndcg10']):.4f} "
                f"| {max(applied):.2g} | {'yes' if worst < 0.005 else 'no'} |"
                if applied
                else f"| {r['row']} | {len(r['runs'])} | — | — | — | — | — |"
            )
    bars = [b for b in ("popularity", "dp-popularity-e8") if b in by]
    dp_rows = [n for n in DP_TARGET_ROWS if n in by]
    if bars and dp_rows:
        out += [
            "",
            "| row − bar | "
            + " | ".join(labels[m] for m in METRICS)
            + " | mean above on | gap closed, HR@10 s. / full (target 0.40) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in dp_rows:
            for bar in bars:
                cells, above = [], 0
                for m in METRICS:
                    d, half = difference_interval(values(name, m), values(bar, m))
                    above += d > 0
                    cells.append(f"{d:+.4f}" + (f" ± {half:.4f}" if half is not None else ""))
                g = [gap(name, m) for m in ("sampled_hr10", "full_hr10")]
                gap_text = " / ".join(f"{x:.2f}" if x is not None else "—" for x in g)
                out.append(
                    f"| {name} ({len(by[name]['runs'])}) − {bar} ({len(by[bar]['runs'])}) "
                    f"| {' | '.join(cells)} | {above} / {len(METRICS)} | {gap_text} |"
                )
    return out


def notes(data: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    present = {r["row"] for r in rows}
    out = ["Notes:", ""]
    gap = "- Gap closed = (row − popularity) / (central − popularity) on the seed means; "
    gap += "negative means worse than ranking by popularity."
    means = {r["row"]: r["mean"] for r in rows}
    if "popularity" in means and "central" in means:
        d = {m: means["central"][m] - means["popularity"][m] for m in ("sampled_hr10", "full_hr10")}
        gap += (
            f" The gap itself is {d['sampled_hr10']:+.3f} HR@10 sampled and "
            f"{d['full_hr10']:+.3f} HR@10 full ranking: a share of a gap of the size of the "
            "seed-to-seed noise is itself mostly noise."
        )
    out.append(gap)
    if "popularity" in present:
        out.append(
            "- popularity: items ranked by their training count, identical for every user; "
            "items with equal counts tie, and ties count against the test item. It and the "
            "DP-popularity rows draw the same sampled negatives for a given seed."
        )
    dp_pop = [r for r in rows if r["row"].startswith("dp-popularity-")]
    if dp_pop:
        sig = ", ".join(
            f"s = {r['runs'][0]['sigma']:.3f} at ε = {r['runs'][0]['epsilon_target']:g}"
            for r in dp_pop
        )
        out.append(
            "- DP popularity: every item count plus N(0, s²), one release, record-level "
            "(adding or removing one interaction moves one count by 1: L2 sensitivity 1); "
            f"s calibrated with dp_accounting's PLD accountant at δ = {DELTA:g}: {sig}. "
            "Noise from `SecureGaussianNoise` over a `CsprngStream`."
        )
    if "central" in present:
        out.append(
            "- central: one data owner holding every user, non-private, trained through "
            "the federation's own `DataOwner` / `DpTrainer.train_nonprivate` (R epochs of "
            "Poisson batches, SGD); no secure aggregation (one owner is the server)."
        )
    if any(r["row"].startswith(("fed-", "dp-silo", "dp-device")) for r in rows):
        out.append(
            f"- Federated rows: `run_federation` (secure aggregation on every round, "
            f"{QUANT_BITS}-bit quantisation, update L2 clip {UPDATE_CLIP:g}), FedAvg with "
            f"server lr 1, {SILOS} IID silos (`into_silos`, seed = benchmark seed) unless "
            "stated; R rounds of 1 local epoch. DP rows calibrate one noise multiplier so "
            "that each owner spends at most the target over all R rounds, assuming it takes "
            "part in every round; ε final is the largest any owner spent on the row's "
            "accountant (RDP, an upper bound, unless the row says PLD). Person-level rows "
            "sample users (rate 0.25 of a silo's persons) and clip per person."
        )
    if any(r["row"].startswith("dp-device") for r in rows):
        out.append(
            "- Cross-device rows: one owner per user, each round a Poisson cohort at rate 0.1, "
            "10 local epochs (so each user's data is passed about R times in expectation). "
            "Record-level accounting takes no amplification from cohort sampling (the server "
            "picks and sees the cohort): the worst case, every owner in every round, is what "
            "is calibrated, so most owners spend well under the target. Evaluation only after "
            "the last round."
        )
    out.append(
        "- The held-out metrics themselves are not differentially private (they are not "
        "noised); they leave the owners only as secure-aggregation sums."
    )
    return out


# -- driver --------------------------------------------------------------------------------


def _quiet() -> None:
    # A script may configure logging; the library never does.
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp_accounting: fractional RDP orders
    warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*", category=UserWarning)


def _progress(run: dict[str, Any]) -> str:
    t = run["test"]
    eps = run.get("epsilon_final")
    target = run.get("epsilon_target")
    eps_text = "inf" if target is None else f"{eps:.3g} (target {target:g})"
    return (
        f"{run['row']:<20} seed {run['seed']}  HR@10 sampled {t['sampled_hr10']:.3f} "
        f"full {t['full_hr10']:.3f}  NDCG@10 sampled {t['sampled_ndcg10']:.3f}  "
        f"eps {eps_text}  [{run['wall_s']:.0f}s]"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"1 seed, R=2, rows {', '.join(QUICK_ROWS)}"
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="save the JSON after every run and update BENCHMARKS.md",
    )
    parser.add_argument(
        "--write-only",
        action="store_true",
        help="re-render BENCHMARKS.md from the JSON; run nothing",
    )
    parser.add_argument("--rows", nargs="+", metavar="GLOB", help="run only rows matching")
    parser.add_argument("--seeds", type=int, help=f"seeds per row (default {DEFAULT_SEEDS})")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--passes", type=int, help=f"R (default {DEFAULT_PASSES})")
    parser.add_argument(
        "--resume", action="store_true", help="with --write: skip runs the JSON already holds"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="MovieLens folder, or a CSV file user,item,rating,timestamp",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results JSON to merge into")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD, help="file to update")
    parser.add_argument("--verbose", action="store_true", help="one line per federated round")
    args = parser.parse_args(argv)
    _quiet()

    if args.write_only:
        existing = load_results(args.results)
        if existing is None:
            raise SystemExit(f"{args.results}: no results to render")
        section = markdown(existing)
        print(section)
        write_section(args.markdown, BEGIN, END, section)
        return

    seeds = args.seeds if args.seeds is not None else (1 if args.quick else DEFAULT_SEEDS)
    passes = args.passes if args.passes is not None else (2 if args.quick else DEFAULT_PASSES)
    if seeds < 1 or passes < 1 or args.first_seed < 0:
        raise SystemExit("--seeds and --passes must be at least 1, --first-seed at least 0")
    rows = select_rows(args.rows, quick=args.quick)
    data_path = args.data.resolve()

    data = empty_results(passes, data_path)
    if args.write:
        existing = load_results(args.results)
        if existing is not None:
            if existing.get("schema") != SCHEMA:
                raise SystemExit(
                    f"{args.results}: schema {existing.get('schema')}, expected "
                    f"{SCHEMA}; move it away to start afresh"
                )
            if existing["passes"] != passes or existing["data"] != data["data"]:
                raise SystemExit(
                    f"{args.results} holds runs with R = {existing['passes']} on "
                    f"{existing['data']}; rerun with the same --passes/--data to merge, or "
                    "move the file away to start afresh"
                )
            data = existing
    command = "python benchmarks/utility.py " + " ".join(sys.argv[1:] if argv is None else argv)
    session = len(data["sessions"])
    data["sessions"].append(
        {"command": command.strip(), "machine": machine(), "runtime_s": 0.0, "runs": 0}
    )

    split = load_split(data_path) if any(r.kind.endswith("popularity") for r in rows) else None
    started = time.perf_counter()
    done = 0
    for row in rows:
        for seed in range(args.first_seed, args.first_seed + seeds):
            if args.resume and str(seed) in data["runs"].get(row.name, {}):
                print(f"{row.name:<20} seed {seed}  already in {args.results.name}; skipped")
                continue
            run = run_one(row, seed, passes, data_path, split, verbose=args.verbose)
            record(data, run, session)
            done += 1
            print(_progress(run), flush=True)
            data["sessions"][session]["runtime_s"] = time.perf_counter() - started
            data["sessions"][session]["runs"] = done
            if args.write:
                save_results(data, args.results)
    if done == 0:
        data["sessions"].pop()  # nothing ran: no command to credit
        if not data["runs"]:
            raise SystemExit("nothing ran and no earlier results to render")
    section = markdown(data)
    print(section)
    if args.write:
        save_results(data, args.results)
        write_section(args.markdown, BEGIN, END, section)
        print(f"wrote {args.results} and {args.markdown}")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
