"""Protocol-level derivations: every KDF label, signed message and AEAD binding.

(protocols/secagg.md §3.) All are deterministic functions of their inputs so
that the vectors in ``protocols/secagg/vectors/`` pin them.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable

from securefed.secagg.context import PROTOCOL_VERSION, RoundContext
from securefed.secagg.encoding import Writer
from securefed.secagg.primitives import (
    AEAD_KEY_BYTES,
    AEAD_NONCE_BYTES,
    KEY_BYTES,
    hkdf_sha256,
    sha256,
    x25519_shared,
)

__all__ = [
    "advertise_payload",
    "consistency_payload",
    "consistency_prefix",
    "graph_seed",
    "mask_seed",
    "seed_commitment",
    "share_associated_data",
    "share_channel",
    "share_channel_from_secret",
]

LABEL_ADVERTISE = b"securefed/secagg/v1/advertise"
LABEL_COMMIT = b"securefed/secagg/v1/self-seed-commitment"
LABEL_SHARE_KEY = b"securefed/secagg/v1/share-key"
LABEL_SHARE_AD = b"securefed/secagg/v1/share"
LABEL_MASK_SEED = b"securefed/secagg/v1/mask-seed"
LABEL_CONSISTENCY = b"securefed/secagg/v1/consistency"
LABEL_GRAPH_SEED = b"securefed/secagg/v1/graph-seed"
STAGE_SHARE_KEYS = 1


def _label(w: Writer, label: bytes) -> Writer:
    return w.fixed(label, len(label))


@functools.lru_cache(maxsize=64)
def _round_info(label: bytes, round_id: int, model_hash: bytes) -> bytes:
    """``label || u8(version) || u64(round_id) || model_hash``, built once per round.

    It is the part of a per-pair HKDF ``info`` that every pair of a round shares;
    a client derives about 3k pair keys a round at n = 500. (``RoundContext``
    has checked that the model hash is 32 bytes.)
    """
    return label + struct.pack(">BQ", PROTOCOL_VERSION, round_id) + model_hash


def advertise_payload(
    context_digest: bytes, client_id: int, encryption_key: bytes, mask_key: bytes, commitment: bytes
) -> bytes:
    """The bytes a client signs when it advertises its round keys."""
    w = _label(Writer(), LABEL_ADVERTISE).fixed(context_digest, KEY_BYTES).u32(client_id)
    w.fixed(encryption_key, KEY_BYTES).fixed(mask_key, KEY_BYTES).fixed(commitment, KEY_BYTES)
    return w.getvalue()


def seed_commitment(context_digest: bytes, client_id: int, seed: bytes) -> bytes:
    """``H(label || context || id || seed)``: binds the self-mask seed before it is shared."""
    w = _label(Writer(), LABEL_COMMIT).fixed(context_digest, KEY_BYTES).u32(client_id)
    return sha256(w.fixed(seed, KEY_BYTES).getvalue())


def share_channel(
    own_private: bytes,
    peer_public: bytes,
    context: RoundContext,
    *,
    sender: int,
    receiver: int,
) -> tuple[bytes, bytes]:
    """AES-256-GCM key and nonce for shares sent from ``sender`` to ``receiver``.

    HKDF-SHA256 over the X25519 secret of the two encryption keys, salted with
    the context digest; ``info`` carries the label, version, round, model hash and
    the *ordered* pair (sender, receiver), so each direction has its own key and
    nonce. Each key encrypts exactly one message.
    """
    return share_channel_from_secret(
        x25519_shared(own_private, peer_public), context, sender=sender, receiver=receiver
    )


def share_channel_from_secret(
    shared_secret: bytes, context: RoundContext, *, sender: int, receiver: int
) -> tuple[bytes, bytes]:
    """:func:`share_channel` from an X25519 secret already computed (one per pair, both ways)."""
    info = _round_info(LABEL_SHARE_KEY, context.round_id, context.model_hash)
    okm = hkdf_sha256(
        shared_secret,
        salt=context.digest(),
        info=info + struct.pack(">II", sender, receiver),
        length=AEAD_KEY_BYTES + AEAD_NONCE_BYTES,
    )
    return okm[:AEAD_KEY_BYTES], okm[AEAD_KEY_BYTES:]


def share_associated_data(context: RoundContext, *, sender: int, receiver: int) -> bytes:
    """AEAD associated data: sender, receiver, round, stage, model hash and context."""
    head = struct.pack(">IIQB", sender, receiver, context.round_id, STAGE_SHARE_KEYS)
    return LABEL_SHARE_AD + head + context.model_hash + context.digest()


def mask_seed(
    own_private: bytes, peer_public: bytes, context: RoundContext, a: int, b: int
) -> bytes:
    """The 256-bit pairwise mask seed of clients ``a`` and ``b`` (either order).

    HKDF-SHA256 over the X25519 secret of the two mask keys, salted with the
    context digest; ``info`` = label, version, round, model hash, sorted id pair.
    """
    low, high = (a, b) if a < b else (b, a)
    info = _round_info(LABEL_MASK_SEED, context.round_id, context.model_hash)
    return hkdf_sha256(
        x25519_shared(own_private, peer_public),
        salt=context.digest(),
        info=info + struct.pack(">II", low, high),
        length=KEY_BYTES,
    )


def consistency_prefix(context_digest: bytes, survivors: Iterable[int]) -> bytes:
    """The signer-independent part of :func:`consistency_payload` (computed once per round)."""
    ids = sorted(survivors)
    w = _label(Writer(), LABEL_CONSISTENCY).fixed(context_digest, KEY_BYTES).u32(len(ids))
    w.fixed(struct.pack(f">{len(ids)}I", *ids), 4 * len(ids))
    return w.getvalue()


def consistency_payload(prefix: bytes, signer: int) -> bytes:
    """The bytes ``signer`` signs to confirm the survivor list U3 it was sent.

    ``label || context digest || u32 count || sorted u32 ids || u32 signer``.
    """
    return prefix + signer.to_bytes(4, "big")


def graph_seed(context_digest: bytes, advertisements: Iterable[tuple[int, bytes]]) -> bytes:
    """Seed of the sparse graph: a hash of the context and the signed cohort.

    Args:
        context_digest: the round context digest.
        advertisements: ``(client_id, signature)`` of every advertisement in the
            cohort; signatures cover each client's keys, so the seed commits to
            the whole signed cohort and no party can choose it.
    """
    w = _label(Writer(), LABEL_GRAPH_SEED).fixed(context_digest, KEY_BYTES)
    ads = sorted(advertisements)
    w.u32(len(ads))
    for client_id, signature in ads:
        w.u32(client_id).var(signature)
    return sha256(w.getvalue())
