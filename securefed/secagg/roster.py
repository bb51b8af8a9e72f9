"""Client identities and the signed roster that pins them (protocols/secagg.md §2).

A roster lists every client's long-term Ed25519 identity key. It is signed by the
data owners (or by a CA the coordinator does not control); each client pins the
roster, so the coordinator cannot add, drop or swap an identity unnoticed. The
roster's hash enters every round's context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefed.errors import IntegrityError, ProtocolError
from securefed.randomness import OsRandom, RandomSource
from securefed.secagg.encoding import Reader, Writer
from securefed.secagg.primitives import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    sha256,
)

__all__ = ["IdentityKey", "Roster", "RosterEntry", "SignedRoster"]

ROSTER_LABEL = b"securefed/roster/v1"
MAX_CLIENT_ID = (1 << 32) - 1


class IdentityKey:
    """A long-term Ed25519 signing key. Its ``repr`` never shows key material."""

    __slots__ = ("_key", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = ed25519_public(private_key)

    @classmethod
    def generate(cls, rng: RandomSource | None = None) -> IdentityKey:
        """Make a fresh identity from 32 bytes of ``rng`` (default: the OS CSPRNG)."""
        seed = (rng or OsRandom()).random_bytes(KEY_BYTES)
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``."""
        return ed25519_sign(self._key, message)

    def __repr__(self) -> str:
        return f"IdentityKey(public={self.public_key.hex()[:16]}...)"


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterEntry:
    """One client: its numeric id (1..2^32-1), a display name, its identity key."""

    client_id: int
    name: str
    identity_key: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.client_id <= MAX_CLIENT_ID:
            raise ValueError("client_id must be in [1, 2^32 - 1]")
        if len(self.identity_key) != KEY_BYTES:
            raise ValueError("identity_key must be 32 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Roster:
    """The federation's client list. Entries are kept sorted by id."""

    federation_id: str
    version: int
    entries: tuple[RosterEntry, ...]
    _by_id: Mapping[int, RosterEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.federation_id:
            raise ValueError("federation_id must not be empty")
        if self.version < 0:
            raise ValueError("version must be >= 0")
        ordered = tuple(sorted(self.entries, key=lambda e: e.client_id))
        ids = [e.client_id for e in ordered]
        keys = [e.identity_key for e in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError("roster client ids must be unique")
        if len(set(keys)) != len(keys):
            raise ValueError("roster identity keys must be unique")
        object.__setattr__(self, "entries", ordered)
        object.__setattr__(self, "_by_id", {e.client_id: e for e in ordered})

    def identity_key(self, client_id: int) -> bytes:
        """The pinned identity key of ``client_id``.

        Raises:
            ProtocolError: the id is not on the roster.
        """
        entry = self._by_id.get(client_id)
        if entry is None:
            raise ProtocolError("client is not on the roster")
        return entry.identity_key

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._by_id

    def to_bytes(self) -> bytes:
        """Canonical encoding (protocols/secagg.md §2.1)."""
        w = Writer().fixed(ROSTER_LABEL, len(ROSTER_LABEL)).text(self.federation_id)
        w.u32(self.version).u32(len(self.entries))
        for e in self.entries:
            w.u32(e.client_id).text(e.name).fixed(e.identity_key, KEY_BYTES)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Roster:
        """Decode :meth:`to_bytes` output."""
        r = Reader(data)
        if r.fixed(len(ROSTER_LABEL)) != ROSTER_LABEL:
            raise ProtocolError("not a securefed roster")
        federation_id = r.text()
        version = r.u32()
        entries = []
        for _ in range(r.count()):
            client_id = r.u32()
            name = r.text()
            entries.append(
                RosterEntry(client_id=client_id, name=name, identity_key=r.fixed(KEY_BYTES))
            )
        r.done()
        try:
            return cls(federation_id=federation_id, version=version, entries=tuple(entries))
        except ValueError as exc:
            raise ProtocolError(f"invalid roster: {exc}") from None

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: the roster hash in every round context."""
        return sha256(self.to_bytes())


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedRoster:
    """A roster with signatures by authorities (data owners or an independent CA)."""

    roster: Roster
    signatures: tuple[tuple[bytes, bytes], ...]  # (authority public key, signature)

    @classmethod
    def sign(cls, roster: Roster, authorities: Iterable[IdentityKey]) -> SignedRoster:
        """Sign ``roster`` with each authority key."""
        body = roster.to_bytes()
        return cls(
            roster=roster,
            signatures=tuple((a.public_key, a.sign(body)) for a in authorities),
        )

    def verify(self, *, trusted: Iterable[bytes], required: int) -> Roster:
        """Check that at least ``required`` distinct trusted authorities signed the roster.

        Raises:
            IntegrityError: too few valid signatures from trusted keys.
        """
        if required < 1:
            raise ValueError("required must be >= 1")
        trusted_keys = set(trusted)
        body = self.roster.to_bytes()
        valid: set[bytes] = set()
        for key, signature in self.signatures:
            if key in trusted_keys and len(signature) == SIGNATURE_BYTES:
                try:
                    ed25519_verify(key, signature, body)
                except IntegrityError:
                    continue
                valid.add(key)
        if len(valid) < required:
            raise IntegrityError()
        return self.roster
