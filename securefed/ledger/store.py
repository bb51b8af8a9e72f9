"""The append-only ledger store: SQLite in WAL mode with ``synchronous=FULL``.

protocols/ledger.md §4. One table, ``entries``; rows are only ever inserted
(triggers refuse UPDATE and DELETE, and this class has no API for either).
``append`` returns only after the transaction holding the new entry has
committed with a full fsync, so an entry that was returned survives a crash or a
power cut: the *budget first* invariant ("a spend is durable before the result
that it pays for is released") rests on that.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from securefed.errors import DataError, ProtocolError
from securefed.ledger.bodies import validate_body
from securefed.ledger.canonical import Body, CanonicalValue, encode, parse_uint
from securefed.ledger.entry import (
    GENESIS_PREV_HASH,
    LEDGER_ID_BYTES,
    Countersignature,
    Entry,
    EntryKind,
    sign_entry,
)
from securefed.ledger.errors import LedgerSealedError, LedgerVerificationError
from securefed.ledger.verify import entry_from_row, verify_records
from securefed.randomness import OsRandom, RandomSource
from securefed.secagg.primitives import KEY_BYTES
from securefed.secagg.roster import IdentityKey

__all__ = ["APPLICATION_ID", "EVENT_KINDS", "FORMAT_VERSION", "Ledger"]

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x53464C47
"""SQLite ``application_id`` of a securefed ledger file (ASCII ``SFLG``)."""
FORMAT_VERSION = 1
"""SQLite ``user_version``: the storage layout of protocols/ledger.md §4.1."""

EVENT_KINDS = frozenset(
    {
        EntryKind.ROUND_PLANNED,
        EntryKind.MECHANISM,
        EntryKind.SPEND,
        EntryKind.DROPOUTS,
        EntryKind.AGGREGATE_RELEASED,
        EntryKind.BUDGET_EXHAUSTED,
        EntryKind.FEDERATION_SPEND,
    }
)
"""Kinds :meth:`Ledger.append` takes; the others have their own methods."""

_SCHEMA = (
    """CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        prev_hash BLOB NOT NULL,
        kind INTEGER NOT NULL,
        body BLOB NOT NULL,
        signer_key BLOB NOT NULL,
        signature BLOB NOT NULL,
        entry_hash BLOB NOT NULL
    )""",
    """CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'the securefed ledger is append-only'); END""",
    """CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
        BEGIN SELECT RAISE(ABORT, 'the securefed ledger is append-only'); END""",
)
_COLUMNS = "seq, prev_hash, kind, body, signer_key, signature, entry_hash"


def _connect(path: Path, *, existing: bool) -> sqlite3.Connection:
    # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE).
    db = sqlite3.connect(path, isolation_level=None)
    try:
        if existing:
            # Check the file is a ledger before changing anything in it (WAL is persistent).
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if app_id != APPLICATION_ID or version != FORMAT_VERSION:
                raise DataError("not a securefed ledger (or an unsupported format version)")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DataError("the ledger file cannot use write-ahead logging")
        # FULL: the WAL is fsynced at every commit, so a committed entry survives power loss.
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError:
        db.close()
        raise DataError("not a securefed ledger (not an SQLite database)") from None
    except BaseException:
        db.close()
        raise
    return db


class Ledger:
    """A signed, hash-chained, append-only ledger in one SQLite file.

    Use :meth:`create` or :meth:`open`; the writer key signs every entry and is
    never shown by ``repr``. Not thread-safe: one writer object per process
    (a second writer on the same file is detected at its next append).
    """

    __slots__ = ("_db", "_head", "_key", "_ledger_id", "_path", "_sealed")

    def __init__(
        self,
        *,
        db: sqlite3.Connection,
        path: Path,
        key: IdentityKey,
        ledger_id: bytes,
        head: tuple[int, bytes],
        sealed: bool,
    ) -> None:
        self._db = db
        self._path = path
        self._key = key
        self._ledger_id = ledger_id
        self._head = head
        self._sealed = sealed

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        writer_key: IdentityKey,
        *,
        federation: Body,
        rng: RandomSource | None = None,
    ) -> Ledger:
        """Create a new ledger whose entry 0 (FEDERATION_CREATED) holds ``federation``.

        Args:
            path: the SQLite file to create; it must not exist.
            writer_key: the key that signs entries until a key rotation.
            federation: the genesis fields of protocols/ledger.md §5.1 except
                ``ledger_id`` and ``writer_key``, which this method adds (see
                :func:`securefed.ledger.bodies.federation_created_body`).
            rng: source of the 32-byte ledger id (default: the OS CSPRNG).

        Raises:
            FileExistsError: ``path`` exists.
            ValueError: ``federation`` is not a valid genesis body.
        """
        target = Path(path)
        if target.exists():
            raise FileExistsError(f"ledger already exists: {target}")
        ledger_id = (rng or OsRandom()).random_bytes(LEDGER_ID_BYTES)
        if {"ledger_id", "writer_key"} & set(federation):
            raise ValueError("ledger_id and writer_key are set by Ledger.create")
        body = {
            **federation,
            "ledger_id": ledger_id.hex(),
            "writer_key": writer_key.public_key.hex(),
        }
        encoded = _encode_body(EntryKind.FEDERATION_CREATED, body)
        genesis = sign_entry(
            ledger_id=ledger_id,
            seq=0,
            prev_hash=GENESIS_PREV_HASH,
            kind=EntryKind.FEDERATION_CREATED,
            body=encoded,
            key=writer_key,
        )
        try:
            db = _connect(target, existing=False)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            for statement in _SCHEMA:
                db.execute(statement)
            _insert(db, genesis)
            db.execute("COMMIT")
        except BaseException:
            db.close()
            target.unlink(missing_ok=True)
            raise
        logger.info("ledger created: id %s", ledger_id.hex()[:16])
        return cls(
            db=db,
            path=target,
            key=writer_key,
            ledger_id=ledger_id,
            head=(0, genesis.entry_hash),
            sealed=False,
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        writer_key: IdentityKey,
        *,
        pinned_key: bytes | None = None,
    ) -> Ledger:
        """Open an existing ledger for appending, after verifying all of it.

        Args:
            path: the SQLite file.
            writer_key: the ledger's current writer key (after any rotations).
            pinned_key: the initial writer key to verify from; default: the key
                entry 0 names (which checks consistency, not provenance).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            DataError: the file is not a securefed ledger.
            LedgerVerificationError: the ledger does not verify.
            ValueError: ``writer_key`` is not the ledger's current key.
        """
        target = Path(path)
        if not target.is_file():
            raise FileNotFoundError(f"no ledger at {target}")
        db = _connect(target, existing=True)
        try:
            records = [
                entry_from_row(row)
                for row in db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY rowid")  # noqa: S608
            ]
            first = records[0] if records else None
            pin = pinned_key
            if pin is None and isinstance(first, Entry):
                pin = first.signer_key
            report = verify_records(records, pin if pin is not None else bytes(KEY_BYTES))
            if not report.ok:
                raise LedgerVerificationError(report.first_bad, report.reason)
            if report.current_key != writer_key.public_key:
                raise ValueError("writer_key is not the ledger's current writer key")
            if report.ledger_id is None or report.head is None:  # unreachable when ok
                raise LedgerVerificationError(None, "ledger has no verified head")
        except BaseException:
            db.close()
            raise
        return cls(
            db=db,
            path=target,
            key=writer_key,
            ledger_id=report.ledger_id,
            head=report.head,
            sealed=report.sealed,
        )

    # -- reading -------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def ledger_id(self) -> bytes:
        """The random 32-byte id recorded in entry 0 and signed into every entry."""
        return self._ledger_id

    @property
    def writer_public_key(self) -> bytes:
        """The public key that signs the next entry."""
        return self._key.public_key

    @property
    def sealed(self) -> bool:
        """Whether the ledger ends with a SEAL entry (no append is possible)."""
        return self._sealed

    def head(self) -> tuple[int, bytes]:
        """``(seq, entry hash)`` of the last entry: what every client receives each round."""
        return self._head

    def entry(self, seq: int) -> Entry:
        """The entry numbered ``seq``.

        Raises:
            KeyError: no such entry.
        """
        row = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE seq = ?", (seq,)).fetchone()  # noqa: S608
        if row is None:
            raise KeyError(seq)
        entry = entry_from_row(row)
        if not isinstance(entry, Entry):
            raise DataError(f"stored entry {seq} is malformed")
        return entry

    def entries(self) -> Iterator[Entry]:
        """Every entry in order."""
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq"):  # noqa: S608
            entry = entry_from_row(row)
            if not isinstance(entry, Entry):
                raise DataError("a stored entry is malformed")
            yield entry

    def storage_settings(self) -> dict[str, object]:
        """The durability settings of this connection (``journal_mode``, ``synchronous``)."""
        return {
            "journal_mode": self._db.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self._db.execute("PRAGMA synchronous").fetchone()[0],
        }

    def export_jsonl(self, path: str | os.PathLike[str]) -> None:
        """Write every entry as JSON Lines (protocols/ledger.md §4.2), atomically."""
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        with partial.open("wb") as out:
            for entry in self.entries():
                out.write(entry.to_json_line())
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)

    # -- writing -------------------------------------------------------------------------------

    def append(self, kind: EntryKind, body: Body) -> Entry:
        """Append one event entry; durable (committed and fsynced) when this returns.

        Args:
            kind: one of :data:`EVENT_KINDS` (key rotations, countersignatures and
                the seal have their own methods).
            body: the fields of protocols/ledger.md §5 for ``kind`` (see the
                builders in :mod:`securefed.ledger.bodies`).

        Raises:
            LedgerSealedError: the ledger is sealed.
            ValueError: ``kind`` is not an event kind, or ``body`` breaks its schema.
            ProtocolError: another writer appended to the file meanwhile.
        """
        if not isinstance(kind, EntryKind):
            raise TypeError("kind must be an EntryKind")
        if kind not in EVENT_KINDS:
            raise ValueError(f"{kind.name} entries are made by their own method, not by append()")
        return self._append(kind, body)

    def rotate_key(self, new_key: IdentityKey) -> Entry:
        """Hand over to ``new_key``: a KEY_ROTATION entry signed by the current key (§7).

        Every later entry is signed by ``new_key``.
        """
        if new_key.public_key == self._key.public_key:
            raise ValueError("the new key must differ from the current key")
        entry = self._append(EntryKind.KEY_ROTATION, {"new_key": new_key.public_key.hex()})
        self._key = new_key
        logger.info(
            "ledger %s: writer key rotated at seq %d", self._ledger_id.hex()[:16], entry.seq
        )
        return entry

    def countersign(self, entry_seq: int, owner_key: IdentityKey) -> Countersignature:
        """Have ``owner_key`` countersign its spend entry ``entry_seq``, and record it.

        For an owner that holds its key in-process (simulations, tests). A remote
        owner signs :func:`~securefed.ledger.entry.countersignature_message`
        itself; record its signature with :meth:`add_countersignature`.

        Returns:
            The countersignature: the owner's receipt, for :func:`verify_ledger`.
        """
        entry = self.entry(entry_seq)
        owner_id = _spend_owner(entry)
        receipt = Countersignature.sign(
            ledger_id=self._ledger_id,
            entry_seq=entry_seq,
            entry_hash=entry.entry_hash,
            owner_id=owner_id,
            owner_key=owner_key,
        )
        self.add_countersignature(receipt)
        return receipt

    def add_countersignature(self, countersignature: Countersignature) -> Entry:
        """Record an owner's countersignature of one of its spend entries (§6).

        Raises:
            ValueError: it names another ledger, an entry that is not a spend of
                that owner, or a wrong hash.
            IntegrityError: its signature does not verify.
        """
        cs = countersignature
        if cs.ledger_id != self._ledger_id:
            raise ValueError("the countersignature is for another ledger")
        try:
            entry = self.entry(cs.entry_seq)
        except KeyError:
            raise ValueError("the countersigned entry does not exist") from None
        if entry.entry_hash != cs.entry_hash:
            raise ValueError("the countersignature names a different entry hash")
        if _spend_owner(entry) != cs.owner_id:
            raise ValueError("the spend entry belongs to another owner")
        cs.verify()
        return self._append(EntryKind.COUNTERSIGNATURE, cs.body())

    def seal(self, *, reason: str | None = None) -> Entry:
        """Close the ledger with a SEAL entry; every later append raises."""
        body: dict[str, CanonicalValue] = {} if reason is None else {"reason": reason}
        entry = self._append(EntryKind.SEAL, body)
        self._sealed = True
        return entry

    def _append(self, kind: EntryKind, body: Body) -> Entry:
        if self._sealed:
            raise LedgerSealedError("the ledger is sealed")
        encoded = _encode_body(kind, body)
        seq, prev_hash = self._head
        entry = sign_entry(
            ledger_id=self._ledger_id,
            seq=seq + 1,
            prev_hash=prev_hash,
            kind=kind,
            body=encoded,
            key=self._key,
        )
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute(
                "SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if last is None or (last[0], last[1]) != self._head:
                raise ProtocolError("the ledger was changed by another writer")
            _insert(db, entry)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._head = (entry.seq, entry.entry_hash)
        return entry

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (every returned entry is already durable)."""
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        seq, digest = self._head
        return (
            f"Ledger(path={str(self._path)!r}, id={self._ledger_id.hex()[:16]}..., "
            f"head=({seq}, {digest.hex()[:16]}...), sealed={self._sealed})"
        )


def _encode_body(kind: EntryKind, body: Body) -> bytes:
    try:
        validate_body(kind, body)
    except DataError as exc:
        raise ValueError(f"invalid {kind.wire_name} body: {exc}") from None
    return encode(body)


def _insert(db: sqlite3.Connection, entry: Entry) -> None:
    db.execute(
        f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
        (
            entry.seq,
            entry.prev_hash,
            entry.kind.value,
            entry.body,
            entry.signer_key,
            entry.signature,
            entry.entry_hash,
        ),
    )


def _spend_owner(entry: Entry) -> int:
    if entry.kind is not EntryKind.SPEND:
        raise ValueError("only SPEND entries are countersigned")
    return parse_uint(entry.fields().get("owner_id"))
