"""Deterministic generator of the secure-aggregation test vectors.

Usage::

    python protocols/secagg/generate_vectors.py [OUT_DIR]

Writes ``x25519_rfc7748.json``, ``hkdf_rfc5869.json``, ``prg.json``,
``share_encryption.json``, ``shamir.json`` and ``round_5clients.json`` into
``OUT_DIR`` (default: ``protocols/secagg/vectors`` next to this script).

Every random value comes from :class:`securefed.randomness.DeterministicRandom`
under a fixed 32-byte seed (the SHA-256 of a public label, recorded in the
vectors); nothing reads the OS CSPRNG or a clock, so a second run writes the
same bytes. The RFC vectors are copied verbatim from the RFCs and checked here
against ``cryptography`` and an independent HMAC construction before they are
written. Every derived value is checked against a second computation where one
exists (raw ChaCha20, the simulation driver, an independent sum).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securefed.errors import InsufficientSharesError, IntegrityError, ProtocolError
from securefed.randomness import DeterministicRandom
from securefed.secagg import derive
from securefed.secagg.client import SecAggClient
from securefed.secagg.client_input import QuantizedInput, quantize
from securefed.secagg.context import PROTOCOL_VERSION, RoundContext, SecAggParams, model_digest
from securefed.secagg.graph import GraphKind, ThreatModel
from securefed.secagg.messages import (
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShare,
    UnmaskShares,
)
from securefed.secagg.primitives import (
    PRG_NONCE_MASK,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    prg_expand,
    x25519_generate,
    x25519_public,
    x25519_shared,
)
from securefed.secagg.quantize import QuantizationSpec
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry
from securefed.secagg.server import SecAggServer
from securefed.secagg.shamir import (
    FIELD_PRIME,
    SHARE_BYTES,
    correct,
    decode_share_value,
    encode_share_value,
    reconstruct,
    split,
)
from securefed.simulation import run_secagg_round

GENERATOR = "protocols/secagg/generate_vectors.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "vectors"
SEED_LABEL = b"securefed/secagg/vectors/v1/"


class VectorCheckFailed(RuntimeError):
    """A vector did not hold while generating it (never write such a file)."""


def _check(condition: bool, what: str) -> None:
    # Not `assert`: the checks must also run under `python -O`.
    if not condition:
        raise VectorCheckFailed(what)


def _expect_error(error: type[BaseException], action: Callable[[], object], what: str) -> None:
    try:
        action()
    except error:
        return
    raise VectorCheckFailed(f"{what}: expected {error.__name__}")


def seed(label: str) -> bytes:
    """A fixed 32-byte seed: SHA-256 of a public label (nothing secret, nothing random)."""
    return hashlib.sha256(SEED_LABEL + label.encode("ascii")).digest()


def _doc(source: str, description: str, valid: list[Any], invalid: list[Any]) -> dict[str, Any]:
    return {
        "source": source,
        "generator": GENERATOR,
        "protocol_version": PROTOCOL_VERSION,
        "description": description,
        "valid": valid,
        "invalid": invalid,
    }


def _write(out_dir: Path, name: str, doc: dict[str, Any]) -> Path:
    path = out_dir / name
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    path.write_bytes(text.encode("utf-8"))
    return path


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def _ring(values: np.ndarray) -> list[str]:
    return [str(int(v)) for v in values]


# -- RFC 7748 -------------------------------------------------------------------------------

RFC7748_SCALAR_MULT = [
    {
        "name": "rfc7748-5.2-1",
        "section": "5.2",
        "scalar": "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
        "u": "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        "output": "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
    },
    {
        "name": "rfc7748-5.2-2",
        "section": "5.2",
        "scalar": "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
        "u": "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
        "output": "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
    },
]
RFC7748_ITERATED = [
    {
        "name": "rfc7748-5.2-iterated-1",
        "section": "5.2",
        "start": "0900000000000000000000000000000000000000000000000000000000000000",
        "iterations": 1,
        "output": "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
    },
    {
        "name": "rfc7748-5.2-iterated-1000",
        "section": "5.2",
        "start": "0900000000000000000000000000000000000000000000000000000000000000",
        "iterations": 1000,
        "output": "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
    },
]
RFC7748_DH = {
    "name": "rfc7748-6.1",
    "section": "6.1",
    "alice_private": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    "alice_public": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    "bob_private": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    "bob_public": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
    "shared": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
}
_P25519 = (1 << 255) - 19
LOW_ORDER_POINTS = [
    ("0", bytes(32)),
    ("1", (1).to_bytes(32, "little")),
    (
        "order-8-a",
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ),
    (
        "order-8-b",
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    ),
    ("p-1", (_P25519 - 1).to_bytes(32, "little")),
    ("p", _P25519.to_bytes(32, "little")),
    ("p+1", (_P25519 + 1).to_bytes(32, "little")),
]


def _raw_x25519(scalar: bytes, u: bytes) -> bytes:
    # from_private_bytes clamps the scalar and the exchange masks u's top bit (RFC 7748 §5).
    return X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(u)
    )


def x25519_vectors() -> dict[str, Any]:
    """RFC 7748 §5.2 and §6.1, verbatim; low-order peer keys must be refused."""
    for case in RFC7748_SCALAR_MULT:
        out = _raw_x25519(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
        _check(out.hex() == case["output"], f"{case['name']} (cryptography)")
        lib = x25519_shared(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
        _check(lib.hex() == case["output"], f"{case['name']} (securefed)")
    for case in RFC7748_ITERATED:
        k = u = bytes.fromhex(str(case["start"]))
        for _ in range(int(case["iterations"])):
            k, u = x25519_shared(k, u), k
        _check(k.hex() == case["output"], str(case["name"]))
    dh = RFC7748_DH
    a, b = bytes.fromhex(dh["alice_private"]), bytes.fromhex(dh["bob_private"])
    _check(x25519_public(a).hex() == dh["alice_public"], "6.1 alice public")
    _check(x25519_public(b).hex() == dh["bob_public"], "6.1 bob public")
    _check(_raw_x25519(a, bytes.fromhex(dh["bob_public"])).hex() == dh["shared"], "6.1 a")
    _check(x25519_shared(a, bytes.fromhex(dh["bob_public"])).hex() == dh["shared"], "6.1 a lib")
    _check(x25519_shared(b, bytes.fromhex(dh["alice_public"])).hex() == dh["shared"], "6.1 b")

    invalid = []
    for name, point in [*LOW_ORDER_POINTS, ("short-31-bytes", bytes(31))]:
        _expect_error(IntegrityError, lambda p=point: x25519_shared(a, p), name)
        invalid.append(
            {
                "name": f"peer-key-{name}",
                "private": dh["alice_private"],
                "peer_public": point.hex(),
                "error": "IntegrityError",
            }
        )
    valid = [
        *[{**case, "kind": "scalar_mult"} for case in RFC7748_SCALAR_MULT],
        *[{**case, "kind": "iterated"} for case in RFC7748_ITERATED],
        {**dh, "kind": "diffie_hellman"},
    ]
    return _doc(
        "RFC 7748 (https://www.rfc-editor.org/rfc/rfc7748) §5.2 and §6.1, copied verbatim",
        "X25519. kind=scalar_mult: output = X25519(scalar, u) (scalar clamped, top bit of u "
        "masked, RFC 7748 §5). kind=iterated: k = u = start; repeat k, u = X25519(k, u), k. "
        "kind=diffie_hellman: public keys are X25519(private, 9) and both sides derive "
        "`shared`. invalid: securefed.secagg.primitives.x25519_shared(private, peer_public) "
        "must raise `error` for low-order (all-zero output) or malformed peer keys.",
        valid,
        invalid,
    )


# -- RFC 5869 -------------------------------------------------------------------------------

RFC5869_CASES = [
    {
        "name": "rfc5869-A.1",
        "ikm": "0b" * 22,
        "salt": "000102030405060708090a0b0c",
        "info": "f0f1f2f3f4f5f6f7f8f9",
        "length": 42,
        "prk": "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "okm": "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865",
    },
    {
        "name": "rfc5869-A.2",
        "ikm": bytes(range(0x00, 0x50)).hex(),
        "salt": bytes(range(0x60, 0xB0)).hex(),
        "info": bytes(range(0xB0, 0x100)).hex(),
        "length": 82,
        "prk": "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "okm": "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    },
    {
        "name": "rfc5869-A.3",
        "ikm": "0b" * 22,
        "salt": "",
        "info": "",
        "length": 42,
        "prk": "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "okm": "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8",
    },
]


def _hkdf_reference(ikm: bytes, salt: bytes, info: bytes, length: int) -> tuple[bytes, bytes]:
    """RFC 5869 §2.2-2.3 with the standard library's HMAC (independent of `cryptography`)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return prk, okm[:length]


