"""Privacy accountants behind one interface: RDP, PLD (dp_accounting) and PRV (Opacus).

Every :class:`~securefed.privacy.events.PrivacyEvent` securefed emits is, after
unfolding compositions, a multiset of Poisson-subsampled Gaussian mechanisms
("atoms", keyed by sampling rate and noise multiplier). Composition is
commutative, so each backend counts that multiset:

* **RDP** (the online default): dp_accounting's RDP of the subsampled Gaussian
  (Mironov, Talwar, Zhang 2019), one cached curve per atom; composing is a vector
  add, a query converts once (Canonne, Kamath, Steinke 2020, Prop. 12 as in
  dp_accounting). Cheap and an upper bound, but loose.
* **PLD**: dp_accounting's privacy loss distributions, pessimistic
  connect-the-dots discretisation (Doroshenko et al. 2022) with
  :data:`PLD_VALUE_DISCRETIZATION_INTERVAL`: an upper bound, close to tight.
  Each atom's one-step PLD is cached and self-composed by FFT exponentiation at
  query time; the composed PLD is cached until the history changes.
* **PRV**: Opacus's privacy random variables (Gopi, Lee, Wutschitz 2021), which
  handles only Poisson-subsampled Gaussian histories; it reports the upper end
  of its error interval (estimate at ``delta - delta/1000`` plus
  :data:`PRV_EPS_ERROR`).

The backends are independent implementations of different analyses, so one can
audit another (:func:`independent_backend`, :func:`audit_tolerance`).
"""

from __future__ import annotations

import copy as _copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from functools import lru_cache
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, rdp
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from securefed.privacy.events import (
    ClientGaussianEvent,
    ComposedEvent,
    DpSgdEvent,
    PrivacyEvent,
    PrivacyUnit,
    SelfComposedEvent,
)

__all__ = [
    "ONLINE_DEFAULT",
    "PLD_VALUE_DISCRETIZATION_INTERVAL",
    "PRV_EPS_ERROR",
    "Accountant",
    "Backend",
    "PldAccountant",
    "PrvAccountant",
    "RdpAccountant",
    "audit_tolerance",
    "backend_error_bound",
    "epsilon_for",
    "independent_backend",
    "new_accountant",
]


class Backend(Enum):
    """An accounting method (and the library that implements it)."""

    RDP = "rdp"
    """Renyi DP, dp_accounting ``RdpAccountant`` curves."""
    PLD = "pld"
    """Privacy loss distributions, dp_accounting ``pld``."""
    PRV = "prv"
    """Privacy random variables, Opacus ``analysis.prv``."""


ONLINE_DEFAULT: Backend = Backend.RDP
"""The backend budgets are enforced on: an upper bound with cheap incremental composition."""

PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4
"""PLD loss-grid step (nats). dp_accounting's default: at 1e-3 the pessimistic
estimate drifts up by up to 0.16 at small epsilon over 1e5 steps (measured, see
benchmarks/results/accounting.md); 1e-4 stays within about 0.01 of PRV, and a
1e5-step history still takes about a second."""

PLD_MAX_EPSILON = 100.0
"""PLD refuses (ValueError) a history whose RDP epsilon exceeds this: its loss grid
would not fit in memory, and such a history is far beyond any budget."""


def pld_interval(total_steps: int) -> float:
    """The PLD loss-grid step for a history of ``total_steps`` steps.

    ``PLD_VALUE_DISCRETIZATION_INTERVAL`` up to 1e5 steps, then ten times finer per
    decade (1e-5 up to 1e6, 1e-6 beyond): the pessimistic rounding's upward drift
    grows with the number of compositions (at 1e-4 nats, 1e6 tiny-loss steps
    over-state epsilon by about 0.05, beyond the audit tolerance).
    """
    if total_steps <= 100_000:
        return PLD_VALUE_DISCRETIZATION_INTERVAL
    if total_steps <= 1_000_000:
        return PLD_VALUE_DISCRETIZATION_INTERVAL / 10
    return PLD_VALUE_DISCRETIZATION_INTERVAL / 100


MAX_TOTAL_STEPS = 1 << 53
"""Most steps a history may hold: beyond it counts and float sums lose precision."""

PRV_EPS_ERROR = 0.01
"""Opacus PRV ``eps_error`` (its default): the reported upper bound sits up to
this much above the estimate; ``delta_error`` is Opacus's default ``delta/1000``."""

