"""Wire encodings of every secure-aggregation message (protocols/secagg.md §4)."""

from __future__ import annotations

import dataclasses

import pytest

from securefed.errors import ProtocolError
from securefed.secagg import messages
from securefed.secagg.messages import (
    SHARE_CIPHERTEXT_BYTES,
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    MessageType,
    SecretKind,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShare,
    UnmaskShares,
    decode_message,
)

DIGEST = bytes(range(32))


def _ad(i: int) -> AdvertiseKeys:
    return AdvertiseKeys(
        context_digest=DIGEST,
        client_id=i,
        encryption_key=bytes([i]) * 32,
        mask_key=bytes([i + 1]) * 32,
        seed_commitment=bytes([i + 2]) * 32,
        signature=bytes([i + 3]) * 64,
    )


CT = bytes(range(SHARE_CIPHERTEXT_BYTES))

MESSAGES = [
    _ad(7),
    CohortBroadcast(context_digest=DIGEST, advertisements=(_ad(1), _ad(2), _ad(3))),
    CohortBroadcast(context_digest=DIGEST, advertisements=()),
    ShareKeys(context_digest=DIGEST, sender=4, ciphertexts=((1, CT), (9, CT[::-1]))),
    ShareDelivery(context_digest=DIGEST, receiver=9, ciphertexts=((4, CT),)),
    MaskedInput(context_digest=DIGEST, sender=3, payload=b"\x01\x02\x03"),
    MaskedInput(context_digest=DIGEST, sender=3, payload=b""),
    SurvivorList(context_digest=DIGEST, survivors=(1, 2, 5)),
    ConsistencySignature(context_digest=DIGEST, sender=2, signature=b"\x09" * 64),
    ConsistencyBundle(
        context_digest=DIGEST,
        survivors=(1, 2),
        signatures=((1, b"\x01" * 64), (2, b"\x02" * 64)),
    ),
    UnmaskShares(
        context_digest=DIGEST,
        sender=2,
        shares=(
            UnmaskShare(owner=1, kind=SecretKind.SELF_SEED, x=2, value=b"\x00" * 33),
            UnmaskShare(owner=3, kind=SecretKind.MASK_KEY, x=2, value=b"\x05" * 33),
        ),
    ),
]
IDS = [f"{type(m).__name__}-{i}" for i, m in enumerate(MESSAGES)]


def test_every_type_is_covered():
    covered = {m.TYPE for m in MESSAGES}
    reserved = {MessageType.INPUT_VALIDATION_REQUEST, MessageType.INPUT_VALIDATION_RESPONSE}
    assert covered == set(MessageType) - reserved


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_round_trip(message):
    data = message.to_bytes()
    assert data[:4] == b"SFSA"
    assert data[4] == 1
    assert data[5] == int(message.TYPE)
    assert data[6:38] == DIGEST
    assert decode_message(data) == message
    assert type(message).from_bytes(data) == message


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_every_truncation_is_rejected(message):
    data = message.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_message(data[:cut])


@pytest.mark.parametrize("message", MESSAGES, ids=IDS)
def test_trailing_bytes_are_rejected(message):
    with pytest.raises(ProtocolError, match="trailing"):
        decode_message(message.to_bytes() + b"\x00")


def test_bad_magic_and_version():
    data = MESSAGES[0].to_bytes()
    with pytest.raises(ProtocolError, match="not a securefed"):
        decode_message(b"SFSB" + data[4:])
    for version in (0, 2, 255):
        with pytest.raises(ProtocolError, match="version"):
            decode_message(data[:4] + bytes([version]) + data[5:])


@pytest.mark.parametrize("code", [6, 7])
def test_reserved_input_validation_types(code):
    data = MESSAGES[0].to_bytes()
    with pytest.raises(ProtocolError, match="input-validation"):
        decode_message(data[:5] + bytes([code]) + data[6:])


@pytest.mark.parametrize("code", [0, 12, 255])
def test_unknown_type(code):
    data = MESSAGES[0].to_bytes()
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_message(data[:5] + bytes([code]) + data[6:])


def test_from_bytes_checks_the_type():
    with pytest.raises(ProtocolError, match="unexpected message type"):
        MaskedInput.from_bytes(MESSAGES[0].to_bytes())


def test_unknown_secret_kind():
    data = bytearray(MESSAGES[-1].to_bytes())
    # header (38) + sender (4) + count (4) + owner (4) -> kind byte
    assert data[38 + 12] == int(SecretKind.SELF_SEED)
    data[38 + 12] = 3
    with pytest.raises(ProtocolError, match="secret kind"):
        decode_message(bytes(data))