def hkdf_vectors() -> dict[str, Any]:
    """RFC 5869 Appendix A.1-A.3 (SHA-256), verbatim."""
    for case in RFC5869_CASES:
        ikm, salt, info = (bytes.fromhex(str(case[k])) for k in ("ikm", "salt", "info"))
        length = int(case["length"])
        okm = hkdf_sha256(ikm, salt=salt, info=info, length=length)
        _check(okm.hex() == case["okm"], f"{case['name']} okm (securefed)")
        prk, ref = _hkdf_reference(ikm, salt, info, length)
        _check(prk.hex() == case["prk"], f"{case['name']} prk (hmac)")
        _check(ref.hex() == case["okm"], f"{case['name']} okm (hmac)")
    # A.3 has no salt. RFC 5869 §2.2: absent salt = HashLen zero bytes. HMAC pads
    # its key with zeros, so salt b"", salt None (cryptography) and 32 zeros agree.
    a3 = RFC5869_CASES[2]
    ikm = bytes.fromhex(str(a3["ikm"]))
    outs = {
        HKDF(algorithm=hashes.SHA256(), length=42, salt=s, info=b"").derive(ikm).hex()
        for s in (None, b"", bytes(32))
    }
    outs.add(hkdf_sha256(ikm, salt=b"", info=b"", length=42).hex())
    outs.add(hkdf_sha256(ikm, salt=bytes(32), info=b"", length=42).hex())
    _check(outs == {a3["okm"]}, "A.3 empty salt = absent salt = 32 zero bytes")
    too_long = 255 * 32 + 1
    _expect_error(
        ValueError,
        lambda: hkdf_sha256(b"\x0b" * 22, salt=b"", info=b"", length=too_long),
        "hkdf length",
    )
    return _doc(
        "RFC 5869 (https://www.rfc-editor.org/rfc/rfc5869) Appendix A.1-A.3, copied verbatim",
        "HKDF-SHA256. okm = securefed.secagg.primitives.hkdf_sha256(ikm, salt=salt, "
        "info=info, length=length); prk = HMAC-SHA256(salt, ikm) (RFC 5869 §2.2). A.3 has no "
        "salt and no info: salt is given as empty bytes, which HMAC treats exactly like the "
        "RFC's absent salt (32 zero bytes) and like cryptography's salt=None. invalid: "
        "caller misuse that must raise `error`.",
        [dict(case) for case in RFC5869_CASES],
        [
            {
                "name": "length-above-255-blocks",
                "ikm": "0b" * 22,
                "salt": "",
                "info": "",
                "length": too_long,
                "error": "ValueError",
            }
        ],
    )


# -- mask PRG -------------------------------------------------------------------------------

PRG_SHAPES = [(1, 64), (8, 16), (17, 16), (21, 16), (32, 16), (33, 16), (63, 8), (64, 16)]


