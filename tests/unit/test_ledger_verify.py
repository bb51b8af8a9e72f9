"""verify_ledger's interface: inputs, report fields, odd files (protocols/ledger.md §8)."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from securefed.ledger import (
    EntryKind,
    Failure,
    Ledger,
    LedgerVerificationError,
    bodies,
    verify_ledger,
)
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey


def key(label: str) -> IdentityKey:
    return IdentityKey.generate(DeterministicRandom(hashlib.sha256(label.encode()).digest()))


WRITER = key("verify-writer")
OWNER = key("verify-owner")
EVENT = DpSgdEvent(sampling_rate=0.1, noise_multiplier=2.0, steps=10, unit=PrivacyUnit.RECORD)


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, Path]:
    fed = bodies.federation_created_body(
        federation_id="v",
        securefed_version="0",
        roster_hash=bytes(32),
        protocol_versions={},
        config={},
    )
    db = tmp_path / "l.db"
    with Ledger.create(db, WRITER, federation=fed) as led:
        spent = led.append(
            EntryKind.SPEND,
            bodies.spend_body(owner_id=1, round_id=0, event=EVENT, delta=1e-5, epsilon_after=0.3),
        )
        led.countersign(spent.seq, OWNER)
        led.export_jsonl(tmp_path / "l.jsonl")
    return db, tmp_path / "l.jsonl"


def test_report_of_a_good_ledger(made: tuple[Path, Path]) -> None:
    db, _ = made
    report = verify_ledger(db, WRITER.public_key, owner_keys={1: OWNER.public_key})
    assert report.ok
    assert report.reason == "ok"
    assert report.records == 3
    assert report.head is not None
    assert report.head[0] == 2
    assert not report.sealed
    assert len(report.warnings) == 1  # unsealed
    report.raise_for_failure()
    unpinned = verify_ledger(db, WRITER.public_key)
    assert any("pinned" in w for w in unpinned.warnings)


def test_failure_report_and_error(made: tuple[Path, Path]) -> None:
    _, jsonl = made
    lines = jsonl.read_bytes().split(b"\n")
    jsonl.write_bytes(b"\n".join([lines[0], lines[2], lines[1], b""]))
    report = verify_ledger(jsonl, WRITER.public_key)
    assert not report.ok
    assert report.first_bad == 1
    assert report.failure is Failure.SEQUENCE
    assert report.reason.startswith("sequence: ")
    assert report.head is not None
    assert report.head[0] == 0
    assert len(report.entries) == 1
    with pytest.raises(LedgerVerificationError) as caught:
        report.raise_for_failure()
    assert caught.value.first_bad == 1


def test_missing_final_newline(made: tuple[Path, Path]) -> None:
    _, jsonl = made
    jsonl.write_bytes(jsonl.read_bytes()[:-1])
    report = verify_ledger(jsonl, WRITER.public_key)
    assert (report.first_bad, report.failure) == (2, Failure.MALFORMED)


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"not a ledger at all", b"SQLite format 3\x00junk"]
)
def test_files_that_are_no_ledger(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x"
    path.write_bytes(content)
    report = verify_ledger(path, WRITER.public_key)
    assert not report.ok
    assert report.first_bad == 0


def test_database_without_entries_table(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    report = verify_ledger(path, WRITER.public_key)
    assert (report.first_bad, report.failure) == (0, Failure.MALFORMED)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify_ledger(tmp_path / "absent.db", WRITER.public_key)


def test_caller_misuse(made: tuple[Path, Path]) -> None:
    db, _ = made
    with Ledger.open(db, WRITER) as led:
        receipt = led.countersign(1, OWNER)
    with pytest.raises(ValueError, match="pinned_key"):
        verify_ledger(db, b"short")
    with pytest.raises(ValueError, match="later_head"):
        verify_ledger(db, WRITER.public_key, later_head=(-1, bytes(32)))
    with pytest.raises(ValueError, match="later_head"):
        verify_ledger(db, WRITER.public_key, later_head=(1, b"x"))
    with pytest.raises(ValueError, match="owner key"):
        verify_ledger(db, WRITER.public_key, owner_keys={1: b"x"})
    with pytest.raises(ValueError, match="no pinned key"):
        verify_ledger(db, WRITER.public_key, owner_keys={9: OWNER.public_key}, receipts=[receipt])
    with pytest.raises(ValueError, match="does not verify"):
        verify_ledger(db, WRITER.public_key, receipts=[replace(receipt, signature=bytes(64))])
    with pytest.raises(ValueError, match="does not verify"):
        verify_ledger(db, WRITER.public_key, owner_keys={1: WRITER.public_key}, receipts=[receipt])


def test_receipt_for_another_ledger(made: tuple[Path, Path]) -> None:
    db, _ = made
    with Ledger.open(db, WRITER) as led:
        receipt = led.countersign(1, OWNER)
    foreign = type(receipt).sign(
        ledger_id=bytes(32),
        entry_seq=1,
        entry_hash=receipt.entry_hash,
        owner_id=1,
        owner_key=OWNER,
    )
    report = verify_ledger(db, WRITER.public_key, receipts=[foreign])
    assert (report.first_bad, report.failure) == (0, Failure.HEAD_MISMATCH)


@pytest.mark.parametrize("spelling", ["SPEND", "Spend", "\u017fpend", " spend", "4"])
def test_kind_names_are_exact(made: tuple[Path, Path], spelling: str) -> None:
    # Only the exact export name is accepted, so no byte of a line is free to change.
    _, jsonl = made
    data = jsonl.read_bytes()
    assert data.count(b'"kind":"spend"') == 1
    jsonl.write_bytes(data.replace(b'"kind":"spend"', f'"kind":"{spelling}"'.encode()))
    report = verify_ledger(jsonl, WRITER.public_key)
    assert (report.first_bad, report.failure) == (1, Failure.MALFORMED)
