"""Secure-aggregation messages and their byte encodings (protocols/secagg.md §4).

Every message starts with a header: magic ``SFSA``, protocol version (u8),
message type (u8) and the 32-byte round-context digest. Types 6 and 7 are
reserved for the optional input-validation stage (norm-bound proofs); version 1
rejects them. There is deliberately no message type for a plaintext update.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

from securefed.errors import ProtocolError
from securefed.secagg.encoding import MAX_LIST_ITEMS, Reader, Writer
from securefed.secagg.primitives import KEY_BYTES, SIGNATURE_BYTES
from securefed.secagg.shamir import SHARE_BYTES

__all__ = [
    "AdvertiseKeys",
    "CohortBroadcast",
    "ConsistencyBundle",
    "ConsistencySignature",
    "MaskedInput",
    "Message",
    "MessageType",
    "SecretKind",
    "ShareDelivery",
    "ShareKeys",
    "SurvivorList",
    "UnmaskShare",
    "UnmaskShares",
    "decode_message",
]

MAGIC = b"SFSA"
WIRE_VERSION = 1
AEAD_TAG_BYTES = 16
SHARE_PLAINTEXT_BYTES = 4 + 4 + 4 + 2 * SHARE_BYTES
"""owner id, holder id, x, mask-key share, self-seed share."""
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + AEAD_TAG_BYTES


class MessageType(enum.IntEnum):
    """Wire codes of the message types."""

    ADVERTISE_KEYS = 1
    COHORT = 2
    SHARE_KEYS = 3
    SHARE_DELIVERY = 4
    MASKED_INPUT = 5
    INPUT_VALIDATION_REQUEST = 6  # reserved: optional stage, not in version 1
    INPUT_VALIDATION_RESPONSE = 7  # reserved: optional stage, not in version 1
    SURVIVORS = 8
    CONSISTENCY_SIGNATURE = 9
    CONSISTENCY_BUNDLE = 10
    UNMASK_SHARES = 11


class SecretKind(enum.IntEnum):
    """Which of a peer's two secrets an unmasking share belongs to."""

    SELF_SEED = 1
    MASK_KEY = 2


_SECRET_KINDS: dict[int, SecretKind] = {int(k): k for k in SecretKind}

M = TypeVar("M", bound="Message")


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Common header: the round-context digest the message belongs to."""

    TYPE: ClassVar[MessageType]
    context_digest: bytes

    def to_bytes(self) -> bytes:
        """Encode header and body."""
        w = Writer().fixed(MAGIC, 4).u8(WIRE_VERSION).u8(int(self.TYPE))
        w.fixed(self.context_digest, KEY_BYTES)
        self._encode_body(w)
        return w.getvalue()

    def _encode_body(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _decode_body(cls: type[M], r: Reader, context_digest: bytes) -> M:
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Decode a message of exactly this type.

        Raises:
            ProtocolError: malformed bytes or a different message type.
        """
        message = decode_message(data)
        if not isinstance(message, cls):
            raise ProtocolError("unexpected message type")
        return message


def _ids(r: Reader) -> tuple[int, ...]:
    return tuple(r.u32() for _ in range(r.count()))


_ADDRESSED_CIPHERTEXT = struct.Struct(f">I{SHARE_CIPHERTEXT_BYTES}s")
"""One (peer id, ciphertext) record of ShareKeys and ShareDelivery."""
_REVEALED_SHARE = struct.Struct(f">IBI{SHARE_BYTES}s")
"""One (owner, kind, x, value) record of UnmaskShares."""


def _addressed_ciphertexts(r: Reader) -> tuple[tuple[int, bytes], ...]:
    # struct already yields (int, bytes) pairs.
    return tuple(r.records(_ADDRESSED_CIPHERTEXT.format))


def _revealed_shares(records: Iterable[tuple[int, int, int, bytes]]) -> tuple[UnmaskShare, ...]:
    """UnmaskShare objects from (owner, kind code, x, value) records.

    Raises:
        ProtocolError: a kind code that names no secret.
    """
    kinds = _SECRET_KINDS
    shares = []
    for owner, code, x, value in records:
        kind = kinds.get(code)
        if kind is None:
            raise ProtocolError("unknown secret kind")
        shares.append(UnmaskShare(owner, kind, x, value))
    return tuple(shares)