_PRV_MAX_DOMAIN = 1 << 25
"""Largest PRV discretisation grid allowed (points): a few arrays of this many
float64 values (~270 MB each) and tens of seconds of FFT; beyond it the history
is refused with a ValueError rather than exhausting memory."""

_Atom = tuple[float, float]
"""One Poisson-subsampled Gaussian step: (sampling rate, noise multiplier)."""


def independent_backend(online: Backend) -> Backend:
    """A backend other than ``online`` whose epsilon is not expected to exceed online's.

    Used to audit the online accountant with an independent implementation:
    RDP -> PLD, PRV -> PLD, PLD -> PRV. PLD and PRV agree within
    :func:`audit_tolerance`, and both are tighter than RDP except at tiny epsilon,
    where PLD's discretisation drift (over ~1e5 steps) or PRV's additive
    ``eps_error`` can put them up to ~0.01 above RDP (measured; within the
    tolerance).
    """
    if not isinstance(online, Backend):
        raise TypeError("online must be a Backend")
    return Backend.PRV if online is Backend.PLD else Backend.PLD


def audit_tolerance(epsilon: float) -> float:
    """How far two backends may disagree on ``epsilon``: ``max(1% of epsilon, 0.02)``.

    Covers PRV's additive ``eps_error`` (0.01) and PLD's discretisation
    (measured in benchmarks/results/accounting.md).
    """
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError("epsilon must be non-negative and finite")
    return max(0.01 * epsilon, 0.02)


def backend_error_bound(backend: Backend) -> str:
    """One sentence stating the backend's discretisation or error bound."""
    if backend is Backend.RDP:
        return (
            "RDP: an upper bound with no discretisation error beyond the finite order "
            "grid (which only increases epsilon); loose: a median 10% above PLD on the "
            "benchmark grid where PLD >= 0.5, and far more at tiny epsilon."
        )
    if backend is Backend.PLD:
        return (
            "PLD: a pessimistic (upper-bound) connect-the-dots discretisation at "
            f"{PLD_VALUE_DISCRETIZATION_INTERVAL:g} nats up to 1e5 steps (ten times finer "
            "per further decade) whose overestimate grows with the number of compositions "
            "(up to ~0.02 over 1e5 tiny-loss steps), with at most 1e-15 tail mass per "
            "composition moved to the infinite loss (counted in delta); histories whose "
            f"RDP epsilon exceeds {PLD_MAX_EPSILON:g} are refused."
        )
    if backend is Backend.PRV:
        return (
            "PRV: Opacus's upper end of the Gopi et al. 2021 error interval, the estimate "
            f"at delta - delta/1000 plus eps_error = {PRV_EPS_ERROR:g}, valid when its "
            "truncation domain is safe (Opacus's domain rule follows the authors' code)."
        )
    raise TypeError("backend must be a Backend")


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise TypeError("delta must be a float")
    if not (math.isfinite(delta) and 0.0 < delta < 1.0):
        raise ValueError("delta must be in (0, 1)")


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("count must be a non-negative integer")


def _unfold(event: PrivacyEvent, times: int, into: dict[_Atom, int]) -> None:
    if isinstance(event, DpSgdEvent):
        atom = (float(event.sampling_rate), float(event.noise_multiplier))
        n = event.steps * times
    elif isinstance(event, ClientGaussianEvent):
        atom = (float(event.cohort_rate), float(event.noise_multiplier))
        n = event.rounds * times
    elif isinstance(event, ComposedEvent):
        for inner in event.events:
            _unfold(inner, times, into)
        return
    elif isinstance(event, SelfComposedEvent):
        _unfold(event.event, times * event.count, into)
        return
    else:
        raise TypeError(f"unsupported privacy event: {type(event).__name__}")
    if n:
        into[atom] = into.get(atom, 0) + n


@lru_cache(maxsize=1024)
def _atoms(event: PrivacyEvent) -> tuple[tuple[_Atom, int], ...]:
    """``event`` as (atom, count) pairs, sorted, zero counts dropped (cached per event)."""
    counts: dict[_Atom, int] = {}
    _unfold(event, 1, counts)
    return tuple(sorted(counts.items()))


def _is_event(event: object) -> bool:
    return isinstance(event, DpSgdEvent | ClientGaussianEvent | ComposedEvent | SelfComposedEvent)