def _prg_reference(seed_bytes: bytes, count: int, bits: int) -> list[int]:
    """Raw ChaCha20 keystream, words of 4 or 8 bytes little-endian, low `bits` kept."""
    width = 4 if bits <= 32 else 8
    stream = (
        Cipher(algorithms.ChaCha20(seed_bytes, PRG_NONCE_MASK), mode=None)
        .encryptor()
        .update(bytes(count * width))
    )
    words = [int.from_bytes(stream[i : i + width], "little") for i in range(0, len(stream), width)]
    return [w & ((1 << bits) - 1) for w in words]


def prg_vectors() -> dict[str, Any]:
    """prg_expand outputs for several (seed, count, bits)."""
    rng = DeterministicRandom(seed("prg"))
    valid = []
    cases = [(bits, count, rng.random_bytes(32)) for bits, count in PRG_SHAPES]
    cases.append((32, 0, rng.random_bytes(32)))
    cases.append((64, 4, bytes(32)))
    for bits, count, s in cases:
        values = prg_expand(s, count, bits)
        _check([int(v) for v in values] == _prg_reference(s, count, bits), f"prg {bits}/{count}")
        valid.append(
            {
                "name": f"bits-{bits}-count-{count}" + ("-zero-seed" if s == bytes(32) else ""),
                "seed": s.hex(),
                "count": count,
                "bits": bits,
                "dtype": str(values.dtype),
                "values": _ring(values),
            }
        )
    good = rng.random_bytes(32)
    misuse: list[dict[str, Any]] = [
        {"name": "seed-31-bytes", "seed": good[:31].hex(), "count": 4, "bits": 32},
        {"name": "seed-33-bytes", "seed": (good + b"\x00").hex(), "count": 4, "bits": 32},
        {"name": "bits-0", "seed": good.hex(), "count": 4, "bits": 0},
        {"name": "bits-65", "seed": good.hex(), "count": 4, "bits": 65},
        {"name": "count-negative", "seed": good.hex(), "count": -1, "bits": 32},
    ]
    for case in misuse:
        case["error"] = "ValueError"
        _expect_error(
            ValueError,
            lambda c=case: prg_expand(bytes.fromhex(c["seed"]), c["count"], c["bits"]),
            case["name"],
        )
    return _doc(
        "securefed reference implementation (protocols/secagg.md §3.4)",
        "Mask PRG: values = securefed.secagg.primitives.prg_expand(seed, count, bits). "
        "Layout: the ChaCha20 keystream (RFC 8439 block function, as `cryptography` "
        "exposes it) under key = seed and the 16-byte nonce `prg_nonce_mask` = 4-byte "
        "little-endian initial block counter 0 || ASCII 'sfsecaggmask'; read as little-endian "
        "uint32 words when bits <= 32, uint64 words when bits > 32; each word keeps its low "
        "`bits` bits (exactly uniform since 2^bits divides the word range). `values` are "
        "decimal strings; `dtype` is the NumPy dtype returned. invalid: caller misuse "
        "that must raise `error`.",
        valid,
        misuse,
    ) | {"prg_nonce_mask": PRG_NONCE_MASK.hex()}


# -- contexts -------------------------------------------------------------------------------


def context_fields(
    *, federation_id: str, round_id: int, model_hash: bytes, roster_hash: bytes
) -> dict[str, Any]:
    """The JSON description of a round context (every field the digest covers)."""
    return {
        "federation_id": federation_id,
        "round_id": round_id,
        "model_hash": model_hash.hex(),
        "roster_hash": roster_hash.hex(),
        "params": {
            "quantization_bits": 16,
            "clip": 1.0,
            "max_weight": 4,
            "vector_length": 8,
            "max_clients": 8,
            "min_clients": 3,
            "corrupt_fraction": 0.2,
            "dropout_fraction": 0.1,
            "sigma": 40,
            "eta": 20,
            "graph": "FULL",
            "full_graph_up_to": 100,
        },
    }


def build_context(fields: dict[str, Any]) -> RoundContext:
    """A :class:`RoundContext` from :func:`context_fields` output."""
    p = fields["params"]
    params = SecAggParams(
        quantization=QuantizationSpec(
            bits=p["quantization_bits"], clip=p["clip"], max_weight=p["max_weight"]
        ),
        vector_length=p["vector_length"],
        max_clients=p["max_clients"],
        min_clients=p["min_clients"],
        threat=ThreatModel(
            corrupt_fraction=p["corrupt_fraction"],
            dropout_fraction=p["dropout_fraction"],
            sigma=p["sigma"],
            eta=p["eta"],
        ),
        graph=None if p["graph"] is None else GraphKind[p["graph"]],
        full_graph_up_to=p["full_graph_up_to"],
    )
    return RoundContext(
        federation_id=fields["federation_id"],
        round_id=fields["round_id"],
        model_hash=bytes.fromhex(fields["model_hash"]),
        roster_hash=bytes.fromhex(fields["roster_hash"]),
        params=params,
    )


def _context_record(fields: dict[str, Any]) -> dict[str, Any]:
    context = build_context(fields)
    return {
        "context": fields,
        "context_bytes": context.to_bytes().hex(),
        "context_digest": context.digest().hex(),
    }


# -- share encryption -----------------------------------------------------------------------