def _write_ids(w: Writer, ids: tuple[int, ...]) -> None:
    w.u32(len(ids))
    for i in ids:
        w.u32(i)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvertiseKeys(Message):
    """Stage 0: a client's two fresh public keys and self-seed commitment, signed."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_KEYS
    client_id: int
    encryption_key: bytes
    mask_key: bytes
    seed_commitment: bytes
    signature: bytes

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.client_id).fixed(self.encryption_key, KEY_BYTES)
        w.fixed(self.mask_key, KEY_BYTES).fixed(self.seed_commitment, KEY_BYTES)
        w.fixed(self.signature, SIGNATURE_BYTES)

    _BODY: ClassVar[struct.Struct] = struct.Struct(
        f">I{KEY_BYTES}s{KEY_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s"
    )

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> AdvertiseKeys:
        return cls._from_record(context_digest, r.fields(cls._BODY))

    @classmethod
    def _from_record(cls, context_digest: bytes, record: tuple[Any, ...]) -> AdvertiseKeys:
        client_id, encryption_key, mask_key, commitment, signature = record
        return cls(
            context_digest=context_digest,
            client_id=client_id,
            encryption_key=encryption_key,
            mask_key=mask_key,
            seed_commitment=commitment,
            signature=signature,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CohortBroadcast(Message):
    """Server -> clients: every accepted advertisement (the cohort U1)."""

    TYPE: ClassVar[MessageType] = MessageType.COHORT
    advertisements: tuple[AdvertiseKeys, ...]

    def _encode_body(self, w: Writer) -> None:
        w.u32(len(self.advertisements))
        for a in self.advertisements:
            a._encode_body(w)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> CohortBroadcast:
        ads = tuple(AdvertiseKeys._decode_body(r, context_digest) for _ in range(r.count()))
        return cls(context_digest=context_digest, advertisements=ads)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareKeys(Message):
    """Stage 1: one AEAD ciphertext of the sender's shares per share holder."""

    TYPE: ClassVar[MessageType] = MessageType.SHARE_KEYS
    sender: int
    ciphertexts: tuple[tuple[int, bytes], ...] = field(repr=False)  # (receiver, ciphertext)

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.sender).u32(len(self.ciphertexts))
        for receiver, ct in self.ciphertexts:
            w.u32(receiver).fixed(ct, SHARE_CIPHERTEXT_BYTES)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> ShareKeys:
        sender = r.u32()
        cts = _addressed_ciphertexts(r)
        return cls(context_digest=context_digest, sender=sender, ciphertexts=cts)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareDelivery(Message):
    """Server -> one client: the ciphertexts addressed to it."""

    TYPE: ClassVar[MessageType] = MessageType.SHARE_DELIVERY
    receiver: int
    ciphertexts: tuple[tuple[int, bytes], ...] = field(repr=False)  # (sender, ciphertext)

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.receiver).u32(len(self.ciphertexts))
        for sender, ct in self.ciphertexts:
            w.u32(sender).fixed(ct, SHARE_CIPHERTEXT_BYTES)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> ShareDelivery:
        receiver = r.u32()
        cts = _addressed_ciphertexts(r)
        return cls(context_digest=context_digest, receiver=receiver, ciphertexts=cts)


@dataclass(frozen=True, slots=True, kw_only=True)
class MaskedInput(Message):
    """Stage 2: a client's masked input, bit-packed (``b`` bits per element, M+1 elements).

    The only form in which a client's update ever reaches the server.
    """

    TYPE: ClassVar[MessageType] = MessageType.MASKED_INPUT
    sender: int
    payload: bytes | memoryview = field(repr=False)
    """The packed vector; decoding gives a read-only view into the received message."""

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.sender).var(self.payload)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> MaskedInput:
        return cls(context_digest=context_digest, sender=r.u32(), payload=r.var_view())


@dataclass(frozen=True, slots=True, kw_only=True)
class SurvivorList(Message):
    """Server -> clients: U3, the clients whose masked input the server accepted."""

    TYPE: ClassVar[MessageType] = MessageType.SURVIVORS
    survivors: tuple[int, ...]

    def _encode_body(self, w: Writer) -> None:
        _write_ids(w, self.survivors)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> SurvivorList:
        return cls(context_digest=context_digest, survivors=_ids(r))


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencySignature(Message):
    """Stage 3: a client's signature over the survivor list it was sent."""

    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_SIGNATURE
    sender: int
    signature: bytes

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.sender).fixed(self.signature, SIGNATURE_BYTES)

    _BODY: ClassVar[struct.Struct] = struct.Struct(f">I{SIGNATURE_BYTES}s")

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> ConsistencySignature:
        sender, signature = r.fields(cls._BODY)
        return cls(context_digest=context_digest, sender=sender, signature=signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistencyBundle(Message):
    """Server -> clients: U3 and the signatures over it that the server collected."""

    TYPE: ClassVar[MessageType] = MessageType.CONSISTENCY_BUNDLE
    survivors: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...]

    def _encode_body(self, w: Writer) -> None:
        _write_ids(w, self.survivors)
        w.u32(len(self.signatures))
        for signer, sig in self.signatures:
            w.u32(signer).fixed(sig, SIGNATURE_BYTES)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> ConsistencyBundle:
        survivors = _ids(r)
        sigs = tuple(
            (int(signer), bytes(signature))
            for signer, signature in r.records(f">I{SIGNATURE_BYTES}s")
        )
        return cls(context_digest=context_digest, survivors=survivors, signatures=sigs)


