"""The ledger store (protocols/ledger.md §4-§7): durability, append-only, seal, rotation."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from securefed.errors import DataError, IntegrityError, ProtocolError
from securefed.ledger import (
    BudgetScope,
    Countersignature,
    EntryKind,
    Ledger,
    LedgerSealedError,
    LedgerVerificationError,
    ProtectionMode,
    bodies,
    verify_ledger,
)
from securefed.ledger.canonical import CanonicalValue
from securefed.ledger.store import APPLICATION_ID
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

ROOT = Path(__file__).resolve().parents[2]


def key(label: str) -> IdentityKey:
    return IdentityKey.generate(DeterministicRandom(hashlib.sha256(label.encode()).digest()))


WRITER = key("ledger-writer")
OWNER = key("ledger-owner-3")
EVENT = DpSgdEvent(sampling_rate=0.02, noise_multiplier=1.3, steps=150, unit=PrivacyUnit.RECORD)


def federation() -> dict[str, CanonicalValue]:
    return bodies.federation_created_body(
        federation_id="unit",
        securefed_version="0.1.0",
        roster_hash=bytes(32),
        protocol_versions={"ledger": "1"},
        config={"rounds": "2"},
    )


def spend(owner_id: int = 3, epsilon: float = 0.5) -> dict[str, CanonicalValue]:
    return bodies.spend_body(
        owner_id=owner_id, round_id=1, event=EVENT, delta=1e-5, epsilon_after=epsilon
    )


def released(round_id: int = 1) -> dict[str, CanonicalValue]:
    return bodies.aggregate_released_body(
        round_id=round_id, aggregate_hash=bytes(32), model_hash=bytes(range(32))
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.create(tmp_path / "ledger.db", WRITER, federation=federation()) as made:
        yield made


def test_wal_and_synchronous_full(ledger: Ledger) -> None:
    assert ledger.storage_settings() == {"journal_mode": "wal", "synchronous": 2}
    db = sqlite3.connect(ledger.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        db.close()
    reopened = Ledger.open(ledger.path, WRITER)
    assert reopened.storage_settings()["synchronous"] == 2
    reopened.close()


def test_genesis_records_ledger_id_and_writer(ledger: Ledger) -> None:
    genesis = ledger.entry(0)
    fields = genesis.fields()
    assert genesis.kind is EntryKind.FEDERATION_CREATED
    assert fields["ledger_id"] == ledger.ledger_id.hex()
    assert fields["writer_key"] == WRITER.public_key.hex()
    assert genesis.prev_hash == bytes(32)
    assert ledger.head() == (0, genesis.entry_hash)


def test_create_refuses_existing_file_and_reserved_fields(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError):
        Ledger.create(path, WRITER, federation=federation())
    with pytest.raises(ValueError, match=r"set by Ledger\.create"):
        Ledger.create(tmp_path / "y.db", WRITER, federation={**federation(), "ledger_id": "00"})
    with pytest.raises(ValueError, match="federation_created"):
        Ledger.create(tmp_path / "z.db", WRITER, federation={"federation_id": "f"})
    assert not (tmp_path / "z.db").exists()


def test_ledger_ids_are_random(tmp_path: Path) -> None:
    ids = set()
    for i in range(2):
        with Ledger.create(tmp_path / f"{i}.db", WRITER, federation=federation()) as made:
            ids.add(made.ledger_id)
    assert len(ids) == 2


def test_entries_survive_reopen(ledger: Ledger) -> None:
    written = [
        ledger.append(EntryKind.SPEND, spend()),
        ledger.append(
            EntryKind.DROPOUTS,
            bodies.dropouts_body(round_id=1, stage="masked_input", dropped=[5, 2]),
        ),
    ]
    head = ledger.head()
    ledger.close()
    with Ledger.open(ledger.path, WRITER) as again:
        assert again.head() == head
        assert list(again.entries())[1:] == written
        assert again.entry(2).fields()["dropped"] == ["2", "5"]
        nxt = again.append(EntryKind.AGGREGATE_RELEASED, released())
        assert nxt.seq == 3
        assert nxt.prev_hash == head[1]


def test_append_is_durable_without_close(tmp_path: Path) -> None:
    # A writer process that dies right after append() returns (no close, no atexit).
    path = tmp_path / "crash.db"
    script = textwrap.dedent(
        f"""
        import hashlib, os
        from securefed.ledger import EntryKind, Ledger, bodies
        from securefed.privacy.events import DpSgdEvent, PrivacyUnit
        from securefed.randomness import DeterministicRandom
        from securefed.secagg.roster import IdentityKey
        k = IdentityKey.generate(DeterministicRandom(hashlib.sha256(b"ledger-writer").digest()))
        fed = bodies.federation_created_body(federation_id="crash", securefed_version="0",
            roster_hash=bytes(32), protocol_versions={{}}, config={{}})
        led = Ledger.create({str(path)!r}, k, federation=fed)
        ev = DpSgdEvent(sampling_rate=0.5, noise_multiplier=1.0, steps=1, unit=PrivacyUnit.RECORD)
        led.append(EntryKind.SPEND, bodies.spend_body(owner_id=1, round_id=0, event=ev,
            delta=1e-5, epsilon_after=1.0))
        os._exit(0)
        """
    )
    subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", script], check=True, cwd=ROOT, timeout=120
    )
    with Ledger.open(path, WRITER) as reopened:
        assert reopened.head()[0] == 1
        assert reopened.entry(1).kind is EntryKind.SPEND
    assert verify_ledger(path, WRITER.public_key).ok


def test_no_append_after_seal(ledger: Ledger) -> None:
    ledger.append(EntryKind.SPEND, spend())
    seal = ledger.seal(reason="done")
    assert ledger.sealed
    assert seal.fields() == {"reason": "done"}
    with pytest.raises(LedgerSealedError):
        ledger.append(EntryKind.SPEND, spend())
    with pytest.raises(LedgerSealedError):
        ledger.seal()
    with pytest.raises(LedgerSealedError):
        ledger.rotate_key(key("next"))
    with pytest.raises(LedgerSealedError):
        ledger.countersign(1, OWNER)
    assert ledger.head()[0] == seal.seq
    ledger.close()
    with Ledger.open(ledger.path, WRITER) as reopened:
        assert reopened.sealed
        with pytest.raises(LedgerSealedError):
            reopened.append(EntryKind.SPEND, spend())
    assert issubclass(LedgerSealedError, ProtocolError)


def test_append_only_in_sqlite_too(ledger: Ledger) -> None:
    ledger.append(EntryKind.SPEND, spend())
    db = sqlite3.connect(ledger.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE entries SET body = x'00' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM entries WHERE seq = 1")
    finally:
        db.close()
    for name in ("update", "delete", "remove", "truncate", "replace"):
        assert not hasattr(Ledger, name)


@pytest.mark.parametrize(
    "kind",
    [
        EntryKind.FEDERATION_CREATED,
        EntryKind.KEY_ROTATION,
        EntryKind.COUNTERSIGNATURE,
        EntryKind.SEAL,
    ],
)
def test_special_kinds_have_their_own_methods(ledger: Ledger, kind: EntryKind) -> None:
    with pytest.raises(ValueError, match="own method"):
        ledger.append(kind, {})


def test_bodies_are_checked_on_append(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="missing"):
        ledger.append(EntryKind.SPEND, {"owner_id": "1"})
    with pytest.raises(ValueError, match="unknown fields"):
        ledger.append(EntryKind.SPEND, {**spend(), "note": "x"})
    with pytest.raises(ValueError, match="owner_id"):
        ledger.append(EntryKind.SPEND, {**spend(), "owner_id": "03"})
    with pytest.raises(ValueError, match="sampling_rate"):
        ledger.append(EntryKind.SPEND, {**spend(), "sampling_rate": "1.5"})
    with pytest.raises(TypeError):
        ledger.append("spend", spend())  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        ledger.append(EntryKind.SPEND, {**spend(), "steps": 150})  # type: ignore[dict-item]
    assert ledger.head()[0] == 0


def test_body_builders() -> None:
    planned = bodies.round_planned_body(
        round_id=4,
        cohort=[9, 2, 2],
        sampling_rate=0.25,
        protection=ProtectionMode.SECAGG,
        plan_hash=bytes(32),
        accepted=[2],
    )
    assert planned["cohort"] == ["2", "9"]
    bodies.validate_body(EntryKind.ROUND_PLANNED, planned)
    mech = bodies.mechanism_body(round_id=4, event=EVENT, clip_norm=1.0)
    bodies.validate_body(EntryKind.MECHANISM, mech)
    assert bodies.dp_sgd_event(mech) == EVENT
    assert bodies.dp_sgd_event(spend()) == EVENT
    owner = bodies.budget_exhausted_body(
        round_id=4,
        scope=BudgetScope.OWNER,
        owner_id=2,
        epsilon_spent=2.9,
        epsilon_budget=3.0,
        delta=1e-5,
    )
    bodies.validate_body(EntryKind.BUDGET_EXHAUSTED, owner)
    with pytest.raises(ValueError, match="owner_id"):
        bodies.budget_exhausted_body(
            round_id=4,
            scope=BudgetScope.FEDERATION,
            owner_id=2,
            epsilon_spent=1.0,
            epsilon_budget=1.0,
            delta=1e-5,
        )
    with pytest.raises(DataError, match="owner_id"):
        bodies.validate_body(EntryKind.BUDGET_EXHAUSTED, {**owner, "scope": "federation"})
    with pytest.raises(DataError, match="strictly increasing"):
        bodies.validate_body(EntryKind.ROUND_PLANNED, {**planned, "cohort": ["9", "2"]})


def test_second_writer_detected(ledger: Ledger) -> None:
    other = Ledger.open(ledger.path, WRITER)
    try:
        other.append(EntryKind.SPEND, spend())
        with pytest.raises(ProtocolError, match="another writer"):
            ledger.append(EntryKind.SPEND, spend())
        assert verify_ledger(ledger.path, WRITER.public_key).ok
    finally:
        other.close()


def test_key_rotation(ledger: Ledger) -> None:
    new = key("rotated-writer")
    with pytest.raises(ValueError, match="differ"):
        ledger.rotate_key(WRITER)
    rotation = ledger.rotate_key(new)
    assert rotation.signer_key == WRITER.public_key
    assert rotation.fields() == {"new_key": new.public_key.hex()}
    after = ledger.append(EntryKind.SPEND, spend())
    assert after.signer_key == new.public_key
    assert ledger.writer_public_key == new.public_key
    ledger.close()
    with pytest.raises(ValueError, match="current writer key"):
        Ledger.open(ledger.path, WRITER)
    Ledger.open(ledger.path, new, pinned_key=WRITER.public_key).close()
    with pytest.raises(LedgerVerificationError, match="entry 0"):
        Ledger.open(ledger.path, new, pinned_key=new.public_key)
    report = verify_ledger(ledger.path, WRITER.public_key)
    assert report.ok
    assert report.current_key == new.public_key


def test_countersign(ledger: Ledger) -> None:
    spent = ledger.append(EntryKind.SPEND, spend(owner_id=3))
    receipt = ledger.countersign(spent.seq, OWNER)
    assert receipt.entry_hash == spent.entry_hash
    assert receipt.owner_id == 3
    receipt.verify(OWNER.public_key)
    with pytest.raises(IntegrityError):
        receipt.verify(WRITER.public_key)
    recorded = ledger.entry(2)
    assert recorded.kind is EntryKind.COUNTERSIGNATURE
    assert Countersignature.from_body(ledger.ledger_id, recorded.fields()) == receipt
    with pytest.raises(ValueError, match="SPEND"):
        ledger.countersign(0, OWNER)
    with pytest.raises(KeyError):
        ledger.countersign(99, OWNER)
    report = verify_ledger(
        ledger.path, WRITER.public_key, owner_keys={3: OWNER.public_key}, receipts=[receipt]
    )
    assert report.ok
    assert report.countersignatures == 1


def test_add_countersignature_checks(ledger: Ledger) -> None:
    spent = ledger.append(EntryKind.SPEND, spend(owner_id=3))
    good = Countersignature.sign(
        ledger_id=ledger.ledger_id,
        entry_seq=1,
        entry_hash=spent.entry_hash,
        owner_id=3,
        owner_key=OWNER,
    )
    wrong_ledger = Countersignature.sign(
        ledger_id=bytes(32),
        entry_seq=1,
        entry_hash=spent.entry_hash,
        owner_id=3,
        owner_key=OWNER,
    )
    wrong_hash = Countersignature.sign(
        ledger_id=ledger.ledger_id,
        entry_seq=1,
        entry_hash=bytes(32),
        owner_id=3,
        owner_key=OWNER,
    )
    wrong_owner = Countersignature.sign(
        ledger_id=ledger.ledger_id,
        entry_seq=1,
        entry_hash=spent.entry_hash,
        owner_id=4,
        owner_key=OWNER,
    )
    missing = Countersignature.sign(
        ledger_id=ledger.ledger_id,
        entry_seq=7,
        entry_hash=spent.entry_hash,
        owner_id=3,
        owner_key=OWNER,
    )
    bad_signature = Countersignature(
        ledger_id=good.ledger_id,
        entry_seq=1,
        entry_hash=good.entry_hash,
        owner_id=3,
        owner_key=good.owner_key,
        signature=bytes(64),
    )
    for cs, match in (
        (wrong_ledger, "another ledger"),
        (wrong_hash, "hash"),
        (wrong_owner, "another owner"),
        (missing, "does not exist"),
    ):
        with pytest.raises(ValueError, match=match):
            ledger.add_countersignature(cs)
    with pytest.raises(IntegrityError):
        ledger.add_countersignature(bad_signature)
    assert ledger.head()[0] == 1
    assert ledger.add_countersignature(good).seq == 2


def test_export_jsonl_verifies_like_the_database(ledger: Ledger, tmp_path: Path) -> None:
    spent = ledger.append(EntryKind.SPEND, spend())
    ledger.countersign(spent.seq, OWNER)
    ledger.seal()
    out = tmp_path / "export.jsonl"
    ledger.export_jsonl(out)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) == 5
    from_db = verify_ledger(ledger.path, WRITER.public_key, require_seal=True)
    from_jsonl = verify_ledger(out, WRITER.public_key, require_seal=True)
    assert from_db.ok
    assert from_jsonl.ok
    assert from_db.entries == from_jsonl.entries
    assert from_db.head == from_jsonl.head == ledger.head()


def test_secrets_never_in_repr(ledger: Ledger) -> None:
    spent = ledger.append(EntryKind.SPEND, spend())
    receipt = ledger.countersign(spent.seq, OWNER)
    report = verify_ledger(ledger.path, WRITER.public_key)
    secrets = [k._key.private_bytes_raw() for k in (WRITER, OWNER)]
    for shown in (repr(ledger), repr(report), repr(receipt), repr(spent), repr(WRITER)):
        for secret in secrets:
            assert secret.hex() not in shown
            assert secret.hex()[:16] not in shown
            assert repr(secret) not in shown


def test_open_refuses_files_that_are_no_ledger(tmp_path: Path) -> None:
    text = tmp_path / "text.db"
    text.write_bytes(b"not a database, just some text that is long enough" * 4)
    plain = tmp_path / "plain.db"
    db = sqlite3.connect(plain)
    db.execute("CREATE TABLE entries (x)")
    db.commit()
    db.close()
    for path in (text, plain):
        with pytest.raises(DataError, match="not a securefed ledger"):
            Ledger.open(path, WRITER)
    with pytest.raises(FileNotFoundError):
        Ledger.open(tmp_path / "absent.db", WRITER)
    db = sqlite3.connect(plain)
    try:  # the foreign database was left as it was (not switched to WAL)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()


def test_an_entry_checks_its_own_hash_and_signer(ledger: Ledger) -> None:
    entry = ledger.append(EntryKind.SPEND, spend())
    entry.check_signed(ledger.ledger_id)
    entry.check_signed(ledger.ledger_id, WRITER.public_key)
    other_body = dataclasses.replace(entry, body=entry.body.replace(b'"0.5"', b'"0.4"'))
    with pytest.raises(IntegrityError):
        other_body.check_signed(ledger.ledger_id)  # the stored hash is of another body
    with pytest.raises(IntegrityError):
        entry.check_signed(bytes(32))  # another ledger
    with pytest.raises(IntegrityError):
        entry.check_signed(ledger.ledger_id, OWNER.public_key)  # not the pinned writer
    forged = dataclasses.replace(entry, signature=bytes(64))
    rehashed = dataclasses.replace(
        forged,
        entry_hash=hashlib.sha256(
            forged.message(ledger.ledger_id) + forged.signer_key + forged.signature
        ).digest(),
    )
    rehashed.check_signed(ledger.ledger_id)  # self-consistent without a pinned key ...
    with pytest.raises(IntegrityError):
        rehashed.check_signed(ledger.ledger_id, WRITER.public_key)  # ... but not signed
