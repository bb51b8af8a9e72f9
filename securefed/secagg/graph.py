"""Who shares secrets and masks with whom: the full graph and the SecAgg+ sparse graph.

(protocols/secagg.md §5.) With the full graph every client is every other
client's neighbour (Bonawitz et al. 2017). With the sparse graph (Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS,
§3-4) clients sit on a ring in an order derived from a hash of the signed cohort
and the round context, and each is joined to the ``k/2`` nearest on either side
(a randomly permuted Harary graph). The server never chooses the graph; every
client recomputes its own neighbourhood.

Parameters follow from stated assumptions (:class:`ThreatModel`): at most a
fraction ``gamma`` of the cohort is corrupt (and colludes with the server), at
most a fraction ``delta`` drops out, corruption and dropouts do not depend on the
graph seed (it is derived after the cohort is fixed), and the failure
probabilities are bounded by ``2^-sigma`` (security) and ``2^-eta`` (the round
completing). Each bound is a union bound over the ``n`` clients of an exact
hypergeometric tail.

Security needs, for every honest client ``u`` with ``m = k + 1`` share holders
(itself and its neighbours) of whom at most ``c`` are corrupt, ``2t > m + c``:
then the server cannot collect ``t`` shares of *both* of ``u``'s secrets, since
honest holders reveal only one kind per peer (the never-both rule). It also
needs the honest clients whose inputs are summed to stay connected, else the
server learns partial sums. Random dropouts cut the permuted ring only if
``k/2`` consecutive positions are all corrupt or dropped (bounded below). A
malicious server can instead *exclude* chosen clients (withhold their shares or
ignore their inputs); to cut the ring it must remove a window of ``k/2``
consecutive honest clients, and then every honest client beside the window has
at most ``k/2 + 1 + c`` peers left. Clients count only peers they actually
masked with and refuse below ``t`` (``securefed.secagg.client``), so requiring
``t >= k/2 + c + 2`` makes such a cut abort the round: the clients beside it
never reveal shares, and the mask keys of the excluded window cannot gather
``t`` shares from holders that accepted the survivor list
(protocols/secagg.md §5.2). Completion needs ``t`` honest, surviving
neighbours for every client.

The graph seed is a hash of the signed cohort; the server chooses which valid
advertisements enter the cohort and can therefore try many seeds ("grinding").
Each bound holds per seed: with ``2^g`` affordable tries, privacy fails with
probability at most ``2^(g - sigma)``, so ``sigma`` must include that margin.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from securefed.secagg.primitives import sha256

__all__ = [
    "GraphKind",
    "GraphParameters",
    "ThreatModel",
    "choose_parameters",
    "consistency_quorum",
    "full_parameters",
    "neighbourhoods",
    "sparse_parameters",
]

GRAPH_LABEL = b"securefed/secagg/v1/graph"


class GraphKind(enum.IntEnum):
    """The neighbour graph of a round (its wire code is the enum value)."""

    FULL = 1
    SPARSE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreatModel:
    """Assumptions from which the graph degree and threshold follow.

    Attributes:
        corrupt_fraction: ``gamma``: most clients that may collude with the server
            (a fraction of the cohort; pair it with a minimum cohort size that the
            data owners, not the server, set).
        dropout_fraction: ``delta``: most clients expected to drop out of a round.
        sigma: security parameter: privacy fails with probability at most
            ``2^-sigma`` per graph seed (include a margin for seed grinding).
        eta: correctness parameter: a round within the assumptions aborts with
            probability at most ``2^-eta`` (sparse graph only; the full graph is exact).
    """

    corrupt_fraction: float = 0.2
    dropout_fraction: float = 0.1
    sigma: int = 40
    eta: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.corrupt_fraction < 0.5:
            raise ValueError("corrupt_fraction must be in [0, 0.5)")
        if not 0.0 <= self.dropout_fraction < 1.0:
            raise ValueError("dropout_fraction must be in [0, 1)")
        if self.corrupt_fraction + self.dropout_fraction >= 1.0:
            raise ValueError("corrupt_fraction + dropout_fraction must be < 1")
        if not 1 <= self.sigma <= 256 or not 1 <= self.eta <= 256:
            raise ValueError("sigma and eta must be in [1, 256]")

    def at_least(self, pinned: ThreatModel) -> bool:
        """Whether these assumptions are at least as cautious as ``pinned``'s.

        A larger corrupt fraction only raises the threshold and the quorum; a larger
        ``sigma`` only asks more of a sparse graph. What a data owner checks a
        coordinator's round context against.
        """
        return self.corrupt_fraction >= pinned.corrupt_fraction and self.sigma >= pinned.sigma


@dataclass(frozen=True, slots=True, kw_only=True)
class GraphParameters:
    """Graph and threshold of one round.

    Attributes:
        kind: full or sparse graph.
        n: cohort size (clients whose keys were advertised).
        degree: ``k``, neighbours per client (``n - 1`` for the full graph).
        threshold: ``t``, shares needed to reconstruct a secret.
        corrupt_bound: ``c``, corrupt share holders per client assumed (whp for sparse).
        security_log2: log2 of the bound on the privacy failure probability
            (``-inf`` for the full graph, whose guarantee is deterministic).
        correctness_log2: log2 of the bound on an abort within the assumptions.
    """

    kind: GraphKind
    n: int
    degree: int
    threshold: int
    corrupt_bound: int
    security_log2: float
    correctness_log2: float

    @property
    def holders(self) -> int:
        """``k + 1``: a client and its neighbours hold its shares."""
        return self.degree + 1


def _log2_comb(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def _hypergeom_log2_pmf(population: int, successes: int, draws: int) -> list[float]:
    """log2 P[X = x] for x = 0..draws, X ~ Hypergeometric(population, successes, draws)."""
    denominator = _log2_comb(population, draws)
    return [
        _log2_comb(successes, x) + _log2_comb(population - successes, draws - x) - denominator
        if x <= successes and draws - x <= population - successes
        else -math.inf
        for x in range(draws + 1)
    ]


def _log2_add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log2(1.0 + 2.0 ** (b - a))


def _log2_upper_tails(log2_pmf: Sequence[float]) -> list[float]:
    """``tails[c] = log2 P[X > c]`` for c = 0..len-1."""
    tails = [-math.inf] * len(log2_pmf)
    for c in range(len(log2_pmf) - 2, -1, -1):
        tails[c] = _log2_add(tails[c + 1], log2_pmf[c + 1])
    return tails


def consistency_quorum(n: int, threat: ThreatModel) -> int:
    """Signatures on one survivor list that every client requires before unmasking.

    ``floor((n + n_c) / 2) + 1`` with ``n_c = ceil(gamma * n)``, counted over the
    whole cohort: two different lists would each need more than ``(n - n_c) / 2``
    honest signers, and an honest client signs once, so at most one list can
    pass. Without it a server could show different lists to distant parts of the
    sparse graph and unmask several partial sums (found in review; spec §5.2).
    Equal to the full graph's threshold.
    """
    return (n + math.ceil(threat.corrupt_fraction * n)) // 2 + 1


def full_parameters(n: int, threat: ThreatModel) -> GraphParameters:
    """Full graph: ``t = floor((n + n_c) / 2) + 1`` with ``n_c = ceil(gamma * n)``.

    (Bonawitz et al. 2017, Thm. A.2 generalised: the server and ``n_c`` clients
    cannot gather ``t`` shares of both secrets of an honest client.)

    Raises:
        ValueError: fewer than 2 clients, or the threshold would exceed ``n``.
    """
    if n < 2:
        raise ValueError("a secure-aggregation cohort needs at least 2 clients")
    corrupt = math.ceil(threat.corrupt_fraction * n)
    threshold = (n + corrupt) // 2 + 1
    if threshold > n:
        raise ValueError("the threat model leaves no feasible threshold for this cohort")
    return GraphParameters(
        kind=GraphKind.FULL,
        n=n,
        degree=n - 1,
        threshold=threshold,
        corrupt_bound=corrupt,
        security_log2=-math.inf,
        correctness_log2=-math.inf,
    )


@functools.lru_cache(maxsize=256)
def sparse_parameters(n: int, threat: ThreatModel) -> GraphParameters | None:
    """Smallest even degree ``k`` (and its threshold) meeting the threat model on ``n`` clients.

    Returns:
        The parameters, or ``None`` when no ``k < n - 1`` suffices (use the full graph).
    """
    if n < 4:
        return None
    others = n - 1
    corrupt = math.ceil(threat.corrupt_fraction * n)
    bad = min(n, corrupt + math.ceil(threat.dropout_fraction * n))
    log2_n = math.log2(n)
    for k in range(2, n - 1, 2):
        # (1) corrupt neighbours: smallest c with n * P[C > c] <= 2^-(sigma+1).
        corrupt_tails = _log2_upper_tails(_hypergeom_log2_pmf(others, corrupt, k))
        c = next(c for c in range(k + 1) if log2_n + corrupt_tails[c] <= -(threat.sigma + 1))
        holders = k + 1
        # Never-both bound within a neighbourhood, and the adversarial-exclusion
        # bound: a client that lost a whole side of the ring (k/2 peers) must see
        # fewer than t peers even with its c corrupt neighbours (module docstring).
        threshold = max((holders + c) // 2 + 1, k // 2 + c + 2)
        if threshold > k:
            continue
        # (2) honest survivors disconnected: some k/2 consecutive ring positions all bad.
        half = k // 2
        disconnect = (
            log2_n + _log2_comb(bad, half) - _log2_comb(n, half) if bad >= half else -math.inf
        )
        if disconnect > -(threat.sigma + 1):
            continue
        security = _log2_add(log2_n + corrupt_tails[c], disconnect)
        # (3) completion: every client keeps >= t good neighbours (its own share not counted).
        bad_tails = _log2_upper_tails(_hypergeom_log2_pmf(others, bad, k))
        correctness = log2_n + bad_tails[k - threshold]
        if correctness > -threat.eta:
            continue
        return GraphParameters(
            kind=GraphKind.SPARSE,
            n=n,
            degree=k,
            threshold=threshold,
            corrupt_bound=c,
            security_log2=security,
            correctness_log2=correctness,
        )
    return None


def choose_parameters(
    n: int, threat: ThreatModel, *, kind: GraphKind | None = None, full_up_to: int = 0
) -> GraphParameters:
    """Parameters for a cohort of ``n``.

    Args:
        n: cohort size.
        threat: the stated assumptions.
        kind: force a graph kind; ``None`` picks the full graph up to
            ``full_up_to`` clients and the sparse graph above. Whenever no sparse
            graph meets the threat model for this ``n`` (small cohorts, strong
            assumptions), the full graph is used: it is never less secure.
        full_up_to: the crossover cohort size (protocols/secagg.md §5.3).
    """
    if kind is GraphKind.FULL or (kind is None and n <= full_up_to):
        return full_parameters(n, threat)
    sparse = sparse_parameters(n, threat)
    return full_parameters(n, threat) if sparse is None else sparse


def neighbourhoods(
    cohort: Sequence[int], params: GraphParameters, seed: bytes
) -> dict[int, tuple[int, ...]]:
    """Each client's neighbours (itself excluded), sorted by id.

    Args:
        cohort: the client ids of the round's cohort (any order; must be distinct).
        params: the round's graph parameters (``params.n == len(cohort)``).
        seed: 32 bytes derived from the signed cohort and the round context
            (protocols/secagg.md §5.2); it fixes the ring order of the sparse graph.
    """
    ids = sorted(cohort)
    if len(set(ids)) != len(ids) or len(ids) != params.n:
        raise ValueError("cohort must hold params.n distinct ids")
    if params.kind is GraphKind.FULL:
        everyone = tuple(ids)  # slices, not a filter per entry: this is n^2 work
        return {u: everyone[:i] + everyone[i + 1 :] for i, u in enumerate(everyone)}
    ring = sorted(ids, key=lambda u: sha256(GRAPH_LABEL, seed, u.to_bytes(4, "big")))
    n = len(ring)
    half = params.degree // 2
    result: dict[int, tuple[int, ...]] = {}
    for position, u in enumerate(ring):
        near = {ring[(position + d) % n] for d in range(-half, half + 1) if d != 0}
        result[u] = tuple(sorted(near))
    return result
