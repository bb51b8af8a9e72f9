"""Attacks by a malicious coordinator found in review, each now refused.

1. Selective delivery: the server gives target u only t - 1 peers' shares (corrupt
   ones plus honest H), then drops H from U3 to rebuild their mask keys and strip
   every mask from y_u. Honest u must refuse, because it counts only the peers it
   actually masked with.
2. Band exclusion on the sparse graph: the server ignores the inputs of two
   windows of k/2 consecutive ring positions to isolate the arc between them and
   learn its partial sum. The clients beside a window must refuse.
3. A bad share must not leave the server half-unmasked.
"""

from __future__ import annotations

import dataclasses

import pytest

from securefed.errors import InsufficientSharesError, IntegrityError, ProtocolError
from securefed.secagg import derive
from securefed.secagg.client import ClientStage, SecAggClient
from securefed.secagg.cohort import cohort_layout
from securefed.secagg.graph import GRAPH_LABEL, GraphKind, ThreatModel, consistency_quorum
from securefed.secagg.messages import (
    CohortBroadcast,
    ConsistencyBundle,
    ShareDelivery,
    SurvivorList,
)
from securefed.secagg.primitives import sha256, x25519_usable
from securefed.secagg.server import SecAggServer, ServerStage
from securefed.secagg.shamir import FIELD_PRIME, decode_share_value, encode_share_value


def _sessions(h, fed, ctx, label, **kwargs):
    return {
        i: SecAggClient(
            client_id=i,
            identity=fed.identities[i],
            roster=fed.roster,
            context=ctx,
            rng=h.rng("atk", label, i),
            **kwargs,
        )
        for i in fed.ids
    }


def _setup(h, n, label, *, graph, threat):
    fed = h.make_federation(n, label)
    ctx = h.make_context(fed, graph=graph, threat=threat, vector_length=20)
    ids = fed.ids
    inputs = h.make_inputs(ctx, ids)
    clients = _sessions(h, fed, ctx, label)
    ads = {i: clients[i].advertise() for i in ids}
    cohort = CohortBroadcast(context_digest=ctx.digest(), advertisements=tuple(ads[i] for i in ids))
    params, nbrs, _ = cohort_layout(ads, ctx)
    shares = {i: clients[i].share_keys(cohort) for i in ids}
    return ctx, ids, inputs, clients, ads, params, nbrs, shares


def _delivery(ctx, ids, shares, receiver, allowed=None):
    cts = tuple(
        (s, ct)
        for s in ids
        for (r, ct) in shares[s].ciphertexts
        if r == receiver and (allowed is None or s in allowed)
    )
    return ShareDelivery(context_digest=ctx.digest(), receiver=receiver, ciphertexts=cts)


@pytest.mark.parametrize(
    ("n", "gamma", "graph", "corrupt"),
    [
        (5, 0.0, GraphKind.FULL, 0),  # no corrupt client at all
        (12, 0.2, GraphKind.FULL, 3),  # default gamma, n + n_c odd
        (14, 0.2, GraphKind.FULL, 3),
        (200, 0.0, GraphKind.SPARSE, 0),
    ],
)
def test_selective_delivery_cannot_isolate_one_client(helpers, n, gamma, graph, corrupt):
    ctx, ids, inputs, clients, _, params, nbrs, shares = _setup(
        helpers, n, f"sel{n}", graph=graph, threat=ThreatModel(corrupt_fraction=gamma)
    )
    t = params.threshold
    u = ids[-1]
    colluders = list(nbrs[u])[:corrupt]
    honest = [v for v in nbrs[u] if v not in colluders][: t - 1 - corrupt]
    masked = {}
    for r in ids:
        allowed = set(colluders) | set(honest) if r == u else None
        masked[r] = clients[r].masked_input(_delivery(ctx, ids, shares, r, allowed), inputs[r])
    peers = {u, *colluders, *honest}
    # (a) U3 keeps the neighbours whose shares were withheld from u: u never
    # masked with them, so it refuses the list outright.
    u3 = tuple(i for i in ids if i not in honest)
    with pytest.raises(ProtocolError):
        clients[u].consistency(SurvivorList(context_digest=ctx.digest(), survivors=u3))
    # (b) U3 drops them too: u is left with its colluding peers only (< t).
    u3 = tuple(i for i in ids if i not in honest and (i not in nbrs[u] or i in peers))
    with pytest.raises(InsufficientSharesError):
        clients[u].consistency(SurvivorList(context_digest=ctx.digest(), survivors=u3))
    # (c) The honest list is still accepted afterwards: refusals changed nothing.
    u3 = tuple(i for i in ids if i not in nbrs[u] or i in peers)
    assert clients[u].consistency(SurvivorList(context_digest=ctx.digest(), survivors=u3))


