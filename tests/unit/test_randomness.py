"""Injectable randomness: reproducible test streams, the OS CSPRNG, hidden seeds."""

from __future__ import annotations

import pytest

from securefed.randomness import DeterministicRandom, OsRandom, RandomSource, chacha20_stream

SEED = bytes(range(32))


def test_deterministic_random_is_reproducible():
    a, b = DeterministicRandom(SEED), DeterministicRandom(SEED)
    assert a.random_bytes(100) == b.random_bytes(100)
    assert DeterministicRandom(bytes(32)).random_bytes(32) != DeterministicRandom(
        SEED
    ).random_bytes(32)


def test_deterministic_random_calls_do_not_overlap():
    whole = DeterministicRandom(SEED).random_bytes(96)
    parts = DeterministicRandom(SEED)
    assert parts.random_bytes(10) + parts.random_bytes(50) + parts.random_bytes(36) == whole
    assert parts.random_bytes(0) == b""


def test_deterministic_random_validation_and_repr():
    with pytest.raises(ValueError, match="32 bytes"):
        DeterministicRandom(b"short")
    with pytest.raises(ValueError, match="non-negative"):
        DeterministicRandom(SEED).random_bytes(-1)
    text = repr(DeterministicRandom(SEED))
    assert "hidden" in text
    assert SEED.hex() not in text
    assert SEED.hex()[:8] not in text
    assert repr(SEED) not in text


@pytest.mark.parametrize("n", [0, 1, 32, 4096, 4097, 100_000])
def test_os_random_lengths(n):
    data = OsRandom().random_bytes(n)
    assert len(data) == n
    if n >= 32:
        assert data != OsRandom().random_bytes(n)


def test_os_random_rejects_negative_and_protocol():
    with pytest.raises(ValueError, match="non-negative"):
        OsRandom().random_bytes(-1)
    assert isinstance(OsRandom(), RandomSource)
    assert isinstance(DeterministicRandom(SEED), RandomSource)
    assert repr(OsRandom()) == "OsRandom()"


def test_chacha20_stream_rfc8439_keystream():
    # RFC 8439 §2.4.2 test vector: key 00..1f, counter 1, nonce 000000000000004a00000000.
    key = bytes(range(32))
    nonce = (1).to_bytes(4, "little") + bytes.fromhex("000000000000004a00000000")
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    stream = chacha20_stream(key, nonce, len(plaintext))
    ciphertext = bytes(a ^ b for a, b in zip(plaintext, stream, strict=True))
    assert ciphertext[:16].hex() == "6e2e359a2568f98041ba0728dd0d6981"
    with pytest.raises(ValueError, match="nonce"):
        chacha20_stream(key, b"short", 1)