def share_encryption_vectors() -> dict[str, Any]:
    """The share channel: HKDF key/nonce, associated data and one AES-256-GCM ciphertext."""
    rng = DeterministicRandom(seed("share-encryption"))
    fields = context_fields(
        federation_id="securefed-vectors",
        round_id=42,
        model_hash=rng.random_bytes(32),
        roster_hash=rng.random_bytes(32),
    )
    context = build_context(fields)
    sender, receiver, x = 2, 5, 4
    s_priv, s_pub = x25519_generate(rng)
    r_priv, r_pub = x25519_generate(rng)
    key, nonce = derive.share_channel(s_priv, r_pub, context, sender=sender, receiver=receiver)
    key_r, nonce_r = derive.share_channel(r_priv, s_pub, context, sender=sender, receiver=receiver)
    _check((key, nonce) == (key_r, nonce_r), "both ends derive the same channel")
    back_key, back_nonce = derive.share_channel(
        s_priv, r_pub, context, sender=receiver, receiver=sender
    )
    _check(back_key != key and back_nonce != nonce, "directions have distinct keys")
    ad = derive.share_associated_data(context, sender=sender, receiver=receiver)
    swapped_ad = derive.share_associated_data(context, sender=receiver, receiver=sender)
    mask_share = int.from_bytes(rng.random_bytes(SHARE_BYTES), "big") % FIELD_PRIME
    seed_share = int.from_bytes(rng.random_bytes(SHARE_BYTES), "big") % FIELD_PRIME
    plaintext = (
        sender.to_bytes(4, "big")
        + receiver.to_bytes(4, "big")
        + x.to_bytes(4, "big")
        + encode_share_value(mask_share)
        + encode_share_value(seed_share)
    )
    ciphertext = aead_encrypt(key, nonce, plaintext, ad)
    _check(aead_decrypt(key, nonce, ciphertext, ad) == plaintext, "round trip")
    shared = x25519_shared(s_priv, r_pub)
    valid = [
        {
            "name": "share-2-to-5",
            **_context_record(fields),
            "sender": sender,
            "receiver": receiver,
            "sender_private": s_priv.hex(),
            "sender_public": s_pub.hex(),
            "receiver_private": r_priv.hex(),
            "receiver_public": r_pub.hex(),
            "x25519_shared": shared.hex(),
            "key": key.hex(),
            "nonce": nonce.hex(),
            "reverse_key": back_key.hex(),
            "reverse_nonce": back_nonce.hex(),
            "associated_data": ad.hex(),
            "plaintext": plaintext.hex(),
            "ciphertext": ciphertext.hex(),
        }
    ]
    other_fields = dict(fields, round_id=43)
    other_ad = derive.share_associated_data(
        build_context(other_fields), sender=sender, receiver=receiver
    )
    bad = [
        ("flipped-ciphertext-byte", key, nonce, _flip(ciphertext, 0), ad),
        ("flipped-tag-byte", key, nonce, _flip(ciphertext, len(ciphertext) - 1, 0x80), ad),
        ("truncated-ciphertext", key, nonce, ciphertext[:-1], ad),
        ("wrong-ad-swapped-sender-receiver", key, nonce, ciphertext, swapped_ad),
        ("wrong-ad-other-round", key, nonce, ciphertext, other_ad),
        ("wrong-direction-key", back_key, back_nonce, ciphertext, ad),
        ("wrong-nonce", key, back_nonce, ciphertext, ad),
    ]
    invalid = []
    for name, k, n, c, a in bad:
        _expect_error(IntegrityError, lambda k=k, n=n, c=c, a=a: aead_decrypt(k, n, c, a), name)
        invalid.append(
            {
                "name": name,
                "key": k.hex(),
                "nonce": n.hex(),
                "ciphertext": c.hex(),
                "associated_data": a.hex(),
                "error": "IntegrityError",
            }
        )
    return _doc(
        "securefed reference implementation (protocols/secagg.md §3.3)",
        "Share encryption between two clients. (key, nonce) = securefed.secagg.derive."
        "share_channel(sender_private, receiver_public, context, sender=, receiver=) (equal "
        "from the receiver's side); reverse_* is the channel for the opposite direction; "
        "associated_data = derive.share_associated_data(context, sender=, receiver=); "
        "plaintext = u32 owner || u32 holder || u32 x || 33-byte mask-key share || 33-byte "
        "self-seed share (big-endian); ciphertext = AES-256-GCM(key, nonce, plaintext, "
        "associated_data) with the 16-byte tag appended. invalid: primitives.aead_decrypt"
        "(key, nonce, ciphertext, associated_data) must raise `error`; cases use a flipped "
        "byte, the swapped-direction associated data or key, another round's data.",
        valid,
        invalid,
    )


# -- Shamir ---------------------------------------------------------------------------------


def _offset(rng: DeterministicRandom) -> int:
    """A non-zero field element: what a wrong share is off by."""
    return 1 + int.from_bytes(rng.random_bytes(32), "big") % (FIELD_PRIME - 1)


