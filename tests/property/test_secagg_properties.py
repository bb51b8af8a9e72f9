"""Property tests (Hypothesis) of the secure-aggregation core."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securefed.errors import InsufficientSharesError, IntegrityError
from securefed.randomness import DeterministicRandom
from securefed.secagg import derive
from securefed.secagg.client_input import quantize
from securefed.secagg.messages import UnmaskShare, UnmaskShares
from securefed.secagg.primitives import prg_expand, x25519_generate
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.secagg.shamir import (
    FIELD_PRIME,
    decode_share_value,
    encode_share_value,
    lagrange_at_zero,
    reconstruct,
    split,
)

FAST = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
seeds = st.binary(min_size=32, max_size=32)


@FAST
@given(n=st.integers(2, 6), length=st.integers(1, 40), bits=st.integers(1, 64), seed=seeds)
def test_pairwise_masks_cancel(helpers, n, length, bits, seed):
    """sum_u sum_{v != u} sign(u, v) PRG(s_uv) == 0 mod 2^b (protocols/secagg.md §3.6)."""
    fed = helpers.make_federation(max(n, 3), label="masks")
    ctx = helpers.make_context(fed)
    source = DeterministicRandom(seed)
    keys = {u: x25519_generate(source) for u in range(1, n + 1)}
    total = 0
    modulus = 1 << bits
    for u, (private, _) in keys.items():
        for v, (_, public) in keys.items():
            if u == v:
                continue
            mask = prg_expand(derive.mask_seed(private, public, ctx, u, v), length, bits)
            as_int = [int(x) for x in mask]
            sign = 1 if u < v else -1
            total = [
                (a + sign * b) % modulus for a, b in zip(total or [0] * length, as_int, strict=True)
            ]
    assert total == [0] * length


@settings(deadline=None, max_examples=8, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 6), length=st.integers(1, 20), data_seed=st.integers(0, 2**32 - 1))
def test_full_round_sum_is_exact(helpers, n, length, data_seed):
    """Masks cancel in a whole round: the unmasked total is the inputs' sum mod 2^b."""
    fed = helpers.make_federation(n, label="prop-round")
    ctx = helpers.make_context(fed, vector_length=length, bits=8, max_clients=8)
    inputs = helpers.make_inputs(ctx, fed.ids, data_seed=data_seed)
    report = helpers.run_round(fed, ctx, inputs, keep_server_view=True, label=str(data_seed))
    assert report.result is not None
    bits = ctx.params.ring_bits
    np.testing.assert_array_equal(
        report.result.total.astype(np.uint64), helpers.expected_sum(inputs, fed.ids, bits)
    )


@FAST
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_any_t_shares_reconstruct(secret, n, data):
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**32 - 1), min_size=n, max_size=n, unique=True))
    shares = split(secret, xs=xs, threshold=t, rng=DeterministicRandom(secret[::-1]))
    points = list(zip(xs, shares, strict=True))
    first = data.draw(st.permutations(points))[:t]
    second = data.draw(st.permutations(points))[:t]
    assert reconstruct(first, threshold=t) == secret
    assert reconstruct(second, threshold=t) == reconstruct(first, threshold=t)


@FAST
@given(
    secret=st.binary(min_size=32, max_size=32),
    other=st.binary(min_size=32, max_size=32),
    t=st.integers(2, 8),
)
def test_t_minus_one_shares_fit_any_secret(secret, other, t):
    """t - 1 real shares are consistent with every secret: one more point decides it.

    For any target secret there is a value at a fresh x that, with the t - 1
    real shares, interpolates to the target; so the t - 1 shares carry no
    information about the secret that could be checked.
    """
    xs = list(range(1, t + 1))
    shares = split(secret, xs=xs, threshold=t, rng=DeterministicRandom(other))
    known = list(zip(xs[:-1], shares[:-1], strict=True))
    with pytest.raises(InsufficientSharesError):
        reconstruct(known, threshold=t)
    lam = lagrange_at_zero(xs)
    partial = sum(c * y for c, (_, y) in zip(lam, known, strict=False)) % FIELD_PRIME
    for target in (secret, other):
        y = (int.from_bytes(target, "big") - partial) * pow(lam[-1], -1, FIELD_PRIME)
        forged = (xs[-1], y % FIELD_PRIME)
        assert reconstruct([*known, forged], threshold=t) == target


