"""Shared fixtures for the securefed test suite.

Everything random is drawn from :class:`DeterministicRandom` under fixed seeds, so
every test is reproducible. Test data (the real-valued updates) come from
``np.random.default_rng(seed)``; NumPy's global random state is never used.

The helpers are exposed as session-scoped fixtures returning plain functions, so
Hypothesis tests can use them without function-scoped fixture resets.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import subprocess
import sys
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from securefed.randomness import DeterministicRandom
from securefed.secagg import derive
from securefed.secagg.client import SecAggClient
from securefed.secagg.client_input import QuantizedInput, quantize
from securefed.secagg.cohort import cohort_layout
from securefed.secagg.context import RoundContext, SecAggParams, model_digest
from securefed.secagg.graph import GraphKind, GraphParameters, ThreatModel
from securefed.secagg.quantize import QuantizationSpec
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry, SignedRoster
from securefed.simulation import RoundReport, run_secagg_round


def seed(*labels: object) -> bytes:
    """A 32-byte seed derived from ``labels`` (distinct labels give independent streams)."""
    return hashlib.sha256("/".join(str(label) for label in labels).encode()).digest()


def rng(*labels: object) -> DeterministicRandom:
    """A fresh deterministic randomness source for ``labels``."""
    return DeterministicRandom(seed(*labels))


@dataclass(frozen=True)
class Federation:
    """A signed, verified roster of clients 1..n with their identity keys."""

    roster: Roster
    identities: dict[int, IdentityKey]
    authorities: tuple[IdentityKey, ...]
    signed: SignedRoster

    @property
    def ids(self) -> list[int]:
        return sorted(self.identities)


@functools.lru_cache(maxsize=32)
def _federation(n: int, label: str) -> Federation:
    identities = {i: IdentityKey.generate(rng("identity", label, i)) for i in range(1, n + 1)}
    authorities = tuple(IdentityKey.generate(rng("authority", label, a)) for a in range(3))
    roster = Roster(
        federation_id=f"test-{label}",
        version=1,
        entries=tuple(
            RosterEntry(client_id=i, name=f"client-{i}", identity_key=k.public_key)
            for i, k in identities.items()
        ),
    )
    signed = SignedRoster.sign(roster, authorities)
    verified = signed.verify(trusted=[a.public_key for a in authorities], required=3)
    return Federation(
        roster=verified, identities=identities, authorities=authorities, signed=signed
    )


def make_federation(n: int, label: str = "main") -> Federation:
    """The (cached) federation of ``n`` clients named ``label``."""
    return _federation(n, label)


def make_context(
    federation: Federation,
    *,
    vector_length: int = 50,
    graph: GraphKind | None = GraphKind.FULL,
    threat: ThreatModel | None = None,
    bits: int = 16,
    clip: float = 1.0,
    max_weight: int = 1,
    max_clients: int = 1024,
    min_clients: int = 3,
    round_id: int = 1,
    model: bytes = b"model-v1",
) -> RoundContext:
    """A round context over ``federation`` with a model hash derived from ``model``."""
    params = SecAggParams(
        quantization=QuantizationSpec(bits=bits, clip=clip, max_weight=max_weight),
        vector_length=vector_length,
        max_clients=max_clients,
        threat=threat or ThreatModel(),
        graph=graph,
        min_clients=min_clients,
    )
    model_hash = model_digest({"w": np.zeros(4, dtype=np.float32)}, plan=model)
    return RoundContext(
        federation_id=federation.roster.federation_id,
        round_id=round_id,
        model_hash=model_hash,
        roster_hash=federation.roster.digest(),
        params=params,
    )


def make_inputs(
    context: RoundContext,
    ids: Iterable[int],
    *,
    data_seed: int = 7,
    weights: Mapping[int, int] | None = None,
) -> dict[int, QuantizedInput]:
    """Quantised inputs of ``ids`` for ``context`` (test data from ``default_rng(data_seed)``)."""
    p = context.params
    data = np.random.default_rng(data_seed)
    out = {}
    for i in sorted(ids):
        update = data.normal(0.0, 0.4, p.vector_length)
        w = (weights or {}).get(i, 1)
        out[i] = quantize(update, p.quantization, weight=w, rng=rng("quantize", data_seed, i))
    return out


def run_round(
    federation: Federation,
    context: RoundContext,
    inputs: Mapping[int, QuantizedInput],
    *,
    drops: Mapping[str, Collection[int]] | None = None,
    keep_server_view: bool = False,
    label: str = "round",
) -> RoundReport:
    """Run one simulated round with deterministic per-client randomness."""
    return run_secagg_round(
        roster=federation.roster,
        identities=federation.identities,
        context=context,
        inputs=inputs,
        drops=drops,
        rng_for=lambda cid: rng("client", label, cid),
        keep_server_view=keep_server_view,
    )


def expected_sum(
    inputs: Mapping[int, QuantizedInput], survivors: Iterable[int], bits: int
) -> np.ndarray:
    """Sum of the survivors' quantised inputs mod 2^bits, as uint64."""
    ids = list(survivors)
    length = next(iter(inputs.values())).values.shape[0]
    total = np.zeros(length, dtype=np.uint64)
    for i in ids:
        total += inputs[i].values.astype(np.uint64)
    if bits < 64:
        total &= np.uint64((1 << bits) - 1)
    return total


