"""The library against the committed vectors in protocols/secagg/vectors/.

Every valid case must be reproduced byte for byte and every invalid case must
fail with the recorded exception. The round is checked twice: re-run from the
recorded seeds (every message compared), and replayed message by message into
a fresh server. Helpers here are written independently of the generator, which
is imported only to check that it regenerates the committed files exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from securefed import errors
from securefed.randomness import DeterministicRandom
from securefed.secagg import derive
from securefed.secagg.client import SecAggClient
from securefed.secagg.client_input import quantize
from securefed.secagg.context import PROTOCOL_VERSION, RoundContext, SecAggParams
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.messages import (
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
    decode_message,
)
from securefed.secagg.primitives import (
    PRG_NONCE_MASK,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    prg_expand,
    x25519_public,
    x25519_shared,
)
from securefed.secagg.quantize import QuantizationSpec
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry
from securefed.secagg.server import SecAggServer
from securefed.secagg.shamir import (
    correct,
    decode_share_value,
    encode_share_value,
    reconstruct,
    split,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocols" / "secagg" / "vectors"
GENERATOR = ROOT / "protocols" / "secagg" / "generate_vectors.py"
FILES = (
    "x25519_rfc7748.json",
    "hkdf_rfc5869.json",
    "prg.json",
    "share_encryption.json",
    "shamir.json",
    "round_5clients.json",
)


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def error_type(name: str) -> type[Exception]:
    if name == "ValueError":
        return ValueError
    error = getattr(errors, name)
    assert issubclass(error, errors.SecurefedError)
    return error


def cases(name: str, kind: str) -> list[Any]:
    return [pytest.param(c, id=c["name"]) for c in load(name)[kind]]


def h(data: str) -> bytes:
    return bytes.fromhex(data)


# -- every file -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_file_header(name: str) -> None:
    doc = load(name)
    assert doc["generator"] == "protocols/secagg/generate_vectors.py"
    assert doc["protocol_version"] == PROTOCOL_VERSION
    assert doc["source"]
    assert doc["description"]
    assert doc["valid"]
    assert doc["invalid"]
    names = [c["name"] for c in doc["valid"] + doc["invalid"]]
    assert len(names) == len(set(names))
    assert (VECTORS / name).read_text(encoding="utf-8") == (
        json.dumps(doc, indent=1, sort_keys=True) + "\n"
    )


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("securefed_secagg_generate_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    assert sorted(p.name for p in written) == sorted(FILES)
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


# -- RFC 7748 -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("x25519_rfc7748.json", "valid"))
def test_x25519_valid(case: dict[str, Any]) -> None:
    if case["kind"] == "scalar_mult":
        assert x25519_shared(h(case["scalar"]), h(case["u"])).hex() == case["output"]
    elif case["kind"] == "iterated":
        k = u = h(case["start"])
        for _ in range(case["iterations"]):
            k, u = x25519_shared(k, u), k
        assert k.hex() == case["output"]
    else:
        assert case["kind"] == "diffie_hellman"
        a, b = h(case["alice_private"]), h(case["bob_private"])
        assert x25519_public(a).hex() == case["alice_public"]
        assert x25519_public(b).hex() == case["bob_public"]
        assert x25519_shared(a, h(case["bob_public"])).hex() == case["shared"]
        assert x25519_shared(b, h(case["alice_public"])).hex() == case["shared"]


@pytest.mark.parametrize("case", cases("x25519_rfc7748.json", "invalid"))
def test_x25519_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(error_type(case["error"])):
        x25519_shared(h(case["private"]), h(case["peer_public"]))


def test_x25519_rfc_values_verbatim() -> None:
    # RFC 7748 §6.1, typed in here a second time so a regenerated file cannot drift.
    dh = next(c for c in load("x25519_rfc7748.json")["valid"] if c["name"] == "rfc7748-6.1")
    assert dh["shared"] == "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


# -- RFC 5869 -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("hkdf_rfc5869.json", "valid"))
def test_hkdf_valid(case: dict[str, Any]) -> None:
    ikm, salt, info = h(case["ikm"]), h(case["salt"]), h(case["info"])
    okm = hkdf_sha256(ikm, salt=salt, info=info, length=case["length"])
    assert okm.hex() == case["okm"]
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    assert prk.hex() == case["prk"]


@pytest.mark.parametrize("case", cases("hkdf_rfc5869.json", "invalid"))
def test_hkdf_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(error_type(case["error"])):
        hkdf_sha256(
            h(case["ikm"]), salt=h(case["salt"]), info=h(case["info"]), length=case["length"]
        )


# -- PRG ------------------------------------------------------------------------------------


def test_prg_nonce_layout() -> None:
    doc = load("prg.json")
    assert doc["prg_nonce_mask"] == PRG_NONCE_MASK.hex()
    assert h(doc["prg_nonce_mask"]) == b"\x00\x00\x00\x00sfsecaggmask"


@pytest.mark.parametrize("case", cases("prg.json", "valid"))
def test_prg_valid(case: dict[str, Any]) -> None:
    values = prg_expand(h(case["seed"]), case["count"], case["bits"])
    assert str(values.dtype) == case["dtype"]
    assert [str(int(v)) for v in values] == case["values"]


@pytest.mark.parametrize("case", cases("prg.json", "invalid"))
def test_prg_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(error_type(case["error"])):
        prg_expand(h(case["seed"]), case["count"], case["bits"])


# -- contexts -------------------------------------------------------------------------------


def context_of(fields: dict[str, Any]) -> RoundContext:
    p = fields["params"]
    return RoundContext(
        federation_id=fields["federation_id"],
        round_id=fields["round_id"],
        model_hash=h(fields["model_hash"]),
        roster_hash=h(fields["roster_hash"]),
        params=SecAggParams(
            quantization=QuantizationSpec(
                bits=p["quantization_bits"], clip=p["clip"], max_weight=p["max_weight"]
            ),
            vector_length=p["vector_length"],
            max_clients=p["max_clients"],
            min_clients=p["min_clients"],
            threat=ThreatModel(
                corrupt_fraction=p["corrupt_fraction"],
                dropout_fraction=p["dropout_fraction"],
                sigma=p["sigma"],
                eta=p["eta"],
            ),
            graph=None if p["graph"] is None else GraphKind[p["graph"]],
            full_graph_up_to=p["full_graph_up_to"],
        ),
    )


def checked_context(case: dict[str, Any]) -> RoundContext:
    context = context_of(case["context"])
    assert context.to_bytes().hex() == case["context_bytes"]
    assert context.digest().hex() == case["context_digest"]
    return context


# -- share encryption -----------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("share_encryption.json", "valid"))
def test_share_encryption_valid(case: dict[str, Any]) -> None:
    context = checked_context(case)
    s_priv, r_priv = h(case["sender_private"]), h(case["receiver_private"])
    assert x25519_public(s_priv).hex() == case["sender_public"]
    assert x25519_public(r_priv).hex() == case["receiver_public"]
    assert x25519_shared(s_priv, h(case["receiver_public"])).hex() == case["x25519_shared"]
    sender, receiver = case["sender"], case["receiver"]
    for own, peer in ((s_priv, case["receiver_public"]), (r_priv, case["sender_public"])):
        key, nonce = derive.share_channel(own, h(peer), context, sender=sender, receiver=receiver)
        assert (key.hex(), nonce.hex()) == (case["key"], case["nonce"])
        back = derive.share_channel(own, h(peer), context, sender=receiver, receiver=sender)
        assert (back[0].hex(), back[1].hex()) == (case["reverse_key"], case["reverse_nonce"])
    ad = derive.share_associated_data(context, sender=sender, receiver=receiver)
    assert ad.hex() == case["associated_data"]
    plaintext = h(case["plaintext"])
    assert int.from_bytes(plaintext[0:4], "big") == sender
    assert int.from_bytes(plaintext[4:8], "big") == receiver
    ciphertext = aead_encrypt(h(case["key"]), h(case["nonce"]), plaintext, ad)
    assert ciphertext.hex() == case["ciphertext"]
    assert aead_decrypt(h(case["key"]), h(case["nonce"]), ciphertext, ad) == plaintext


@pytest.mark.parametrize("case", cases("share_encryption.json", "invalid"))
def test_share_encryption_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(error_type(case["error"])):
        aead_decrypt(
            h(case["key"]), h(case["nonce"]), h(case["ciphertext"]), h(case["associated_data"])
        )


# -- Shamir ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("shamir.json", "valid"))
def test_shamir_valid(case: dict[str, Any]) -> None:
    secret, t = h(case["secret"]), case["threshold"]
    shares = split(secret, xs=case["xs"], threshold=t, rng=DeterministicRandom(h(case["rng_seed"])))
    assert [encode_share_value(y).hex() for y in shares] == case["shares"]
    by_x = {x: decode_share_value(h(v)) for x, v in zip(case["xs"], case["shares"], strict=True)}
    for subset in case["reconstruct_from"]:
        assert len(subset) >= t
        assert reconstruct([(x, by_x[x]) for x in subset], threshold=t) == secret
    if "correct" in case:
        fix = case["correct"]
        points = [(x, decode_share_value(h(v))) for x, v in fix["points"]]
        wrong = [x for x, y in points if y != by_x[x]]
        assert wrong == fix["wrong_xs"]
        assert 0 < len(wrong) <= (len(points) - t) // 2
        assert correct(points, threshold=t) == (secret, tuple(wrong))


def test_shamir_vectors_include_corrected_sharings() -> None:
    doc = load("shamir.json")
    assert sum("correct" in case for case in doc["valid"]) >= 2
    assert any(case["kind"] == "correct" for case in doc["invalid"])


@pytest.mark.parametrize("case", cases("shamir.json", "invalid"))
def test_shamir_invalid(case: dict[str, Any]) -> None:
    error = error_type(case["error"])
    if case["kind"] == "decode":
        with pytest.raises(error):
            decode_share_value(h(case["value"]))
        return
    points = [(x, decode_share_value(h(v))) for x, v in case["points"]]
    if case["kind"] == "reconstruct":
        assert len(points) == case["threshold"] - 1
        with pytest.raises(error):
            reconstruct(points, threshold=case["threshold"])
        return
    if case["kind"] == "correct":
        with pytest.raises(error):
            correct(points, threshold=case["threshold"])
        return
    assert case["kind"] == "commitment"
    value = reconstruct(points, threshold=case["threshold"])
    assert value.hex() == case["reconstructed"]
    digest, owner = h(case["commitment_context_digest"]), case["commitment_owner"]
    assert derive.seed_commitment(digest, owner, value).hex() != case["commitment"]


def test_shamir_tampered_share_comes_from_a_valid_sharing() -> None:
    doc = load("shamir.json")
    tampered = next(c for c in doc["invalid"] if c["kind"] == "commitment")
    base = doc["valid"][0]
    digest, owner = h(tampered["commitment_context_digest"]), tampered["commitment_owner"]
    assert derive.seed_commitment(digest, owner, h(base["secret"])).hex() == tampered["commitment"]
    honest = dict(zip(base["xs"], base["shares"], strict=True))
    changed = [x for x, v in tampered["points"] if honest[x] != v]
    assert len(changed) == 1


# -- the round ------------------------------------------------------------------------------

ROUND = "round_5clients.json"


def round_record() -> dict[str, Any]:
    return load(ROUND)["valid"][0]


def round_roster(record: dict[str, Any]) -> Roster:
    entries = []
    for c in record["clients"]:
        identity = IdentityKey.generate(DeterministicRandom(h(c["identity_seed"])))
        assert identity.public_key.hex() == c["identity_public"]
        entries.append(
            RosterEntry(
                client_id=c["client_id"],
                name=f"client-{c['client_id']}",
                identity_key=identity.public_key,
            )
        )
    roster = Roster(federation_id=record["context"]["federation_id"], version=1, entries=entries)
    assert roster.to_bytes().hex() == record["roster_bytes"]
    assert roster.digest().hex() == record["roster_digest"]
    assert record["context"]["roster_hash"] == record["roster_digest"]
    return roster


def round_client(c: dict[str, Any], roster: Roster, context: RoundContext) -> SecAggClient:
    return SecAggClient(
        client_id=c["client_id"],
        identity=IdentityKey.generate(DeterministicRandom(h(c["identity_seed"]))),
        roster=roster,
        context=context,
        rng=DeterministicRandom(h(c["session_seed"])),
    )


def recorded(record: dict[str, Any], key: str) -> dict[int, str]:
    return {e["client_id"]: e["message"] for e in record[key]}


def test_round_messages_decode_canonically() -> None:
    record = round_record()
    digest = h(record["context_digest"])
    messages = [record["cohort"], record["survivors"], record["consistency_bundle"]]
    for key in (
        "advertisements",
        "share_keys",
        "deliveries",
        "masked_inputs",
        "consistency_signatures",
        "unmask_shares",
    ):
        messages += list(recorded(record, key).values())
    for data in messages:
        message = decode_message(h(data))
        assert message.context_digest == digest
        assert message.to_bytes().hex() == data


def test_round_rerun_from_seeds() -> None:
    record = round_record()
    context = checked_context(record)
    roster = round_roster(record)
    assert context.params.ring_bits == record["ring_bits"]
    spec = context.params.quantization
    dropped = set(record["dropped_before_masked_input"])
    clients, inputs = {}, {}
    for c in record["clients"]:
        cid = c["client_id"]
        clients[cid] = round_client(c, roster, context)
        inputs[cid] = quantize(
            np.array(c["update"]),
            spec,
            weight=c["weight"],
            rng=DeterministicRandom(h(c["quantize_seed"])),
        )
        assert [str(int(v)) for v in inputs[cid].values] == c["quantized"]
    ids = sorted(clients)

    ads = {cid: clients[cid].advertise().to_bytes().hex() for cid in ids}
    assert ads == recorded(record, "advertisements")
    cohort = CohortBroadcast.from_bytes(h(record["cohort"]))
    shares = {cid: clients[cid].share_keys(cohort).to_bytes().hex() for cid in ids}
    assert shares == recorded(record, "share_keys")
    deliveries = recorded(record, "deliveries")
    masked = {
        cid: clients[cid]
        .masked_input(ShareDelivery.from_bytes(h(deliveries[cid])), inputs[cid])
        .to_bytes()
        .hex()
        for cid in ids
        if cid not in dropped
    }
    assert masked == recorded(record, "masked_inputs")
    survivors = SurvivorList.from_bytes(h(record["survivors"]))
    assert list(survivors.survivors) == record["survivor_ids"]
    signatures = {
        cid: clients[cid].consistency(survivors).to_bytes().hex() for cid in survivors.survivors
    }
    assert signatures == recorded(record, "consistency_signatures")
    bundle = ConsistencyBundle.from_bytes(h(record["consistency_bundle"]))
    unmask = {cid: clients[cid].unmask(bundle).to_bytes().hex() for cid in survivors.survivors}
    assert unmask == recorded(record, "unmask_shares")

    bits = record["ring_bits"]
    expected = [
        str(sum(int(inputs[cid].values[i]) for cid in survivors.survivors) % (1 << bits))
        for i in range(context.params.vector_length + 1)
    ]
    assert expected == record["expected_total"]


def replay(
    record: dict[str, Any],
    *,
    inject: dict[str, Any] | None = None,
) -> tuple[SecAggServer, list[str]]:
    """Feed the recorded messages into a fresh server, optionally injecting one message.

    Raises whatever the server raises; checks every server-produced message on the way.
    """
    context = checked_context(record)
    server = SecAggServer(roster=round_roster(record), context=context)
    stages = [
        ("advertise", "advertisements", AdvertiseKeys, server.receive_advertisement),
        ("share_keys", "share_keys", ShareKeys, server.receive_share_keys),
        ("masked_input", "masked_inputs", MaskedInput, server.receive_masked_input),
        (
            "consistency",
            "consistency_signatures",
            ConsistencySignature,
            server.receive_consistency,
        ),
        ("unmask", "unmask_shares", UnmaskShares, server.receive_unmask),
    ]
    plan = inject or {}
    for stage, key, kind, receive in stages:
        here = plan.get("stage") == stage
        for cid, data in recorded(record, key).items():
            if here and plan["mode"] == "replace" and plan["sender"] == cid:
                data = plan["message"]
            receive(kind.from_bytes(h(data)))
        if here and plan["mode"] == "append":
            receive(kind.from_bytes(h(plan["message"])))
        if stage == "advertise":
            assert server.close_advertise().to_bytes().hex() == record["cohort"]
        elif stage == "share_keys":
            routed = {u: d.to_bytes().hex() for u, d in server.close_share_keys().items()}
            assert routed == recorded(record, "deliveries")
        elif stage == "masked_input":
            assert server.close_masked_input().to_bytes().hex() == record["survivors"]
        elif stage == "consistency":
            assert server.close_consistency().to_bytes().hex() == record["consistency_bundle"]
    result = server.finalize()
    return server, [str(int(v)) for v in result.total]


def test_round_replay_into_fresh_server() -> None:
    record = round_record()
    server, total = replay(record)
    assert total == record["expected_total"]
    assert server.stage.value == "done"


def test_round_result_metadata() -> None:
    record = round_record()
    context = checked_context(record)
    server = SecAggServer(roster=round_roster(record), context=context)
    for data in recorded(record, "advertisements").values():
        server.receive_advertisement(AdvertiseKeys.from_bytes(h(data)))
    server.close_advertise()
    for data in recorded(record, "share_keys").values():
        server.receive_share_keys(ShareKeys.from_bytes(h(data)))
    server.close_share_keys()
    for data in recorded(record, "masked_inputs").values():
        server.receive_masked_input(MaskedInput.from_bytes(h(data)))
    server.close_masked_input()
    for data in recorded(record, "consistency_signatures").values():
        server.receive_consistency(ConsistencySignature.from_bytes(h(data)))
    server.close_consistency()
    for data in recorded(record, "unmask_shares").values():
        server.receive_unmask(UnmaskShares.from_bytes(h(data)))
    result = server.finalize()
    assert list(result.survivors) == record["survivor_ids"]
    assert {k: list(v) for k, v in result.dropped.items()} == record["dropped"]
    graph = record["graph"]
    assert result.graph.kind.name == graph["kind"]
    assert (result.graph.n, result.graph.degree, result.graph.threshold) == (
        graph["n"],
        graph["degree"],
        graph["threshold"],
    )


@pytest.mark.parametrize("case", cases(ROUND, "invalid"))
def test_round_invalid(case: dict[str, Any]) -> None:
    record = round_record()
    if case["target"] == "client":
        context = checked_context(record)
        roster = round_roster(record)
        spec = next(c for c in record["clients"] if c["client_id"] == case["client_id"])
        client = round_client(spec, roster, context)
        advert = client.advertise().to_bytes().hex()
        assert advert == recorded(record, "advertisements")[case["client_id"]]
        assert case["stage"] == "share_keys"
        with pytest.raises(error_type(case["error"])):
            client.share_keys(CohortBroadcast.from_bytes(h(case["message"])))
        assert client.stage.value == "advertised"  # a rejected message changes nothing
        return
    if "error" not in case:
        assert case["outcome"] == "wrong_total"
        _, total = replay(record, inject=case)
        assert total == case["total"]
        assert total != record["expected_total"]
        return
    error = error_type(case["error"])
    if case["raises_at"] == "finalize":
        with pytest.raises(error):
            replay(record, inject=case)
        return
    assert case["raises_at"] == "receive"
    # The error must come from the injected message itself: replaying without the
    # bad message succeeds, and the stage's other messages are still accepted.
    with pytest.raises(error) as info:
        replay(record, inject=case)
    frames = [f.name for f in info.traceback]
    assert not any(name in {"finalize"} for name in frames)
    assert any(name.startswith("receive_") for name in frames)