class Accountant(ABC):
    """One backend's incremental accountant for one privacy unit.

    Holds the composed history as a multiset of subsampled-Gaussian atoms; the
    first composed event fixes the privacy unit and later events must match it.
    """

    backend: ClassVar[Backend]

    def __init__(self) -> None:
        self._counts: dict[_Atom, int] = {}
        self._unit: PrivacyUnit | None = None

    @property
    def unit(self) -> PrivacyUnit | None:
        """The privacy unit of the composed events (None before the first)."""
        return self._unit

    @property
    def steps(self) -> int:
        """Total number of subsampled-Gaussian steps composed."""
        return sum(self._counts.values())

    def compose(self, event: PrivacyEvent, count: int = 1) -> None:
        """Compose ``event`` ``count`` times into the history.

        Raises:
            TypeError: ``event`` is not a privacy event this backend supports.
            ValueError: ``count`` is negative, or ``event``'s privacy unit differs
                from the events composed so far.
        """
        if not _is_event(event):
            raise TypeError(f"{self.backend.value}: not a privacy event: {type(event).__name__}")
        _check_count(count)
        if self._unit is not None and event.unit is not self._unit:
            raise ValueError(
                f"{self.backend.value}: event privacy unit {event.unit.value!r} does not "
                f"match the accountant's {self._unit.value!r}"
            )
        atoms = _atoms(event)
        self._unit = event.unit
        if count == 0 or not atoms:
            return
        scaled = tuple((atom, n * count) for atom, n in atoms)
        for atom, n in scaled:
            self._counts[atom] = self._counts.get(atom, 0) + n
        self._added(scaled)

    def epsilon(self, delta: float) -> float:
        """Epsilon of the history at ``delta`` (0.0 before anything is composed).

        Raises:
            ValueError: ``delta`` is not in (0, 1), or the backend cannot evaluate
                this history (named in the message): more than ``MAX_TOTAL_STEPS``
                steps, a loss range beyond what it can hold, or no finite result.
        """
        _check_delta(delta)
        if not self._counts:
            return 0.0
        if self.steps > MAX_TOTAL_STEPS:
            raise ValueError(
                f"{self.backend.value}: {self.steps} steps is beyond what the accountant "
                f"resolves (at most {MAX_TOTAL_STEPS})"
            )
        try:
            value = float(self._epsilon(delta))
        except MemoryError:
            raise ValueError(
                f"{self.backend.value}: this history's loss range does not fit in memory"
            ) from None
        if math.isnan(value):
            raise ValueError(f"{self.backend.value}: the accountant returned NaN")
        return max(0.0, value)

    def copy(self) -> Self:
        """An independent copy (for dry runs); cached immutable state is shared."""
        clone = _copy.copy(self)
        clone._counts = dict(self._counts)
        clone._detach()
        return clone

    @abstractmethod
    def _added(self, atoms: tuple[tuple[_Atom, int], ...]) -> None:
        """Update backend state after ``atoms`` joined ``self._counts``."""

    @abstractmethod
    def _epsilon(self, delta: float) -> float:
        """Epsilon of the non-empty history at a validated ``delta``."""

    def _detach(self) -> None:  # noqa: B027 - optional hook, default: nothing mutable
        """Replace mutable backend state with copies (called on a fresh copy)."""


# --- RDP --------------------------------------------------------------------------------

_RDP_ORDERS: npt.NDArray[np.float64] = np.array(
    rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=np.float64
)
_RDP_ORDERS.setflags(write=False)


@lru_cache(maxsize=256)
def _rdp_curve(sampling_rate: float, noise_multiplier: float) -> npt.NDArray[np.float64]:
    """RDP of one Poisson-subsampled Gaussian step at each order (read-only, cached)."""
    acc = rdp.RdpAccountant(orders=_RDP_ORDERS)
    acc.compose(PoissonSampledDpEvent(sampling_rate, GaussianDpEvent(noise_multiplier)))
    # dp_accounting's per-step RDP can come out as -1e-25 at high orders for tiny q;
    # RDP is never negative, and a negative value summed over huge counts would
    # lower epsilon (adding events must never do that).
    curve: npt.NDArray[np.float64] = np.maximum(np.asarray(acc.rdp, dtype=np.float64), 0.0)
    curve.setflags(write=False)
    return curve


