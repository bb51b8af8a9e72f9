"""The dropout matrix: every stage x several drop sets x full and sparse graphs.

Each case either yields exactly the sum of the survivors' quantised inputs with
exactly the predicted survivors, or aborts with InsufficientSharesError and no
result. The prediction comes from an independent restatement of the stage rules
(``predict_round`` in conftest); each drop set is also labelled with the outcome
the protocol promises (``below`` must abort, every other set must complete), so
the oracle itself is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from securefed.errors import InsufficientSharesError
from securefed.secagg.graph import GraphKind, ThreatModel, sparse_parameters
from securefed.simulation import STAGES

VECTOR_LENGTH = 50
SPARSE_THREAT = ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.05)


@dataclass(frozen=True)
class World:
    kind: GraphKind
    federation: object
    context: object
    inputs: dict
    threshold: int
    neighbours: dict
    smallest_cohort: int


def _world(helpers, kind: GraphKind) -> World:
    n = 12 if kind is GraphKind.FULL else 40
    threat = None if kind is GraphKind.FULL else SPARSE_THREAT
    fed = helpers.make_federation(n, label=f"matrix-{kind.name}")
    ctx = helpers.make_context(fed, vector_length=VECTOR_LENGTH, graph=kind, threat=threat)
    params, nbrs = helpers.layout(fed, ctx, fed.ids)
    assert params.kind is kind
    if kind is GraphKind.FULL:
        smallest = ctx.params.min_clients
    else:
        # The smallest cohort on which the forced sparse graph still exists.
        smallest = min(m for m in range(4, n + 1) if sparse_parameters(m, SPARSE_THREAT))
    return World(
        kind=kind,
        federation=fed,
        context=ctx,
        inputs=helpers.make_inputs(ctx, fed.ids, data_seed=11),
        threshold=params.threshold,
        neighbours=nbrs,
        smallest_cohort=smallest,
    )


@pytest.fixture(scope="module")
def worlds(helpers) -> dict[GraphKind, World]:
    return {kind: _world(helpers, kind) for kind in GraphKind}


FOCUS = 1  # the client whose neighbourhood the boundary cases squeeze


def _drop_set(world: World, stage: str, name: str) -> set[int]:
    ids = world.federation.ids
    if name == "none":
        return set()
    if name == "one":
        return {3}
    if name == "several":
        return {2, 5, 9}
    if stage == "advertise":
        # The cohort itself: at the smallest workable size, or below min_clients.
        keep = world.smallest_cohort if name == "boundary" else world.context.params.min_clients - 1
        return set(ids[: len(ids) - keep])
    # Leave the focus client exactly t share holders (boundary) or t - 1 (below).
    k, t = len(world.neighbours[FOCUS]), world.threshold
    count = k - t + 1 if name == "boundary" else k - t + 2
    return set(world.neighbours[FOCUS][:count])


CASES = [(kind, "advertise", "none") for kind in GraphKind] + [
    (kind, stage, name)
    for kind in GraphKind
    for stage in STAGES
    for name in ("one", "several", "boundary", "below")
]


@pytest.mark.parametrize(
    ("kind", "stage", "name"), CASES, ids=[f"{k.name.lower()}-{s}-{n}" for k, s, n in CASES]
)
def test_dropout_matrix(worlds, helpers, kind, stage, name):
    world = worlds[kind]
    dropped = _drop_set(world, stage, name)
    drops = {stage: dropped}
    ids = world.federation.ids
    predicted = helpers.predict_round(world.federation, world.context, ids, drops)

    report = helpers.run_round(world.federation, world.context, world.inputs, drops=drops)

    if name == "below":
        assert predicted.survivors is None
    else:
        assert predicted.survivors is not None
        # Before the masked input is sent a dropped client's input is left out;
        # afterwards it is in the sum (its self mask is removed via shares).
        before_input = STAGES.index(stage) <= STAGES.index("masked_input")
        expected = sorted(set(ids) - dropped) if before_input else ids
        assert list(predicted.survivors) == expected

    if predicted.survivors is None:
        assert report.result is None
        assert isinstance(report.error, InsufficientSharesError)
        return
    assert report.error is None
    result = report.result
    assert result is not None
    assert result.survivors == predicted.survivors
    bits = world.context.params.ring_bits
    assert result.total.shape == (VECTOR_LENGTH + 1,)
    np.testing.assert_array_equal(
        result.total.astype(np.uint64), helpers.expected_sum(world.inputs, result.survivors, bits)
    )
    # The summed weight (last coordinate) counts the survivors (all weights are 1).
    assert int(result.total[-1]) == len(result.survivors)
    if stage != "advertise":
        assert set(result.dropped[stage]) == dropped
        assert all(not v for s, v in result.dropped.items() if s != stage)
    assert result.graph.kind is kind


def test_drops_across_several_stages(worlds, helpers):
    """Drops at every stage of one round (full graph) still give the exact survivors' sum."""
    world = worlds[GraphKind.FULL]
    drops = {"share_keys": {4}, "masked_input": {9}, "consistency": {2}, "unmask": {11}}
    predicted = helpers.predict_round(world.federation, world.context, world.federation.ids, drops)
    report = helpers.run_round(world.federation, world.context, world.inputs, drops=drops)
    assert report.result is not None
    assert report.result.survivors == predicted.survivors
    assert set(report.result.survivors) == set(world.federation.ids) - {4, 9}
    np.testing.assert_array_equal(
        report.result.total.astype(np.uint64),
        helpers.expected_sum(world.inputs, report.result.survivors, world.context.params.ring_bits),
    )


def test_sparse_neighbourhood_is_a_strict_subset(worlds):
    """The sparse world really is sparse: k < n - 1, and every client has k neighbours."""
    world = worlds[GraphKind.SPARSE]
    n = len(world.federation.ids)
    degrees = {len(v) for v in world.neighbours.values()}
    assert len(degrees) == 1
    (k,) = degrees
    assert k < n - 1


def test_a_round_charges_every_party_and_loses_no_client(
    helpers, federation12, context12, inputs12
):
    report = helpers.run_round(federation12, context12, inputs12, label="charged")
    assert report.result is not None
    assert report.client_errors == {}
    assert report.server_seconds > 0
    assert set(report.client_seconds) == set(inputs12)
    assert all(seconds > 0 for seconds in report.client_seconds.values())


@pytest.mark.parametrize(
    "kind", ["CohortBroadcast", "ShareDelivery", "SurvivorList", "ConsistencyBundle"]
)
def test_a_downlink_that_does_not_decode_is_raised_not_counted_as_a_dropout(
    helpers, federation12, context12, inputs12, monkeypatch, kind
):
    # The simulation times each client's decoding, but the honest server's bytes must
    # decode: a failure there is a codec bug, not a client error that shrinks the round.
    import securefed.simulation as simulation
    from securefed.errors import ProtocolError

    def broken(cls, data):  # type: ignore[no-untyped-def]
        raise ProtocolError(f"{cls.__name__} does not decode")

    monkeypatch.setattr(getattr(simulation, kind), "from_bytes", classmethod(broken))
    with pytest.raises(ProtocolError, match=f"{kind} does not decode"):
        helpers.run_round(federation12, context12, inputs12, label="codec")