def test_band_exclusion_on_the_sparse_ring_is_refused(helpers):
    n = 200
    ctx, ids, inputs, clients, ads, params, _, shares = _setup(
        helpers, n, "band", graph=GraphKind.SPARSE, threat=ThreatModel(corrupt_fraction=0.0)
    )
    assert params.kind is GraphKind.SPARSE
    half = params.degree // 2
    seed = derive.graph_seed(ctx.digest(), ((i, ads[i].signature) for i in ids))
    ring = sorted(ids, key=lambda c: sha256(GRAPH_LABEL, seed, c.to_bytes(4, "big")))
    arc_length = half + 1
    band1 = ring[:half]
    arc = ring[half : half + arc_length]
    band2 = ring[half + arc_length : 2 * half + arc_length]
    for r in ids:
        clients[r].masked_input(_delivery(ctx, ids, shares, r), inputs[r])
    u3 = tuple(i for i in ids if i not in set(band1) | set(band2))
    survivors = SurvivorList(context_digest=ctx.digest(), survivors=u3)
    refused = set()
    for c in (arc[0], arc[-1], ring[2 * half + arc_length], ring[-1]):
        with pytest.raises(InsufficientSharesError):
            clients[c].consistency(survivors)
        refused.add(c)
    # Both ends of the isolated arc refuse, so their self-mask seeds are never
    # revealed by them and the arc's partial sum stays masked.
    assert {arc[0], arc[-1]} <= refused


def test_bad_share_aborts_finalize_without_touching_the_sum(helpers, monkeypatch):
    # Spec §7 step 5: every secret is checked before any mask is removed, so a bad
    # share aborts the round before the server expands a single mask.
    import securefed.secagg.server as server_module

    expanded = []
    expand = server_module.MaskExpander.expand

    def recording(self, seed):
        expanded.append(seed)
        return expand(self, seed)

    monkeypatch.setattr(server_module.MaskExpander, "expand", recording)
    h = helpers
    fed = h.make_federation(6, "finalize")
    ctx = h.make_context(fed, vector_length=5)
    ids = fed.ids
    inputs = h.make_inputs(ctx, ids)
    server = SecAggServer(roster=fed.roster, context=ctx)
    clients = _sessions(h, fed, ctx, "fin")
    for i in ids:
        server.receive_advertisement(clients[i].advertise())
    cohort = server.close_advertise()
    for i in ids:
        server.receive_share_keys(clients[i].share_keys(cohort))
    deliveries = server.close_share_keys()
    for i in ids[:-1]:  # client 6 drops
        server.receive_masked_input(clients[i].masked_input(deliveries[i], inputs[i]))
    listed = server.close_masked_input()
    for i in listed.survivors:
        server.receive_consistency(clients[i].consistency(listed))
    bundle = server.close_consistency()
    for i in listed.survivors:
        message = clients[i].unmask(bundle)
        if i == 1:  # a corrupt holder corrupts its share of the dropped client's key
            message = dataclasses.replace(
                message,
                shares=tuple(
                    s._replace(
                        value=encode_share_value((decode_share_value(s.value) + 1) % FIELD_PRIME),
                    )
                    if s.owner == 6
                    else s
                    for s in message.shares
                ),
            )
        server.receive_unmask(message)
    expanded.clear()  # the clients expanded their masks with the same class
    with pytest.raises(IntegrityError):
        server.finalize()
    assert server.stage is ServerStage.ABORTED
    assert expanded == []
    assert server._sum is None
    assert server._points == {}
    with pytest.raises(ProtocolError):
        server.finalize()


