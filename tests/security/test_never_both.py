"""The never-both rule, forged advertisements and cross-model mixing."""

from __future__ import annotations

import dataclasses

import pytest

from securefed.errors import InsufficientSharesError, IntegrityError, ProtocolError
from securefed.secagg import derive
from securefed.secagg.client import ClientStage
from securefed.secagg.graph import consistency_quorum
from securefed.secagg.messages import (
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    SecretKind,
    SurvivorList,
)
from securefed.secagg.roster import IdentityKey
from securefed.secagg.server import SecAggServer, ServerStage


@pytest.fixture
def fed7(helpers):
    return helpers.make_federation(7, label="never-both")


@pytest.fixture
def ctx7(helpers, fed7):
    return helpers.make_context(fed7, vector_length=4)


def test_unmask_twice_is_refused(manual_round, fed7, ctx7):
    rnd = manual_round(fed7, ctx7)
    rnd.run_until_unmask()
    client = rnd.clients[2]
    client.unmask(rnd.bundle)
    with pytest.raises(ProtocolError):
        client.unmask(rnd.bundle)


def test_bundle_with_another_survivor_list_is_refused(manual_round, fed7, ctx7):
    rnd = manual_round(fed7, ctx7)
    rnd.run_until_unmask()
    other = dataclasses.replace(rnd.bundle, survivors=rnd.bundle.survivors[:-1])
    client = rnd.clients[1]
    with pytest.raises(ProtocolError, match="differs"):
        client.unmask(other)
    assert client.stage is ClientStage.SIGNED
    assert client.unmask(rnd.bundle).shares  # the real bundle is still answered


def test_one_share_per_owner_and_the_right_kind(manual_round, fed7, ctx7):
    rnd = manual_round(fed7, ctx7)
    rnd.advertise()
    rnd.share()
    rnd.mask(senders=[1, 2, 3, 4, 5, 6])  # client 7 drops before its masked input
    rnd.sign()
    responses = rnd.reveal()
    assert responses
    for message in responses.values():
        owners = [s.owner for s in message.shares]
        assert len(owners) == len(set(owners))
        for share in message.shares:
            expected = SecretKind.MASK_KEY if share.owner == 7 else SecretKind.SELF_SEED
            assert share.kind is expected
        assert 7 in owners


def _survivors(ctx, ids):
    return SurvivorList(context_digest=ctx.digest(), survivors=tuple(sorted(ids)))


def test_server_cannot_split_the_survivor_list(manual_round, fed7, ctx7):
    """A server tells clients 1-4 that client 7 dropped and 5-7 that it survived.

    Had it got t responses for each list, it would hold both the mask key and the
    self seed of client 7, and so client 7's input. Each group is smaller than t,
    so every bundle it can build fails an honest client's check.
    """
    rnd = manual_round(fed7, ctx7)
    rnd.advertise()
    rnd.share()
    rnd.mask()
    t = rnd.server._layout().threshold
    group_a, group_b = [1, 2, 3, 4], [5, 6, 7]
    assert len(group_a) < t
    assert len(group_b) < t
    list_a = _survivors(ctx7, set(fed7.ids) - {7})
    list_b = _survivors(ctx7, fed7.ids)
    sig_a = {c: rnd.clients[c].consistency(list_a).signature for c in group_a}
    sig_b = {c: rnd.clients[c].consistency(list_b).signature for c in group_b}

    def bundle(survivors, sigs):
        return ConsistencyBundle(
            context_digest=ctx7.digest(),
            survivors=survivors.survivors,
            signatures=tuple(sorted(sigs.items())),
        )

    # (a) Honest-looking bundles: too few signatures on each list.
    with pytest.raises(InsufficientSharesError):
        rnd.clients[1].unmask(bundle(list_a, sig_a))
    with pytest.raises(InsufficientSharesError):
        rnd.clients[5].unmask(bundle(list_b, sig_b))
    # (b) Signatures over list B passed off as signatures over list A: they do not
    # verify over A, so they are not counted, and A still lacks the quorum.
    padded = {**sig_a, 5: sig_b[5], 6: sig_b[6]}
    with pytest.raises(InsufficientSharesError, match="2 relayed signatures did not verify"):
        rnd.clients[1].unmask(bundle(list_a, padded))
    # (c) A signer that is not on the list is refused outright.
    with pytest.raises(ProtocolError):
        rnd.clients[1].unmask(bundle(list_a, {**sig_a, 7: sig_b[7]}))
    # (d) Sending group A the list that group B signed.
    with pytest.raises(ProtocolError):
        rnd.clients[2].unmask(bundle(list_b, {**sig_a, **sig_b}))
    # Nobody revealed anything; every client still waits in the signed stage.
    assert all(rnd.clients[c].stage is ClientStage.SIGNED for c in fed7.ids)