class RdpAccountant(Accountant):
    """RDP: a running sum of cached per-atom curves; composing never revisits history."""

    backend = Backend.RDP

    def __init__(self) -> None:
        super().__init__()
        self._rdp = np.zeros_like(_RDP_ORDERS)

    @property
    def orders(self) -> npt.NDArray[np.float64]:
        """The RDP orders (dp_accounting's defaults)."""
        return _RDP_ORDERS

    @property
    def curve(self) -> npt.NDArray[np.float64]:
        """The composed RDP at each order (a copy)."""
        return self._rdp.copy()

    def _added(self, atoms: tuple[tuple[_Atom, int], ...]) -> None:
        for (q, sigma), n in atoms:
            self._rdp += n * _rdp_curve(q, sigma)

    def _epsilon(self, delta: float) -> float:
        eps, _ = rdp.compute_epsilon(_RDP_ORDERS, self._rdp, delta)
        return float(eps)

    def _detach(self) -> None:
        self._rdp = self._rdp.copy()


# --- PLD --------------------------------------------------------------------------------


def _gaussian_pld(noise_multiplier: float, sampling_rate: float, interval: float) -> Any:
    return pld_lib.from_gaussian_mechanism(
        standard_deviation=noise_multiplier,
        sampling_prob=sampling_rate,
        value_discretization_interval=interval,
        pessimistic_estimate=True,
        use_connect_dots=True,
    )


@lru_cache(maxsize=64)
def _pld_step(sampling_rate: float, noise_multiplier: float, interval: float) -> Any:
    """The (immutable) PLD of one subsampled Gaussian step, cached.

    Building it costs 0.05-1.5 s, about as much as self-composing it 1e5 times.
    """
    return _gaussian_pld(noise_multiplier, sampling_rate, interval)


@lru_cache(maxsize=16)
def _pld_atom(atom: _Atom, count: int, interval: float) -> Any:
    """The PLD of ``count`` steps of one atom, cached across accountants.

    An audit re-accounts many owners whose histories share (atom, count) pairs;
    PLD objects are immutable, so sharing them is safe. Few are kept: each holds
    a loss PMF of up to tens of MB.
    """
    q, sigma = atom
    if q == 1.0:
        # count Gaussians of std sigma = one Gaussian of std sigma / sqrt(count), exactly;
        # no discretisation error accumulates over the compositions.
        return _gaussian_pld(sigma / math.sqrt(count), 1.0, interval)
    return _pld_step(q, sigma, interval).self_compose(count)


class PldAccountant(Accountant):
    """PLD: per-atom PLDs self-composed by FFT exponentiation, composed and cached.

    Composing is O(1); the first query after a change rebuilds only the atoms
    whose count changed (one FFT at the final size each) and composes the
    distinct atoms, so its cost does not grow with the number of rounds. PLD
    objects are immutable, so copies share them.
    """

    backend = Backend.PLD

    def __init__(self) -> None:
        super().__init__()
        self._atom_plds: dict[_Atom, tuple[int, float, Any]] = {}
        self._composed: Any = None

    def _added(self, atoms: tuple[tuple[_Atom, int], ...]) -> None:
        self._composed = None

    def _detach(self) -> None:
        self._atom_plds = dict(self._atom_plds)

    def distribution(self) -> Any:
        """The composed dp_accounting ``PrivacyLossDistribution`` (None when empty)."""
        if self._composed is None and self._counts:
            self._check_range()
            interval = pld_interval(self.steps)
            composed = None
            for atom, n in sorted(self._counts.items()):
                cached = self._atom_plds.get(atom)
                if cached is None or cached[0] != n or cached[1] != interval:
                    cached = (n, interval, _pld_atom(atom, n, interval))
                    self._atom_plds[atom] = cached
                composed = cached[2] if composed is None else composed.compose(cached[2])
            self._composed = composed
        return self._composed

    def _check_range(self) -> None:
        """Refuse a history whose loss grid would not fit: RDP bounds its epsilon."""
        curve = sum(
            (n * _rdp_curve(q, sigma) for (q, sigma), n in self._counts.items()),
            np.zeros_like(_RDP_ORDERS),
        )
        rdp_epsilon, _ = rdp.compute_epsilon(_RDP_ORDERS, curve, 1e-5)
        if not rdp_epsilon <= PLD_MAX_EPSILON:
            raise ValueError(
                f"pld: the history's RDP epsilon at delta 1e-5 is {rdp_epsilon:.4g}, beyond "
                f"the {PLD_MAX_EPSILON:g} PLD evaluates"
            )

    def _epsilon(self, delta: float) -> float:
        return float(self.distribution().get_epsilon_for_delta(delta))


