"""The library against the committed vectors in protocols/ledger/vectors/.

The chain's signed messages and hashes are recomputed here from the spec
(protocols/ledger.md §2) with hashlib, struct and ``cryptography`` directly,
not through securefed; every valid case must verify and every invalid case
must fail at the recorded entry with the recorded failure, from its JSON Lines
file. The generator is imported only to check that it rewrites the committed
files byte for byte.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from securefed.errors import DataError
from securefed.ledger import Countersignature, EntryKind, Failure, verify_ledger
from securefed.ledger.canonical import decode, encode, parse_decimal, parse_uint

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocols" / "ledger" / "vectors"
GENERATOR = ROOT / "protocols" / "ledger" / "generate_vectors.py"
LABEL = b"securefed/ledger/v1"
KIND_CODES = {
    "federation_created": 1,
    "round_planned": 2,
    "mechanism": 3,
    "spend": 4,
    "dropouts": 5,
    "aggregate_released": 6,
    "budget_exhausted": 7,
    "key_rotation": 8,
    "countersignature": 9,
    "seal": 10,
}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return doc


CANONICAL = load("canonical.json")
LEDGER = load("ledger_vectors.json")


def test_provenance() -> None:
    for doc in (CANONICAL, LEDGER):
        assert doc["generator"] == "protocols/ledger/generate_vectors.py"
        assert doc["protocol_version"] == "securefed/ledger/v1"
        assert doc["source"]


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("ledger_generate_vectors", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    assert sorted(p.name for p in written) == ["canonical.json", "ledger_vectors.json"]
    for path in written:
        assert path.read_bytes() == (VECTORS / path.name).read_bytes(), path.name


# -- canonical encoding -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CANONICAL["valid"], ids=lambda c: c["name"])
def test_canonical_valid(case: dict[str, Any]) -> None:
    expected = bytes.fromhex(case["canonical_hex"])
    assert encode(case["value"]) == expected
    assert decode(expected) == case["value"]


@pytest.mark.parametrize("case", CANONICAL["invalid"], ids=lambda c: c["name"])
def test_canonical_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(DataError):
        decode(bytes.fromhex(case["bytes_hex"]))


def test_number_strings() -> None:
    for text in CANONICAL["uint"]["valid"]:
        assert str(parse_uint(text)) == text
    for text in CANONICAL["decimal"]["valid"]:
        assert parse_decimal(text) == float(text)
    for parse, group in ((parse_uint, "uint"), (parse_decimal, "decimal")):
        for text in CANONICAL[group]["invalid"]:
            with pytest.raises(DataError):
                parse(text)


# -- the chain, recomputed from the spec --------------------------------------------------------


def test_keys_match_their_private_halves() -> None:
    for pair in LEDGER["keys"].values():
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(pair["private"]))
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert public.hex() == pair["public"]


def test_chain_signed_messages_and_hashes() -> None:
    ledger_id = bytes.fromhex(LEDGER["ledger_id"])
    prev = bytes(32)
    signer = bytes.fromhex(LEDGER["keys"]["writer"]["public"])
    lines = LEDGER["chain"]["lines"]
    assert len(lines) == len(LEDGER["chain"]["entries"]) == 6
    for seq, (line, recorded) in enumerate(zip(lines, LEDGER["chain"]["entries"], strict=True)):
        record = json.loads(line)
        body = json.dumps(record["body"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        message = (
            LABEL
            + ledger_id
            + struct.pack(">Q", seq)
            + prev
            + bytes([KIND_CODES[record["kind"]]])
            + body.encode("utf-8")
        )
        assert recorded["signing_message_hex"] == message.hex()
        assert record["seq"] == str(seq)
        assert record["prev_hash"] == prev.hex()
        assert record["signer_key"] == signer.hex()
        signature = bytes.fromhex(record["signature"])
        Ed25519PublicKey.from_public_bytes(signer).verify(signature, message)
        digest = hashlib.sha256(message + signer + signature).digest()
        assert record["entry_hash"] == recorded["entry_hash"] == digest.hex()
        if record["kind"] == "key_rotation":
            signer = bytes.fromhex(record["body"]["new_key"])
        if record["kind"] == "countersignature":
            cs = record["body"]
            owner = Ed25519PublicKey.from_public_bytes(bytes.fromhex(cs["owner_key"]))
            owner.verify(
                bytes.fromhex(cs["signature"]),
                LABEL + b"/countersignature" + ledger_id + bytes.fromhex(cs["entry_hash"]),
            )
        prev = digest
    assert [json.loads(line)["kind"] for line in lines] == [
        k.wire_name
        for k in (
            EntryKind.FEDERATION_CREATED,
            EntryKind.SPEND,
            EntryKind.COUNTERSIGNATURE,
            EntryKind.KEY_ROTATION,
            EntryKind.AGGREGATE_RELEASED,
            EntryKind.SEAL,
        )
    ]


# -- valid and must-fail cases ------------------------------------------------------------------


def receipt(doc: dict[str, str]) -> Countersignature:
    return Countersignature(
        ledger_id=bytes.fromhex(doc["ledger_id"]),
        entry_seq=int(doc["entry_seq"]),
        entry_hash=bytes.fromhex(doc["entry_hash"]),
        owner_id=int(doc["owner_id"]),
        owner_key=bytes.fromhex(doc["owner_key"]),
        signature=bytes.fromhex(doc["signature"]),
    )


def run_case(case: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "case.jsonl"
    path.write_bytes("".join(line + "\n" for line in case["lines"]).encode("utf-8"))
    head = case["later_head"]
    owner_keys = case["owner_keys"]
    return verify_ledger(
        path,
        bytes.fromhex(case["pinned_key"]),
        later_head=None if head is None else (int(head["seq"]), bytes.fromhex(head["entry_hash"])),
        owner_keys=None
        if owner_keys is None
        else {int(k): bytes.fromhex(v) for k, v in owner_keys.items()},
        receipts=[receipt(r) for r in case["receipts"]],
        require_seal=case["require_seal"],
    )


@pytest.mark.parametrize("case", LEDGER["valid"], ids=lambda c: c["name"])
def test_valid_cases(case: dict[str, Any], tmp_path: Path) -> None:
    report = run_case(case, tmp_path)
    assert report.ok, report.reason
    assert report.sealed == case["sealed"]
    assert report.head == (int(case["head"]["seq"]), bytes.fromhex(case["head"]["entry_hash"]))


@pytest.mark.parametrize("case", LEDGER["invalid"], ids=lambda c: c["name"])
def test_invalid_cases(case: dict[str, Any], tmp_path: Path) -> None:
    report = run_case(case, tmp_path)
    assert not report.ok
    assert report.first_bad == int(case["first_bad"]), report.reason
    assert report.failure is Failure(case["failure"])


def test_vectors_cover_the_required_variants() -> None:
    names = {c["name"] for c in LEDGER["invalid"]}
    assert {
        "body-byte",
        "signature-byte",
        "prev-hash-byte",
        "deleted",
        "duplicated",
        "reordered",
        "spliced",
        "truncated-seal-kept",
        "wrong-pinned-key",
    } <= names