def test_relayed_signatures_that_do_not_verify_are_not_counted(manual_round, fed7, ctx7, helpers):
    """The server relays consistency signatures unchecked (spec §7 step 4).

    Client 2 (corrupt) sends a signature that does not verify. The server relays it;
    every honest client leaves it out of the count, names client 2, and the round
    still gives the exact sum. A server that pads the bundle with forged signatures
    for survivors that never signed gets no further than without them.
    """
    rnd = manual_round(fed7, ctx7)
    rnd.advertise()
    rnd.share()
    rnd.mask()
    signed = {c: rnd.clients[c].consistency(rnd.survivor_list) for c in fed7.ids}
    signed[2] = dataclasses.replace(signed[2], signature=bytes(reversed(signed[2].signature)))
    for message in signed.values():
        rnd.server.receive_consistency(rnd.wire(message))  # relayed, not verified
    rnd.bundle = rnd.server.close_consistency()
    assert [s for s, _ in rnd.bundle.signatures] == fed7.ids
    reveals = rnd.reveal()
    for cid in fed7.ids:
        assert rnd.clients[cid].unverified_signers == (2,)
    for message in reveals.values():
        rnd.server.receive_unmask(message)
    total = rnd.server.finalize().total
    assert (total == helpers.expected_sum(rnd.inputs, fed7.ids, ctx7.params.ring_bits)).all()

    # A second round: only q - 1 clients sign; the server forges the rest.
    rnd = manual_round(fed7, ctx7, label="forged-quorum")
    rnd.advertise()
    rnd.share()
    rnd.mask()
    quorum = consistency_quorum(len(fed7.ids), ctx7.params.threat)
    honest = fed7.ids[: quorum - 1]
    sigs = {c: rnd.clients[c].consistency(rnd.survivor_list).signature for c in honest}
    forged = {c: bytes(64) for c in fed7.ids if c not in honest}
    bundle = ConsistencyBundle(
        context_digest=ctx7.digest(),
        survivors=rnd.survivor_list.survivors,
        signatures=tuple(sorted({**sigs, **forged}.items())),
    )
    for cid in honest:
        with pytest.raises(InsufficientSharesError, match="did not verify"):
            rnd.clients[cid].unmask(bundle)
        assert rnd.clients[cid].stage is ClientStage.SIGNED  # nothing revealed


def test_server_refuses_a_consistency_signature_of_the_wrong_length(manual_round, fed7, ctx7):
    """The server relays signatures unverified, but not ones that could not be
    encoded into the bundle (the wire format fixes 64 bytes)."""
    rnd = manual_round(fed7, ctx7, label="sig-length")
    rnd.advertise()
    rnd.share()
    rnd.mask()
    first = fed7.ids[0]
    sig = rnd.clients[first].consistency(rnd.survivor_list)
    for bad in (sig.signature[:63], sig.signature + b"\x00"):
        with pytest.raises(ProtocolError, match="64 bytes"):
            rnd.server.receive_consistency(dataclasses.replace(sig, signature=bad))
    rnd.server.receive_consistency(sig)  # nothing was stored for the sender