def test_low_order_keys_are_refused_at_advertisement(helpers):
    h = helpers
    fed = h.make_federation(4, "low-order")
    ctx = h.make_context(fed)
    client = SecAggClient(
        client_id=1, identity=fed.identities[1], roster=fed.roster, context=ctx, rng=h.rng("lo")
    )
    ad = client.advertise()
    assert x25519_usable(ad.mask_key)
    zero = bytes(32)
    assert not x25519_usable(zero)
    payload = derive.advertise_payload(ctx.digest(), 1, ad.encryption_key, zero, ad.seed_commitment)
    forged = dataclasses.replace(ad, mask_key=zero, signature=fed.identities[1].sign(payload))
    server = SecAggServer(roster=fed.roster, context=ctx)
    with pytest.raises(ProtocolError):
        server.receive_advertisement(forged)
    server.receive_advertisement(ad)  # state unchanged: the honest advertisement is accepted


def test_owner_minimum_cohort_beats_the_server_context(helpers):
    h = helpers
    fed = h.make_federation(4, "min-cohort")
    ctx = h.make_context(fed, min_clients=3)
    clients = _sessions(h, fed, ctx, "mc", min_cohort=10)
    ads = tuple(clients[i].advertise() for i in fed.ids)
    cohort = CohortBroadcast(context_digest=ctx.digest(), advertisements=ads)
    with pytest.raises(InsufficientSharesError):
        clients[1].share_keys(cohort)


def test_negative_or_wrong_dtype_input_is_refused(helpers):
    h = helpers
    fed = h.make_federation(4, "dtype")
    ctx = h.make_context(fed, vector_length=3)
    inputs = h.make_inputs(ctx, fed.ids)
    report = h.run_round(fed, ctx, inputs, label="dtype")
    assert report.result is not None
    bad = dataclasses.replace(inputs[1], values=inputs[1].values.astype("int64") - 10**6)
    clients = _sessions(h, fed, ctx, "dt")
    ads = tuple(clients[i].advertise() for i in fed.ids)
    cohort = CohortBroadcast(context_digest=ctx.digest(), advertisements=ads)
    shares = {i: clients[i].share_keys(cohort) for i in fed.ids}
    delivery = _delivery(ctx, fed.ids, shares, 1)
    with pytest.raises(ProtocolError):
        clients[1].masked_input(delivery, bad)
    clients[1].masked_input(delivery, inputs[1])  # unchanged: the good input still goes through


def test_survivor_list_equivocation_across_the_ring_is_refused(helpers):
    """Second review: different lists for different ring regions (no corrupt client).

    Ring layout ``zone | A | zone | R`` with zones ``D, X * (k/2 + 2), D``. A and R
    receive only their own arc's and D's shares and get lists A and R; X receives
    everything and gets the list X + A + R (without D), so D's mask keys would be
    rebuilt from shares revealed by every group. With only peer signatures counted,
    the server recovered sum(A) and sum(R) separately. Now every client needs a
    global quorum of signatures on its own list, which none of the lists has.
    """
    h = helpers
    n = 60
    fed = h.make_federation(n, "equivocation")
    ctx = h.make_context(
        fed, graph=GraphKind.SPARSE, threat=ThreatModel(corrupt_fraction=0.0), vector_length=6
    )
    ids = fed.ids
    inputs = h.make_inputs(ctx, ids)
    clients = _sessions(h, fed, ctx, "equivocation")
    ads = {i: clients[i].advertise() for i in ids}
    cohort = CohortBroadcast(context_digest=ctx.digest(), advertisements=tuple(ads[i] for i in ids))
    params, _, _ = cohort_layout(ads, ctx)
    assert params.kind is GraphKind.SPARSE
    half = params.degree // 2
    seed = derive.graph_seed(ctx.digest(), ((i, ads[i].signature) for i in ids))
    ring = sorted(ids, key=lambda c: sha256(GRAPH_LABEL, seed, c.to_bytes(4, "big")))
    zone = half + 4
    arc = (n - 2 * zone) // 2
    role: dict[int, str] = {}
    position = 0
    for part, size in (("zone", zone), ("A", arc), ("zone", zone), ("R", n - 2 * zone - arc)):
        for j in range(size):
            role[ring[position]] = part if part != "zone" else ("D" if j in (0, size - 1) else "X")
            position += 1
    groups = {g: sorted(c for c in ids if role[c] == g) for g in "ARDX"}
    shares = {i: clients[i].share_keys(cohort) for i in ids}

    def opens(receiver, sender):
        return role[receiver] == "X" or role[sender] in (role[receiver], "D")

    for c in groups["A"] + groups["R"] + groups["X"]:  # D never sends its input
        allowed = {s for s in ids if opens(c, s)}
        clients[c].masked_input(_delivery(ctx, ids, shares, c, allowed), inputs[c])
    lists = {
        "A": tuple(groups["A"]),
        "R": tuple(groups["R"]),
        "X": tuple(sorted(groups["X"] + groups["A"] + groups["R"])),
    }
    signatures: dict[str, list[tuple[int, bytes]]] = {g: [] for g in lists}
    for c in groups["A"] + groups["R"] + groups["X"]:
        listed = SurvivorList(context_digest=ctx.digest(), survivors=lists[role[c]])
        try:
            signatures[role[c]].append((c, clients[c].consistency(listed).signature))
        except (InsufficientSharesError, ProtocolError):
            continue  # clients at the edges refuse; the attack works with the rest
    # The attack's precondition, as in review: enough peer signatures per region.
    assert all(len(v) >= params.threshold for v in signatures.values())
    quorum = consistency_quorum(n, ctx.params.threat)
    assert all(len(v) < quorum for v in signatures.values())
    for group, signed in signatures.items():
        bundle = ConsistencyBundle(
            context_digest=ctx.digest(), survivors=lists[group], signatures=tuple(sorted(signed))
        )
        for c, _ in signed:
            with pytest.raises(InsufficientSharesError):
                clients[c].unmask(bundle)


