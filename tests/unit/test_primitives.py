"""Hazmat wrappers: every integrity failure is an opaque IntegrityError; the PRG is well formed."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

from securefed.errors import IntegrityError
from securefed.randomness import DeterministicRandom
from securefed.secagg import primitives as prim
from securefed.secagg.roster import IdentityKey

SEED = bytes(range(32))


def test_hkdf_lengths_and_labels():
    a = prim.hkdf_sha256(b"ikm", salt=b"salt", info=b"a", length=44)
    assert len(a) == 44
    assert a != prim.hkdf_sha256(b"ikm", salt=b"salt", info=b"b", length=44)
    assert a != prim.hkdf_sha256(b"ikm", salt=b"pepper", info=b"a", length=44)


def test_hkdf_rfc5869_case_1():
    # RFC 5869, Appendix A.1.
    okm = prim.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def _aead():
    key, nonce = bytes(32), bytes(12)
    return key, nonce, prim.aead_encrypt(key, nonce, b"plaintext", b"ad")


def test_aead_round_trip():
    key, nonce, ct = _aead()
    assert prim.aead_decrypt(key, nonce, ct, b"ad") == b"plaintext"
    assert len(ct) == len(b"plaintext") + 16


@pytest.mark.parametrize("what", ["key", "nonce", "ciphertext", "ad", "truncated"])
def test_aead_rejects_any_change(what):
    key, nonce, ct = _aead()
    ad = b"ad"
    if what == "key":
        key = b"\x01" + key[1:]
    elif what == "nonce":
        nonce = b"\x01" + nonce[1:]
    elif what == "ciphertext":
        ct = bytes([ct[0] ^ 1]) + ct[1:]
    elif what == "ad":
        ad = b"AD"
    else:
        ct = ct[:5]
    with pytest.raises(IntegrityError) as info:
        prim.aead_decrypt(key, nonce, ct, ad)
    assert str(info.value) == "integrity check failed"


def test_x25519_agreement_and_bad_points():
    a_priv, a_pub = prim.x25519_generate(DeterministicRandom(SEED))
    b_priv, b_pub = prim.x25519_generate(DeterministicRandom(bytes(32)))
    assert prim.x25519_public(a_priv) == a_pub
    assert prim.x25519_shared(a_priv, b_pub) == prim.x25519_shared(b_priv, a_pub)
    with pytest.raises(IntegrityError):
        prim.x25519_shared(a_priv, bytes(32))  # low-order point: all-zero secret
    for peer in (b"short", bytes(33), "k" * 32, 32):
        with pytest.raises(IntegrityError):
            prim.x25519_shared(a_priv, peer)


def test_x25519_agrees_with_an_independent_implementation():
    # libsodium (securefed's) against OpenSSL (through cryptography) on random
    # scalars and peer keys, with and without the top bit of u set (RFC 7748 ignores it).
    rng = DeterministicRandom(SEED)
    for i in range(300):
        scalar, u = rng.random_bytes(32), bytearray(rng.random_bytes(32))
        u[31] = (u[31] | 0x80) if i % 2 else (u[31] & 0x7F)
        peer = bytes(u)
        openssl = X25519PrivateKey.from_private_bytes(scalar)
        expected = openssl.exchange(X25519PublicKey.from_public_bytes(peer))
        assert prim.x25519_shared(scalar, peer) == expected
        assert prim.x25519_public(scalar) == openssl.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    "key",
    [
        b"",
        bytes(31),
        bytes(33),
        32,
        "k" * 32,
        None,
        memoryview(bytes(64))[::2],  # 32 bytes, but strided
        memoryview(bytes(32)).cast("B", (4, 8)),  # 32 bytes, but 2-D
        memoryview(bytes(32)).cast("I"),  # 32 bytes, but 4-byte items
    ],
)
def test_x25519_refuses_a_private_key_that_is_not_32_bytes(key):
    # libsodium reads 32 bytes from whatever pointer it gets: a short key must
    # never reach it.
    _, public = prim.x25519_generate(DeterministicRandom(SEED))
    with pytest.raises((TypeError, ValueError)):
        prim.x25519_shared(key, public)
    with pytest.raises((TypeError, ValueError)):
        prim.x25519_public(key)


def _all_zero_by_the_library(public_key: bytes) -> bool:
    """The oracle: ``cryptography`` refuses an all-zero X25519 output with ValueError."""
    probe = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    try:
        probe.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return True
    return False


def _encodings(u: int) -> list[bytes]:
    """Every 32-byte string that RFC 7748 decodes to ``u`` mod p: the top bit is
    ignored, and values in [p, 2^255) are non-canonical encodings of 0..18."""
    p = 2**255 - 19
    values = [u, u + p] if u + p < 2**255 else [u]
    return [(v | top).to_bytes(32, "little") for v in values for top in (0, 1 << 255)]


def test_x25519_usable_refuses_exactly_the_low_order_points():
    # Each listed u-coordinate, in every encoding, gives the all-zero secret under
    # the library's own check, and the fast comparison refuses it.
    low = [b for u in prim._LOW_ORDER_U for b in _encodings(u)]
    assert len(low) == 14  # 0, 1 with two values each; p - 1 and the two order-8 points
    scalar = bytes(range(1, 33))
    for key in low:
        assert _all_zero_by_the_library(key)
        assert not prim.x25519_usable(key)
        with pytest.raises(IntegrityError):  # and securefed's own agreement refuses it
            prim.x25519_shared(scalar, key)
    # Neighbours of each (u +- 1, u +- 19 across the top bit) and random keys are
    # usable, and the library agrees.
    p = 2**255 - 19
    near = [
        ((u + d) % 2**256).to_bytes(32, "little")
        for u in [*prim._LOW_ORDER_U, p, 2**255 - 1, 2**256 - 1]
        for d in (-19, -1, 1, 19)
    ]
    rng = DeterministicRandom(SEED)
    keys = near + [rng.random_bytes(32) for _ in range(2000)]
    for key in keys:
        assert prim.x25519_usable(key) is not _all_zero_by_the_library(key)
    for key in near:
        if prim.x25519_usable(key):
            assert len(prim.x25519_shared(scalar, key)) == 32
    assert not prim.x25519_usable(bytes(31))
    assert not prim.x25519_usable(bytes(33))


def test_x25519_rfc7748_section_6_1():
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert prim.x25519_shared(alice, bob_pub).hex() == (
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    )


def test_ed25519_verify():
    key = IdentityKey.generate(DeterministicRandom(SEED))
    sig = key.sign(b"message")
    prim.ed25519_verify(key.public_key, sig, b"message")
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(key.public_key, sig, b"messagf")
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(key.public_key, bytes([sig[0] ^ 1]) + sig[1:], b"message")
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(b"\x00" * 31, sig, b"message")  # malformed key
    other = IdentityKey.generate(DeterministicRandom(bytes(32)))
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(other.public_key, sig, b"message")


# RFC 8032 §7.1, tests 1-3: (secret key, public key, message, signature), hex.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]
ED25519_L = 2**252 + 27742317777372353535851937790883648493


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_rfc8032_section_7_1(secret, public, message, signature):
    public_key, msg, sig = (bytes.fromhex(v) for v in (public, message, signature))
    prim.ed25519_verify(public_key, sig, msg)
    # The signer (``cryptography``) makes the same signature.
    signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert signer.sign(msg) == sig
    for bit in (0, 255, 256, 511):  # R's and S's first and last bits
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            prim.ed25519_verify(public_key, bytes(flipped), msg)
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(public_key, sig, msg + b"\x00")


def test_ed25519_verify_accepts_one_encoding_and_no_weak_key():
    """The strictness the spec relies on (§3.3): S must be below the group order L,
    and a small-order public key (for which R = [S]B verifies for every message)
    is refused."""
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    public = key.public_key().public_bytes_raw()
    sig = key.sign(b"message")
    s = int.from_bytes(sig[32:], "little")
    assert s + ED25519_L < 2**256
    malleated = sig[:32] + (s + ED25519_L).to_bytes(32, "little")
    with pytest.raises(IntegrityError):
        prim.ed25519_verify(public, malleated, b"message")
    # The neutral element as a public key: [S]B = R + [k]A holds whenever R = [S]B.
    neutral = (1).to_bytes(32, "little")
    scalar = (12345).to_bytes(32, "little")
    forged = crypto_scalarmult_ed25519_base_noclamp(scalar) + scalar
    for message in (b"message", b"any other message"):
        with pytest.raises(IntegrityError):
            prim.ed25519_verify(neutral, forged, message)
    for bad in (sig[:63], sig + b"\x00"):
        with pytest.raises(IntegrityError):
            prim.ed25519_verify(public, bad, b"message")


def test_ed25519_verify_turns_every_bad_argument_into_integrity_error():
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    public = key.public_key().public_bytes_raw()
    empty_sig = key.sign(b"")
    prim.ed25519_verify(bytearray(public), memoryview(empty_sig), b"")  # any bytes-like
    for args in [
        (None, empty_sig, b""),
        (public, None, b""),
        (public, empty_sig, None),
        ("k" * 32, empty_sig, b""),
        (public, empty_sig, 0),  # not b"": an int is not a message
        (public[:31], empty_sig, b""),
        (memoryview(public).cast("I"), empty_sig, b""),  # 32 bytes, but 4-byte items
        (public, memoryview(empty_sig)[::1].cast("B", (8, 8)), b""),  # 64 bytes, but 2-D
    ]:
        with pytest.raises(IntegrityError):
            prim.ed25519_verify(*args)


def test_ed25519_verify_agrees_with_the_signer_on_honest_signatures():
    # Signatures made by ``cryptography`` (the signer every securefed party uses)
    # verify, over random keys and message lengths; a different message does not.
    rng = DeterministicRandom(SEED)
    for i in range(200):
        key = Ed25519PrivateKey.from_private_bytes(rng.random_bytes(32))
        message = rng.random_bytes(i)
        sig = key.sign(message)
        prim.ed25519_verify(key.public_key().public_bytes_raw(), sig, message)
        with pytest.raises(IntegrityError):
            prim.ed25519_verify(key.public_key().public_bytes_raw(), sig, message + b"!")


@pytest.mark.parametrize("bits", [1, 7, 16, 31, 32, 33, 48, 63, 64])
def test_prg_expand_range_and_dtype(bits):
    values = prim.prg_expand(SEED, 1000, bits)
    assert values.shape == (1000,)
    assert values.dtype == (np.uint32 if bits <= 32 else np.uint64)
    assert int(values.max()) < (1 << bits)
    if bits >= 7:
        # 1000 uniform draws: the top bit is set in some and clear in others.
        top = (values >> (bits - 1)) & 1
        assert 0 < int(top.sum()) < 1000
    values[0] = 0  # the result is writable


def test_prg_expand_deterministic_and_seed_sensitive():
    a = prim.prg_expand(SEED, 64, 20)
    np.testing.assert_array_equal(a, prim.prg_expand(SEED, 64, 20))
    b = prim.prg_expand(bytes(32), 64, 20)
    assert not np.array_equal(a, b)
    # A prefix of a longer expansion is the shorter expansion.
    np.testing.assert_array_equal(prim.prg_expand(SEED, 128, 20)[:64], a)


def test_prg_expand_rejects_bad_arguments():
    with pytest.raises(ValueError, match="32 bytes"):
        prim.prg_expand(b"short", 4, 16)
    with pytest.raises(ValueError, match="non-negative"):
        prim.prg_expand(SEED, -1, 16)
    with pytest.raises(ValueError, match="ring bits"):
        prim.prg_expand(SEED, 4, 65)
    assert prim.prg_expand(SEED, 0, 16).shape == (0,)


def test_ring_dtype_boundaries():
    assert prim.ring_dtype(1) is np.uint32
    assert prim.ring_dtype(32) is np.uint32
    assert prim.ring_dtype(33) is np.uint64
    assert prim.ring_dtype(64) is np.uint64
    with pytest.raises(ValueError, match="ring bits"):
        prim.ring_dtype(0)


def test_ct_equal_and_sha256():
    assert prim.ct_equal(b"abc", b"abc")
    assert not prim.ct_equal(b"abc", b"abd")
    assert prim.sha256(b"a", b"bc") == prim.sha256(b"abc")