@dataclass(frozen=True)
class Oracle:
    """Predicted outcome of a round: the survivor set U3, or ``None`` for an abort."""

    survivors: tuple[int, ...] | None
    threshold: int | None


def layout(
    federation: Federation, context: RoundContext, cohort: Iterable[int], *, label: str = "round"
) -> tuple[GraphParameters, dict[int, tuple[int, ...]]]:
    """Graph parameters and neighbourhoods the simulation will use for ``cohort``.

    Recomputed from the same deterministic advertisements :func:`run_round` makes.
    """
    ads = {}
    for cid in sorted(cohort):
        client = SecAggClient(
            client_id=cid,
            identity=federation.identities[cid],
            roster=federation.roster,
            context=context,
            rng=rng("client", label, cid),
        )
        ads[cid] = client.advertise()
    params, nbrs, _ = cohort_layout(ads, context)
    return params, nbrs


def predict_round(
    federation: Federation,
    context: RoundContext,
    ids: Collection[int],
    drops: Mapping[str, Collection[int]],
    *,
    label: str = "round",
) -> Oracle:
    """An independent model of who survives each stage (protocols/secagg.md §6-7).

    The neighbourhoods are recomputed from the same deterministic advertisements
    the simulation makes; the stage rules are restated here from the protocol
    (a client needs ``t`` of its share holders at each check; the server needs
    ``t`` senders per stage and ``t`` shares of every secret in U2).
    """
    dropped: set[int] = set()

    def alive_after(stage: str, members: Iterable[int]) -> set[int]:
        dropped.update(drops.get(stage, ()))
        return {u for u in members if u not in dropped}

    u1 = alive_after("advertise", ids)
    if len(u1) < context.params.min_clients:
        return Oracle(survivors=None, threshold=None)
    params, nbrs = layout(federation, context, u1, label=label)
    t = params.threshold

    def holders(u: int) -> set[int]:
        return {u, *nbrs[u]}

    u2 = alive_after("share_keys", u1)
    if len(u2) < t:
        return Oracle(survivors=None, threshold=t)
    u3 = {u for u in alive_after("masked_input", u2) if len(set(nbrs[u]) & u2) + 1 >= t}
    if len(u3) < t:
        return Oracle(survivors=None, threshold=t)
    u4 = {u for u in alive_after("consistency", u3) if len(holders(u) & u3) >= t}
    if len(u4) < t:
        return Oracle(survivors=None, threshold=t)
    u5 = {u for u in alive_after("unmask", u4) if len(holders(u) & u4) >= t}
    if any(len(holders(owner) & u5) < t for owner in u2):
        return Oracle(survivors=None, threshold=t)
    return Oracle(survivors=tuple(sorted(u3)), threshold=t)


# -- fixtures: the helpers above, plus a few ready-made worlds ---------------------------


@pytest.fixture(scope="session")
def federation12() -> Federation:
    return make_federation(12)


@pytest.fixture(scope="session")
def context12(federation12: Federation) -> RoundContext:
    return make_context(federation12)


@pytest.fixture(scope="session")
def inputs12(context12: RoundContext, federation12: Federation) -> dict[int, QuantizedInput]:
    return make_inputs(context12, federation12.ids)


