"""The server's side of one secure-aggregation round: a sans-I/O state machine.

(protocols/secagg.md §7.) The server relays messages, closes stages when its
driver says so (deadlines live in the driver, not here), and finally removes
the masks. It accepts client updates only as :class:`MaskedInput`; anything
else raises :class:`UnprotectedUpdateError`. It keeps a running masked sum and
never holds more than one client's full-length vector at a time, so its memory
is O(M + n * k).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from securefed.errors import (
    InsufficientSharesError,
    IntegrityError,
    ProtocolError,
    UnprotectedUpdateError,
)
from securefed.secagg import derive
from securefed.secagg.cohort import ShareCoordinates, cohort_layout
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import GraphParameters, consistency_quorum
from securefed.secagg.messages import (
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    SecretKind,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
)
from securefed.secagg.packing import PackedSum
from securefed.secagg.primitives import (
    SIGNATURE_BYTES,
    MaskExpander,
    RingArray,
    ct_equal,
    ed25519_verify,
    ring_dtype,
    x25519_public,
    x25519_usable,
)
from securefed.secagg.roster import Roster
from securefed.secagg.shamir import correct, decode_share_value, lagrange_at_zero, reconstruct

__all__ = ["AggregateResult", "SecAggServer", "ServerStage"]


class ServerStage(enum.Enum):
    """Where the server session is."""

    ADVERTISE = "advertise"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateResult:
    """The unmasked sum of the surviving clients' quantised inputs.

    Attributes:
        total: ``M + 1`` ring elements: the summed weighted inputs, then the summed weight.
        survivors: U3, the clients whose inputs are in the sum.
        dropped: per stage, the clients that dropped there.
        graph: the graph parameters the round used.
        inconsistent_shares: ``(owner, holder)`` pairs whose revealed share lay off
            the polynomial the server decoded when a first-``t`` reconstruction
            failed its check (§3.5, §7 step 5). A lead, not proof: with at most
            ``(m - t) // 2`` wrong shares each named holder revealed a wrong value
            or was dealt one; a larger coalition can get honest holders named.
            Wrong shares outside a successful first ``t`` are not looked for, and
            a named holder's shares are left out of later first-``t`` attempts, so
            it is typically named for one owner only.
    """

    total: RingArray = field(repr=False)
    survivors: tuple[int, ...]
    dropped: dict[str, tuple[int, ...]]
    graph: GraphParameters
    inconsistent_shares: tuple[tuple[int, int], ...] = ()


def _require_masked(update: object) -> MaskedInput:
    if not isinstance(update, MaskedInput):
        raise UnprotectedUpdateError(
            "the server aggregates only protected updates (MaskedInput); got "
            f"{type(update).__name__}"
        )
    return update


class SecAggServer:
    """The coordinator's session for one round.

    Args:
        roster: the roster the clients pin.
        context: the round context (its roster hash must match).
    """

    def __init__(self, *, roster: Roster, context: RoundContext) -> None:
        if context.roster_hash != roster.digest():
            raise ProtocolError("the round context names a different roster")
        self.context = context
        self.stage = ServerStage.ADVERTISE
        self._roster = roster
        self._digest = context.digest()
        self._ads: dict[int, AdvertiseKeys] = {}
        self._graph: GraphParameters | None = None
        self._neighbours: dict[int, tuple[int, ...]] = {}
        self._xs: ShareCoordinates | None = None
        self._shares_in: dict[int, ShareKeys] = {}
        self._neighbour_sets: dict[int, frozenset[int]] = {}
        self._u2: tuple[int, ...] = ()
        self._u2_set: frozenset[int] = frozenset()
        self._u3: tuple[int, ...] = ()
        self._u3_set: frozenset[int] = frozenset()
        self._u4: dict[int, bytes] = {}
        self._unmask_from: set[int] = set()
        self._sum: PackedSum | None = None
        self._received: set[int] = set()
        self._points: dict[int, list[tuple[int, int, int]]] = {}  # owner -> (x, y, holder)

    def __repr__(self) -> str:
        return f"SecAggServer(round={self.context.round_id}, stage={self.stage.value})"

    def _expect(self, stage: ServerStage) -> None:
        if self.stage is not stage:
            raise ProtocolError(f"unexpected message in stage {self.stage.value}")

    def _check(self, digest: bytes) -> None:
        if digest != self._digest:
            raise ProtocolError("message belongs to another round context")

    def _layout(self) -> GraphParameters:
        if self._graph is None:
            raise ProtocolError("the cohort is not fixed yet")
        return self._graph

    def _abort(self, reason: str) -> InsufficientSharesError:
        self.stage = ServerStage.ABORTED
        self._sum = None
        self._points = {}
        return InsufficientSharesError(f"round aborted: {reason}")

    # -- stage 0 ---------------------------------------------------------------------------

    def receive_advertisement(self, message: AdvertiseKeys) -> None:
        """Accept one client's signed key advertisement.

        Raises:
            ProtocolError: wrong stage or round, unknown or duplicate client.
            IntegrityError: the signature does not verify under the roster key.
        """
        self._expect(ServerStage.ADVERTISE)
        self._check(message.context_digest)
        if message.client_id in self._ads:
            raise ProtocolError("duplicate advertisement")
        if message.encryption_key == message.mask_key:
            raise ProtocolError("a client must advertise two distinct keys")
        if not (x25519_usable(message.encryption_key) and x25519_usable(message.mask_key)):
            raise ProtocolError("an advertised key is a low-order point")
        ed25519_verify(
            self._roster.identity_key(message.client_id),
            message.signature,
            derive.advertise_payload(
                self._digest,
                message.client_id,
                message.encryption_key,
                message.mask_key,
                message.seed_commitment,
            ),
        )
        if len(self._ads) >= self.context.params.max_clients:
            raise ProtocolError("cohort is full")
        self._ads[message.client_id] = message

    def close_advertise(self) -> CohortBroadcast:
        """Fix the cohort U1 and broadcast it.

        Raises:
            InsufficientSharesError: fewer than ``min_clients`` advertised (the round aborts).
        """
        self._expect(ServerStage.ADVERTISE)
        if len(self._ads) < self.context.params.min_clients:
            raise self._abort("too few clients advertised keys")
        self._graph, self._neighbours, self._xs = cohort_layout(self._ads, self.context)
        self._neighbour_sets = {u: frozenset(v) for u, v in self._neighbours.items()}
        self.stage = ServerStage.SHARE_KEYS
        return CohortBroadcast(
            context_digest=self._digest,
            advertisements=tuple(self._ads[i] for i in sorted(self._ads)),
        )

    # -- stage 1 ---------------------------------------------------------------------------

    def receive_share_keys(self, message: ShareKeys) -> None:
        """Accept one client's encrypted shares (one ciphertext per neighbour)."""
        self._expect(ServerStage.SHARE_KEYS)
        self._check(message.context_digest)
        if message.sender not in self._ads or message.sender in self._shares_in:
            raise ProtocolError("shares from a client outside the cohort, or twice")
        receivers = [r for r, _ in message.ciphertexts]
        if sorted(receivers) != list(self._neighbours[message.sender]):
            raise ProtocolError("shares must go to exactly the sender's neighbours")
        self._shares_in[message.sender] = message

    def close_share_keys(self) -> dict[int, ShareDelivery]:
        """Fix U2 and route each ciphertext to its receiver.

        Raises:
            InsufficientSharesError: fewer than ``t`` clients shared keys.
        """
        self._expect(ServerStage.SHARE_KEYS)
        graph = self._layout()
        if len(self._shares_in) < graph.threshold:
            raise self._abort("too few clients shared keys")
        self._u2 = tuple(sorted(self._shares_in))
        self._u2_set = frozenset(self._u2)
        inbox: dict[int, list[tuple[int, bytes]]] = {u: [] for u in self._u2}
        for sender in self._u2:
            for receiver, ciphertext in self._shares_in[sender].ciphertexts:
                if receiver in inbox:
                    inbox[receiver].append((sender, ciphertext))
        self._shares_in = {}
        p = self.context.params
        self._sum = PackedSum(p.ring_bits, p.vector_length + 1)
        self.stage = ServerStage.MASKED_INPUT
        return {
            u: ShareDelivery(context_digest=self._digest, receiver=u, ciphertexts=tuple(cts))
            for u, cts in inbox.items()
        }

    # -- stage 2 ---------------------------------------------------------------------------

    def receive_masked_input(self, update: object) -> None:
        """Add one client's masked input to the running sum.

        Raises:
            UnprotectedUpdateError: ``update`` is not a :class:`MaskedInput`.
            ProtocolError: wrong stage or round, sender not in U2, duplicate,
                or a payload of the wrong size.
        """
        message = _require_masked(update)
        self._expect(ServerStage.MASKED_INPUT)
        self._check(message.context_digest)
        if message.sender not in self._u2 or message.sender in self._received:
            raise ProtocolError("masked input from a client outside U2, or twice")
        if self._sum is None:
            raise ProtocolError("the masked-input stage is not open")
        self._sum.add(message.payload)  # length and padding checked before adding
        self._received.add(message.sender)

    def close_masked_input(self) -> SurvivorList:
        """Fix U3 (the clients whose inputs are in the sum) and announce it.

        Raises:
            InsufficientSharesError: fewer than ``t`` masked inputs arrived.
        """
        self._expect(ServerStage.MASKED_INPUT)
        if len(self._received) < self._layout().threshold:
            raise self._abort("too few masked inputs")
        self._u3 = tuple(sorted(self._received))
        self._u3_set = frozenset(self._u3)
        self.stage = ServerStage.CONSISTENCY
        return SurvivorList(context_digest=self._digest, survivors=self._u3)

    # -- stage 3 ---------------------------------------------------------------------------

    def receive_consistency(self, message: ConsistencySignature) -> None:
        """Accept one survivor's signature over U3, to relay.

        The server does not verify it (§7 step 4): the signatures protect the
        clients against the server, each client verifies every one it is sent
        and counts only those that verify (§6 step 5), so a check here would
        protect nobody and cost one Ed25519 verification per survivor.

        Raises:
            ProtocolError: wrong stage or round, a sender outside U3, twice, or a
                signature that is not 64 bytes.
        """
        self._expect(ServerStage.CONSISTENCY)
        self._check(message.context_digest)
        if message.sender not in self._u3_set or message.sender in self._u4:
            raise ProtocolError("consistency signature from a non-survivor, or twice")
        if len(message.signature) != SIGNATURE_BYTES:
            raise ProtocolError("a consistency signature is 64 bytes")
        self._u4[message.sender] = message.signature

    def close_consistency(self) -> ConsistencyBundle:
        """Send U3 with the collected signatures (U4 = their senders).

        Raises:
            InsufficientSharesError: fewer than ``max(t, q)`` survivors sent one.
        """
        self._expect(ServerStage.CONSISTENCY)
        quorum = consistency_quorum(len(self._ads), self.context.params.threat)
        if len(self._u4) < max(self._layout().threshold, quorum):
            raise self._abort("too few survivors confirmed the survivor list")
        self.stage = ServerStage.UNMASK
        return ConsistencyBundle(
            context_digest=self._digest,
            survivors=self._u3,
            signatures=tuple(sorted(self._u4.items())),
        )

    # -- stage 4 ---------------------------------------------------------------------------

    def receive_unmask(self, message: UnmaskShares) -> None:
        """Accept one client's revealed shares (checked for kind, holder and x)."""
        self._expect(ServerStage.UNMASK)
        self._check(message.context_digest)
        sender = message.sender
        if sender not in self._u4 or sender in self._unmask_from:
            raise ProtocolError("unmask shares from a client outside U4, or twice")
        survivors = self._u3_set
        u2 = self._u2_set
        holders = self._neighbour_sets
        xs = self._xs
        if xs is None:
            raise ProtocolError("the cohort is not fixed yet")
        # The per-share loop runs n * k times a round: keep it to set and dict lookups.
        fixed_x = xs.same_for_every_owner(sender)
        self_seed, mask_key = SecretKind.SELF_SEED, SecretKind.MASK_KEY
        accepted: list[tuple[int, int, int]] = []
        seen: set[int] = set()
        for owner, kind, share_x, value in message.shares:
            if owner in seen or owner not in u2:
                raise ProtocolError("share for an unknown owner, or twice")
            seen.add(owner)
            if owner != sender and sender not in holders[owner]:
                raise ProtocolError("share from a client that is not the owner's holder")
            if kind is not (self_seed if owner in survivors else mask_key):
                raise ProtocolError("share of the wrong secret kind")
            x = fixed_x if fixed_x is not None else xs.x(owner, sender)
            if share_x != x:
                raise ProtocolError("share at the wrong x-coordinate")
            accepted.append((owner, x, decode_share_value(value)))
        for owner, x, y in accepted:
            self._points.setdefault(owner, []).append((x, y, sender))
        self._unmask_from.add(sender)

    def finalize(self) -> AggregateResult:
        """Reconstruct the secrets, remove every mask, and return the survivors' sum.

        Raises:
            InsufficientSharesError: some secret has fewer than ``t`` shares (abort).
            IntegrityError: a reconstructed secret does not match its signed
                public key or commitment (a bad share).
        """
        self._expect(ServerStage.UNMASK)
        graph = self._layout()
        t = graph.threshold
        needed = set(self._u2)
        if any(len(self._points.get(owner, ())) < t for owner in needed):
            raise self._abort("too few shares to unmask")
        if self._sum is None:
            raise ProtocolError("the masked-input stage never opened")
        p = self.context.params
        bits = p.ring_bits
        count = p.vector_length + 1
        coefficient_cache: dict[tuple[int, ...], list[int]] = {}
        inconsistent: list[tuple[int, int]] = []

        # Holders whose shares were off a decoded polynomial: later secrets are first
        # reconstructed without them, so one lying holder costs one decode, not one
        # per owner it holds. Every secret is still checked, so a wrongly suspected
        # holder costs at most a decode.
        suspects: set[int] = set()

        def recover(owner: int, valid: Callable[[bytes], bool]) -> bytes:
            shares = sorted(self._points[owner])  # by x
            trusted = [s for s in shares if s[2] not in suspects]
            first = [(x, y) for x, y, _ in (trusted if len(trusted) >= t else shares)[:t]]
            xs = tuple(x for x, _ in first)
            lam = coefficient_cache.get(xs)
            if lam is None:
                lam = coefficient_cache[xs] = lagrange_at_zero(xs)
            try:
                secret = reconstruct(first, threshold=t, coefficients=lam)
                if valid(secret):
                    return secret
            except ProtocolError:
                pass
            if len(shares) > t:  # redundant shares: decode around the wrong ones
                try:
                    secret, wrong = correct([(x, y) for x, y, _ in shares], threshold=t)
                except ProtocolError:
                    raise IntegrityError() from None
                if valid(secret):
                    holder_at = {x: holder for x, _, holder in shares}
                    named = [holder_at[x] for x in wrong]
                    inconsistent.extend((owner, holder) for holder in named)
                    suspects.update(named)
                    return secret
            raise IntegrityError()

        try:
            total = self._unmask(self._sum, recover, count, bits)
        except IntegrityError:
            self._abort("a reconstructed secret failed its check")
            raise
        u1 = set(self._ads)
        survivors = self._u3_set
        dropped = {
            "share_keys": tuple(sorted(u1 - self._u2_set)),
            "masked_input": tuple(sorted(self._u2_set - survivors)),
            "consistency": tuple(sorted(survivors - set(self._u4))),
            "unmask": tuple(sorted(set(self._u4) - self._unmask_from)),
        }
        self._sum = None
        self._points = {}
        self.stage = ServerStage.DONE
        return AggregateResult(
            total=total,
            survivors=self._u3,
            dropped=dropped,
            graph=graph,
            inconsistent_shares=tuple(sorted(inconsistent)),
        )

    def _matches_commitment(self, owner: int) -> Callable[[bytes], bool]:
        """Whether a self-mask seed matches ``owner``'s signed commitment."""
        commitment = self._ads[owner].seed_commitment

        def valid(seed: bytes) -> bool:
            return ct_equal(derive.seed_commitment(self._digest, owner, seed), commitment)

        return valid

    def _matches_mask_key(self, owner: int) -> Callable[[bytes], bool]:
        """Whether a mask private key matches ``owner``'s signed mask public key."""
        mask_key = self._ads[owner].mask_key

        def valid(raw: bytes) -> bool:
            return ct_equal(x25519_public(raw), mask_key)

        return valid

    def _unmask(
        self,
        masked_sum: PackedSum,
        recover: Callable[[int, Callable[[bytes], bool]], bytes],
        count: int,
        bits: int,
    ) -> RingArray:
        """Take every self mask and every mask shared with a dropped client off the sum (§3.6).

        ``recover(owner, valid)`` returns the owner's secret that ``valid`` accepts
        (its signed commitment or public key) or raises :class:`IntegrityError`.
        """
        survivors = self._u3_set
        # Every secret is recovered and checked, and every seed derived, before the
        # first expansion: a bad share aborts the round before any mask work, and the
        # expansions then run back to back.
        subtract = [recover(owner, self._matches_commitment(owner)) for owner in self._u3]
        add: list[bytes] = []
        for owner in self._u2:
            if owner in survivors:
                continue
            private = recover(owner, self._matches_mask_key(owner))
            for peer in self._neighbours[owner]:
                if peer not in survivors:
                    continue
                seed = derive.mask_seed(
                    private, self._ads[peer].mask_key, self.context, owner, peer
                )
                # peer added +PRG when peer < owner, -PRG otherwise; undo it.
                (subtract if peer < owner else add).append(seed)
        total = masked_sum.total()
        expander = MaskExpander(count, bits)
        for seed in subtract:
            total -= expander.expand(seed)
        for seed in add:
            total += expander.expand(seed)
        if bits not in (32, 64):
            total &= ring_dtype(bits)((1 << bits) - 1)
        return total