# -- forged advertisements -------------------------------------------------------------


def _resign(ad: AdvertiseKeys, signer: IdentityKey, **changes) -> AdvertiseKeys:
    fields = {
        "context_digest": ad.context_digest,
        "client_id": ad.client_id,
        "encryption_key": ad.encryption_key,
        "mask_key": ad.mask_key,
        "seed_commitment": ad.seed_commitment,
        **changes,
    }
    payload = derive.advertise_payload(
        fields["context_digest"],
        fields["client_id"],
        fields["encryption_key"],
        fields["mask_key"],
        fields["seed_commitment"],
    )
    return AdvertiseKeys(signature=signer.sign(payload), **fields)


def _forgeries(helpers, fed, ad: AdvertiseKeys):
    intruder = IdentityKey.generate(helpers.rng("intruder"))
    return {
        "non-roster key": (_resign(ad, intruder), IntegrityError),
        "another client's key": (_resign(ad, fed.identities[3]), IntegrityError),
        "modified mask key": (
            dataclasses.replace(ad, mask_key=bytes([ad.mask_key[0] ^ 1]) + ad.mask_key[1:]),
            IntegrityError,
        ),
        "modified commitment": (
            dataclasses.replace(ad, seed_commitment=bytes(32)),
            IntegrityError,
        ),
        "id not on the roster": (_resign(ad, intruder, client_id=99), ProtocolError),
    }


