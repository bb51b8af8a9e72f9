"""The client's side of one secure-aggregation round: a sans-I/O state machine.

(protocols/secagg.md §6; Bonawitz et al. 2017, Fig. 4, actively secure variant,
with the neighbour graph of Bell et al. 2020.) Each method consumes the server's
message for a stage and returns the client's reply. Every check happens before
any state changes, so a rejected message leaves the session as it was. The
session never reveals both secrets of one peer (the never-both rule) and wipes
its secrets when the round ends or aborts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from securefed.errors import (
    ConfigError,
    InsufficientSharesError,
    IntegrityError,
    ProtocolError,
)
from securefed.randomness import OsRandom, RandomSource
from securefed.secagg import derive
from securefed.secagg.client_input import QuantizedInput
from securefed.secagg.cohort import ShareCoordinates, cohort_layout
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import GraphKind, GraphParameters, ThreatModel, consistency_quorum
from securefed.secagg.messages import (
    SHARE_PLAINTEXT_BYTES,
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    SecretKind,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShare,
    UnmaskShares,
)
from securefed.secagg.packing import pack
from securefed.secagg.primitives import (
    KEY_BYTES,
    MaskExpander,
    RingArray,
    aead_decrypt,
    aead_encrypt,
    ed25519_verify,
    ring_dtype,
    x25519_generate,
    x25519_shared,
)
from securefed.secagg.roster import IdentityKey, Roster
from securefed.secagg.shamir import (
    decode_share_value,
    encode_share_value,
    split_many,
)

__all__ = ["ClientStage", "SecAggClient"]

S = TypeVar("S")


class ClientStage(enum.Enum):
    """Where a client session is."""

    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    SIGNED = "signed"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class _Cohort:
    ads: dict[int, AdvertiseKeys]
    params: GraphParameters
    neighbours: tuple[int, ...]
    xs: ShareCoordinates


class SecAggClient:
    """One client's session for one round.

    Args:
        client_id: this client's roster id.
        identity: this client's long-term identity key (must match the roster).
        roster: the pinned, verified roster.
        context: the round context (its roster hash must be this roster's).
        rng: randomness for keys, seeds and shares (default: the OS CSPRNG).
        min_cohort: this data owner's own floor on the cohort size. The round
            context (and its ``min_clients``) comes from the coordinator; a
            coordinator running a round with the target and a few clients of its
            own would learn the target's input from the sum, so the owner's
            policy sets a floor the coordinator cannot lower.
        pinned_threat: this data owner's own secure-aggregation assumptions. The
            context's threat model sets the threshold and the consistency quorum;
            one that assumes fewer corrupt clients (or less statistical security)
            than the owner does is refused, so a coordinator cannot lower the
            threshold to unmask one client from two split views of the survivors.
        full_graph_only: refuse a context that does not force the full graph.

    Raises:
        ConfigError: the identity or roster does not match.
        ProtocolError: the context is weaker than ``pinned_threat`` or, with
            ``full_graph_only``, does not force the full graph.
    """

    def __init__(
        self,
        *,
        client_id: int,
        identity: IdentityKey,
        roster: Roster,
        context: RoundContext,
        rng: RandomSource | None = None,
        min_cohort: int = 0,
        pinned_threat: ThreatModel | None = None,
        full_graph_only: bool = False,
    ) -> None:
        if pinned_threat is not None and not context.params.threat.at_least(pinned_threat):
            raise ProtocolError(
                "the round context assumes fewer corrupt clients or less security than this "
                "owner does"
            )
        if full_graph_only and context.params.graph is not GraphKind.FULL:
            raise ProtocolError("this session must force the full graph")
        if client_id not in roster or roster.identity_key(client_id) != identity.public_key:
            raise ConfigError("this identity is not the roster's key for this client id")
        if context.roster_hash != roster.digest():
            raise ConfigError("the round context names a different roster")
        self.client_id = client_id
        self.context = context
        self.stage = ClientStage.NEW
        self._identity = identity
        self._roster = roster
        self._rng: RandomSource = rng or OsRandom()
        self._min_cohort = min_cohort
        self._digest = context.digest()
        self._enc_private: bytes | None = None
        self._mask_private: bytes | None = None
        self._self_seed: bytes | None = None
        self._advert: AdvertiseKeys | None = None
        self._cohort: _Cohort | None = None
        self._held: dict[int, tuple[int, int]] = {}  # owner -> (mask-key share, seed share)
        self._channels: dict[int, bytes] = {}  # neighbour -> X25519 secret of the share keys
        self._peers: frozenset[int] = frozenset()  # itself + neighbours whose shares it opened
        self._survivors: tuple[int, ...] = ()
        self._revealed: dict[int, SecretKind] = {}
        self.unverified_signers: tuple[int, ...] = ()
        """Signers in the last consistency bundle whose signature did not verify (set
        by :meth:`unmask`, also when it refuses): a corrupt client or a tampering
        server; not counted."""

    def __repr__(self) -> str:
        return f"SecAggClient(client_id={self.client_id}, stage={self.stage.value})"

    # -- helpers ---------------------------------------------------------------------------

    def _expect(self, stage: ClientStage) -> None:
        if self.stage is not stage:
            raise ProtocolError(f"unexpected message in stage {self.stage.value}")

    def _check_digest(self, digest: bytes) -> None:
        if digest != self._digest:
            raise ProtocolError("message belongs to another round context")

    def abort(self) -> None:
        """End the session and forget every secret."""
        self._wipe()
        self.stage = ClientStage.ABORTED

    @staticmethod
    def _secret(value: S | None) -> S:
        if value is None:
            raise ProtocolError("session state is missing (wiped or never set)")
        return value

    def _wipe(self) -> None:
        self._enc_private = self._mask_private = self._self_seed = None
        self._held = {}
        self._channels = {}

    # -- stage 0 ---------------------------------------------------------------------------

    def advertise(self) -> AdvertiseKeys:
        """Make two fresh X25519 key pairs and a self-mask seed; sign and advertise them."""
        self._expect(ClientStage.NEW)
        enc_private, enc_public = x25519_generate(self._rng)
        mask_private, mask_public = x25519_generate(self._rng)
        seed = self._rng.random_bytes(KEY_BYTES)
        commitment = derive.seed_commitment(self._digest, self.client_id, seed)
        signature = self._identity.sign(
            derive.advertise_payload(
                self._digest, self.client_id, enc_public, mask_public, commitment
            )
        )
        self._enc_private, self._mask_private, self._self_seed = enc_private, mask_private, seed
        self._advert = AdvertiseKeys(
            context_digest=self._digest,
            client_id=self.client_id,
            encryption_key=enc_public,
            mask_key=mask_public,
            seed_commitment=commitment,
            signature=signature,
        )
        self.stage = ClientStage.ADVERTISED
        return self._advert

    # -- stage 1 ---------------------------------------------------------------------------

    def _verify_cohort(self, cohort: CohortBroadcast) -> dict[int, AdvertiseKeys]:
        self._check_digest(cohort.context_digest)
        ads: dict[int, AdvertiseKeys] = {}
        for ad in cohort.advertisements:
            if ad.client_id in ads:
                raise ProtocolError("duplicate client in cohort")
            if ad.context_digest != self._digest:
                raise ProtocolError("advertisement belongs to another round context")
            identity = self._roster.identity_key(ad.client_id)  # ProtocolError if unknown
            if ad.encryption_key == ad.mask_key:
                raise ProtocolError("a client must advertise two distinct keys")
            ed25519_verify(
                identity,
                ad.signature,
                derive.advertise_payload(
                    self._digest, ad.client_id, ad.encryption_key, ad.mask_key, ad.seed_commitment
                ),
            )
            ads[ad.client_id] = ad
        if ads.get(self.client_id) != self._advert:
            raise ProtocolError("the cohort does not carry this client's advertisement")
        p = self.context.params
        if len(ads) < max(p.min_clients, self._min_cohort):
            raise InsufficientSharesError("cohort is smaller than the minimum cohort size")
        if len(ads) > p.max_clients:
            raise ProtocolError("cohort is larger than max_clients")
        return ads

    def share_keys(self, cohort: CohortBroadcast) -> ShareKeys:
        """Verify the cohort, derive the graph, and send encrypted shares to each neighbour.

        Raises:
            IntegrityError: an advertisement's signature does not verify.
            ProtocolError: the cohort is malformed, omits this client, or names a
                client that is not on the roster.
            InsufficientSharesError: the cohort is below the minimum size.
        """
        self._expect(ClientStage.ADVERTISED)
        ads = self._verify_cohort(cohort)
        params, graph, xs = cohort_layout(ads, self.context)
        neighbours = graph[self.client_id]
        holders = (self.client_id, *neighbours)
        enc_private = self._secret(self._enc_private)
        hx = [xs.x(self.client_id, h) for h in holders]
        key_shares, seed_shares = split_many(
            [self._secret(self._mask_private), self._secret(self._self_seed)],
            xs=hx,
            threshold=params.threshold,
            rng=self._rng,
        )
        channels: dict[int, bytes] = {}  # peer -> X25519 secret, reused for the reply direction
        ciphertexts = []
        for holder, x, ks, ss in zip(
            holders[1:], hx[1:], key_shares[1:], seed_shares[1:], strict=True
        ):
            channels[holder] = x25519_shared(enc_private, ads[holder].encryption_key)
            key, nonce = derive.share_channel_from_secret(
                channels[holder], self.context, sender=self.client_id, receiver=holder
            )
            plaintext = (
                self.client_id.to_bytes(4, "big")
                + holder.to_bytes(4, "big")
                + x.to_bytes(4, "big")
                + encode_share_value(ks)
                + encode_share_value(ss)
            )
            ad = derive.share_associated_data(self.context, sender=self.client_id, receiver=holder)
            ciphertexts.append((holder, aead_encrypt(key, nonce, plaintext, ad)))
        if params.kind is GraphKind.SPARSE:  # keep only the owners this client deals with
            xs = ShareCoordinates(graph, owners=holders)
        self._cohort = _Cohort(ads=ads, params=params, neighbours=neighbours, xs=xs)
        self._held = {self.client_id: (key_shares[0], seed_shares[0])}
        self._channels = channels
        self._enc_private = None  # every channel secret is derived; the key is not needed
        self.stage = ClientStage.SHARED
        return ShareKeys(
            context_digest=self._digest, sender=self.client_id, ciphertexts=tuple(ciphertexts)
        )

    # -- stage 2 ---------------------------------------------------------------------------

    def _open_shares(self, delivery: ShareDelivery) -> dict[int, tuple[int, int]]:
        cohort = self._secret(self._cohort)
        self._check_digest(delivery.context_digest)
        if delivery.receiver != self.client_id:
            raise ProtocolError("shares addressed to another client")
        allowed = set(cohort.neighbours)
        opened: dict[int, tuple[int, int]] = {}
        for sender, ciphertext in delivery.ciphertexts:
            if sender not in allowed or sender in opened:
                raise ProtocolError("shares from a client that is not a (single) neighbour")
            key, nonce = derive.share_channel_from_secret(
                self._channels[sender], self.context, sender=sender, receiver=self.client_id
            )
            ad = derive.share_associated_data(self.context, sender=sender, receiver=self.client_id)
            plaintext = aead_decrypt(key, nonce, ciphertext, ad)
            if len(plaintext) != SHARE_PLAINTEXT_BYTES:
                raise IntegrityError()
            owner = int.from_bytes(plaintext[0:4], "big")
            holder = int.from_bytes(plaintext[4:8], "big")
            x = int.from_bytes(plaintext[8:12], "big")
            if owner != sender or holder != self.client_id or x != cohort.xs.x(sender, holder):
                raise IntegrityError()
            try:
                opened[sender] = (
                    decode_share_value(plaintext[12:45]),
                    decode_share_value(plaintext[45:78]),
                )
            except ProtocolError:
                raise IntegrityError() from None
        if len(opened) + 1 < cohort.params.threshold:
            raise InsufficientSharesError("too few neighbours survived the share stage")
        return opened

    def masked_input(self, delivery: ShareDelivery, data: QuantizedInput) -> MaskedInput:
        """Check the shares received, then mask and send the quantised input.

        ``y = x + PRG(b_u) + sum_v sign(u, v) * PRG(s_uv) mod 2^b`` over the
        neighbours ``v`` that completed the share stage, with sign ``+1`` when
        ``u < v`` and ``-1`` otherwise (protocols/secagg.md §3.6).

        Raises:
            IntegrityError: a share ciphertext fails authentication or binding.
            ProtocolError: shares from a non-neighbour, or malformed input.
            InsufficientSharesError: fewer than ``t`` of this client's share
                holders survived.
        """
        self._expect(ClientStage.SHARED)
        if not isinstance(data, QuantizedInput):
            raise TypeError("masked_input takes a QuantizedInput")
        p = self.context.params
        if data.length != p.vector_length:
            raise ProtocolError("input length does not match the round's vector length")
        if data.values.dtype != np.uint64 or data.values.ndim != 1:
            raise ProtocolError("input values must be a 1-D uint64 vector")
        if data.spec is not None and data.spec != p.quantization:
            raise ProtocolError("the input was quantised for another range than the round's")
        limit = np.uint64(p.quantization.max_weight * p.quantization.levels)
        if data.values[:-1].size and int(data.values[:-1].max()) > int(limit):
            raise ProtocolError("input exceeds the quantisation range")
        if not 1 <= int(data.values[-1]) <= p.quantization.max_weight:
            raise ProtocolError("input weight is outside [1, max_weight]")
        opened = self._open_shares(delivery)
        cohort = self._secret(self._cohort)
        mask_private = self._secret(self._mask_private)
        bits = p.ring_bits
        dtype = ring_dtype(bits)
        count = p.vector_length + 1
        # Every pairwise seed is derived first, then the masks are expanded back to back.
        add: list[bytes] = [self._secret(self._self_seed)]
        subtract: list[bytes] = []
        for peer in sorted(opened):
            seed = derive.mask_seed(
                mask_private, cohort.ads[peer].mask_key, self.context, self.client_id, peer
            )
            (add if self.client_id < peer else subtract).append(seed)
        expander = MaskExpander(count, bits)
        masked: RingArray = data.values.astype(dtype)
        for seed in add:
            masked += expander.expand(seed)
        for seed in subtract:
            masked -= expander.expand(seed)
        if bits not in (32, 64):
            masked &= dtype((1 << bits) - 1)
        self._held.update(opened)
        self._peers = frozenset({self.client_id, *opened})
        # The masks are applied: the mask key, the self-mask seed and the share
        # channels are not needed again (their shares are what unmasking reveals).
        self._mask_private = self._self_seed = None
        self._channels = {}
        self.stage = ClientStage.MASKED
        return MaskedInput(
            context_digest=self._digest, sender=self.client_id, payload=pack(masked, bits)
        )

    # -- stage 3 ---------------------------------------------------------------------------

    def consistency(self, survivors: SurvivorList) -> ConsistencySignature:
        """Sign the survivor list U3 after checking it is plausible.

        Raises:
            ProtocolError: the list omits this client, names clients outside the
                cohort, or is unsorted / has duplicates.
            InsufficientSharesError: fewer than ``t`` of this client's share
                holders are listed.
        """
        self._expect(ClientStage.MASKED)
        self._check_digest(survivors.context_digest)
        cohort = self._secret(self._cohort)
        u3 = survivors.survivors
        if list(u3) != sorted(set(u3)):
            raise ProtocolError("survivor list must be sorted and without duplicates")
        if self.client_id not in u3:
            raise ProtocolError("survivor list omits this client")
        if not set(u3) <= set(cohort.ads):
            raise ProtocolError("survivor list names clients outside the cohort")
        # U3 must lie within this client's U2 view (Bonawitz et al. 2017, Fig. 4,
        # round 3): a listed neighbour whose shares it never received would not
        # have been masked against.
        if not (set(u3) & set(cohort.neighbours)) <= self._peers:
            raise ProtocolError("survivor list names a neighbour that never shared keys")
        # Count only the peers this client actually masked with: a server that
        # withheld some neighbours' shares must not get to exclude the rest.
        if len(self._peers & set(u3)) < cohort.params.threshold:
            raise InsufficientSharesError("too few of this client's mask peers survived")
        signature = self._identity.sign(
            derive.consistency_payload(derive.consistency_prefix(self._digest, u3), self.client_id)
        )
        self._survivors = tuple(u3)
        self.stage = ClientStage.SIGNED
        return ConsistencySignature(
            context_digest=self._digest, sender=self.client_id, signature=signature
        )

    # -- stage 4 ---------------------------------------------------------------------------

    def unmask(self, bundle: ConsistencyBundle) -> UnmaskShares:
        """Check the consistency signatures, then reveal one share per peer.

        For a peer in U3 the client reveals its share of that peer's self-mask
        seed; for a peer that shared keys but sent no input, its share of that
        peer's mask key. Never both, and only once.

        Only signatures that verify are counted (the server relays them
        unchecked, §6 step 5); the signers whose signature did not verify are
        kept in :attr:`unverified_signers` for the driver to report, whether or
        not the bundle is then accepted.

        Raises:
            ProtocolError: the bundle's list differs from the signed one, or a
                signer is not a survivor or appears twice.
            InsufficientSharesError: fewer than ``q`` clients of the cohort, or
                fewer than ``t`` of this client's share holders, signed with a
                signature that verifies.
        """
        self._expect(ClientStage.SIGNED)
        self._check_digest(bundle.context_digest)
        cohort = self._secret(self._cohort)
        if tuple(bundle.survivors) != self._survivors:
            raise ProtocolError("survivor list differs from the one this client signed")
        survivors = set(self._survivors)
        holders = self._peers
        prefix = derive.consistency_prefix(self._digest, self._survivors)
        listed: set[int] = set()
        signers: set[int] = set()  # those whose signature verifies
        for signer, signature in bundle.signatures:
            if signer not in survivors or signer in listed:
                raise ProtocolError("consistency signature from a non-survivor or twice")
            listed.add(signer)
            try:
                ed25519_verify(
                    self._roster.identity_key(signer),
                    signature,
                    derive.consistency_payload(prefix, signer),
                )
            except IntegrityError:
                continue
            signers.add(signer)
        # Diagnostics only (no protocol state): kept even when the checks below refuse.
        self.unverified_signers = tuple(sorted(listed - signers))
        unverified = len(self.unverified_signers)
        note = f" ({unverified} relayed signatures did not verify)" if unverified else ""
        # A global quorum on one list: two different lists cannot both gather it,
        # so a server cannot show different survivor lists to different parts of
        # the (sparse) graph and unmask several partial sums (protocols/secagg.md §5.2).
        quorum = consistency_quorum(len(cohort.ads), self.context.params.threat)
        if len(signers) < quorum:
            raise InsufficientSharesError("too few clients confirmed the survivor list" + note)
        if len(signers & holders) < cohort.params.threshold:
            raise InsufficientSharesError(
                "too few share holders confirmed the survivor list" + note
            )
        shares = []
        for owner in sorted(self._held):
            kind = SecretKind.SELF_SEED if owner in survivors else SecretKind.MASK_KEY
            previous = self._revealed.get(owner)
            if previous is not None and previous is not kind:
                raise ProtocolError("refusing to reveal both secrets of one client")
            key_share, seed_share = self._held[owner]
            value = seed_share if kind is SecretKind.SELF_SEED else key_share
            x = cohort.xs.x(owner, self.client_id)
            shares.append(UnmaskShare(owner=owner, kind=kind, x=x, value=encode_share_value(value)))
        for s in shares:
            self._revealed[s.owner] = s.kind
        self._wipe()
        self.stage = ClientStage.DONE
        return UnmaskShares(
            context_digest=self._digest, sender=self.client_id, shares=tuple(shares)
        )