def shamir_vectors() -> dict[str, Any]:
    """Shamir split with a fixed rng, reconstruction from t-subsets, and must-fail cases."""
    rng = DeterministicRandom(seed("shamir"))
    errors = DeterministicRandom(seed("shamir-correct"))  # apart, so older cases stay put
    commitment_digest = rng.random_bytes(32)
    valid: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    layouts = [
        (
            "n5-t3",
            [1, 2, 3, 4, 5],
            3,
            [[1, 2, 3], [1, 3, 5], [2, 4, 5], [3, 4, 5], [1, 2, 3, 4, 5]],
        ),
        ("n4-t4", [1, 2, 3, 4], 4, [[1, 2, 3, 4]]),
        ("n5-t4-sparse-x", [3, 7, 11, 19, 42], 4, [[3, 7, 11, 19], [7, 11, 19, 42]]),
        ("n3-t1", [1, 2, 3], 1, [[1], [3]]),
        (
            "n9-t4-sparse-x",
            [2, 5, 9, 14, 20, 27, 35, 44, 54],
            4,
            [[2, 5, 9, 14], [20, 27, 35, 44, 54]],
        ),
    ]
    for name, xs, t, subsets in layouts:
        secret = rng.random_bytes(32)
        split_seed = rng.random_bytes(32)
        shares = split(secret, xs=xs, threshold=t, rng=DeterministicRandom(split_seed))
        by_x = dict(zip(xs, shares, strict=True))
        for subset in subsets:
            got = reconstruct([(x, by_x[x]) for x in subset], threshold=t)
            _check(got == secret, f"{name} subset {subset}")
        case: dict[str, Any] = {
            "name": name,
            "secret": secret.hex(),
            "xs": xs,
            "threshold": t,
            "rng_seed": split_seed.hex(),
            "shares": [encode_share_value(y).hex() for y in shares],
            "reconstruct_from": subsets,
        }
        radius = (len(xs) - t) // 2
        if radius:
            # Every other share from the second on made wrong, `radius` of them, each
            # by its own offset: still decoded.
            wrong_xs = xs[1::2][:radius]
            points = [
                (x, (by_x[x] + _offset(errors)) % FIELD_PRIME if x in wrong_xs else by_x[x])
                for x in xs
            ]
            _check(correct(points, threshold=t) == (secret, tuple(wrong_xs)), f"{name} correct")
            case["correct"] = {
                "points": [[x, encode_share_value(y).hex()] for x, y in points],
                "wrong_xs": wrong_xs,
            }
            # One more wrong share, by an independent offset (equal or proportional
            # offsets can land on another codeword, which only the commitment catches).
            extra_x = next(x for x in xs if x not in wrong_xs)
            extra = _offset(errors)
            beyond = [(x, (y + extra) % FIELD_PRIME) if x == extra_x else (x, y) for x, y in points]
            _expect_error(ProtocolError, lambda b=beyond, t=t: correct(b, threshold=t), name)
            invalid.append(
                {
                    "name": f"{name}-one-wrong-share-beyond-the-radius",
                    "kind": "correct",
                    "threshold": t,
                    "points": [[x, encode_share_value(y).hex()] for x, y in beyond],
                    "error": "ProtocolError",
                }
            )
        valid.append(case)
        below = [(x, by_x[x]) for x in xs[: t - 1]]
        if t > 1:
            _expect_error(
                InsufficientSharesError, lambda b=below, t=t: reconstruct(b, threshold=t), name
            )
            invalid.append(
                {
                    "name": f"{name}-only-t-minus-1-shares",
                    "kind": "reconstruct",
                    "threshold": t,
                    "points": [[x, encode_share_value(y).hex()] for x, y in below],
                    "error": "InsufficientSharesError",
                }
            )
    for name, data in [
        ("share-value-equals-p", FIELD_PRIME.to_bytes(SHARE_BYTES, "big")),
        ("share-value-p-plus-1", (FIELD_PRIME + 1).to_bytes(SHARE_BYTES, "big")),
        ("share-value-all-ff", b"\xff" * SHARE_BYTES),
        ("share-value-32-bytes", b"\x01" * 32),
        ("share-value-34-bytes", b"\x00" * 34),
    ]:
        _expect_error(ProtocolError, lambda d=data: decode_share_value(d), name)
        invalid.append(
            {"name": name, "kind": "decode", "value": data.hex(), "error": "ProtocolError"}
        )
    # A tampered share still interpolates to *some* 32-byte value; only the
    # commitment (protocols/secagg.md §3.5) shows it is the wrong one.
    base = valid[0]
    secret = bytes.fromhex(base["secret"])
    owner = 7
    commitment = derive.seed_commitment(commitment_digest, owner, secret)
    pairs = zip(base["xs"], base["shares"], strict=True)
    points = [(x, decode_share_value(bytes.fromhex(v))) for x, v in pairs][: base["threshold"]]
    tampered = [(points[0][0], (points[0][1] + 1) % FIELD_PRIME), *points[1:]]
    wrong = reconstruct(tampered, threshold=base["threshold"])
    _check(wrong != secret, "tampered share changes the secret")
    _check(
        derive.seed_commitment(commitment_digest, owner, wrong) != commitment,
        "tampered secret fails the commitment",
    )
    invalid.append(
        {
            "name": "tampered-share-fails-commitment",
            "kind": "commitment",
            "threshold": base["threshold"],
            "points": [[x, encode_share_value(y).hex()] for x, y in tampered],
            "reconstructed": wrong.hex(),
            "commitment_context_digest": commitment_digest.hex(),
            "commitment_owner": owner,
            "commitment": commitment.hex(),
            "error": "IntegrityError",
        }
    )
    return _doc(
        "securefed reference implementation (protocols/secagg.md §3.5; Shamir, CACM 1979)",
        "Shamir sharing of 32-byte secrets over GF(p), p = 2^256 + 297. shares = "
        "securefed.secagg.shamir.split(secret, xs=xs, threshold=threshold, "
        "rng=DeterministicRandom(rng_seed)), each encoded as 33 big-endian bytes; "
        "reconstruct(points, threshold=t) returns the secret from every subset in "
        "reconstruct_from; where present, shamir.correct(correct.points, threshold=t) "
        "returns (secret, correct.wrong_xs) (Gao decoding, up to (m - t) // 2 wrong "
        "shares, here at every other x from the second, each off by its own offset). "
        "invalid: kind=reconstruct must raise `error` (t-1 points); "
        "kind=correct: shamir.correct(points, threshold) must raise `error` (one wrong "
        "share more than the radius); "
        "kind=decode: shamir.decode_share_value(value) must raise `error`; "
        "kind=commitment: the points (one share +1 mod p) reconstruct to `reconstructed`, "
        "whose derive.seed_commitment(commitment_context_digest, commitment_owner, "
        "reconstructed) differs from `commitment` (the server raises `error` here).",
        valid,
        invalid,
    )


# -- a whole round --------------------------------------------------------------------------

ROUND_IDS = (2, 3, 5, 8, 13)
ROUND_DROPPED = 3
ROUND_WEIGHTS = {2: 1, 3: 2, 5: 3, 8: 4, 13: 2}
ROUND_FEDERATION = "securefed-vectors"


def _update(k: int) -> list[float]:
    # Multiples of 1/8 in [-9/8, 9/8]: exact in binary, some outside the clip of 1.
    return [((j * 7 + k * 3) % 19 - 9) / 8 for j in range(8)]