# --- PRV --------------------------------------------------------------------------------


class PrvAccountant(Accountant):
    """PRV (Opacus): evaluated from the (sigma, q, steps) history at query time.

    Opacus sizes its grid from the whole history (mesh ~ 1/sqrt(total steps)),
    so there is no incremental state: composing is O(1), and each query
    discretises and convolves once. Results are cached per (history, delta).

    Raises (from :meth:`epsilon`):
        ValueError: the history is outside PRV's numerical domain (grid too large,
            delta too small for the float precision, discretisation failure).
    """

    backend = Backend.PRV

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[float, float] = {}

    def _added(self, atoms: tuple[tuple[_Atom, int], ...]) -> None:
        self._cache = {}

    def _detach(self) -> None:
        self._cache = dict(self._cache)

    def history(self) -> list[tuple[float, float, int]]:
        """The history in Opacus's form: ``(noise_multiplier, sample_rate, steps)``."""
        return [(sigma, q, n) for (q, sigma), n in sorted(self._counts.items())]

    def _epsilon(self, delta: float) -> float:
        if delta not in self._cache:
            self._cache[delta] = self._compute(delta)
        return self._cache[delta]

    def _compute(self, delta: float) -> float:
        from opacus.accountants import PRVAccountant as OpacusPrv  # lazy: pulls in torch
        from opacus.accountants.analysis import prv as opacus_prv

        history = self.history()
        delta_error = delta / 1000  # Opacus's default
        total = sum(n for _, _, n in history)
        try:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                half_width = opacus_prv.compute_safe_domain_size(
                    prvs=[opacus_prv.PoissonSubsampledGaussianPRV(q, s) for s, q, _ in history],
                    max_self_compositions=[n for _, _, n in history],
                    eps_error=PRV_EPS_ERROR,
                    delta_error=delta_error,
                )
                # Opacus's mesh (PRVAccountant._get_domain): eps_error / sqrt(N log(12/de)/2).
                mesh = PRV_EPS_ERROR / math.sqrt(total * math.log(12 / delta_error) / 2)
                size = 2 * float(half_width) / mesh
                if not size <= _PRV_MAX_DOMAIN:
                    raise ValueError(
                        f"grid of {size:.3g} points exceeds the cap of {_PRV_MAX_DOMAIN} "
                        "(epsilon too large for PRV; use PLD or RDP)"
                    )
                acc = OpacusPrv()
                acc.history = [(s, q, n) for s, q, n in history]
                eps = float(acc.get_epsilon(delta, eps_error=PRV_EPS_ERROR))
        except (ValueError, RuntimeError, ArithmeticError, MemoryError) as exc:
            raise ValueError(
                f"prv: cannot evaluate this history at delta={delta:g}: {exc}"
            ) from exc
        if math.isnan(eps):
            raise ValueError(f"prv: epsilon is NaN for this history at delta={delta:g}")
        return eps


_BACKENDS: dict[Backend, type[Accountant]] = {
    Backend.RDP: RdpAccountant,
    Backend.PLD: PldAccountant,
    Backend.PRV: PrvAccountant,
}


def new_accountant(backend: Backend) -> Accountant:
    """An empty accountant of ``backend``.

    Raises:
        TypeError: ``backend`` is not a :class:`Backend`.
    """
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a Backend, not {type(backend).__name__}")
    return _BACKENDS[backend]()


def epsilon_for(events: Sequence[PrivacyEvent], *, delta: float, backend: Backend) -> float:
    """Epsilon of ``events`` composed in order with ``backend`` (the same as incrementally).

    Raises:
        TypeError: ``events`` is a single event rather than a sequence, or holds a
            non-event.
        ValueError: bad ``delta``, mixed privacy units, or a history the backend
            cannot evaluate.
    """
    if _is_event(events) or not isinstance(events, Sequence):
        raise TypeError("events must be a sequence of privacy events")
    _check_delta(delta)
    acc = new_accountant(backend)
    for event in events:
        acc.compose(event)
    return acc.epsilon(delta)
