"""Tampering with a ledger is detected, and the first bad entry is named (issue 4, item 8).

An eight-entry sealed ledger (genesis, round planned, spend, countersignature,
key rotation, dropouts, aggregate released, seal) is tampered with as an
attacker with write access to the files would: bytes flipped in every field of
every row of the SQLite file (through sqlite3, triggers dropped) and in every
byte of the JSON Lines export; entries deleted, duplicated, reordered, spliced
from another ledger signed by the same key; signatures swapped; the tail cut
when a seal, a later head or an owner's countersignature exists; history
rewritten and re-signed by the writer itself. Every case must fail verification
at the expected sequence number; the untouched ledger must verify.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from securefed.ledger import (
    Countersignature,
    Entry,
    EntryKind,
    Failure,
    Ledger,
    LedgerVerificationError,
    ProtectionMode,
    VerificationReport,
    bodies,
    verify_ledger,
)
from securefed.ledger.canonical import encode
from securefed.ledger.entry import sign_entry
from securefed.ledger.verify import parse_jsonl, verify_records
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey


def seed(label: str) -> bytes:
    return hashlib.sha256(f"ledger-tampering/{label}".encode()).digest()


def key(label: str) -> IdentityKey:
    return IdentityKey.generate(DeterministicRandom(seed(label)))


WRITER = key("writer")
ROTATED = key("rotated")
OWNER = key("owner-2")
OWNER_KEYS = {2: OWNER.public_key}
KEYS = {k.public_key: k for k in (WRITER, ROTATED)}
EVENT = DpSgdEvent(sampling_rate=0.05, noise_multiplier=0.9, steps=40, unit=PrivacyUnit.PERSON)
COLUMNS = ("seq", "prev_hash", "kind", "body", "signer_key", "signature", "entry_hash")
N = 8


def spend(epsilon: float) -> dict[str, Any]:
    return bodies.spend_body(owner_id=2, round_id=1, event=EVENT, delta=1e-6, epsilon_after=epsilon)


def build(path: Path, id_label: str) -> Countersignature:
    fed = bodies.federation_created_body(
        federation_id="tamper",
        securefed_version="0.1.0",
        roster_hash=hashlib.sha256(b"roster").digest(),
        protocol_versions={"ledger": "1", "secagg": "1"},
        config={"rounds": "1", "names": ["é", "\n"]},
    )
    with Ledger.create(
        path, WRITER, federation=fed, rng=DeterministicRandom(seed(id_label))
    ) as led:
        led.append(
            EntryKind.ROUND_PLANNED,
            bodies.round_planned_body(
                round_id=1,
                cohort=[1, 2, 3],
                sampling_rate=0.5,
                protection=ProtectionMode.SECAGG,
                plan_hash=bytes(range(32)),
                accepted=[1, 2, 3],
            ),
        )
        spent = led.append(EntryKind.SPEND, spend(1.25))
        receipt = led.countersign(spent.seq, OWNER)
        led.rotate_key(ROTATED)
        led.append(
            EntryKind.DROPOUTS, bodies.dropouts_body(round_id=1, stage="unmask", dropped=[3])
        )
        led.append(
            EntryKind.AGGREGATE_RELEASED,
            bodies.aggregate_released_body(
                round_id=1, aggregate_hash=bytes(32), model_hash=bytes([7]) * 32
            ),
        )
        led.seal()
    return receipt


class World:
    def __init__(self, root: Path) -> None:
        self.db = root / "ledger.db"
        self.receipt = build(self.db, "main")
        with Ledger.open(self.db, ROTATED) as led:
            self.entries = list(led.entries())
            led.export_jsonl(root / "ledger.jsonl")
        self.jsonl = (root / "ledger.jsonl").read_bytes()
        build(root / "other.db", "other")
        with Ledger.open(root / "other.db", ROTATED) as other:
            self.other = list(other.entries())
        assert len(self.entries) == N
        assert self.entries[0].entry_hash != self.other[0].entry_hash


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("ledger-tampering"))


def verify(source: Path, **kwargs: Any) -> VerificationReport:
    kwargs.setdefault("owner_keys", OWNER_KEYS)
    return verify_ledger(source, WRITER.public_key, **kwargs)


def full_evidence(world: World) -> dict[str, Any]:
    return {
        "later_head": (N - 1, world.entries[-1].entry_hash),
        "receipts": [world.receipt],
        "require_seal": True,
    }


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# -- writing tampered ledgers in either format ----------------------------------------------


def write_jsonl(entries: list[Entry], path: Path) -> Path:
    path.write_bytes(b"".join(e.to_json_line() for e in entries))
    return path


def write_sqlite(world: World, entries: list[Entry], path: Path) -> Path:
    """What an attacker with the file can do: rebuild the table, no constraints."""
    shutil.copyfile(world.db, path)
    db = sqlite3.connect(path)
    try:
        db.executescript(
            "DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete; DROP TABLE entries;"
            "CREATE TABLE entries (seq, prev_hash, kind, body, signer_key, signature, entry_hash);"
        )
        db.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (e.seq, e.prev_hash, e.kind.value, e.body, e.signer_key, e.signature, e.entry_hash)
                for e in entries
            ],
        )
        db.commit()
    finally:
        db.close()
    return path


@pytest.fixture(params=["sqlite", "jsonl"])
def write(
    request: pytest.FixtureRequest, world: World, tmp_path: Path
) -> Callable[[list[Entry]], Path]:
    if request.param == "sqlite":
        return lambda entries: write_sqlite(world, entries, tmp_path / "tampered.db")
    return lambda entries: write_jsonl(entries, tmp_path / "tampered.jsonl")


def resign(entries: list[Entry], start: int, ledger_id: bytes) -> list[Entry]:
    """The writer re-signs everything from ``start`` on, re-linking the hashes."""
    out = list(entries[:start])
    for entry in entries[start:]:
        out.append(
            sign_entry(
                ledger_id=ledger_id,
                seq=len(out),
                prev_hash=out[-1].entry_hash if out else bytes(32),
                kind=entry.kind,
                body=entry.body,
                key=KEYS[entry.signer_key],
            )
        )
    return out


# -- the untouched ledger ---------------------------------------------------------------------


def test_untampered_ledger_verifies(world: World, write: Callable[[list[Entry]], Path]) -> None:
    for source in (world.db, write(world.entries)):
        report = verify(source, **full_evidence(world))
        assert report.ok, report.reason
        assert report.first_bad is None
        assert report.sealed
        assert report.countersignatures == 1
        assert report.current_key == ROTATED.public_key
        assert report.entries == tuple(world.entries)
        assert report.warnings == ()
    assert verify_ledger(world.db, WRITER.public_key).ok


# -- one flipped byte ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacker_db(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("attacker") / "ledger.db"
    shutil.copyfile(world.db, path)
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;")
    db.close()
    return path


def _variants(value: object) -> list[object]:
    if isinstance(value, int):
        # One byte of the integer flipped (low byte; and a higher one that moves the row).
        return [value ^ 0x01, value ^ 0x0100] if value > 1 else [value ^ 0x0100, value ^ 0x010000]
    assert isinstance(value, bytes)
    return [flip(value, i) for i in sorted({0, 1, len(value) // 2, len(value) - 1})]


@pytest.mark.parametrize("column", COLUMNS)
@pytest.mark.parametrize("seq", range(N))
def test_flipped_byte_in_sqlite_row(attacker_db: Path, seq: int, column: str) -> None:
    db = sqlite3.connect(attacker_db)
    db.execute("PRAGMA synchronous=OFF")
    tried = 0
    try:
        (original,) = db.execute(f"SELECT {column} FROM entries WHERE seq = ?", (seq,)).fetchone()  # noqa: S608
        for tampered in _variants(original):
            if (
                column == "seq"
                and db.execute("SELECT 1 FROM entries WHERE seq = ?", (tampered,)).fetchone()
            ):
                continue  # would collide with another row's primary key
            key_seq = tampered if column == "seq" else seq
            db.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (tampered, seq))  # noqa: S608
            db.commit()
            try:
                report = verify(attacker_db, **_no_receipts())
            finally:
                db.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?", (original, key_seq))  # noqa: S608
                db.commit()
            assert not report.ok, (column, tampered)
            assert report.first_bad == seq, (column, report.reason)
            tried += 1
    finally:
        db.close()
    assert tried >= 1
    assert verify(attacker_db).ok


def _no_receipts() -> dict[str, Any]:
    return {"require_seal": True}


def test_flipped_byte_anywhere_in_jsonl(world: World, tmp_path: Path) -> None:
    data = world.jsonl
    missed = []
    for i in range(len(data)):
        expected = data.count(b"\n", 0, i)
        report = verify_records(
            parse_jsonl(flip(data, i)), WRITER.public_key, owner_keys=OWNER_KEYS
        )
        if report.ok or report.first_bad != expected:
            missed.append((i, expected, report.first_bad, report.reason))
    assert missed == []
    # And through a file, for a byte in each line.
    starts = [0, *(i + 1 for i in range(len(data) - 1) if data[i] == 0x0A)]
    for line, start in enumerate(starts):
        path = tmp_path / f"flip{line}.jsonl"
        path.write_bytes(flip(data, start + 5))
        assert verify(path).first_bad == line


def test_in_place_row_swap_in_sqlite(world: World, attacker_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "swap.db"
    shutil.copyfile(attacker_db, path)
    db = sqlite3.connect(path)
    try:
        rows = {r[0]: r for r in db.execute("SELECT * FROM entries WHERE seq IN (4, 5)")}
        for seq, other in ((4, 5), (5, 4)):
            db.execute(
                "UPDATE entries SET prev_hash=?, kind=?, body=?, signer_key=?, signature=?, "
                "entry_hash=? WHERE seq=?",
                (*rows[other][1:], seq),
            )
        db.commit()
    finally:
        db.close()
    report = verify(path)
    assert report.first_bad == 4
    assert report.failure is Failure.HASH_LINK


# -- entries deleted, duplicated, reordered, spliced; signatures swapped ------------------------


def cases() -> list[tuple[str, Callable[[World], list[Entry]], int]]:
    out: list[tuple[str, Callable[[World], list[Entry]], int]] = []
    for k in range(N - 1):
        out.append((f"delete-{k}", lambda w, k=k: w.entries[:k] + w.entries[k + 1 :], k))
        out.append(
            (
                f"reorder-{k}",
                lambda w, k=k: [
                    *w.entries[:k],
                    w.entries[k + 1],
                    w.entries[k],
                    *w.entries[k + 2 :],
                ],
                k,
            )
        )
    for k in range(N):
        out.append((f"duplicate-{k}", lambda w, k=k: [*w.entries[: k + 1], *w.entries[k:]], k + 1))
    for k in range(1, N):
        out.append(
            (f"splice-{k}", lambda w, k=k: [*w.entries[:k], w.other[k], *w.entries[k + 1 :]], k)
        )
        out.append(
            (
                f"splice-relinked-{k}",
                lambda w, k=k: [
                    *w.entries[:k],
                    replace(w.other[k], prev_hash=w.entries[k - 1].entry_hash),
                    *w.entries[k + 1 :],
                ],
                k,
            )
        )
    for i, j in ((0, 7), (1, 2), (2, 3), (3, 5), (4, 6)):

        def swapped(w: World, i: int = i, j: int = j) -> list[Entry]:
            entries = list(w.entries)
            a, b = entries[i], entries[j]
            entries[i] = replace(a, signature=b.signature)
            entries[j] = replace(b, signature=a.signature)
            return entries

        out.append((f"swap-signatures-{i}-{j}", swapped, i))
    out.append(("move-seal-up", lambda w: [*w.entries[:5], w.entries[7]], 5))
    out.append(("reverse", lambda w: w.entries[::-1], 0))
    return out


@pytest.mark.parametrize(("name", "tamper", "first_bad"), cases(), ids=[c[0] for c in cases()])
def test_structural_tampering(
    world: World,
    write: Callable[[list[Entry]], Path],
    name: str,
    tamper: Callable[[World], list[Entry]],
    first_bad: int,
) -> None:
    report = verify(write(tamper(world)))
    assert not report.ok, name
    assert report.first_bad == first_bad, report.reason
    with pytest.raises(LedgerVerificationError, match=f"entry {first_bad}:"):
        report.raise_for_failure()


# -- a cut tail, and history rewritten by the writer ------------------------------------------


def test_cut_tail_detected_by_the_seal(world: World, write: Callable[[list[Entry]], Path]) -> None:
    # Cutting entries before the seal moves the seal out of sequence.
    report = verify(write([*world.entries[:3], world.entries[7]]))
    assert (report.first_bad, report.failure) == (3, Failure.SEQUENCE)
    # Cutting the seal too is caught when a seal is required.
    report = verify(write(world.entries[:6]), require_seal=True)
    assert (report.first_bad, report.failure) == (6, Failure.TRUNCATED)


def test_cut_tail_detected_by_a_later_head(
    world: World, write: Callable[[list[Entry]], Path]
) -> None:
    head = (6, world.entries[6].entry_hash)
    report = verify(write(world.entries[:5]), later_head=head)
    assert (report.first_bad, report.failure) == (5, Failure.TRUNCATED)
    assert verify(write(world.entries[:7]), later_head=head).ok


def test_cut_tail_detected_by_a_countersignature(
    world: World, write: Callable[[list[Entry]], Path]
) -> None:
    report = verify(write(world.entries[:2]), receipts=[world.receipt])
    assert (report.first_bad, report.failure) == (2, Failure.TRUNCATED)
    # Without owner keys the receipt is still checked against the key it names.
    report = verify(write(world.entries[:2]), receipts=[world.receipt], owner_keys=None)
    assert report.first_bad == 2


def test_cut_tail_without_evidence_is_the_documented_limit(
    world: World, write: Callable[[list[Entry]], Path]
) -> None:
    # protocols/ledger.md §8.3: an unsealed prefix verifies if nobody holds a later head.
    report = verify(write(world.entries[:6]))
    assert report.ok
    assert not report.sealed
    assert any("could have been cut" in w for w in report.warnings)


def test_rewritten_history_detected_by_receipt_and_head(
    world: World, write: Callable[[list[Entry]], Path]
) -> None:
    ledger_id = bytes.fromhex(str(world.entries[0].fields()["ledger_id"]))
    lowered = replace(world.entries[2], body=encode(spend(0.5)))
    # The writer cannot forge the owner's countersignature, so it drops it.
    rewritten = resign([*world.entries[:2], lowered, *world.entries[4:]], 2, ledger_id)
    source = write(rewritten)
    assert verify(source).ok  # consistent in itself: only held evidence can tell
    report = verify(source, receipts=[world.receipt])
    assert (report.first_bad, report.failure) == (2, Failure.HEAD_MISMATCH)
    report = verify(source, later_head=(3, world.entries[3].entry_hash))
    assert (report.first_bad, report.failure) == (3, Failure.HEAD_MISMATCH)
    # Keeping the old countersignature entry does not help the writer.
    kept = resign([*world.entries[:2], lowered, *world.entries[3:]], 2, ledger_id)
    report = verify(write(kept))
    assert (report.first_bad, report.failure) == (3, Failure.COUNTERSIGNATURE)


def test_forged_countersignature_detected(
    world: World, write: Callable[[list[Entry]], Path]
) -> None:
    ledger_id = world.receipt.ledger_id
    impostor = key("impostor")
    forged = Countersignature.sign(
        ledger_id=ledger_id,
        entry_seq=2,
        entry_hash=world.entries[2].entry_hash,
        owner_id=2,
        owner_key=impostor,
    )
    entries = resign(
        [
            *world.entries[:3],
            replace(world.entries[3], body=encode(forged.body())),
            *world.entries[4:],
        ],
        3,
        ledger_id,
    )
    report = verify(write(entries))
    assert (report.first_bad, report.failure) == (3, Failure.COUNTERSIGNATURE)
    assert verify(write(entries), owner_keys=None).ok  # why owner keys must be pinned


def test_wrong_pinned_key(world: World) -> None:
    report = verify_ledger(world.db, ROTATED.public_key)
    assert (report.first_bad, report.failure) == (0, Failure.SIGNER)


def test_opening_a_tampered_ledger_fails(world: World, tmp_path: Path) -> None:
    path = write_sqlite(world, [*world.entries[:3], *world.entries[4:]], tmp_path / "t.db")
    with pytest.raises(LedgerVerificationError, match="entry 3"):
        Ledger.open(path, ROTATED)