def round_setup() -> dict[str, Any]:
    """Seeds, roster, inputs and context of the recorded round (all from fixed seeds)."""
    clients = []
    entries = []
    for k, cid in enumerate(ROUND_IDS):
        identity_seed = seed(f"round/identity/{cid}")
        identity = IdentityKey.generate(DeterministicRandom(identity_seed))
        entries.append(
            RosterEntry(client_id=cid, name=f"client-{cid}", identity_key=identity.public_key)
        )
        clients.append(
            {
                "client_id": cid,
                "identity_seed": identity_seed.hex(),
                "identity_public": identity.public_key.hex(),
                "session_seed": seed(f"round/session/{cid}").hex(),
                "quantize_seed": seed(f"round/quantize/{cid}").hex(),
                "update": _update(k),
                "weight": ROUND_WEIGHTS[cid],
            }
        )
    roster = Roster(federation_id=ROUND_FEDERATION, version=1, entries=tuple(entries))
    model = model_digest(
        {"layer.bias": np.arange(4, dtype=np.float32), "layer.weight": np.eye(2)}, b"plan-v1"
    )
    return {"clients": clients, "roster": roster, "model_hash": model}


def _round_context(setup: dict[str, Any], round_id: int) -> dict[str, Any]:
    return context_fields(
        federation_id=ROUND_FEDERATION,
        round_id=round_id,
        model_hash=setup["model_hash"],
        roster_hash=setup["roster"].digest(),
    )


def _quantized(setup: dict[str, Any], context: RoundContext) -> dict[int, QuantizedInput]:
    spec = context.params.quantization
    return {
        c["client_id"]: quantize(
            np.array(c["update"]),
            spec,
            weight=c["weight"],
            rng=DeterministicRandom(bytes.fromhex(c["quantize_seed"])),
        )
        for c in setup["clients"]
    }


def drive_round(
    setup: dict[str, Any], context: RoundContext, dropped_before_masked: int
) -> dict[str, Any]:
    """Run one round as simulation.run_secagg_round does, keeping every message's bytes."""
    roster: Roster = setup["roster"]
    inputs = _quantized(setup, context)
    clients = {
        c["client_id"]: SecAggClient(
            client_id=c["client_id"],
            identity=IdentityKey.generate(DeterministicRandom(bytes.fromhex(c["identity_seed"]))),
            roster=roster,
            context=context,
            rng=DeterministicRandom(bytes.fromhex(c["session_seed"])),
        )
        for c in setup["clients"]
    }
    server = SecAggServer(roster=roster, context=context)
    ids = sorted(clients)
    t: dict[str, Any] = {}

    t["advertisements"] = {}
    for cid in ids:
        data = clients[cid].advertise().to_bytes()
        t["advertisements"][cid] = data
        server.receive_advertisement(AdvertiseKeys.from_bytes(data))
    cohort = server.close_advertise().to_bytes()
    t["cohort"] = cohort

    t["share_keys"] = {}
    for cid in ids:
        data = clients[cid].share_keys(CohortBroadcast.from_bytes(cohort)).to_bytes()
        t["share_keys"][cid] = data
        server.receive_share_keys(ShareKeys.from_bytes(data))
    deliveries = {u: d.to_bytes() for u, d in server.close_share_keys().items()}
    t["deliveries"] = deliveries

    t["masked_inputs"] = {}
    for cid in ids:
        if cid == dropped_before_masked:
            continue
        delivery = ShareDelivery.from_bytes(deliveries[cid])
        data = clients[cid].masked_input(delivery, inputs[cid]).to_bytes()
        t["masked_inputs"][cid] = data
        server.receive_masked_input(MaskedInput.from_bytes(data))
    survivors = server.close_masked_input().to_bytes()
    t["survivors"] = survivors
    u3 = SurvivorList.from_bytes(survivors).survivors

    t["consistency_signatures"] = {}
    for cid in u3:
        data = clients[cid].consistency(SurvivorList.from_bytes(survivors)).to_bytes()
        t["consistency_signatures"][cid] = data
        server.receive_consistency(ConsistencySignature.from_bytes(data))
    bundle = server.close_consistency().to_bytes()
    t["consistency_bundle"] = bundle

    t["unmask_shares"] = {}
    for cid in u3:
        data = clients[cid].unmask(ConsistencyBundle.from_bytes(bundle)).to_bytes()
        t["unmask_shares"][cid] = data
        server.receive_unmask(UnmaskShares.from_bytes(data))
    t["result"] = server.finalize()
    t["inputs"] = inputs
    return t


def _by_client(messages: dict[int, bytes]) -> list[dict[str, Any]]:
    return [{"client_id": cid, "message": messages[cid].hex()} for cid in sorted(messages)]


_STAGE_MESSAGES = {
    "advertise": "advertisements",
    "share_keys": "share_keys",
    "masked_input": "masked_inputs",
    "consistency": "consistency_signatures",
    "unmask": "unmask_shares",
}


def replay_server(
    record: dict[str, Any],
    context: RoundContext,
    roster: Roster,
    *,
    stage: str | None = None,
    mode: str = "replace",
    sender: int | None = None,
    message: bytes | None = None,
) -> np.ndarray:
    """Feed recorded client messages into a fresh server; optionally inject one message.

    ``mode="replace"`` sends ``message`` instead of ``sender``'s recorded one in
    ``stage``; ``mode="append"`` sends it after the stage's recorded messages.
    """
    if stage is not None and message is None:
        raise ValueError("an injected stage needs a message")
    injected = message or b""
    server = SecAggServer(roster=roster, context=context)
    handlers: list[tuple[str, Callable[[bytes], None], Callable[[], object]]] = [
        (
            "advertise",
            lambda d: server.receive_advertisement(AdvertiseKeys.from_bytes(d)),
            server.close_advertise,
        ),
        (
            "share_keys",
            lambda d: server.receive_share_keys(ShareKeys.from_bytes(d)),
            server.close_share_keys,
        ),
        (
            "masked_input",
            lambda d: server.receive_masked_input(MaskedInput.from_bytes(d)),
            server.close_masked_input,
        ),
        (
            "consistency",
            lambda d: server.receive_consistency(ConsistencySignature.from_bytes(d)),
            server.close_consistency,
        ),
        (
            "unmask",
            lambda d: server.receive_unmask(UnmaskShares.from_bytes(d)),
            lambda: None,
        ),
    ]
    for name, receive, close in handlers:
        for entry in record[_STAGE_MESSAGES[name]]:
            data = bytes.fromhex(entry["message"])
            if name == stage and mode == "replace" and entry["client_id"] == sender:
                data = injected
            receive(data)
        if name == stage and mode == "append":
            receive(injected)
        close()
    return server.finalize().total


