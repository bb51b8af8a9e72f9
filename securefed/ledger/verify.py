"""Independent verification of a ledger file (protocols/ledger.md §8).

:func:`verify_ledger` reads a ledger from its SQLite file or from its JSON Lines
export and checks, entry by entry in storage order: the record's shape, the
sequence number (equal to its position: no gap, duplicate or reordering), the
link to the previous entry's hash, the signer (the pinned initial key, then
each key a KEY_ROTATION names), the Ed25519 signature, the stored entry hash,
the canonical body and its schema, the kind rules (genesis first and only
once, nothing after a SEAL) and every COUNTERSIGNATURE. Then any evidence the
caller holds about the ledger's extent: a later head, owners' receipts, or the
demand that the ledger be sealed.

It *returns* a :class:`VerificationReport` (it raises only for caller misuse or
an unreadable path); ``report.raise_for_failure()`` turns a failure into a
:class:`LedgerVerificationError`. The report names the first bad entry: the
smallest sequence number at which the ledger departs from what verification
expects (for a cut tail, the first missing sequence number).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from securefed.errors import DataError, IntegrityError
from securefed.ledger.bodies import validate_body
from securefed.ledger.canonical import CanonicalValue, decode_object, parse_uint
from securefed.ledger.entry import (
    GENESIS_PREV_HASH,
    HASH_BYTES,
    LEDGER_ID_BYTES,
    Countersignature,
    Entry,
    EntryKind,
    entry_hash,
    hex_bytes,
)
from securefed.ledger.errors import LedgerVerificationError
from securefed.secagg.primitives import KEY_BYTES, ct_equal, ed25519_verify

__all__ = [
    "Failure",
    "Malformed",
    "VerificationReport",
    "entry_from_row",
    "parse_jsonl",
    "read_records",
    "verify_ledger",
    "verify_records",
]

SQLITE_MAGIC = b"SQLite format 3\x00"


class Failure(Enum):
    """Why verification stopped (the ``failure`` of a report; §8.2)."""

    MALFORMED = "malformed"
    """A record cannot be read as an entry (bad JSON line, wrong types, unknown kind)."""
    SEQUENCE = "sequence"
    """A sequence number differs from the entry's position (gap, duplicate, reordering)."""
    HASH_LINK = "hash_link"
    """``prev_hash`` is not the hash of the entry before."""
    SIGNER = "signer"
    """Signed by a key other than the current writer key."""
    SIGNATURE = "signature"
    """The writer's signature does not verify."""
    ENTRY_HASH = "entry_hash"
    """The stored entry hash is not the hash of the entry."""
    BODY = "body"
    """The body is not canonical JSON or breaks its kind's schema."""
    STRUCTURE = "structure"
    """Genesis missing or repeated, an entry after a seal, a bad key rotation."""
    COUNTERSIGNATURE = "countersignature"
    """A recorded countersignature is invalid or not by the owner's pinned key."""
    TRUNCATED = "truncated"
    """A held head or receipt, or the required seal, lies beyond the ledger's end."""
    HEAD_MISMATCH = "head_mismatch"
    """The entry at a held head or receipt differs: history was rewritten up to it."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A stored record that could not be read as an entry."""

    reason: str


Record = Entry | Malformed


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationReport:
    """The outcome of :func:`verify_ledger`.

    ``entries`` holds the verified prefix (every entry when ``ok``), for an
    auditor's re-accounting; ``head`` is the last verified entry.
    """

    ok: bool
    first_bad: int | None
    failure: Failure | None
    reason: str
    records: int
    """How many records the source holds (verified or not)."""
    entries: tuple[Entry, ...] = field(repr=False)
    ledger_id: bytes | None
    head: tuple[int, bytes] | None
    current_key: bytes | None
    """The writer key after every verified rotation."""
    sealed: bool
    countersignatures: int
    """COUNTERSIGNATURE entries verified."""
    warnings: tuple[str, ...] = ()

    def raise_for_failure(self) -> None:
        """Raise :class:`LedgerVerificationError` unless the ledger verified."""
        if not self.ok:
            raise LedgerVerificationError(self.first_bad, self.reason)


class _Bad(Exception):
    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


