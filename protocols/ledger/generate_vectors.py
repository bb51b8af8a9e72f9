"""Deterministic generator of the ledger test vectors (protocols/ledger.md §9).

Usage::

    python protocols/ledger/generate_vectors.py [OUT_DIR]

Writes ``canonical.json`` (the body encoding of §3) and ``ledger_vectors.json``
(a six-entry chain with a countersignature, a key rotation and a seal, plus
must-fail variants, each with its expected first bad entry) into ``OUT_DIR``
(default: ``protocols/ledger/vectors`` next to this script).

Every key and the ledger id come from :class:`securefed.randomness.DeterministicRandom`
under a fixed seed (SHA-256 of a public label); Ed25519 signing is deterministic
(RFC 8032), and the ledger is written through :class:`securefed.ledger.Ledger`
into a temporary directory and read back from its JSON Lines export, so a second
run writes the same bytes. The private keys are test keys made from public
labels: they are recorded so that another implementation can re-sign. Each
case is checked with :func:`verify_ledger` before it is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from securefed.errors import DataError
from securefed.ledger import Countersignature, Entry, EntryKind, Failure, Ledger, bodies
from securefed.ledger.canonical import CanonicalValue, decode, encode
from securefed.ledger.entry import sign_entry
from securefed.ledger.verify import verify_records
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

GENERATOR = "protocols/ledger/generate_vectors.py"
PROTOCOL_VERSION = "securefed/ledger/v1"
DEFAULT_OUT = Path(__file__).resolve().parent / "vectors"
SEED_LABEL = b"securefed/ledger/vectors/v1/"
OWNER_ID = 7


class VectorCheckFailed(RuntimeError):
    """A vector did not hold while generating it (never write such a file)."""


def _check(condition: bool, what: str) -> None:
    # Not `assert`: the checks must also run under `python -O`.
    if not condition:
        raise VectorCheckFailed(what)


def seed(label: str) -> bytes:
    """A fixed 32-byte seed: SHA-256 of a public label (nothing secret, nothing random)."""
    return hashlib.sha256(SEED_LABEL + label.encode("ascii")).digest()


def test_key(label: str) -> tuple[IdentityKey, bytes]:
    """A test identity and its 32-byte private key (the first 32 bytes of its stream)."""
    private = DeterministicRandom(seed(label)).random_bytes(32)
    return IdentityKey.generate(DeterministicRandom(seed(label))), private


def _write(out_dir: Path, name: str, doc: dict[str, Any]) -> Path:
    path = out_dir / name
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    path.write_bytes(text.encode("utf-8"))
    return path


# -- canonical encoding ---------------------------------------------------------------------

CANONICAL_VALID: list[tuple[str, str, CanonicalValue]] = [
    ("empty-object", "the smallest body", {}),
    ("literals", "true, false and null", {"f": False, "n": None, "t": True}),
    ("empty-array", "an empty array and an empty string", {"a": [], "s": ""}),
    (
        "nesting",
        "members sorted at every level; array order kept",
        {"z": {"b": ["2", "1", {"y": "", "x": None}], "a": "0"}, "a": []},
    ),
    (
        "utf16-key-order",
        "names compare as UTF-16 code units: U+1F600 (surrogates D83D DE00) sorts "
        "before U+E000, and upper case before lower case",
        {"\ue000": "private use", "\U0001f600": "emoji", "a": "", "B": "", "\u00e9": ""},
    ),
    (
        "escapes",
        'the two-character escapes, \\u00xx in lower case for other controls, "/" and '
        "DEL and U+2028 literal",
        {"s": "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028'},
    ),
    (
        "unicode",
        "non-ASCII characters literal in UTF-8 (2, 3 and 4 bytes)",
        {"name": "caf\u00e9 \u20ac \U0001f600", "\u00fc": "\u4e2d"},
    ),
    (
        "numbers-as-strings",
        "every number is a string: uint and decimal spellings",
        {"epsilon": "1.2345", "steps": "18446744073709551615", "delta": "1e-05", "q": "0.01"},
    ),
]

CANONICAL_INVALID: list[tuple[str, str, bytes]] = [
    ("whitespace", "no whitespace between tokens", b'{ "a":"b"}'),
    ("trailing-newline", "nothing after the value", b'{"a":"b"}\n'),
    ("unsorted", "members must be sorted", b'{"b":"","a":""}'),
    (
        "code-point-order",
        "UTF-16 order, not code point order",
        '{"\ue000":"","\U0001f600":""}'.encode(),
    ),
    ("duplicate-name", "a name occurs once", b'{"a":"1","a":"2"}'),
    ("integer", "no JSON numbers", b'{"a":1}'),
    ("float", "no JSON numbers", b'{"a":1.5}'),
    ("nan", "no NaN literal", b'{"a":NaN}'),
    ("infinity", "no Infinity literal", b'{"a":-Infinity}'),
    ("upper-hex-escape", "\\u00xx in lower case", b'{"a":"\\u001F"}'),
    ("escaped-solidus", "/ is never escaped", b'{"a":"\\/"}'),
    ("needless-escape", "printable characters are never escaped", b'{"a":"\\u0041"}'),
    ("escaped-non-ascii", "non-ASCII is literal UTF-8", b'{"a":"\\u00e9"}'),
    ("lone-surrogate", "strings are Unicode scalar values", b'{"a":"\\ud800"}'),
    ("invalid-utf8", "bytes are UTF-8", b'{"a":"\xff"}'),
    ("bom", "no byte-order mark", b'\xef\xbb\xbf{"a":"b"}'),
    ("single-quotes", "JSON strings only", b"{'a':'b'}"),
    ("too-deep", "at most 32 levels of nesting", b'{"a":' + b"[" * 32 + b"]" * 32 + b"}"),
]

UINT_VALID = ["0", "7", "18446744073709551615"]
UINT_INVALID = ["", "-1", "01", "+1", "1.0", "1e3", "18446744073709551616", " 1", "0x10"]
DECIMAL_VALID = ["0", "-0.0", "0.1", "1e-05", "1E+300", "123.456e7", "2.5"]
DECIMAL_INVALID = ["", ".5", "5.", "01", "1e", "+1", "NaN", "inf", "1e400", "0x1p3", "1_0"]


def canonical_vectors() -> dict[str, Any]:
    from securefed.ledger.canonical import parse_decimal, parse_uint

    valid = []
    for name, description, value in CANONICAL_VALID:
        data = encode(value)
        _check(decode(data) == value, f"{name}: round trip")
        valid.append(
            {
                "name": name,
                "description": description,
                "value": value,
                "canonical_hex": data.hex(),
            }
        )
    invalid = []
    for name, description, data in CANONICAL_INVALID:
        try:
            decode(data)
        except DataError:
            pass
        else:
            raise VectorCheckFailed(f"{name}: decoded")
        invalid.append({"name": name, "description": description, "bytes_hex": data.hex()})

    def refused(parse: Callable[[object], object], text: str) -> bool:
        try:
            parse(text)
        except DataError:
            return True
        return False

    for text in UINT_VALID:
        _check(str(parse_uint(text)) == text, f"uint {text}")
    for text in DECIMAL_VALID:
        parse_decimal(text)
    _check(all(refused(parse_uint, t) for t in UINT_INVALID), "uint invalid")
    _check(all(refused(parse_decimal, t) for t in DECIMAL_INVALID), "decimal invalid")
    return {
        "source": "securefed: RFC 8785 (JCS) restricted to documents without JSON numbers",
        "generator": GENERATOR,
        "protocol_version": PROTOCOL_VERSION,
        "description": (
            "protocols/ledger.md §3. valid: value -> canonical bytes (encode must "
            "produce them; decode must return the value). invalid: bytes decode must "
            "refuse. uint/decimal: number-string grammars (§3.3)."
        ),
        "valid": valid,
        "invalid": invalid,
        "uint": {"valid": UINT_VALID, "invalid": UINT_INVALID},
        "decimal": {"valid": DECIMAL_VALID, "invalid": DECIMAL_INVALID},
    }


# -- the chain ------------------------------------------------------------------------------


def _federation() -> dict[str, CanonicalValue]:
    return bodies.federation_created_body(
        federation_id="vectors",
        securefed_version="0.1.0",
        roster_hash=hashlib.sha256(b"vector roster").digest(),
        protocol_versions={"ledger": "1", "secagg": "1"},
        config={"rounds": "3", "privacy": {"unit": "record", "delta": "1e-05"}},
    )


def _spend(epsilon_after: float) -> dict[str, CanonicalValue]:
    event = DpSgdEvent(sampling_rate=0.01, noise_multiplier=1.1, steps=300, unit=PrivacyUnit.RECORD)
    return bodies.spend_body(
        owner_id=OWNER_ID, round_id=1, event=event, delta=1e-5, epsilon_after=epsilon_after
    )


def _released(tag: bytes) -> dict[str, CanonicalValue]:
    return bodies.aggregate_released_body(
        round_id=1,
        aggregate_hash=hashlib.sha256(b"aggregate " + tag).digest(),
        model_hash=hashlib.sha256(b"model " + tag).digest(),
    )


def _build(
    ledger_id_label: str, writer: IdentityKey, rotated: IdentityKey, owner: IdentityKey
) -> tuple[list[Entry], Countersignature]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger.create(
            Path(tmp) / "ledger.db",
            writer,
            federation=_federation(),
            rng=DeterministicRandom(seed(ledger_id_label)),
        )
        with ledger:
            spend = ledger.append(EntryKind.SPEND, _spend(0.8125))
            receipt = ledger.countersign(spend.seq, owner)
            ledger.rotate_key(rotated)
            ledger.append(EntryKind.AGGREGATE_RELEASED, _released(b"round 1"))
            ledger.seal(reason="federation finished")
            ledger.export_jsonl(Path(tmp) / "ledger.jsonl")
            lines = (Path(tmp) / "ledger.jsonl").read_bytes().split(b"\n")[:-1]
    return [Entry.from_json_line(line) for line in lines], receipt


def _lines(entries: list[Entry]) -> list[str]:
    return [e.to_json_line()[:-1].decode("utf-8") for e in entries]


def _receipt_json(r: Countersignature) -> dict[str, str]:
    return {
        "ledger_id": r.ledger_id.hex(),
        "entry_seq": str(r.entry_seq),
        "entry_hash": r.entry_hash.hex(),
        "owner_id": str(r.owner_id),
        "owner_key": r.owner_key.hex(),
        "signature": r.signature.hex(),
    }


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _replace(entry: Entry, **changes: Any) -> Entry:
    return dataclasses.replace(entry, **changes)


def _resign(
    ledger_id: bytes, entries: list[Entry], start: int, keys: dict[bytes, IdentityKey]
) -> list[Entry]:
    """Re-sign entries from ``start`` on, re-linking hashes (a writer rewriting history)."""
    out = list(entries[:start])
    for entry in entries[start:]:
        prev = out[-1].entry_hash if out else bytes(32)
        out.append(
            sign_entry(
                ledger_id=ledger_id,
                seq=len(out),
                prev_hash=prev,
                kind=entry.kind,
                body=entry.body,
                key=keys[entry.signer_key],
            )
        )
    return out


def ledger_vectors() -> dict[str, Any]:
    writer, writer_private = test_key("writer")
    rotated, rotated_private = test_key("writer-rotated")
    owner, owner_private = test_key("owner-7")
    impostor, impostor_private = test_key("impostor")
    keys = {k.public_key: k for k in (writer, rotated, owner, impostor)}

    chain, receipt = _build("ledger-id", writer, rotated, owner)
    other, _ = _build("other-ledger-id", writer, rotated, owner)
    ledger_id = receipt.ledger_id
    _check(
        [e.kind for e in chain]
        == [
            EntryKind.FEDERATION_CREATED,
            EntryKind.SPEND,
            EntryKind.COUNTERSIGNATURE,
            EntryKind.KEY_ROTATION,
            EntryKind.AGGREGATE_RELEASED,
            EntryKind.SEAL,
        ],
        "chain kinds",
    )
    owner_keys = {OWNER_ID: owner.public_key}
    end = (chain[-1].seq, chain[-1].entry_hash)

    def end_of(entries: list[Entry]) -> tuple[int, bytes]:
        return entries[-1].seq, entries[-1].entry_hash

    def case(
        name: str,
        description: str,
        entries: list[Entry],
        *,
        pinned: IdentityKey = writer,
        with_owner_keys: bool = True,
        later_head: tuple[int, bytes] | None = None,
        receipts: tuple[Countersignature, ...] = (),
        require_seal: bool = False,
        first_bad: int | None = None,
        failure: Failure | None = None,
    ) -> dict[str, Any]:
        report = verify_records(
            entries,
            pinned.public_key,
            later_head=later_head,
            owner_keys=owner_keys if with_owner_keys else None,
            receipts=receipts,
            require_seal=require_seal,
        )
        _check(report.ok == (failure is None), f"{name}: ok={report.ok} ({report.reason})")
        _check(report.first_bad == first_bad, f"{name}: first_bad {report.first_bad}")
        _check(report.failure is failure, f"{name}: failure {report.failure}")
        doc: dict[str, Any] = {
            "name": name,
            "description": description,
            "lines": _lines(entries),
            "pinned_key": pinned.public_key.hex(),
            "owner_keys": {str(OWNER_ID): owner.public_key.hex()} if with_owner_keys else None,
            "later_head": None
            if later_head is None
            else {"seq": str(later_head[0]), "entry_hash": later_head[1].hex()},
            "receipts": [_receipt_json(r) for r in receipts],
            "require_seal": require_seal,
        }
        if failure is None:
            doc["sealed"] = report.sealed
            doc["head"] = {"seq": str(end_of(entries)[0]), "entry_hash": end_of(entries)[1].hex()}
        else:
            doc["first_bad"] = str(first_bad)
            doc["failure"] = failure.value
        return doc

    # A second countersignature entry forged by the writer: the owner's key, an impostor's
    # signature. And one consistent in itself but by the impostor's key.
    forged_sig = Countersignature(
        ledger_id=ledger_id,
        entry_seq=1,
        entry_hash=chain[1].entry_hash,
        owner_id=OWNER_ID,
        owner_key=owner.public_key,
        signature=impostor.sign(b"not the countersignature message"),
    )
    by_impostor = Countersignature.sign(
        ledger_id=ledger_id,
        entry_seq=1,
        entry_hash=chain[1].entry_hash,
        owner_id=OWNER_ID,
        owner_key=impostor,
    )

    def with_countersignature(cs: Countersignature) -> list[Entry]:
        return _resign(
            ledger_id,
            [*chain[:2], _replace(chain[2], body=encode(cs.body()))],
            2,
            keys,
        )

    after_seal = sign_entry(
        ledger_id=ledger_id,
        seq=6,
        prev_hash=chain[5].entry_hash,
        kind=EntryKind.AGGREGATE_RELEASED,
        body=encode(_released(b"after the seal")),
        key=rotated,
    )
    old_key_after_rotation = _resign(
        ledger_id, [*chain[:4], _replace(chain[4], signer_key=writer.public_key)], 4, keys
    )
    # The writer rewrites the spend (a lower epsilon) and re-signs everything after it,
    # dropping the owner's countersignature it cannot forge.
    rewritten = _resign(
        ledger_id,
        [chain[0], _replace(chain[1], body=encode(_spend(0.25))), *chain[3:]],
        1,
        keys,
    )
    flipped_body = bytearray(chain[4].body)
    digit = chain[4].body.index(b'"aggregate_hash":"') + len(b'"aggregate_hash":"')
    flipped_body[digit] = ord("0") if flipped_body[digit] != ord("0") else ord("1")

    valid = [
        case("chain", "the full sealed chain, owner keys pinned", chain),
        case(
            "chain-all-evidence",
            "with the later head, the owner's receipt and a required seal",
            chain,
            later_head=end,
            receipts=(receipt,),
            require_seal=True,
        ),
        case(
            "chain-unpinned-owners",
            "without owner keys, countersignatures are checked against the keys they name",
            chain,
            with_owner_keys=False,
        ),
        case(
            "unsealed-prefix",
            "a prefix without the seal verifies when nothing says it should be longer "
            "(the limitation of §8.3)",
            chain[:5],
        ),
        case(
            "impostor-countersignature-unpinned",
            "a self-consistent countersignature by another key passes without owner keys",
            with_countersignature(by_impostor),
            with_owner_keys=False,
        ),
    ]
    invalid = [
        case(
            "body-byte",
            "one hex digit of entry 4's aggregate hash changed",
            [*chain[:4], _replace(chain[4], body=bytes(flipped_body)), chain[5]],
            first_bad=4,
            failure=Failure.SIGNATURE,
        ),
        case(
            "signature-byte",
            "one bit of entry 1's signature flipped",
            [chain[0], _replace(chain[1], signature=_flip(chain[1].signature, 10)), *chain[2:]],
            first_bad=1,
            failure=Failure.SIGNATURE,
        ),
        case(
            "prev-hash-byte",
            "one bit of entry 2's prev_hash flipped",
            [*chain[:2], _replace(chain[2], prev_hash=_flip(chain[2].prev_hash, 0)), *chain[3:]],
            first_bad=2,
            failure=Failure.HASH_LINK,
        ),
        case(
            "entry-hash-byte",
            "one bit of the sealed entry's stored hash flipped",
            [*chain[:5], _replace(chain[5], entry_hash=_flip(chain[5].entry_hash, 31))],
            first_bad=5,
            failure=Failure.ENTRY_HASH,
        ),
        case(
            "deleted",
            "entry 2 deleted",
            [*chain[:2], *chain[3:]],
            first_bad=2,
            failure=Failure.SEQUENCE,
        ),
        case(
            "duplicated",
            "entry 1 stored twice",
            [*chain[:2], chain[1], *chain[2:]],
            first_bad=2,
            failure=Failure.SEQUENCE,
        ),
        case(
            "reordered",
            "entries 1 and 2 swapped",
            [chain[0], chain[2], chain[1], *chain[3:]],
            first_bad=1,
            failure=Failure.SEQUENCE,
        ),
        case(
            "spliced",
            "entry 1 taken from another ledger signed by the same key",
            [chain[0], other[1], *chain[2:]],
            first_bad=1,
            failure=Failure.HASH_LINK,
        ),
        case(
            "spliced-relinked",
            "entry 1 from another ledger with the prev_hash relinked: its signature "
            "covers the other ledger's id",
            [chain[0], _replace(other[1], prev_hash=chain[0].entry_hash), *chain[2:]],
            first_bad=1,
            failure=Failure.SIGNATURE,
        ),
        case(
            "truncated-seal-kept",
            "entries 3 and 4 cut, the seal kept",
            [*chain[:3], chain[5]],
            first_bad=3,
            failure=Failure.SEQUENCE,
        ),
        case(
            "truncated-seal-required",
            "the seal cut, and the auditor requires one",
            chain[:5],
            require_seal=True,
            first_bad=5,
            failure=Failure.TRUNCATED,
        ),
        case(
            "truncated-later-head",
            "cut after entry 3, a client holds the head (4, hash)",
            chain[:4],
            later_head=(4, chain[4].entry_hash),
            first_bad=4,
            failure=Failure.TRUNCATED,
        ),
        case(
            "truncated-receipt",
            "cut after the genesis; the owner holds a receipt for entry 1",
            chain[:1],
            receipts=(receipt,),
            first_bad=1,
            failure=Failure.TRUNCATED,
        ),
        case(
            "rewritten-receipt",
            "the writer rewrote the spend and re-signed the rest; the owner's receipt differs",
            rewritten,
            receipts=(receipt,),
            first_bad=1,
            failure=Failure.HEAD_MISMATCH,
        ),
        case(
            "rewritten-later-head",
            "the same rewrite, caught by a later head",
            rewritten,
            later_head=(1, chain[1].entry_hash),
            first_bad=1,
            failure=Failure.HEAD_MISMATCH,
        ),
        case(
            "wrong-pinned-key",
            "verified under another key than the writer's",
            chain,
            pinned=impostor,
            first_bad=0,
            failure=Failure.SIGNER,
        ),
        case(
            "old-key-after-rotation",
            "entry 4 signed by the key rotated away at entry 3",
            old_key_after_rotation,
            first_bad=4,
            failure=Failure.SIGNER,
        ),
        case(
            "entry-after-seal",
            "a validly signed entry appended after the seal",
            [*chain, after_seal],
            first_bad=6,
            failure=Failure.STRUCTURE,
        ),
        case(
            "forged-countersignature",
            "the writer recorded a countersignature the owner never made",
            with_countersignature(forged_sig),
            first_bad=2,
            failure=Failure.COUNTERSIGNATURE,
        ),
        case(
            "impostor-countersignature-pinned",
            "a self-consistent countersignature by a key that is not the owner's pinned key",
            with_countersignature(by_impostor),
            first_bad=2,
            failure=Failure.COUNTERSIGNATURE,
        ),
    ]
    messages = [
        {
            "seq": str(e.seq),
            "signing_message_hex": e.message(ledger_id).hex(),
            "entry_hash": e.entry_hash.hex(),
        }
        for e in chain
    ]
    return {
        "source": "securefed: generated by the committed generator from fixed seeds",
        "generator": GENERATOR,
        "protocol_version": PROTOCOL_VERSION,
        "description": (
            "protocols/ledger.md §9. A case's JSON Lines file is its lines joined by "
            "newlines, with a final newline. valid: verifies, with the head given. "
            "invalid: fails with first_bad and failure. Keys are test keys from "
            "public seeds; never use them for anything else."
        ),
        "keys": {
            "writer": {"public": writer.public_key.hex(), "private": writer_private.hex()},
            "writer_rotated": {
                "public": rotated.public_key.hex(),
                "private": rotated_private.hex(),
            },
            "owner_7": {"public": owner.public_key.hex(), "private": owner_private.hex()},
            "impostor": {"public": impostor.public_key.hex(), "private": impostor_private.hex()},
        },
        "ledger_id": ledger_id.hex(),
        "chain": {"lines": _lines(chain), "entries": messages, "receipt": _receipt_json(receipt)},
        "valid": valid,
        "invalid": invalid,
    }


FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "canonical.json": canonical_vectors,
    "ledger_vectors.json": ledger_vectors,
}


def main(out_dir: Path | None = None) -> list[Path]:
    """Generate every vector file into ``out_dir`` (default: ``protocols/ledger/vectors``)."""
    target = DEFAULT_OUT if out_dir is None else Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    return [_write(target, name, make()) for name, make in FILES.items()]


if __name__ == "__main__":
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(written)
