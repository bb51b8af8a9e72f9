"""Secrets never print; the server takes protected updates only; failures are closed."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from securefed.client.update import PlaintextUpdate
from securefed.errors import (
    IntegrityError,
    ProtocolError,
    SecurefedError,
    UnprotectedUpdateError,
)
from securefed.secagg.client import ClientStage
from securefed.secagg.messages import MaskedInput
from securefed.secagg.server import ServerStage
from securefed.secagg.shamir import encode_share_value
from securefed.server.aggregation import require_protected


def _forms(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
        str(int.from_bytes(secret, "big")),
    ]


def test_no_secret_in_repr_logs_or_errors(helpers, manual_round, caplog):
    fed = helpers.make_federation(5, label="secrets")
    ctx = helpers.make_context(fed, vector_length=6)
    caplog.set_level(logging.DEBUG)
    rnd = manual_round(fed, ctx)
    secrets: list[bytes] = []
    texts: list[str] = []

    rnd.advertise()
    for client in rnd.clients.values():
        secrets += [client._enc_private, client._mask_private, client._self_seed]
        texts.append(repr(client))
    share_msgs = rnd.share()
    masked = rnd.mask()
    for client in rnd.clients.values():
        for key_share, seed_share in client._held.values():
            secrets += [encode_share_value(key_share), encode_share_value(seed_share)]
        texts.append(repr(client))
    rnd.sign()
    unmask = rnd.reveal()
    for m in unmask.values():
        rnd.server.receive_unmask(m)
        secrets += [s.value for s in m.shares]
    result = rnd.server.finalize()

    secrets += [fed.identities[c]._key.private_bytes_raw() for c in fed.ids]
    texts += [repr(fed.identities[c]) for c in fed.ids]
    texts += [repr(m) for m in (*share_msgs.values(), *masked.values(), *unmask.values())]
    texts += [repr(s) for m in unmask.values() for s in m.shares]
    texts += [repr(d) for d in rnd.deliveries.values()]
    texts += [repr(rnd.server), repr(result), repr(rnd.inputs[1])]
    texts += [repr(c) for c in rnd.clients.values()]

    # Errors raised by tampering (AEAD, signature, share) carry no secret either.
    errors: list[SecurefedError] = []
    other = manual_round(fed, ctx, label="secrets-2")
    ads = other.advertise()
    for client in other.clients.values():
        secrets += [client._enc_private, client._self_seed]
    other.share()
    delivery = other.deliveries[1]
    sender, ct = delivery.ciphertexts[0]
    bad = dataclasses.replace(delivery, ciphertexts=((sender, bytes([ct[0] ^ 1]) + ct[1:]),))
    with pytest.raises(IntegrityError) as info:
        other.clients[1].masked_input(bad, other.inputs[1])
    errors.append(info.value)
    fresh = manual_round(fed, ctx, label="secrets-3").server
    with pytest.raises(IntegrityError) as info:
        fresh.receive_advertisement(dataclasses.replace(ads[2], signature=bytes(64)))
    errors.append(info.value)
    with pytest.raises(ProtocolError) as info:
        other.clients[1].consistency(other.deliveries[1])  # wrong stage and type
    errors.append(info.value)
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    for client in other.clients.values():
        secrets += list(client._channels.values())  # X25519 secrets of the share channels

    texts.append(caplog.text)
    texts += [str(r.args) for r in caplog.records]
    assert all(isinstance(s, bytes) and len(s) >= 32 for s in secrets)
    blob = "\n".join(texts)
    for secret in secrets:
        for form in _forms(secret):
            assert form not in blob
    # Half a key is already too much: no 16-byte window of a secret appears in hex.
    for secret in secrets:
        assert secret.hex()[:32] not in blob


def test_clients_drop_each_secret_once_it_is_used(helpers, manual_round):
    fed = helpers.make_federation(5, label="drop")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    client = rnd.clients[1]
    assert None not in (client._enc_private, client._mask_private, client._self_seed)
    rnd.share()
    assert client._enc_private is None  # the share channels are derived
    assert client._channels
    assert client._mask_private is not None
    rnd.mask()
    # The masks are on the input: only the shares it holds are left to reveal.
    assert client._mask_private is None
    assert client._self_seed is None
    assert client._channels == {}
    assert client._held


def test_sessions_wipe_their_secrets(helpers, manual_round):
    fed = helpers.make_federation(5, label="wipe")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    rnd.run_until_unmask()
    done = rnd.clients[1]
    done.unmask(rnd.bundle)
    aborted = rnd.clients[2]
    aborted.abort()
    for client in (done, aborted):
        assert client._enc_private is None
        assert client._mask_private is None
        assert client._self_seed is None
        assert client._held == {}
        assert client._channels == {}
    assert aborted.stage is ClientStage.ABORTED


# -- protected updates only ------------------------------------------------------------


def _unprotected(helpers):
    fed = helpers.make_federation(5, label="unprotected")
    ctx = helpers.make_context(fed, vector_length=3)
    quantized = helpers.make_inputs(ctx, [1])[1]
    return [
        np.zeros(4, dtype=np.uint64),
        [1, 2, 3, 4],
        b"\x00" * 16,
        quantized,
        PlaintextUpdate(tensors={"w": np.zeros(4)}),
        torch.zeros(4),
        None,
    ]


def test_require_protected_rejects_everything_else(helpers):
    for update in _unprotected(helpers):
        with pytest.raises(UnprotectedUpdateError):
            require_protected(update)
    masked = MaskedInput(context_digest=bytes(32), sender=1, payload=b"")
    assert require_protected(masked) is masked


def test_server_session_rejects_unprotected_updates(helpers, manual_round):
    fed = helpers.make_federation(5, label="unprotected-server")
    ctx = helpers.make_context(fed, vector_length=3)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    rnd.share()
    for update in _unprotected(helpers):
        with pytest.raises(UnprotectedUpdateError):
            rnd.server.receive_masked_input(update)
    assert rnd.server.stage is ServerStage.MASKED_INPUT
    rnd.mask()  # the genuine masked inputs are still accepted afterwards


def test_server_side_never_imports_client_modules(helpers):
    code = (
        "import sys\n"
        "import securefed.server, securefed.secagg.server, securefed.server.aggregation\n"
        "bad = sorted(m for m in sys.modules if m == 'securefed.client' or "
        "m.startswith('securefed.client.') or "
        "m in ('securefed.secagg.client', 'securefed.secagg.client_input'))\n"
        "print(','.join(bad))\n"
    )
    assert helpers.fresh_interpreter_stdout(code).strip() == ""


# -- failing closed --------------------------------------------------------------------


def test_client_rejects_wrong_stage_and_wrong_context(helpers, manual_round):
    fed = helpers.make_federation(5, label="closed")
    ctx = helpers.make_context(fed, vector_length=5)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    client = rnd.clients[1]
    with pytest.raises(ProtocolError):
        client.advertise()  # wrong stage
    with pytest.raises(ProtocolError):
        client.consistency(rnd.cohort)  # wrong stage
    wrong = dataclasses.replace(rnd.cohort, context_digest=bytes(32))
    with pytest.raises(ProtocolError):
        client.share_keys(wrong)
    assert client.stage is ClientStage.ADVERTISED
    rnd.share()
    report_total = _finish(rnd)
    np.testing.assert_array_equal(
        report_total, helpers.expected_sum(rnd.inputs, fed.ids, ctx.params.ring_bits)
    )


def _finish(rnd):
    rnd.mask()
    rnd.sign()
    for m in rnd.reveal().values():
        rnd.server.receive_unmask(m)
    return rnd.server.finalize().total.astype(np.uint64)


def test_server_rejects_wrong_stage_context_and_duplicates(helpers, manual_round):
    fed = helpers.make_federation(5, label="closed-server")
    ctx = helpers.make_context(fed, vector_length=5)
    rnd = manual_round(fed, ctx)
    server = rnd.server
    ads = {c: x.advertise() for c, x in rnd.clients.items()}
    for ad in ads.values():
        server.receive_advertisement(ad)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.receive_advertisement(ads[1])
    with pytest.raises(ProtocolError, match="another round"):
        server.receive_advertisement(dataclasses.replace(ads[1], context_digest=bytes(32)))
    with pytest.raises(ProtocolError, match="unexpected message"):
        server.close_share_keys()  # wrong stage
    assert server.stage is ServerStage.ADVERTISE
    rnd.cohort = server.close_advertise()
    with pytest.raises(ProtocolError, match="unexpected message"):
        server.receive_advertisement(ads[1])

    shares = {c: rnd.clients[c].share_keys(rnd.cohort) for c in fed.ids}
    for m in shares.values():
        server.receive_share_keys(m)
    with pytest.raises(ProtocolError):
        server.receive_share_keys(shares[2])  # duplicate sender
    with pytest.raises(ProtocolError):
        server.receive_share_keys(dataclasses.replace(shares[2], context_digest=bytes(32)))
    rnd.deliveries = server.close_share_keys()

    masked = {c: rnd.clients[c].masked_input(rnd.deliveries[c], rnd.inputs[c]) for c in fed.ids}
    # Payloads rejected before any input arrived, each measured in bytes, not items:
    # a uint16 view with as many items as the payload has bytes (twice too long, and
    # its real last payload byte has a padding bit set), a non-contiguous view, and
    # something that is not a buffer at all.
    payload = bytes(masked[1].payload)
    assert (len(payload) * 8) % ctx.params.ring_bits  # the last byte has padding bits
    doubled = bytearray(2 * len(payload))
    doubled[: len(payload)] = payload
    doubled[len(payload) - 1] |= 0x80
    wide = memoryview(np.frombuffer(bytes(doubled), dtype=np.uint16))
    assert len(wide) == len(payload)
    bad_payloads = [
        wide,
        memoryview(bytes(x for b in payload for x in (b, 0)))[::2],
        [int(b) for b in payload],
    ]
    for bad in bad_payloads:
        with pytest.raises(ProtocolError):
            server.receive_masked_input(dataclasses.replace(masked[1], payload=bad))
    server.receive_masked_input(masked[1])
    with pytest.raises(ProtocolError):
        server.receive_masked_input(masked[1])  # duplicate: not added twice
    with pytest.raises(ProtocolError):
        server.receive_masked_input(dataclasses.replace(masked[2], context_digest=bytes(32)))
    with pytest.raises(ProtocolError):
        server.receive_masked_input(dataclasses.replace(masked[2], payload=masked[2].payload[:-1]))
    for c in fed.ids[1:]:
        server.receive_masked_input(masked[c])
    rnd.survivor_list = server.close_masked_input()

    sigs = {c: rnd.clients[c].consistency(rnd.survivor_list) for c in fed.ids}
    server.receive_consistency(sigs[1])
    with pytest.raises(ProtocolError):
        server.receive_consistency(sigs[1])
    with pytest.raises(ProtocolError):
        server.receive_consistency(dataclasses.replace(sigs[2], context_digest=bytes(32)))
    for c in fed.ids[1:]:
        server.receive_consistency(sigs[c])
    rnd.bundle = server.close_consistency()

    reveals = rnd.reveal()
    server.receive_unmask(reveals[1])
    with pytest.raises(ProtocolError):
        server.receive_unmask(reveals[1])
    for c in fed.ids[1:]:
        server.receive_unmask(reveals[c])
    total = server.finalize().total.astype(np.uint64)
    np.testing.assert_array_equal(
        total, helpers.expected_sum(rnd.inputs, fed.ids, ctx.params.ring_bits)
    )


def test_client_rejects_wrong_context_at_every_later_stage(helpers, manual_round):
    fed = helpers.make_federation(5, label="closed-later")
    ctx = helpers.make_context(fed, vector_length=5)
    rnd = manual_round(fed, ctx)
    rnd.advertise()
    rnd.share()
    client = rnd.clients[3]
    wrong = dataclasses.replace(rnd.deliveries[3], context_digest=bytes(32))
    with pytest.raises(ProtocolError):
        client.masked_input(wrong, rnd.inputs[3])
    with pytest.raises(ProtocolError):
        client.masked_input(rnd.deliveries[2], rnd.inputs[3])  # addressed to client 2
    assert client.stage is ClientStage.SHARED
    rnd.mask()
    with pytest.raises(ProtocolError):
        client.consistency(dataclasses.replace(rnd.survivor_list, context_digest=bytes(32)))
    assert client.stage is ClientStage.MASKED
    rnd.sign()
    with pytest.raises(ProtocolError):
        client.unmask(dataclasses.replace(rnd.bundle, context_digest=bytes(32)))
    assert client.stage is ClientStage.SIGNED
    for m in rnd.reveal().values():
        rnd.server.receive_unmask(m)
    np.testing.assert_array_equal(
        rnd.server.finalize().total.astype(np.uint64),
        helpers.expected_sum(rnd.inputs, fed.ids, ctx.params.ring_bits),
    )