def test_oversized_count_is_rejected():
    data = bytearray(SurvivorList(context_digest=DIGEST, survivors=()).to_bytes())
    data[38:42] = (1 << 21).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="longer than allowed"):
        decode_message(bytes(data))


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_any_contiguous_buffer_decodes_as_its_bytes(message):
    # A memoryview of another item size is read as its bytes, not its items: the
    # magic, the header and the body all come from the same byte string.
    data = message.to_bytes()
    padded = data + bytes(-len(data) % 2)
    wide = memoryview(padded).cast("H")
    assert len(wide) != len(padded)
    if len(padded) == len(data):
        assert decode_message(wide) == message
    else:
        with pytest.raises(ProtocolError, match="trailing"):
            decode_message(wide)
    assert decode_message(bytearray(data)) == message
    assert decode_message(memoryview(data)) == message


def test_non_bytes_input():
    with pytest.raises(ProtocolError):
        decode_message("SFSA")  # type: ignore[arg-type]


def test_wrong_field_length_cannot_be_encoded():
    bad = MaskedInput(context_digest=DIGEST[:31], sender=1, payload=b"")
    with pytest.raises(ValueError, match="expected 32 bytes"):
        bad.to_bytes()


def test_masked_payload_is_a_read_only_view_of_a_private_copy():
    # The masked vector is decoded without a copy, as a view into the message the
    # decoder holds; changing the caller's buffer afterwards cannot change it, and
    # nothing can write through it.
    message = MaskedInput(context_digest=DIGEST, sender=4, payload=bytes(range(200)))
    received = bytearray(message.to_bytes())
    decoded = MaskedInput.from_bytes(received)
    received[-1] ^= 0xFF
    assert decoded.payload == bytes(range(200))
    assert decoded == message
    assert isinstance(decoded.payload, memoryview)
    assert decoded.payload.readonly
    with pytest.raises(TypeError):
        decoded.payload[0] = 1  # type: ignore[index]


def _shape(value):
    """``value`` with the type of every part: equality alone would take a bytes
    payload for a memoryview, or a raw int for a SecretKind."""
    if isinstance(value, memoryview):
        return (memoryview, value.readonly, value.format, value.tobytes())
    if isinstance(value, tuple):
        return (type(value), tuple(_shape(v) for v in value))
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return (type(value), tuple((f.name, _shape(getattr(value, f.name))) for f in fields))
    return (type(value), value)


def _outcome(decode, data):
    try:
        return ("ok", decode(data))
    except ProtocolError as exc:
        return ("error", str(exc))


SERVER_BOUND = [
    m
    for m in [
        *MESSAGES,
        ShareKeys(context_digest=DIGEST, sender=5, ciphertexts=()),
        UnmaskShares(context_digest=DIGEST, sender=6, shares=()),
    ]
    if isinstance(m, AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskShares)
]


@pytest.mark.parametrize("message", SERVER_BOUND, ids=lambda m: type(m).__name__)
def test_the_struct_reads_agree_with_the_field_reader_on_every_mutation(message):
    # decode_message reads the five types the server receives with a few struct
    # reads and falls back to the field-by-field reader for anything not exactly
    # well formed. Every truncation, extension and single-byte change must give
    # the reader's own outcome (message or error text), and the struct reads must
    # either decline or agree with it.
    data = message.to_bytes()
    mutations = [data[:k] for k in range(len(data))]
    mutations += [data + b"\x00", data + bytes(SHARE_CIPHERTEXT_BYTES + 4), data + bytes(42)]
    for position in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            changed = bytearray(data)
            changed[position] ^= flip
            mutations.append(bytes(changed))
    declined = agreed = 0
    for candidate in [data, *mutations]:
        reference = _outcome(messages._decode_fields, candidate)
        assert _outcome(decode_message, candidate) == reference
        if len(candidate) >= messages._HEADER.size:
            magic, version, code, digest = messages._HEADER.unpack_from(candidate)
            if magic != messages.MAGIC or version != messages.WIRE_VERSION:
                continue  # decode_message reads no body after a bad header
            fast = messages._well_formed_body(code, candidate, digest)
            if fast is None:
                declined += 1
            else:
                assert reference[0] == "ok"
                assert _shape(fast) == _shape(reference[1])
                agreed += 1
    assert agreed >= 1  # the message itself
    assert declined >= 1
    decoded = decode_message(data)
    if isinstance(decoded, MaskedInput):  # a read-only view of the received bytes
        assert isinstance(decoded.payload, memoryview)
        assert decoded.payload.readonly
        assert decoded.payload.obj is data
