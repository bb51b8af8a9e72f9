"""What the server sees and what it can (not) do with it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from securefed.errors import InsufficientSharesError, ProtocolError
from securefed.secagg import derive
from securefed.secagg.packing import unpack
from securefed.secagg.shamir import FIELD_PRIME, lagrange_at_zero, reconstruct


def test_masked_vector_looks_uniform(helpers):
    """Chi-square test of one client's masked vector against the uniform distribution.

    64 bins over the top 6 bits of each b-bit element, 20,000 elements. The
    critical value is the chi-square(63) quantile at 1 - 1e-6: a truly uniform
    vector fails with probability 1e-6 (the false-alarm rate). All randomness is
    seeded, so the outcome is deterministic.
    """
    fed = helpers.make_federation(5, label="uniform")
    length = 20_000
    ctx = helpers.make_context(fed, vector_length=length, bits=12, max_clients=16)
    inputs = helpers.make_inputs(ctx, fed.ids)
    report = helpers.run_round(fed, ctx, inputs, keep_server_view=True)
    assert report.result is not None
    bits = ctx.params.ring_bits
    seen = unpack(report.server_view[3], bits, length + 1).astype(np.uint64)
    plain = inputs[3].values
    assert not np.array_equal(seen, plain)
    assert np.count_nonzero(seen == plain) < 10  # ~length / 2^b coincidences expected
    bins = np.bincount((seen >> np.uint64(bits - 6)).astype(np.int64), minlength=64)
    statistic = float(((bins - seen.size / 64) ** 2 / (seen.size / 64)).sum())
    critical = float(stats.chi2.ppf(1 - 1e-6, df=63))
    assert statistic < critical
    # The plaintext input itself is far from uniform (it sits in the low q bits).
    plain_bins = np.bincount((plain >> np.uint64(bits - 6)).astype(np.int64), minlength=64)
    plain_stat = float(((plain_bins - plain.size / 64) ** 2 / (plain.size / 64)).sum())
    assert plain_stat > critical


def test_fewer_than_t_unmask_responses_reveal_nothing(helpers, manual_round):
    fed = helpers.make_federation(7, label="below-t")
    ctx = helpers.make_context(fed, vector_length=4)
    rnd = manual_round(fed, ctx)
    rnd.run_until_unmask()
    t = rnd.server._layout().threshold
    responses = rnd.reveal()
    for cid in sorted(responses)[: t - 1]:
        rnd.server.receive_unmask(responses[cid])
    with pytest.raises(InsufficientSharesError):
        rnd.server.finalize()
    assert rnd.server.stage.value == "aborted"
    with pytest.raises(ProtocolError):  # nothing more can be asked of an aborted round
        rnd.server.finalize()


def test_t_minus_one_seed_shares_plus_a_guess_miss_the_commitment(helpers, manual_round):
    fed = helpers.make_federation(7, label="guess")
    ctx = helpers.make_context(fed, vector_length=4)
    rnd = manual_round(fed, ctx)
    ads = rnd.advertise()
    rnd.share()
    rnd.mask()
    rnd.sign()
    t = rnd.server._layout().threshold
    responses = rnd.reveal()
    owner = 4
    points = sorted(
        (s.x, int.from_bytes(s.value, "big"))
        for m in responses.values()
        for s in m.shares
        if s.owner == owner
    )
    assert len(points) >= t
    real = reconstruct(points, threshold=t)
    commitment = ads[owner].seed_commitment
    assert derive.seed_commitment(ctx.digest(), owner, real) == commitment
    known = points[: t - 1]
    xs = [x for x, _ in points[:t]]
    guesses = 0
    for guess_y in (0, 1, 2**200, FIELD_PRIME - 1):
        try:
            candidate = reconstruct([*known, (xs[-1], guess_y)], threshold=t)
        except ProtocolError:
            continue  # out of range: not even a 32-byte seed
        guesses += 1
        assert derive.seed_commitment(ctx.digest(), owner, candidate) != commitment
    assert guesses >= 1
    assert len(lagrange_at_zero(xs)) == t
