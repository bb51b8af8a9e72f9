"""Injectable randomness.

Every randomised function in securefed takes a :class:`RandomSource`. The default,
:class:`OsRandom`, reads the operating system's CSPRNG. :class:`DeterministicRandom`
exists only for test vectors and reproducible tests: it is a ChaCha20 keystream
under a caller-chosen seed and must never be used for real keys or masks.
"""

from __future__ import annotations

import os
import secrets
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["DeterministicRandom", "OsRandom", "RandomSource", "chacha20_stream"]

# Above this many bytes OsRandom expands a fresh 256-bit OS seed with ChaCha20
# instead of asking the kernel for every byte: same security (a CSPRNG seeded by
# the OS), several times faster for the megabytes stochastic rounding needs.
_BULK_THRESHOLD_BYTES = 4096
_STREAM_NONCE = b"\x00" * 16


def chacha20_stream(key: bytes, nonce: bytes, length: int) -> bytes:
    """Return ``length`` bytes of the ChaCha20 keystream for ``key`` and ``nonce``.

    Args:
        key: 32-byte key.
        nonce: 16 bytes as the ``cryptography`` package takes them: a 4-byte
            little-endian initial block counter followed by a 12-byte nonce.
        length: number of bytes.

    Returns:
        The keystream (ChaCha20 applied to zero bytes).
    """
    if len(key) != 32:
        raise ValueError("ChaCha20 key must be 32 bytes")
    if len(nonce) != 16:
        raise ValueError("ChaCha20 nonce must be 16 bytes (counter || nonce)")
    if length < 0:
        raise ValueError("length must be non-negative")
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return encryptor.update(bytes(length))


@runtime_checkable
class RandomSource(Protocol):
    """A source of uniformly random bytes."""

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""
        ...


class OsRandom:
    """The operating system's CSPRNG (the default everywhere)."""

    __slots__ = ()

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` bytes from the OS CSPRNG (bulk requests via an OS-seeded ChaCha20)."""
        if n < 0:
            raise ValueError("n must be non-negative")
        if n <= _BULK_THRESHOLD_BYTES:
            return secrets.token_bytes(n)
        return chacha20_stream(os.urandom(32), _STREAM_NONCE, n)

    def __repr__(self) -> str:
        return "OsRandom()"


class DeterministicRandom:
    """A reproducible ChaCha20 keystream: for test vectors and tests only.

    Successive calls return successive, non-overlapping parts of one keystream.
    """

    __slots__ = ("_encryptor",)

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("DeterministicRandom seed must be 32 bytes")
        self._encryptor = Cipher(algorithms.ChaCha20(seed, _STREAM_NONCE), mode=None).encryptor()

    def random_bytes(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the keystream."""
        if n < 0:
            raise ValueError("n must be non-negative")
        return self._encryptor.update(bytes(n))

    def __repr__(self) -> str:
        return "DeterministicRandom(<seed hidden>)"
