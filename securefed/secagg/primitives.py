"""Hazmat layer of secure aggregation: KDF, AEAD, key agreement, signatures, PRG, hashes.

Internal. Each function is small, deterministic given its inputs, and pinned by
vectors in ``protocols/secagg/vectors/``. Public protocol code calls only these.
See ``protocols/secagg.md`` §3 for every label and layout used here.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from securefed.errors import IntegrityError
from securefed.randomness import RandomSource

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_NONCE_BYTES",
    "KEY_BYTES",
    "PRG_NONCE_MASK",
    "SIGNATURE_BYTES",
    "MaskExpander",
    "RingArray",
    "aead_decrypt",
    "aead_encrypt",
    "ct_equal",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "prg_expand",
    "ring_dtype",
    "sha256",
    "x25519_generate",
    "x25519_public",
    "x25519_shared",
    "x25519_usable",
]

KEY_BYTES = 32
"""Length of every X25519/Ed25519 key, seed and hash (256 bits)."""
SIGNATURE_BYTES = 64
AEAD_KEY_BYTES = 32
"""AES-256-GCM key length."""
AEAD_NONCE_BYTES = 12
"""AES-GCM nonce length (96 bits, the length GCM is specified for)."""

PRG_NONCE_MASK = b"\x00\x00\x00\x00" + b"sfsecagg" + b"mask"
"""ChaCha20 16-byte nonce for mask expansion (protocols/secagg.md §3.4).

Bytes 0-3: initial block counter, little-endian, 0. Bytes 4-15: the fixed ASCII
label ``sfsecaggmask``. Every mask seed is used for exactly one stream, so a fixed
nonce is safe; the label separates this use from any other use of ChaCha20.
"""


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality for digests and tags."""
    return hmac.compare_digest(a, b)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def x25519_generate(rng: RandomSource) -> tuple[bytes, bytes]:
    """Make an X25519 key pair from 32 bytes of ``rng``.

    Returns:
        ``(private_key_bytes, public_key_bytes)``, 32 bytes each; the private key
        is the raw scalar (RFC 7748 clamps it where it is used).
    """
    private = _flat_bytes(rng.random_bytes(KEY_BYTES), KEY_BYTES)  # a copy of whatever rng gives
    return private, x25519_public(private)


def _flat_bytes(value: object, length: int | None = None) -> bytes:
    """A copy of ``value``'s bytes, if it is a flat string of bytes (of ``length``, if given).

    Copied through a memoryview, not ``bytes(value)``: ``bytes(3)`` would be three
    zero bytes. libsodium reads as many bytes as it expects from whatever pointer
    it is given, so a key must be checked to be exactly that long first.

    Raises:
        TypeError: ``value`` is not a contiguous 1-D buffer of single bytes.
        ValueError: it is not ``length`` bytes long.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("expected a string of bytes")
    view = memoryview(value)
    if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
        raise TypeError("expected a flat string of bytes")
    if length is not None and view.nbytes != length:
        raise ValueError(f"expected {length} bytes")
    return view.tobytes()


def x25519_public(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (libsodium, through PyNaCl).

    Raises:
        TypeError, ValueError: ``private_key`` is not 32 bytes.
    """
    return crypto_scalarmult_base(_flat_bytes(private_key, KEY_BYTES))


def x25519_shared(private_key: bytes, peer_public_key: bytes) -> bytes:
    """X25519 shared secret (RFC 7748 §6.1), computed by libsodium through PyNaCl.

    libsodium takes the raw scalar (it clamps), ignores the top bit of the peer's
    u-coordinate as RFC 7748 decodes it, and refuses a low-order peer key or an
    all-zero result. It needs no key object: OpenSSL's, through ``cryptography``,
    derives the public key whenever a private key is loaded (about 31 µs here, as
    much as the agreement itself); libsodium's agreement costs about 31 µs in all.

    Args:
        private_key: the 32-byte private key.
        peer_public_key: the peer's 32-byte public key.

    Raises:
        IntegrityError: the peer key is malformed or a low-order point (all-zero output).
        TypeError, ValueError: ``private_key`` is not 32 bytes.
    """
    scalar = _flat_bytes(private_key, KEY_BYTES)
    try:
        peer = _flat_bytes(peer_public_key, KEY_BYTES)
        return crypto_scalarmult(scalar, peer)
    except (ValueError, TypeError, CryptoError):
        raise IntegrityError() from None


_X25519_P = 2**255 - 19
_LOW_ORDER_U = frozenset(
    {
        0,
        1,
        _X25519_P - 1,
        0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
        0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    }
)
"""u-coordinates (mod p) of the points whose X25519 output is zero for every scalar.

X25519 clamps every scalar to a multiple of 8, so the output is zero exactly for
points of order dividing 8 on Curve25519 (cofactor 8) or 4 on its twist (cofactor 4):
u = 0 (order 2), u = 1 (order 4), u = p - 1 (order 4 on the twist) and the two
points of order 8. ``tests/unit/test_primitives.py`` checks every encoding of each
against the library's own all-zero check.
"""