def entry_from_row(row: Sequence[object]) -> Record:
    """One SQLite row (columns of protocols/ledger.md §4.1) as an entry, or why not."""
    try:
        seq, prev_hash, kind, body, signer_key, signature, digest = row
        if not isinstance(seq, int) or not isinstance(kind, int):
            raise TypeError("seq and kind must be integers")
        for value in (prev_hash, body, signer_key, signature, digest):
            if not isinstance(value, bytes):
                raise TypeError("hash, body, key and signature columns must be blobs")
        return Entry(
            seq=seq,
            prev_hash=prev_hash,  # type: ignore[arg-type]
            kind=EntryKind(kind),
            body=body,  # type: ignore[arg-type]
            signer_key=signer_key,  # type: ignore[arg-type]
            signature=signature,  # type: ignore[arg-type]
            entry_hash=digest,  # type: ignore[arg-type]
        )
    except (TypeError, ValueError) as exc:
        return Malformed(f"unreadable row: {exc}")


def _read_sqlite(path: Path) -> list[Record]:
    uri = path.resolve().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        rows = db.execute(
            "SELECT seq, prev_hash, kind, body, signer_key, signature, entry_hash "
            "FROM entries ORDER BY rowid"
        ).fetchall()
    finally:
        db.close()
    return [entry_from_row(row) for row in rows]


def parse_jsonl(data: bytes) -> list[Record]:
    """The records of a JSON Lines export (§4.2), one per line; a bad line is :class:`Malformed`."""
    if not data:
        return []
    lines = data.split(b"\n")
    terminated = lines[-1] == b""
    if terminated:
        lines.pop()
    records: list[Record] = []
    for i, line in enumerate(lines):
        if not terminated and i == len(lines) - 1:
            records.append(Malformed("the last line has no newline"))
            continue
        try:
            records.append(Entry.from_json_line(line))
        except (DataError, TypeError, ValueError) as exc:
            records.append(Malformed(f"unreadable line: {exc}"))
    return records


def read_records(source: str | os.PathLike[str]) -> list[Record]:
    """Every record of a ledger file, SQLite or JSON Lines (told apart by the SQLite magic).

    Raises:
        OSError: the file cannot be read.
        DataError: a SQLite file without a readable ``entries`` table.
    """
    path = Path(source)
    with path.open("rb") as f:
        magic = f.read(len(SQLITE_MAGIC))
    if magic == SQLITE_MAGIC:
        try:
            return _read_sqlite(path)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"unreadable ledger database: {exc}") from None
    return parse_jsonl(path.read_bytes())


def verify_ledger(
    source: str | os.PathLike[str],
    pinned_key: bytes,
    *,
    later_head: tuple[int, bytes] | None = None,
    owner_keys: Mapping[int, bytes] | None = None,
    receipts: Iterable[Countersignature] = (),
    require_seal: bool = False,
) -> VerificationReport:
    """Verify a ledger file (SQLite or its JSON Lines export); see the module doc.

    Args:
        source: the ledger's SQLite file or JSON Lines export.
        pinned_key: the writer's initial Ed25519 public key, obtained out of band.
        later_head: a ``(seq, entry hash)`` head received earlier (e.g. by a
            client in a round); the ledger must contain exactly that entry.
        owner_keys: owners' pinned identity keys by owner id; recorded
            countersignatures must be by these keys. Without it they are checked
            against the keys they name (consistency only; the report warns).
        receipts: countersignatures that owners kept; each countersigned entry
            must be present and unchanged.
        require_seal: demand a SEAL (an auditor of a finished federation): a cut
            that removed the seal is then detected.

    Raises:
        ValueError: a malformed pinned key, head or owner key, or a receipt
            whose signature does not verify under its owner's pinned key.
        OSError: the file cannot be read.
    """
    try:
        records = read_records(source)
    except DataError as exc:
        return _report_unreadable(str(exc))
    return verify_records(
        records,
        pinned_key,
        later_head=later_head,
        owner_keys=owner_keys,
        receipts=receipts,
        require_seal=require_seal,
    )


def _report_unreadable(reason: str) -> VerificationReport:
    return VerificationReport(
        ok=False,
        first_bad=0,
        failure=Failure.MALFORMED,
        reason=f"{Failure.MALFORMED.value}: {reason}",
        records=0,
        entries=(),
        ledger_id=None,
        head=None,
        current_key=None,
        sealed=False,
        countersignatures=0,
    )