def _tamper_unmask(data: bytes) -> bytes:
    msg = UnmaskShares.from_bytes(data)
    first = msg.shares[0]
    value = (decode_share_value(first.value) + 1) % FIELD_PRIME
    shares = (
        UnmaskShare(owner=first.owner, kind=first.kind, x=first.x, value=encode_share_value(value)),
        *msg.shares[1:],
    )
    return UnmaskShares(
        context_digest=msg.context_digest, sender=msg.sender, shares=shares
    ).to_bytes()


def round_vectors() -> dict[str, Any]:
    """One 5-client round with a dropout, every message recorded; and must-fail variants."""
    setup = round_setup()
    roster: Roster = setup["roster"]
    fields = _round_context(setup, 7)
    context = build_context(fields)
    t = drive_round(setup, context, ROUND_DROPPED)
    result = t["result"]
    inputs: dict[int, QuantizedInput] = t["inputs"]
    bits = context.params.ring_bits
    survivors = [c for c in ROUND_IDS if c != ROUND_DROPPED]
    expected = [
        sum(int(inputs[c].values[i]) for c in survivors) % (1 << bits)
        for i in range(context.params.vector_length + 1)
    ]
    _check([int(v) for v in result.total] == expected, "round total = sum of survivors' inputs")
    _check(tuple(result.survivors) == tuple(survivors), "survivors")
    _check(result.dropped["masked_input"] == (ROUND_DROPPED,), "dropout recorded")

    # The driver above must agree with the library's own simulation driver.
    report = run_secagg_round(
        roster=roster,
        identities={
            c["client_id"]: IdentityKey.generate(
                DeterministicRandom(bytes.fromhex(c["identity_seed"]))
            )
            for c in setup["clients"]
        },
        context=context,
        inputs=_quantized(setup, context),
        drops={"masked_input": {ROUND_DROPPED}},
        rng_for=lambda cid: DeterministicRandom(seed(f"round/session/{cid}")),
        keep_server_view=True,
    )
    if report.result is None:
        raise VectorCheckFailed("simulation completes")
    _check([int(v) for v in report.result.total] == expected, "simulation total")
    for cid, payload in report.server_view.items():
        _check(MaskedInput.from_bytes(t["masked_inputs"][cid]).payload == payload, "payloads")

    record: dict[str, Any] = {
        "name": "5-clients-full-graph-client-3-drops-before-masked-input",
        **_context_record(fields),
        "roster_bytes": roster.to_bytes().hex(),
        "roster_digest": roster.digest().hex(),
        "clients": [
            dict(c, quantized=_ring(inputs[c["client_id"]].values)) for c in setup["clients"]
        ],
        "dropped_before_masked_input": [ROUND_DROPPED],
        "ring_bits": bits,
        "graph": {
            "kind": result.graph.kind.name,
            "n": result.graph.n,
            "degree": result.graph.degree,
            "threshold": result.graph.threshold,
        },
        "advertisements": _by_client(t["advertisements"]),
        "cohort": t["cohort"].hex(),
        "share_keys": _by_client(t["share_keys"]),
        "deliveries": _by_client(t["deliveries"]),
        "masked_inputs": _by_client(t["masked_inputs"]),
        "survivors": t["survivors"].hex(),
        "survivor_ids": list(result.survivors),
        "consistency_signatures": _by_client(t["consistency_signatures"]),
        "consistency_bundle": t["consistency_bundle"].hex(),
        "unmask_shares": _by_client(t["unmask_shares"]),
        "dropped": {k: list(v) for k, v in sorted(result.dropped.items())},
        "expected_total": [str(v) for v in expected],
    }
    _check(
        [int(v) for v in replay_server(record, context, roster)] == expected,
        "replaying the recorded messages gives the total",
    )

    invalid: list[dict[str, Any]] = []

    # 1. A flipped bit in a masked input: nothing detects it, the sum is wrong.
    victim = 5
    masked = MaskedInput.from_bytes(t["masked_inputs"][victim])
    tampered_masked = MaskedInput(
        context_digest=masked.context_digest,
        sender=victim,
        payload=_flip(masked.payload, 0),
    ).to_bytes()
    wrong = replay_server(
        record, context, roster, stage="masked_input", sender=victim, message=tampered_masked
    )
    _check([int(v) for v in wrong] != expected, "a tampered masked input changes the sum")
    invalid.append(
        {
            "name": "tampered-masked-input-byte",
            "target": "server",
            "stage": "masked_input",
            "mode": "replace",
            "sender": victim,
            "message": tampered_masked.hex(),
            "outcome": "wrong_total",
            "total": _ring(wrong),
        }
    )

    # 2. A tampered advertisement signature: clients and server refuse it.
    cohort = CohortBroadcast.from_bytes(t["cohort"])
    ads = list(cohort.advertisements)
    index = next(i for i, a in enumerate(ads) if a.client_id == victim)
    bad_ad = AdvertiseKeys(
        context_digest=ads[index].context_digest,
        client_id=victim,
        encryption_key=ads[index].encryption_key,
        mask_key=ads[index].mask_key,
        seed_commitment=ads[index].seed_commitment,
        signature=_flip(ads[index].signature, 10),
    )
    ads[index] = bad_ad
    bad_cohort = CohortBroadcast(context_digest=cohort.context_digest, advertisements=tuple(ads))
    invalid.append(
        {
            "name": "tampered-advertisement-signature-in-cohort",
            "target": "client",
            "client_id": 2,
            "stage": "share_keys",
            "message": bad_cohort.to_bytes().hex(),
            "error": "IntegrityError",
        }
    )
    invalid.append(
        {
            "name": "tampered-advertisement-signature-at-server",
            "target": "server",
            "stage": "advertise",
            "mode": "replace",
            "sender": victim,
            "message": bad_ad.to_bytes().hex(),
            "raises_at": "receive",
            "error": "IntegrityError",
        }
    )

    # 3. Replays: messages of round 8 (same clients, seeds and inputs) sent into round 7.
    other = drive_round(setup, build_context(_round_context(setup, 8)), ROUND_DROPPED)
    invalid.append(
        {
            "name": "replayed-cohort-from-round-8",
            "target": "client",
            "client_id": 2,
            "stage": "share_keys",
            "message": other["cohort"].hex(),
            "error": "ProtocolError",
        }
    )
    invalid.append(
        {
            "name": "replayed-advertisement-from-round-8",
            "target": "server",
            "stage": "advertise",
            "mode": "replace",
            "sender": 2,
            "message": other["advertisements"][2].hex(),
            "raises_at": "receive",
            "error": "ProtocolError",
        }
    )
    invalid.append(
        {
            "name": "replayed-masked-input-from-round-8",
            "target": "server",
            "stage": "masked_input",
            "mode": "replace",
            "sender": victim,
            "message": other["masked_inputs"][victim].hex(),
            "raises_at": "receive",
            "error": "ProtocolError",
        }
    )
    invalid.append(
        {
            "name": "replayed-masked-input-twice",
            "target": "server",
            "stage": "masked_input",
            "mode": "append",
            "message": t["masked_inputs"][victim].hex(),
            "raises_at": "receive",
            "error": "ProtocolError",
        }
    )
    # 4. A tampered unmask share: the reconstructed seed fails its commitment.
    invalid.append(
        {
            "name": "tampered-unmask-share",
            "target": "server",
            "stage": "unmask",
            "mode": "replace",
            "sender": 2,
            "message": _tamper_unmask(t["unmask_shares"][2]).hex(),
            "raises_at": "finalize",
            "error": "IntegrityError",
        }
    )
    for case in invalid:
        _check_round_invalid(case, record, setup, context, roster)
    return _doc(
        "securefed reference implementation (protocols/secagg.md §6; Bonawitz et al. 2017, Fig. 4)",
        "One whole round: 5 clients, full graph, client 3 drops just before the masked-input "
        "stage. Identities are IdentityKey.generate(DeterministicRandom(identity_seed)); each "
        "SecAggClient gets rng=DeterministicRandom(session_seed); inputs are securefed."
        "secagg.quantize(update, spec, weight=, rng=DeterministicRandom(quantize_seed)). "
        "The context is built from `context` (params as SecAggParams fields; graph is a "
        "GraphKind name). Every message is its to_bytes() hex, in the order sent (clients "
        "by ascending id). expected_total = the sum of the survivors' quantised inputs "
        "mod 2^ring_bits, which finalize returns. invalid (target=server): replay the "
        "recorded messages into a fresh SecAggServer, with `message` sent instead of "
        "`sender`'s (mode=replace) or after the stage's messages (mode=append); it must "
        "raise `error` at `raises_at` (receive or finalize), or (outcome=wrong_total) finish "
        "with `total` != expected_total. invalid (target=client): client `client_id`, after "
        "advertise(), must raise `error` on `message` in stage `stage`.",
        [record],
        invalid,
    )