class UnmaskShare(NamedTuple):
    """One revealed share: of ``owner``'s secret of kind ``kind``, at point ``x``.

    A named tuple, not a dataclass: a round at n = 500 carries about 250k of
    them, and a tuple is built in about a third of a frozen dataclass's time.
    Its ``repr`` leaves out the share value.
    """

    owner: int
    kind: SecretKind
    x: int
    value: bytes

    def __repr__(self) -> str:
        return f"UnmaskShare(owner={self.owner}, kind={self.kind!r}, x={self.x})"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmaskShares(Message):
    """Stage 4: the shares a surviving client reveals (never both kinds for one owner)."""

    TYPE: ClassVar[MessageType] = MessageType.UNMASK_SHARES
    sender: int
    shares: tuple[UnmaskShare, ...] = field(repr=False)

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.sender).u32(len(self.shares))
        for s in self.shares:
            w.u32(s.owner).u8(int(s.kind)).u32(s.x).fixed(s.value, SHARE_BYTES)

    @classmethod
    def _decode_body(cls, r: Reader, context_digest: bytes) -> UnmaskShares:
        sender = r.u32()
        shares = _revealed_shares(r.records(_REVEALED_SHARE.format))
        return cls(context_digest=context_digest, sender=sender, shares=shares)


_DECODERS: dict[int, type[Message]] = {
    int(cls.TYPE): cls
    for cls in (
        AdvertiseKeys,
        CohortBroadcast,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        SurvivorList,
        ConsistencySignature,
        ConsistencyBundle,
        UnmaskShares,
    )
}


_HEADER = struct.Struct(f">4sBB{KEY_BYTES}s")
_SENDER_AND_COUNT = struct.Struct(">II")


def _well_formed_body(code: int, data: bytes, digest: bytes) -> Message | None:
    """The body of a well-formed message the server receives, in a few struct reads.

    The server decodes one such message per client per stage. ``None`` for
    anything that is not exactly well formed: :func:`decode_message` then runs
    the field-by-field reader, which names what is wrong. For every input this
    returns either ``None`` or what the field-by-field reader returns
    (``tests/unit/test_messages.py`` checks both on every type and on mutations).
    """
    start, size = _HEADER.size, len(data)
    if code == MessageType.ADVERTISE_KEYS:
        if size != start + AdvertiseKeys._BODY.size:
            return None
        return AdvertiseKeys._from_record(digest, AdvertiseKeys._BODY.unpack_from(data, start))
    if code == MessageType.CONSISTENCY_SIGNATURE:
        if size != start + ConsistencySignature._BODY.size:
            return None
        sender, signature = ConsistencySignature._BODY.unpack_from(data, start)
        return ConsistencySignature(context_digest=digest, sender=sender, signature=signature)
    body = start + _SENDER_AND_COUNT.size
    if size < body:
        return None
    sender, count = _SENDER_AND_COUNT.unpack_from(data, start)
    if code == MessageType.MASKED_INPUT:  # count is the payload's length in bytes
        if size != body + count:
            return None
        return MaskedInput(context_digest=digest, sender=sender, payload=memoryview(data)[body:])
    if code == MessageType.SHARE_KEYS:
        if count > MAX_LIST_ITEMS or size != body + count * _ADDRESSED_CIPHERTEXT.size:
            return None
        cts = tuple(_ADDRESSED_CIPHERTEXT.iter_unpack(memoryview(data)[body:]))
        return ShareKeys(context_digest=digest, sender=sender, ciphertexts=cts)
    if code == MessageType.UNMASK_SHARES:
        if count > MAX_LIST_ITEMS or size != body + count * _REVEALED_SHARE.size:
            return None
        try:
            shares = _revealed_shares(_REVEALED_SHARE.iter_unpack(memoryview(data)[body:]))
        except ProtocolError:  # the field reader names it
            return None
        return UnmaskShares(context_digest=digest, sender=sender, shares=shares)
    return None


def decode_message(data: bytes) -> Message:
    """Decode any secure-aggregation message.

    Raises:
        ProtocolError: bad magic, version or type; truncated or trailing bytes.
    """
    if type(data) is bytes and len(data) >= _HEADER.size:
        magic, version, code, digest = _HEADER.unpack_from(data)
        if magic == MAGIC and version == WIRE_VERSION:
            message = _well_formed_body(code, data, digest)
            if message is not None:
                return message
    return _decode_fields(data)


def _decode_fields(data: bytes) -> Message:
    """:func:`decode_message` field by field: every message type, every error."""
    r = Reader(data)
    # Field by field, so a short input is refused for the first field that is wrong.
    if r.fixed(4) != MAGIC:
        raise ProtocolError("not a securefed secure-aggregation message")
    if r.u8() != WIRE_VERSION:
        raise ProtocolError("unsupported protocol version")
    code = r.u8()
    if code in (MessageType.INPUT_VALIDATION_REQUEST, MessageType.INPUT_VALIDATION_RESPONSE):
        raise ProtocolError("the input-validation stage is not supported in protocol version 1")
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise ProtocolError("unknown message type")
    context_digest = r.fixed(KEY_BYTES)
    message = decoder._decode_body(r, context_digest)
    r.done()
    return message
