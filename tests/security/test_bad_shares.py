"""Wrong shares revealed at unmasking (protocols/secagg.md §7 step 5).

A corrupt share holder can reveal a wrong value, and a corrupt owner can deal a
wrong one to an honest holder. When the server holds more than t shares of a
secret, it decodes around up to (m - t) / 2 wrong ones, checks the secret against
the signed commitment or key as before, and names the (owner, holder) pairs.
Beyond that the round aborts, never with a wrong sum, unless colluders crafted
their shares to keep the secret, in which case the sum is still exact but the
names are not the liars'.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from securefed.errors import IntegrityError
from securefed.secagg import server as server_module
from securefed.secagg import shamir
from securefed.secagg.messages import UnmaskShares
from securefed.secagg.server import ServerStage
from securefed.secagg.shamir import FIELD_PRIME, decode_share_value, encode_share_value

DROPPED = 12


def _corrupt(message: UnmaskShares) -> UnmaskShares:
    """The same message with every revealed share value off by one."""
    return dataclasses.replace(
        message,
        shares=tuple(
            s._replace(value=encode_share_value((decode_share_value(s.value) + 1) % FIELD_PRIME))
            for s in message.shares
        ),
    )


def _round(helpers, manual_round, label):
    fed = helpers.make_federation(12, label=label)
    ctx = helpers.make_context(fed, vector_length=7)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    rnd.share()
    rnd.mask(senders=[c for c in fed.ids if c != DROPPED])
    rnd.sign()
    return ctx, rnd


def test_wrong_shares_within_the_decoding_radius_are_corrected_and_named(
    helpers, manual_round, monkeypatch
):
    decodes = []

    def counting(points, *, threshold):
        decodes.append(threshold)
        return shamir.correct(points, threshold=threshold)

    monkeypatch.setattr(server_module, "correct", counting)
    ctx, rnd = _round(helpers, manual_round, "bad-shares-fixed")
    t = rnd.server._layout().threshold
    survivors = rnd.survivor_list.survivors
    capacity = (len(survivors) - t) // 2  # every secret has one share per survivor
    assert capacity >= 1
    liars = list(survivors[:capacity])
    reveals = rnd.reveal()
    for cid, message in reveals.items():
        rnd.server.receive_unmask(_corrupt(message) if cid in liars else message)
    result = rnd.server.finalize()

    np.testing.assert_array_equal(
        result.total.astype(np.uint64),
        helpers.expected_sum(rnd.inputs, survivors, ctx.params.ring_bits),
    )
    # Each liar held a share of every owner's secret, but one decode (for the first
    # owner unmasked) names them all; later secrets are rebuilt without their
    # shares, so every liar is named once and nobody else is.
    assert len(decodes) == 1
    assert result.inconsistent_shares == tuple((survivors[0], liar) for liar in liars)


def test_one_wrong_share_too_many_aborts_without_a_sum(helpers, manual_round):
    _, rnd = _round(helpers, manual_round, "bad-shares-abort")
    t = rnd.server._layout().threshold
    survivors = rnd.survivor_list.survivors
    liars = set(survivors[: (len(survivors) - t) // 2 + 1])
    for cid, message in rnd.reveal().items():
        rnd.server.receive_unmask(_corrupt(message) if cid in liars else message)
    with pytest.raises(IntegrityError):
        rnd.server.finalize()
    assert rnd.server.stage is ServerStage.ABORTED


def test_honest_round_names_no_share(helpers, manual_round):
    ctx, rnd = _round(helpers, manual_round, "bad-shares-none")
    for message in rnd.reveal().values():
        rnd.server.receive_unmask(message)
    result = rnd.server.finalize()
    assert result.inconsistent_shares == ()
    np.testing.assert_array_equal(
        result.total.astype(np.uint64),
        helpers.expected_sum(rnd.inputs, rnd.survivor_list.survivors, ctx.params.ring_bits),
    )


def test_colluders_beyond_the_radius_keep_the_sum_but_can_get_honest_holders_named(
    helpers, manual_round
):
    # The limitation §3.5 states: a commitment fixes the secret f(0), not f. Enough
    # colluders add h(x) to their shares, with h(0) = 0 and h vanishing at t - 2
    # honest holders' points, so f + h is within the decoding radius of what the
    # server holds. The sum stays exact; honest holders are named, colluders not.
    ctx, rnd = _round(helpers, manual_round, "bad-shares-frame")
    t = rnd.server._layout().threshold
    survivors = list(rnd.survivor_list.survivors)
    m = len(survivors)
    liars = survivors[: m - (m - t) // 2 - t + 2]
    honest = [c for c in survivors if c not in liars]
    xs = rnd.server._xs
    draw = random.Random(11)
    scale = {o: draw.randrange(1, FIELD_PRIME) for o in [*survivors, DROPPED]}

    def h(owner: int, x: int) -> int:
        value = scale[owner] * x
        for root in sorted(xs.x(owner, c) for c in honest)[-(t - 2) :]:
            value *= x - root
        return value % FIELD_PRIME

    for cid, message in rnd.reveal().items():
        if cid in liars:
            message = dataclasses.replace(
                message,
                shares=tuple(
                    s._replace(
                        value=encode_share_value(
                            (decode_share_value(s.value) + h(s.owner, s.x)) % FIELD_PRIME
                        ),
                    )
                    for s in message.shares
                ),
            )
        rnd.server.receive_unmask(message)
    result = rnd.server.finalize()
    np.testing.assert_array_equal(
        result.total.astype(np.uint64),
        helpers.expected_sum(rnd.inputs, survivors, ctx.params.ring_bits),
    )
    named = {holder for _, holder in result.inconsistent_shares}
    assert named
    assert named <= set(honest)
