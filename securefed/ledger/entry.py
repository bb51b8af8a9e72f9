"""Ledger entries: kinds, the signed message, the entry hash, countersignatures.

protocols/ledger.md §2 (entry encoding and signature input) and §6
(countersignatures). Everything here is pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import Enum

from securefed.errors import DataError, IntegrityError
from securefed.ledger.canonical import (
    CanonicalValue,
    decode_object,
    encode,
    parse_uint,
    uint_text,
)
from securefed.secagg.primitives import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    ct_equal,
    ed25519_verify,
    sha256,
)
from securefed.secagg.roster import IdentityKey

__all__ = [
    "COUNTERSIGNATURE_LABEL",
    "GENESIS_PREV_HASH",
    "HASH_BYTES",
    "LEDGER_ID_BYTES",
    "LEDGER_LABEL",
    "Countersignature",
    "Entry",
    "EntryKind",
    "countersignature_message",
    "entry_hash",
    "hex_bytes",
    "sign_entry",
    "signing_message",
]

LEDGER_LABEL = b"securefed/ledger/v1"
"""Domain label that starts every entry's signed message (protocols/ledger.md §2.2)."""
COUNTERSIGNATURE_LABEL = b"securefed/ledger/v1/countersignature"
"""Domain label of an owner's countersignature; distinct from ``LEDGER_LABEL`` so an
owner's signature can never be read as an entry signature or the reverse (§6)."""
LEDGER_ID_BYTES = 32
"""A random 256-bit ledger id: two ledgers never share one, so entries cannot be spliced."""
HASH_BYTES = 32
"""SHA-256 output length."""
GENESIS_PREV_HASH = bytes(HASH_BYTES)
"""The previous-entry hash of entry 0 (there is no previous entry)."""

_HEX = {n: re.compile(f"[0-9a-f]{{{2 * n}}}") for n in (HASH_BYTES, SIGNATURE_BYTES)}
_LINE_FIELDS = frozenset(
    {"seq", "prev_hash", "kind", "body", "signer_key", "signature", "entry_hash"}
)


class EntryKind(Enum):
    """What an entry records (protocols/ledger.md §5). The value is the signed kind byte."""

    FEDERATION_CREATED = 1
    ROUND_PLANNED = 2
    MECHANISM = 3
    SPEND = 4
    DROPOUTS = 5
    AGGREGATE_RELEASED = 6
    BUDGET_EXHAUSTED = 7
    KEY_ROTATION = 8
    COUNTERSIGNATURE = 9
    SEAL = 10
    FEDERATION_SPEND = 11

    @property
    def wire_name(self) -> str:
        """The name used in the JSON Lines export (``spend``, ``key_rotation`` ...)."""
        return self.name.lower()

    @classmethod
    def from_wire_name(cls, name: object) -> EntryKind:
        """The kind called ``name`` in the JSON Lines export (exact spelling only).

        Raises:
            DataError: no kind has that name.
        """
        kind = _BY_WIRE_NAME.get(name) if isinstance(name, str) else None
        if kind is None:
            raise DataError("unknown entry kind")
        return kind


_BY_WIRE_NAME = {kind.wire_name: kind for kind in EntryKind}


def hex_bytes(text: object, length: int) -> bytes:
    """Decode lower-case hex of exactly ``length`` bytes.

    Raises:
        DataError: not lower-case hex of that length.
    """
    pattern = _HEX.get(length) or re.compile(f"[0-9a-f]{{{2 * length}}}")
    if not isinstance(text, str) or pattern.fullmatch(text) is None:
        raise DataError(f"expected {length} bytes as lower-case hex")
    return bytes.fromhex(text)


def signing_message(
    *, ledger_id: bytes, seq: int, prev_hash: bytes, kind: EntryKind, body: bytes
) -> bytes:
    """The bytes the writer signs (protocols/ledger.md §2.2).

    ``LEDGER_LABEL || ledger_id (32) || seq (u64 BE) || prev_hash (32) || kind (u8) || body``.
    """
    if len(ledger_id) != LEDGER_ID_BYTES or len(prev_hash) != HASH_BYTES:
        raise ValueError("ledger_id and prev_hash must be 32 bytes")
    return b"".join(
        (LEDGER_LABEL, ledger_id, struct.pack(">Q", seq), prev_hash, bytes([kind.value]), body)
    )