def fresh_interpreter_stdout(code: str) -> str:
    """What ``code`` prints in a new Python process (for checks on what gets imported)."""
    return subprocess.run(  # noqa: S603 - the test's own fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="session")
def helpers() -> _Helpers:
    return _Helpers()


class _Helpers:
    """Namespace handed to tests through the ``helpers`` fixture."""

    seed = staticmethod(seed)
    rng = staticmethod(rng)
    make_federation = staticmethod(make_federation)
    make_context = staticmethod(make_context)
    make_inputs = staticmethod(make_inputs)
    run_round = staticmethod(run_round)
    expected_sum = staticmethod(expected_sum)
    predict_round = staticmethod(predict_round)
    layout = staticmethod(layout)
    mask_seed = staticmethod(derive.mask_seed)
    fresh_interpreter_stdout = staticmethod(fresh_interpreter_stdout)


class ManualRound:
    """A round driven stage by stage, so a test can inspect or tamper with any message.

    Messages pass through their byte encoding as in the simulation. Each step
    returns what the clients sent, then closes the server's stage.
    """

    def __init__(
        self,
        federation: Federation,
        context: RoundContext,
        ids: Iterable[int] | None = None,
        *,
        label: str = "manual",
    ) -> None:
        from securefed.secagg.server import SecAggServer

        self.federation = federation
        self.context = context
        self.ids = sorted(ids) if ids is not None else federation.ids
        self.server = SecAggServer(roster=federation.roster, context=context)
        self.clients = {
            cid: SecAggClient(
                client_id=cid,
                identity=federation.identities[cid],
                roster=federation.roster,
                context=context,
                rng=rng("client", label, cid),
            )
            for cid in self.ids
        }
        self.inputs = make_inputs(context, self.ids, data_seed=5)

    @staticmethod
    def wire(message):  # type: ignore[no-untyped-def]
        from securefed.secagg.messages import decode_message

        return decode_message(message.to_bytes())

    def advertise(self) -> dict:
        ads = {cid: self.wire(c.advertise()) for cid, c in self.clients.items()}
        for ad in ads.values():
            self.server.receive_advertisement(ad)
        self.cohort = self.server.close_advertise()
        return ads

    def share(self, senders: Iterable[int] | None = None) -> dict:
        senders = self.ids if senders is None else sorted(senders)
        msgs = {cid: self.wire(self.clients[cid].share_keys(self.cohort)) for cid in senders}
        for m in msgs.values():
            self.server.receive_share_keys(m)
        self.deliveries = self.server.close_share_keys()
        return msgs

    def mask(self, senders: Iterable[int] | None = None) -> dict:
        senders = sorted(self.deliveries) if senders is None else sorted(senders)
        msgs = {
            cid: self.wire(self.clients[cid].masked_input(self.deliveries[cid], self.inputs[cid]))
            for cid in senders
        }
        for m in msgs.values():
            self.server.receive_masked_input(m)
        self.survivor_list = self.server.close_masked_input()
        return msgs

    def sign(self, senders: Iterable[int] | None = None) -> dict:
        senders = self.survivor_list.survivors if senders is None else sorted(senders)
        msgs = {
            cid: self.wire(self.clients[cid].consistency(self.survivor_list)) for cid in senders
        }
        for m in msgs.values():
            self.server.receive_consistency(m)
        self.bundle = self.server.close_consistency()
        return msgs

    def reveal(self, senders: Iterable[int] | None = None) -> dict:
        """Each sender's UnmaskShares (not yet given to the server)."""
        signers = [s for s, _ in self.bundle.signatures]
        senders = signers if senders is None else sorted(senders)
        return {cid: self.wire(self.clients[cid].unmask(self.bundle)) for cid in senders}

    def run_until_unmask(self) -> None:
        self.advertise()
        self.share()
        self.mask()
        self.sign()


@pytest.fixture(scope="session")
def manual_round() -> type[ManualRound]:
    return ManualRound


def write_ratings_csv(
    path: Path,
    *,
    seed: int,
    users: int,
    items: range,
    per_user: tuple[int, int],
    popularity: float | None = None,
    rating: int | None = None,
    start: int = 1000,
    spacing: int = 10,
) -> Path:
    """A small MovieLens-like ratings CSV (``user,item,rating,timestamp``), deterministic.

    Each of ``users`` users rates between ``per_user[0]`` and ``per_user[1] - 1``
    distinct items of ``items``, drawn with probability proportional to
    ``1 / rank ** popularity`` (uniformly without ``popularity``); ratings are
    uniform in 1-5 unless fixed by ``rating``; user u's t-th rating is at time
    ``start + spacing * t + u``.
    """
    data = np.random.default_rng(seed)
    weights = None
    if popularity is not None:
        weights = 1.0 / np.arange(1, len(items) + 1) ** popularity
        weights /= weights.sum()
    lines = ["user,item,rating,timestamp"]
    for user in range(1, users + 1):
        count = int(data.integers(*per_user))
        chosen = data.choice(np.asarray(items), size=count, replace=False, p=weights)
        for t, item in enumerate(chosen):
            value = data.integers(1, 6) if rating is None else rating
            lines.append(f"{user},{item},{value},{start + spacing * t + user}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def ratings_writer() -> Callable[..., Path]:
    """:func:`write_ratings_csv`, for module-scoped data fixtures."""
    return write_ratings_csv


class SimulatedCrash(Exception):
    """A crash injected through ``run_federation(on_spent=...)``."""


def crash_after_spends(round_id: int) -> Callable[[int], None]:
    """An ``on_spent`` hook that raises :class:`SimulatedCrash` once round ``round_id``'s
    spends are durable (before any owner trains): a run killed mid-round, to resume."""

    def on_spent(spent_round: int) -> None:
        if spent_round == round_id:
            raise SimulatedCrash

    return on_spent


@pytest.fixture(scope="session")
def crash() -> tuple[type[SimulatedCrash], Callable[[int], Callable[[int], None]]]:
    """``(SimulatedCrash, crash_after_spends)``."""
    return SimulatedCrash, crash_after_spends


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def load_benchmark(name: str) -> Iterator[types.ModuleType]:
    """``benchmarks/<name>.py`` imported as a module, as when run as a script.

    Its folder is on ``sys.path`` meanwhile (for its sibling modules), and the module
    is registered in ``sys.modules`` (dataclasses look their module up).
    """
    spec = importlib.util.spec_from_file_location(
        f"securefed_benchmark_{name}", BENCHMARKS / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="session")
def benchmark_module() -> Callable[[str], contextlib.AbstractContextManager[types.ModuleType]]:
    """:func:`load_benchmark`."""
    return load_benchmark