@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_tampered_share_ciphertext_is_detected(helpers, manual_round, position, flip):
    fed = helpers.make_federation(4, label="tamper")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    rnd.share()
    delivery = rnd.deliveries[1]
    sender, ct = delivery.ciphertexts[0]
    i = position % len(ct)
    bad = ct[:i] + bytes([ct[i] ^ flip]) + ct[i + 1 :]
    tampered = type(delivery)(
        context_digest=delivery.context_digest,
        receiver=delivery.receiver,
        ciphertexts=((sender, bad), *delivery.ciphertexts[1:]),
    )
    client = rnd.clients[1]
    with pytest.raises(IntegrityError):
        client.masked_input(tampered, rnd.inputs[1])
    assert client.stage.value == "shared"  # rejected without a state change
    client.masked_input(delivery, rnd.inputs[1])  # the genuine delivery still works


@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, 10**6), delta=st.integers(1, 2**300))
def test_tampered_unmask_share_is_detected(helpers, manual_round, pick, delta):
    """Any changed share value among the t used at unmasking gives IntegrityError.

    Client 5 drops before its masked input, so shares of both kinds are in play;
    exactly t clients unmask, so every share the server holds is used.
    """
    fed = helpers.make_federation(6, label="tamper-unmask")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    rnd.share()
    rnd.mask(senders=[1, 2, 3, 4, 6])
    rnd.sign()
    t = rnd.server._layout().threshold
    responses = rnd.reveal(senders=rnd.survivor_list.survivors[:t])
    flat = [(cid, j) for cid, m in responses.items() for j in range(len(m.shares))]
    cid, j = flat[pick % len(flat)]
    message = responses[cid]
    share = message.shares[j]
    value = (decode_share_value(share.value) + delta) % FIELD_PRIME
    if value == decode_share_value(share.value):
        value = (value + 1) % FIELD_PRIME
    forged = UnmaskShare(
        owner=share.owner, kind=share.kind, x=share.x, value=encode_share_value(value)
    )
    responses[cid] = UnmaskShares(
        context_digest=message.context_digest,
        sender=message.sender,
        shares=(*message.shares[:j], forged, *message.shares[j + 1 :]),
    )
    for m in responses.values():
        rnd.server.receive_unmask(m)
    with pytest.raises(IntegrityError):
        rnd.server.finalize()


@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, 63), flip=st.integers(1, 255))
def test_tampered_advertisement_signature_is_detected(helpers, manual_round, position, flip):
    fed = helpers.make_federation(4, label="tamper-ad")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    ad = rnd.clients[2].advertise()
    sig = ad.signature
    bad = type(ad)(
        context_digest=ad.context_digest,
        client_id=ad.client_id,
        encryption_key=ad.encryption_key,
        mask_key=ad.mask_key,
        seed_commitment=ad.seed_commitment,
        signature=sig[:position] + bytes([sig[position] ^ flip]) + sig[position + 1 :],
    )
    with pytest.raises(IntegrityError):
        rnd.server.receive_advertisement(bad)
    rnd.server.receive_advertisement(ad)  # the genuine one is still accepted


@FAST
@given(
    values=st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=64),
    bits=st.integers(1, 24),
    clip=st.floats(0.01, 4.0),
    seed=seeds,
)
def test_quantisation_error_within_one_step(values, bits, clip, seed):
    spec = QuantizationSpec(bits=bits, clip=clip)
    x = np.array(values)
    q = quantize(x, spec, weight=1, rng=DeterministicRandom(seed))
    mean, _ = dequantize(q.values, spec)
    clipped = np.clip(x, -clip, clip)
    assert np.all(np.abs(mean - clipped) < spec.step * (1 + 1e-9))
    assert q.clipped_fraction == np.count_nonzero(np.abs(x) > clip) / x.size