# -- relayed consistency signatures (spec §6 step 5, §7 step 4) -------------------------


def _signed_sparse_round(h, label):
    """60 clients on the sparse graph, all past the masked input, each signing U3."""
    ctx, ids, inputs, clients, _, params, nbrs, shares = _setup(
        h, 60, label, graph=GraphKind.SPARSE, threat=ThreatModel(corrupt_fraction=0.0)
    )
    assert params.kind is GraphKind.SPARSE
    for r in ids:
        clients[r].masked_input(_delivery(ctx, ids, shares, r), inputs[r])
    u3 = SurvivorList(context_digest=ctx.digest(), survivors=tuple(ids))
    sigs = {c: clients[c].consistency(u3).signature for c in ids}
    return ctx, ids, clients, params, nbrs, sigs


def _bundle_of(ctx, ids, sigs):
    return ConsistencyBundle(
        context_digest=ctx.digest(), survivors=tuple(ids), signatures=tuple(sorted(sigs.items()))
    )


def test_forged_signatures_do_not_count_toward_the_global_quorum(helpers):
    """Sparse graph: q - 1 genuine signatures, including the client's and all its
    peers', the rest forged by the server. The per-peer check passes; only the
    global quorum, counted over signatures that verify, stops the client. (On the
    full graph t = q, so there one check would cover for the other.)"""
    ctx, ids, clients, _, nbrs, sigs = _signed_sparse_round(helpers, "forged-quorum")
    q = consistency_quorum(len(ids), ctx.params.threat)
    c = ids[0]
    genuine = {c, *nbrs[c]}
    genuine |= set([i for i in ids if i not in genuine][: q - 1 - len(genuine)])
    assert len(genuine) == q - 1
    padded = {i: (sigs[i] if i in genuine else bytes(64)) for i in ids}
    with pytest.raises(InsufficientSharesError, match="too few clients confirmed"):
        clients[c].unmask(_bundle_of(ctx, ids, padded))
    assert clients[c].stage is ClientStage.SIGNED
    assert clients[c].unverified_signers == tuple(sorted(set(ids) - genuine))


def test_forged_peer_signatures_do_not_count_toward_t(helpers):
    """Sparse graph: the global quorum holds, but only t - 1 of the client's peers
    signed with a signature that verifies; the client refuses and names the rest."""
    ctx, ids, clients, params, nbrs, sigs = _signed_sparse_round(helpers, "forged-peers")
    c = ids[0]
    peers = sorted({c, *nbrs[c]})
    forged = [p for p in peers if p != c][: len(peers) - (params.threshold - 1)]
    padded = {i: (bytes(64) if i in forged else sigs[i]) for i in ids}
    assert len(ids) - len(forged) >= consistency_quorum(len(ids), ctx.params.threat)
    with pytest.raises(InsufficientSharesError, match="too few share holders"):
        clients[c].unmask(_bundle_of(ctx, ids, padded))
    assert clients[c].stage is ClientStage.SIGNED
    assert clients[c].unverified_signers == tuple(forged)
    assert clients[c].unmask(_bundle_of(ctx, ids, sigs)).shares  # the real bundle passes
    assert clients[c].unverified_signers == ()