class _Chain:
    """State of a chain walk over the verified prefix."""

    def __init__(self, pinned_key: bytes, owner_keys: Mapping[int, bytes] | None) -> None:
        self.key = pinned_key
        self.owner_keys = owner_keys
        self.ledger_id: bytes | None = None
        self.prev_hash = GENESIS_PREV_HASH
        self.sealed = False
        self.entries: list[Entry] = []
        self.spend_owner: dict[int, int] = {}
        self.countersignatures = 0

    def check(self, position: int, record: Record) -> None:
        if isinstance(record, Malformed):
            raise _Bad(Failure.MALFORMED, record.reason)
        entry = record
        if entry.seq != position:
            raise _Bad(Failure.SEQUENCE, f"expected sequence number {position}, found {entry.seq}")
        if not ct_equal(entry.prev_hash, self.prev_hash):
            raise _Bad(Failure.HASH_LINK, "prev_hash is not the hash of the previous entry")
        if position == 0:
            if entry.kind is not EntryKind.FEDERATION_CREATED:
                raise _Bad(Failure.STRUCTURE, "entry 0 must be FEDERATION_CREATED")
            try:
                ledger_id = hex_bytes(decode_object(entry.body).get("ledger_id"), LEDGER_ID_BYTES)
            except DataError as exc:
                raise _Bad(Failure.BODY, f"genesis body: {exc}") from None
        else:
            if self.sealed:
                raise _Bad(Failure.STRUCTURE, "entry after the seal")
            if entry.kind is EntryKind.FEDERATION_CREATED:
                raise _Bad(Failure.STRUCTURE, "FEDERATION_CREATED after entry 0")
            if self.ledger_id is None:  # pragma: no cover - set at position 0
                raise _Bad(Failure.STRUCTURE, "no ledger id")
            ledger_id = self.ledger_id
        if not ct_equal(entry.signer_key, self.key):
            raise _Bad(Failure.SIGNER, "not signed by the current writer key")
        message = entry.message(ledger_id)
        try:
            ed25519_verify(self.key, entry.signature, message)
        except IntegrityError:
            raise _Bad(Failure.SIGNATURE, "the writer's signature does not verify") from None
        if not ct_equal(entry.entry_hash, entry_hash(message, entry.signer_key, entry.signature)):
            raise _Bad(Failure.ENTRY_HASH, "stored entry hash is not the entry's hash")
        try:
            body = decode_object(entry.body)
            validate_body(entry.kind, body)
        except DataError as exc:
            raise _Bad(Failure.BODY, str(exc)) from None
        next_key = self.key
        if entry.kind is EntryKind.FEDERATION_CREATED:
            if body["writer_key"] != self.key.hex():
                raise _Bad(Failure.STRUCTURE, "genesis names another writer key")
        elif entry.kind is EntryKind.KEY_ROTATION:
            next_key = bytes.fromhex(str(body["new_key"]))
            if next_key == self.key:
                raise _Bad(Failure.STRUCTURE, "key rotation to the same key")
        elif entry.kind is EntryKind.SPEND:
            self.spend_owner[position] = parse_uint(body["owner_id"])
        elif entry.kind is EntryKind.COUNTERSIGNATURE:
            self._countersignature(position, ledger_id, body)
        elif entry.kind is EntryKind.SEAL:
            self.sealed = True
        # Accept the entry.
        self.ledger_id = ledger_id
        self.key = next_key
        self.prev_hash = entry.entry_hash
        self.entries.append(entry)

    def _countersignature(
        self, position: int, ledger_id: bytes, body: dict[str, CanonicalValue]
    ) -> None:
        cs = Countersignature.from_body(ledger_id, body)
        owner = self.spend_owner.get(cs.entry_seq)
        if cs.entry_seq >= position or owner is None:
            raise _Bad(Failure.COUNTERSIGNATURE, "does not name an earlier SPEND entry")
        if not ct_equal(self.entries[cs.entry_seq].entry_hash, cs.entry_hash):
            raise _Bad(Failure.COUNTERSIGNATURE, "names a different entry hash")
        if owner != cs.owner_id:
            raise _Bad(Failure.COUNTERSIGNATURE, "the spend belongs to another owner")
        pinned = None
        if self.owner_keys is not None:
            pinned = self.owner_keys.get(cs.owner_id)
            if pinned is None:
                raise _Bad(Failure.COUNTERSIGNATURE, f"owner {cs.owner_id} has no pinned key")
        try:
            cs.verify(pinned)
        except IntegrityError:
            raise _Bad(
                Failure.COUNTERSIGNATURE, "owner signature invalid or not by the pinned key"
            ) from None
        self.countersignatures += 1