def entry_hash(message: bytes, signer_key: bytes, signature: bytes) -> bytes:
    """SHA-256 of an entry's full encoding: ``message || signer_key || signature`` (§2.3)."""
    return sha256(message, signer_key, signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One ledger entry exactly as stored (protocols/ledger.md §2.1)."""

    seq: int
    prev_hash: bytes
    kind: EntryKind
    body: bytes
    """The canonical body bytes (§3): exactly what the signature covers."""
    signer_key: bytes
    """The Ed25519 public key that signed this entry (its key id)."""
    signature: bytes
    entry_hash: bytes

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int):
            raise TypeError("seq must be an int")
        if not 0 <= self.seq < 1 << 64:
            raise ValueError("seq must be a u64")
        if not isinstance(self.kind, EntryKind):
            raise TypeError("kind must be an EntryKind")
        for name, value, length in (
            ("prev_hash", self.prev_hash, HASH_BYTES),
            ("signer_key", self.signer_key, KEY_BYTES),
            ("signature", self.signature, SIGNATURE_BYTES),
            ("entry_hash", self.entry_hash, HASH_BYTES),
        ):
            if not isinstance(value, bytes) or len(value) != length:
                raise ValueError(f"{name} must be {length} bytes")
        if not isinstance(self.body, bytes):
            raise TypeError("body must be bytes")

    def fields(self) -> dict[str, CanonicalValue]:
        """The decoded body.

        Raises:
            DataError: the body is not canonical JSON (only possible for tampered data).
        """
        return decode_object(self.body)

    def message(self, ledger_id: bytes) -> bytes:
        """The signed message of this entry in the ledger ``ledger_id``."""
        return signing_message(
            ledger_id=ledger_id,
            seq=self.seq,
            prev_hash=self.prev_hash,
            kind=self.kind,
            body=self.body,
        )

    def check_signed(self, ledger_id: bytes, writer_key: bytes | None = None) -> None:
        """Check this one entry on its own: its stored hash, and who signed it.

        ``entry_hash`` must be the hash of exactly this entry in ``ledger_id``
        (§2.3); given ``writer_key``, the entry must name it as signer and carry its
        valid signature (§2.2). The chain around the entry is :func:`verify_ledger`'s.

        Raises:
            IntegrityError: any check fails.
        """
        message = self.message(ledger_id)
        if not ct_equal(entry_hash(message, self.signer_key, self.signature), self.entry_hash):
            raise IntegrityError()
        if writer_key is not None:
            if not ct_equal(self.signer_key, writer_key):
                raise IntegrityError()
            ed25519_verify(writer_key, self.signature, message)

    def to_json_line(self) -> bytes:
        """This entry as one line of the JSON Lines export (§4), newline included."""
        record: dict[str, CanonicalValue] = {
            "seq": uint_text(self.seq),
            "prev_hash": self.prev_hash.hex(),
            "kind": self.kind.wire_name,
            "body": decode_object(self.body),
            "signer_key": self.signer_key.hex(),
            "signature": self.signature.hex(),
            "entry_hash": self.entry_hash.hex(),
        }
        return encode(record) + b"\n"

    @classmethod
    def from_json_line(cls, line: bytes) -> Entry:
        """Parse one export line (without its newline).

        Raises:
            DataError: the line is not exactly the canonical record of one entry.
        """
        record = decode_object(line)
        if set(record) != _LINE_FIELDS:
            raise DataError("an entry line has exactly the fields of §4")
        body = record["body"]
        if not isinstance(body, dict):
            raise DataError("an entry body is an object")
        return cls(
            seq=parse_uint(record["seq"]),
            prev_hash=hex_bytes(record["prev_hash"], HASH_BYTES),
            kind=EntryKind.from_wire_name(record["kind"]),
            body=encode(body),
            signer_key=hex_bytes(record["signer_key"], KEY_BYTES),
            signature=hex_bytes(record["signature"], SIGNATURE_BYTES),
            entry_hash=hex_bytes(record["entry_hash"], HASH_BYTES),
        )


def sign_entry(
    *,
    ledger_id: bytes,
    seq: int,
    prev_hash: bytes,
    kind: EntryKind,
    body: bytes,
    key: IdentityKey,
) -> Entry:
    """Sign one entry with ``key`` (deterministic: Ed25519, RFC 8032)."""
    message = signing_message(
        ledger_id=ledger_id, seq=seq, prev_hash=prev_hash, kind=kind, body=body
    )
    signature = key.sign(message)
    return Entry(
        seq=seq,
        prev_hash=prev_hash,
        kind=kind,
        body=body,
        signer_key=key.public_key,
        signature=signature,
        entry_hash=entry_hash(message, key.public_key, signature),
    )


def countersignature_message(ledger_id: bytes, spend_hash: bytes) -> bytes:
    """What an owner signs: ``COUNTERSIGNATURE_LABEL || ledger_id || entry hash`` (§6)."""
    if len(ledger_id) != LEDGER_ID_BYTES or len(spend_hash) != HASH_BYTES:
        raise ValueError("ledger_id and the entry hash must be 32 bytes")
    return COUNTERSIGNATURE_LABEL + ledger_id + spend_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class Countersignature:
    """An owner's signature on one of its spend entries (protocols/ledger.md §6).

    The owner keeps it as a receipt: presented to :func:`verify_ledger`, it proves
    that the ledger held that entry, so cutting the ledger before it, or
    rewriting any history up to it, is detected.
    """

    ledger_id: bytes
    entry_seq: int
    entry_hash: bytes
    owner_id: int
    owner_key: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.ledger_id) != LEDGER_ID_BYTES or len(self.entry_hash) != HASH_BYTES:
            raise ValueError("ledger_id and entry_hash must be 32 bytes")
        if len(self.owner_key) != KEY_BYTES or len(self.signature) != SIGNATURE_BYTES:
            raise ValueError("owner_key must be 32 bytes and signature 64 bytes")
        uint_text(self.entry_seq)
        uint_text(self.owner_id)

    @classmethod
    def sign(
        cls,
        *,
        ledger_id: bytes,
        entry_seq: int,
        entry_hash: bytes,
        owner_id: int,
        owner_key: IdentityKey,
    ) -> Countersignature:
        """Countersign the entry ``entry_seq`` whose hash is ``entry_hash``."""
        return cls(
            ledger_id=ledger_id,
            entry_seq=entry_seq,
            entry_hash=entry_hash,
            owner_id=owner_id,
            owner_key=owner_key.public_key,
            signature=owner_key.sign(countersignature_message(ledger_id, entry_hash)),
        )

    def verify(self, pinned_key: bytes | None = None) -> None:
        """Check the signature, under ``pinned_key`` when given (else the embedded key).

        Raises:
            IntegrityError: the signature does not verify, or the embedded key is
                not the pinned one.
        """
        if pinned_key is not None and not ct_equal(pinned_key, self.owner_key):
            raise IntegrityError()
        message = countersignature_message(self.ledger_id, self.entry_hash)
        ed25519_verify(self.owner_key, self.signature, message)

    def body(self) -> dict[str, CanonicalValue]:
        """The body of the COUNTERSIGNATURE entry that records it (§5.9)."""
        return {
            "entry_seq": uint_text(self.entry_seq),
            "entry_hash": self.entry_hash.hex(),
            "owner_id": uint_text(self.owner_id),
            "owner_key": self.owner_key.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_body(cls, ledger_id: bytes, body: dict[str, CanonicalValue]) -> Countersignature:
        """Rebuild the countersignature a COUNTERSIGNATURE entry records.

        Raises:
            DataError: a field is malformed.
        """
        return cls(
            ledger_id=ledger_id,
            entry_seq=parse_uint(body.get("entry_seq")),
            entry_hash=hex_bytes(body.get("entry_hash"), HASH_BYTES),
            owner_id=parse_uint(body.get("owner_id")),
            owner_key=hex_bytes(body.get("owner_key"), KEY_BYTES),
            signature=hex_bytes(body.get("signature"), SIGNATURE_BYTES),
        )