def x25519_usable(public_key: bytes) -> bool:
    """Whether ``public_key`` is a 32-byte X25519 key that yields a non-zero shared secret.

    Low-order points give the all-zero secret for every private key (RFC 7748 §6.1);
    rejecting them at advertisement time stops one client from breaking its
    neighbours' key agreement later. The key is read as RFC 7748 decodes it (the
    top bit ignored, values of p and above taken mod p) and compared with
    :data:`_LOW_ORDER_U`: a public comparison costing a microsecond, where a trial
    key agreement costs about 31 µs (two per advertisement at the server).
    """
    if len(public_key) != KEY_BYTES:
        return False
    u = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    return u % _X25519_P not in _LOW_ORDER_U


def ed25519_public(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an Ed25519 private key."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def ed25519_sign(private_key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Ed25519 signature (deterministic, RFC 8032)."""
    return private_key.sign(message)


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Verify an Ed25519 signature (RFC 8032) with libsodium, through PyNaCl.

    libsodium's check is strict: besides the equation it refuses a non-canonical
    S (S >= L), a non-canonical or small-order public key, and a small-order R, so
    nobody without the key can turn a valid signature into a second valid
    encoding, and no weak key verifies a forgery (protocols/secagg.md §3.3).
    It costs about 54 µs here, against about 105 µs for OpenSSL's through
    ``cryptography``; every party checks many signatures a round. Signing stays
    with ``cryptography``: RFC 8032 signatures are deterministic and canonical, so
    the two libraries agree on every signature an honest signer makes
    (``tests/unit/test_primitives.py``).

    Raises:
        IntegrityError: the key or signature is malformed, or the signature does
            not verify.
    """
    try:
        key = _flat_bytes(public_key, KEY_BYTES)
        sig = _flat_bytes(signature, SIGNATURE_BYTES)
        VerifyKey(key).verify(_flat_bytes(message), sig)
    except (BadSignatureError, ValueError, TypeError):
        raise IntegrityError() from None


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM encryption; returns ciphertext || 16-byte tag."""
    return AESGCM(key).encrypt(nonce, plaintext, associated_data)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM decryption.

    Raises:
        IntegrityError: the tag does not verify (wrong key, nonce, data or ciphertext).
    """
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data)
    except (InvalidTag, ValueError):
        raise IntegrityError() from None


RingArray = npt.NDArray[np.unsignedinteger[Any]]
"""A vector of ring elements (uint32 or uint64, see :func:`ring_dtype`)."""


def ring_dtype(bits: int) -> type[np.unsignedinteger[Any]]:
    """The NumPy dtype holding ring elements of ``bits`` bits (uint32 up to 32, else uint64)."""
    if not 1 <= bits <= 64:
        raise ValueError("ring bits must be in [1, 64]")
    return np.uint32 if bits <= 32 else np.uint64


def prg_expand(seed: bytes, count: int, bits: int) -> RingArray:
    """Expand a 256-bit seed into ``count`` exactly uniform elements of Z_{2^bits}.

    ChaCha20 keystream under ``seed`` and :data:`PRG_NONCE_MASK`, read as
    little-endian uint32 words (bits <= 32) or uint64 words (bits > 32), each
    reduced by keeping its low ``bits`` bits. Because 2^bits divides the word
    range, every element is exactly uniform (protocols/secagg.md §3.4).

    Returns:
        A writable array of dtype :func:`ring_dtype` (``bits``).
    """
    if len(seed) != KEY_BYTES:
        raise ValueError("mask seed must be 32 bytes")
    if count < 0:
        raise ValueError("count must be non-negative")
    dtype = ring_dtype(bits)
    width = np.dtype(dtype).itemsize
    length = count * width
    # Keystream written straight into a writable buffer (no intermediate copy).
    buffer = bytearray(length)
    Cipher(algorithms.ChaCha20(seed, PRG_NONCE_MASK), mode=None).encryptor().update_into(
        bytes(length), buffer
    )
    values = np.frombuffer(buffer, dtype=np.dtype(dtype).newbyteorder("<"))
    if bits not in (32, 64):
        values &= dtype((1 << bits) - 1)
    return values


class MaskExpander:
    """:func:`prg_expand` for many seeds of one length, into one reused buffer.

    Writing each keystream into the same pre-faulted buffer avoids fresh page
    allocations per mask, which otherwise cost several times the cipher itself.
    The array returned by :meth:`expand` is a view that the next call overwrites:
    use it (e.g. add it to an accumulator) before expanding the next seed.
    """

    __slots__ = ("_bits", "_buffer", "_dtype", "_mask", "_zeros")

    def __init__(self, count: int, bits: int) -> None:
        if count < 0:
            raise ValueError("count must be non-negative")
        self._bits = bits
        self._dtype = ring_dtype(bits)
        length = count * np.dtype(self._dtype).itemsize
        self._zeros = bytes(length)
        self._buffer = bytearray(length)
        self._mask = self._dtype((1 << bits) - 1) if bits not in (32, 64) else None

    def expand(self, seed: bytes) -> RingArray:
        """The same values as ``prg_expand(seed, count, bits)``, as a reused view."""
        if len(seed) != KEY_BYTES:
            raise ValueError("mask seed must be 32 bytes")
        encryptor = Cipher(algorithms.ChaCha20(seed, PRG_NONCE_MASK), mode=None).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        values = np.frombuffer(self._buffer, dtype=np.dtype(self._dtype).newbyteorder("<"))
        if self._mask is not None:
            values &= self._mask
        return values