def _check_key(name: str, key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be a 32-byte Ed25519 public key")


def verify_records(
    records: Sequence[Record],
    pinned_key: bytes,
    *,
    later_head: tuple[int, bytes] | None = None,
    owner_keys: Mapping[int, bytes] | None = None,
    receipts: Iterable[Countersignature] = (),
    require_seal: bool = False,
) -> VerificationReport:
    """:func:`verify_ledger` over records already read (storage order)."""
    _check_key("pinned_key", pinned_key)
    for owner, key in (owner_keys or {}).items():
        _check_key(f"owner key of {owner}", key)
    held: list[tuple[int, bytes, str]] = []
    if later_head is not None:
        seq, digest = later_head
        if not isinstance(seq, int) or seq < 0 or len(digest) != HASH_BYTES:
            raise ValueError("later_head must be (seq >= 0, 32-byte entry hash)")
        held.append((seq, digest, "the later head"))
    receipt_list = list(receipts)
    for receipt in receipt_list:
        pinned = None if owner_keys is None else owner_keys.get(receipt.owner_id)
        if owner_keys is not None and pinned is None:
            raise ValueError(f"receipt of owner {receipt.owner_id}, who has no pinned key")
        try:
            receipt.verify(pinned)
        except IntegrityError:
            raise ValueError("a receipt's signature does not verify") from None
        held.append((receipt.entry_seq, receipt.entry_hash, f"owner {receipt.owner_id}'s receipt"))

    chain = _Chain(pinned_key, owner_keys)
    failures: list[tuple[int, Failure, str]] = []
    for position, record in enumerate(records):
        try:
            chain.check(position, record)
        except _Bad as bad:
            failures.append((position, bad.failure, bad.detail))
            break
    verified = len(chain.entries)
    complete = not failures
    if complete and not records:
        failures.append((0, Failure.TRUNCATED, "empty ledger: no genesis entry"))
        complete = False
    for receipt in receipt_list:
        if chain.ledger_id is not None and receipt.ledger_id != chain.ledger_id:
            failures.append((0, Failure.HEAD_MISMATCH, "a receipt names another ledger id"))
    for seq, digest, what in held:
        if seq < verified:
            if not ct_equal(chain.entries[seq].entry_hash, digest):
                failures.append((seq, Failure.HEAD_MISMATCH, f"entry {seq} differs from {what}"))
        elif complete:
            failures.append(
                (verified, Failure.TRUNCATED, f"ends before entry {seq}, named by {what}")
            )
    if complete and require_seal and not chain.sealed:
        failures.append((verified, Failure.TRUNCATED, "not sealed (a seal was required)"))

    warnings: list[str] = []
    if not chain.sealed and not (later_head is not None and later_head[0] == verified - 1):
        warnings.append(
            "not sealed and no later head at the end: entries after the last one "
            "could have been cut (protocols/ledger.md §8.3)"
        )
    if owner_keys is None and chain.countersignatures:
        warnings.append("countersignatures checked against the keys they name, not pinned keys")

    head = (verified - 1, chain.entries[-1].entry_hash) if chain.entries else None
    first_bad: int | None = None
    failure: Failure | None = None
    reason = "ok"
    if failures:
        first_bad, failure, detail = min(failures, key=lambda f: f[0])
        reason = f"{failure.value}: {detail}"
    return VerificationReport(
        ok=not failures,
        first_bad=first_bad,
        failure=failure,
        reason=reason,
        records=len(records),
        entries=tuple(chain.entries),
        ledger_id=chain.ledger_id,
        head=head,
        current_key=chain.key if chain.entries else None,
        sealed=chain.sealed,
        countersignatures=chain.countersignatures,
        warnings=tuple(warnings),
    )
