"""Larger rounds, closer to deployment sizes: behind the ``slow`` marker (CI runs them)."""

from __future__ import annotations

import numpy as np
import pytest

from securefed.secagg.graph import GraphKind, ThreatModel

pytestmark = pytest.mark.slow


def test_sparse_round_of_200_with_ten_percent_dropouts_is_exact(helpers):
    h = helpers
    fed = h.make_federation(200, "scale-sparse")
    threat = ThreatModel(corrupt_fraction=0.05, dropout_fraction=0.1)
    context = h.make_context(fed, vector_length=2000, graph=GraphKind.SPARSE, threat=threat)
    inputs = h.make_inputs(context, fed.ids)
    drops = {
        "share_keys": list(range(3, 200, 40)),  # 5 clients
        "masked_input": list(range(7, 200, 20)),  # 10 clients: their mask keys are rebuilt
        "unmask": list(range(11, 200, 50)),  # 4 clients
    }
    report = h.run_round(fed, context, inputs, drops=drops, label="scale-sparse")
    assert report.error is None, report.error
    result = report.result
    assert result is not None
    assert result.graph.kind is GraphKind.SPARSE
    assert result.graph.degree < 199
    dropped_early = set(drops["share_keys"]) | set(drops["masked_input"])
    assert set(result.survivors) == set(fed.ids) - dropped_early
    bits = context.params.ring_bits
    assert np.array_equal(
        result.total.astype(np.uint64), h.expected_sum(inputs, result.survivors, bits)
    )


def test_full_round_of_60_with_long_vectors_is_exact(helpers):
    h = helpers
    fed = h.make_federation(60, "scale-full")
    context = h.make_context(fed, vector_length=200_000, graph=GraphKind.FULL)
    inputs = h.make_inputs(context, fed.ids)
    drops = {"masked_input": [5, 17, 33], "consistency": [40], "unmask": [2, 59]}
    report = h.run_round(fed, context, inputs, drops=drops, label="scale-full")
    assert report.error is None, report.error
    result = report.result
    assert result is not None
    assert set(result.survivors) == set(fed.ids) - {5, 17, 33}
    assert np.array_equal(
        result.total.astype(np.uint64),
        h.expected_sum(inputs, result.survivors, context.params.ring_bits),
    )
    # Masked payload: b bits per element, packed (protocols/secagg.md §4.3).
    payload = report.payload_bytes[1]
    assert payload == (200_001 * context.params.ring_bits + 7) // 8