FORGERIES = [
    "non-roster key",
    "another client's key",
    "modified mask key",
    "modified commitment",
    "id not on the roster",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_server_rejects_forged_advertisement(helpers, manual_round, fed7, ctx7, kind):
    rnd = manual_round(fed7, ctx7)
    genuine = rnd.clients[2].advertise()
    forged, error = _forgeries(helpers, fed7, genuine)[kind]
    with pytest.raises(error):
        rnd.server.receive_advertisement(forged)
    rnd.server.receive_advertisement(genuine)  # unaffected by the rejected message
    assert rnd.server.stage is ServerStage.ADVERTISE


@pytest.mark.parametrize("kind", FORGERIES)
def test_client_rejects_forged_advertisement(helpers, manual_round, fed7, ctx7, kind):
    rnd = manual_round(fed7, ctx7)
    ads = {c: client.advertise() for c, client in rnd.clients.items()}
    forged, error = _forgeries(helpers, fed7, ads[2])[kind]
    cohort_ads = (
        {**ads, forged.client_id: forged}
        if kind == "id not on the roster"
        else {
            **ads,
            2: forged,
        }
    )
    cohort = CohortBroadcast(
        context_digest=ctx7.digest(),
        advertisements=tuple(cohort_ads[c] for c in sorted(cohort_ads)),
    )
    client = rnd.clients[1]
    with pytest.raises(error):
        client.share_keys(cohort)
    assert client.stage is ClientStage.ADVERTISED
    genuine = CohortBroadcast(
        context_digest=ctx7.digest(), advertisements=tuple(ads[c] for c in sorted(ads))
    )
    assert client.share_keys(genuine).sender == 1


# -- clients that received different models --------------------------------------------


def test_different_models_cannot_be_mixed(helpers, manual_round, fed7):
    ctx_a = helpers.make_context(fed7, vector_length=4, model=b"model-v1")
    ctx_b = helpers.make_context(fed7, vector_length=4, model=b"model-v2")
    assert ctx_a.model_hash != ctx_b.model_hash
    assert ctx_a.digest() != ctx_b.digest()
    round_a = manual_round(fed7, ctx_a, [1, 2, 3, 4])
    round_b = manual_round(fed7, ctx_b, [5, 6, 7])
    ads_a = {c: x.advertise() for c, x in round_a.clients.items()}
    ads_b = {c: x.advertise() for c, x in round_b.clients.items()}

    # The server of round A refuses B's advertisements.
    for ad in ads_b.values():
        with pytest.raises(ProtocolError):
            round_a.server.receive_advertisement(ad)

    # A server that mixes them anyway: as sent, or relabelled with A's digest.
    relabelled = {
        c: dataclasses.replace(ad, context_digest=ctx_a.digest()) for c, ad in ads_b.items()
    }
    for b_ads, error in ((ads_b, ProtocolError), (relabelled, IntegrityError)):
        mixed = {**ads_a, **b_ads}
        cohort = CohortBroadcast(
            context_digest=ctx_a.digest(), advertisements=tuple(mixed[c] for c in sorted(mixed))
        )
        for cid in ads_a:
            with pytest.raises(error):
                round_a.clients[cid].share_keys(cohort)

    # So no honest client of A shares keys, and A's round ends with nothing revealed.
    server = SecAggServer(roster=fed7.roster, context=ctx_a)
    for ad in ads_a.values():
        server.receive_advertisement(ad)
    server.close_advertise()
    with pytest.raises(InsufficientSharesError):
        server.close_share_keys()
    assert server.stage is ServerStage.ABORTED


def test_mask_seeds_depend_on_the_model(helpers, fed7):
    from securefed.secagg.primitives import x25519_generate

    ctx_a = helpers.make_context(fed7, model=b"model-v1")
    ctx_b = helpers.make_context(fed7, model=b"model-v2")
    a_priv, a_pub = x25519_generate(helpers.rng("kdf", "a"))
    b_priv, b_pub = x25519_generate(helpers.rng("kdf", "b"))
    seed_a = derive.mask_seed(a_priv, b_pub, ctx_a, 1, 2)
    assert seed_a == derive.mask_seed(b_priv, a_pub, ctx_a, 2, 1)  # the pair agrees ...
    assert seed_a != derive.mask_seed(b_priv, a_pub, ctx_b, 2, 1)  # ... only on one model
    key_a = derive.share_channel(a_priv, b_pub, ctx_a, sender=1, receiver=2)
    assert key_a != derive.share_channel(b_priv, a_pub, ctx_b, sender=1, receiver=2)


def test_server_refuses_malformed_unmask_shares_without_changing_state(
    manual_round, fed7, ctx7, helpers
):
    """Each malformed share makes the whole message refused (ProtocolError), and
    the server then accepts the sender's real message and unmasks exactly."""
    from securefed.secagg.messages import UnmaskShare
    from securefed.secagg.shamir import FIELD_PRIME

    rnd = manual_round(fed7, ctx7, label="malformed-unmask")
    rnd.advertise()
    rnd.share()
    rnd.mask(senders=[1, 2, 3, 4, 5, 6])  # 7 drops: its mask-key shares are revealed
    rnd.sign()
    reveals = rnd.reveal()
    sender = 2
    real = reveals[sender]
    first = real.shares[0]

    def with_first(**changes):
        return dataclasses.replace(real, shares=(first._replace(**changes), *real.shares[1:]))

    other_kind = SecretKind.MASK_KEY if first.kind is SecretKind.SELF_SEED else SecretKind.SELF_SEED
    bad = [
        with_first(kind=other_kind),
        with_first(x=first.x + 1),
        with_first(value=FIELD_PRIME.to_bytes(33, "big")),  # not below p
        with_first(value=first.value[:32]),  # short
        with_first(value="0" * 33),  # not bytes
        with_first(owner=99),  # not in U2
        dataclasses.replace(real, shares=(first, *real.shares)),  # an owner twice
        dataclasses.replace(
            real,
            shares=(
                *real.shares,
                UnmaskShare(owner=7, kind=SecretKind.SELF_SEED, x=1, value=first.value),
            ),
        ),
    ]
    for message in bad:
        with pytest.raises(ProtocolError):
            rnd.server.receive_unmask(message)
    for message in reveals.values():
        rnd.server.receive_unmask(message)
    total = rnd.server.finalize().total
    survivors = [1, 2, 3, 4, 5, 6]
    assert (total == helpers.expected_sum(rnd.inputs, survivors, ctx7.params.ring_bits)).all()