def _client_from(setup_client: dict[str, Any], roster: Roster, context: RoundContext) -> Any:
    return SecAggClient(
        client_id=setup_client["client_id"],
        identity=IdentityKey.generate(
            DeterministicRandom(bytes.fromhex(setup_client["identity_seed"]))
        ),
        roster=roster,
        context=context,
        rng=DeterministicRandom(bytes.fromhex(setup_client["session_seed"])),
    )


def _check_round_invalid(
    case: dict[str, Any],
    record: dict[str, Any],
    setup: dict[str, Any],
    context: RoundContext,
    roster: Roster,
) -> None:
    errors = {"IntegrityError": IntegrityError, "ProtocolError": ProtocolError}
    message = bytes.fromhex(case["message"])
    if case["target"] == "client":
        spec = next(c for c in setup["clients"] if c["client_id"] == case["client_id"])
        client = _client_from(spec, roster, context)
        client.advertise()
        _expect_error(
            errors[case["error"]],
            lambda: client.share_keys(CohortBroadcast.from_bytes(message)),
            case["name"],
        )
        return

    def run() -> np.ndarray:
        return replay_server(
            record,
            context,
            roster,
            stage=case["stage"],
            mode=case["mode"],
            sender=case.get("sender"),
            message=message,
        )

    if "error" in case:
        _expect_error(errors[case["error"]], run, case["name"])
    else:
        _check(_ring(run()) == case["total"], case["name"])


# -- main -----------------------------------------------------------------------------------

FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "x25519_rfc7748.json": x25519_vectors,
    "hkdf_rfc5869.json": hkdf_vectors,
    "prg.json": prg_vectors,
    "share_encryption.json": share_encryption_vectors,
    "shamir.json": shamir_vectors,
    "round_5clients.json": round_vectors,
}


def main(out_dir: Path | None = None) -> list[Path]:
    """Generate every vector file into ``out_dir`` (default: ``protocols/secagg/vectors``)."""
    target = DEFAULT_OUT if out_dir is None else Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    return [_write(target, name, make()) for name, make in FILES.items()]


if __name__ == "__main__":
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(written)
