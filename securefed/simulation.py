"""A whole secure-aggregation round in one process, through the real client and server code.

The driver plays the network: every message is encoded to bytes and decoded by
its receiver, so the simulation exercises the wire format a deployment uses.
Dropouts are scheduled per stage; CPU time and bytes are counted per party,
and each party's CPU time includes decoding what it receives and encoding what
it sends (the server encodes a broadcast once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from securefed.errors import InsufficientSharesError, ProtocolError, SecurefedError
from securefed.randomness import RandomSource
from securefed.secagg.client import SecAggClient
from securefed.secagg.client_input import QuantizedInput
from securefed.secagg.context import RoundContext
from securefed.secagg.graph import ThreatModel
from securefed.secagg.messages import (
    AdvertiseKeys,
    CohortBroadcast,
    ConsistencyBundle,
    ConsistencySignature,
    MaskedInput,
    Message,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskShares,
)
from securefed.secagg.roster import IdentityKey, Roster
from securefed.secagg.server import AggregateResult, SecAggServer

__all__ = ["STAGES", "RoundReport", "run_secagg_round"]

STAGES = ("advertise", "share_keys", "masked_input", "consistency", "unmask")
"""Stage names for dropout schedules: a client listed under a stage sends nothing from then on."""

M = TypeVar("M", bound=Message)
T = TypeVar("T")
Received = tuple[type[Message], bytes] | None


@dataclass(slots=True, kw_only=True)
class RoundReport:
    """What happened in one simulated round."""

    result: AggregateResult | None
    error: SecurefedError | None = None
    client_errors: dict[int, SecurefedError] = field(default_factory=dict)
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    bytes_up: dict[int, int] = field(default_factory=dict)
    payload_bytes: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    server_view: dict[int, bytes] = field(default_factory=dict, repr=False)
    unverified_signers: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Per client, the signers in the consistency bundle whose signature did not
    verify for it (relayed unchecked by the server; not counted by the client)."""


def run_secagg_round(
    *,
    roster: Roster,
    identities: Mapping[int, IdentityKey],
    context: RoundContext,
    inputs: Mapping[int, QuantizedInput],
    drops: Mapping[str, Collection[int]] | None = None,
    rng_for: Callable[[int], RandomSource] | None = None,
    keep_server_view: bool = False,
    min_cohort: Mapping[int, int] | None = None,
    pinned_threat: Mapping[int, ThreatModel] | None = None,
    full_graph_only: bool = False,
) -> RoundReport:
    """Run one round with the given clients, inputs and dropout schedule.

    Args:
        roster: the pinned roster.
        identities: identity key of every participating client.
        context: the round context.
        inputs: each client's quantised input.
        drops: stage name -> clients that drop just before sending that stage's message.
        rng_for: per-client randomness (default: each session's OS CSPRNG).
        keep_server_view: keep each masked payload as the server received it (for tests).
        min_cohort: each client's own floor on the cohort size (default none).
        pinned_threat: each client's own secure-aggregation assumptions (a client
            whose context is weaker refuses the round and takes no part).
        full_graph_only: every client refuses a context that does not force the full graph.
    """
    schedule = {stage: set(drops.get(stage, ())) if drops else set() for stage in STAGES}
    unknown = set(drops or {}) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages in dropout schedule: {sorted(unknown)}")
    report = RoundReport(result=None)
    server = SecAggServer(roster=roster, context=context)
    clients: dict[int, SecAggClient] = {}
    for cid in sorted(inputs):
        report.client_seconds[cid] = 0.0
        report.bytes_up[cid] = report.bytes_down[cid] = 0
        try:
            clients[cid] = SecAggClient(
                client_id=cid,
                identity=identities[cid],
                roster=roster,
                context=context,
                rng=rng_for(cid) if rng_for else None,
                min_cohort=(min_cohort or {}).get(cid, 0),
                pinned_threat=(pinned_threat or {}).get(cid),
                full_graph_only=full_graph_only,
            )
        except ProtocolError as exc:  # the client refuses the context: it never advertises
            report.client_errors[cid] = exc
    alive = set(clients)

    def on_client(
        cid: int, action: Callable[..., Message], *args: object, received: Received = None
    ) -> bytes | None:
        # A client pays for decoding what it receives and encoding what it sends. Only
        # the protocol step's own errors end the client: the honest server's bytes
        # must decode and the client's message must encode, so a failure there is a
        # codec bug and is raised, as before the codec was timed.
        start = time.process_time()
        try:
            down = () if received is None else (received[0].from_bytes(received[1]),)
            try:
                message = action(*down, *args)
            except SecurefedError as exc:
                clients[cid].abort()
                report.client_errors[cid] = exc
                alive.discard(cid)
                return None
            encoded = message.to_bytes()
        finally:
            report.client_seconds[cid] += time.process_time() - start
        report.bytes_up[cid] += len(encoded)
        return encoded

    def on_server(action: Callable[..., T], *args: object) -> T:
        start = time.process_time()
        try:
            return action(*args)
        finally:
            report.server_seconds += time.process_time() - start

    def deliver(cid: int, data: bytes) -> bytes:
        report.bytes_down[cid] += len(data)
        return data

    def stage_senders(stage: str) -> list[int]:
        alive.difference_update(schedule[stage])
        return sorted(alive)

    def receive(handler: Callable[[M], None], kind: type[M], data: bytes) -> None:
        handler(kind.from_bytes(data))

    try:
        for cid in stage_senders("advertise"):
            data = on_client(cid, clients[cid].advertise)
            if data is not None:
                on_server(receive, server.receive_advertisement, AdvertiseKeys, data)
        # The server encodes each message it sends once, a broadcast too.
        cohort = on_server(lambda: server.close_advertise().to_bytes())

        for cid in stage_senders("share_keys"):
            down: Received = (CohortBroadcast, deliver(cid, cohort))
            data = on_client(cid, clients[cid].share_keys, received=down)
            if data is not None:
                on_server(receive, server.receive_share_keys, ShareKeys, data)
        deliveries = on_server(
            lambda: {u: d.to_bytes() for u, d in server.close_share_keys().items()}
        )

        for cid in stage_senders("masked_input"):
            if cid not in deliveries:
                continue
            down = (ShareDelivery, deliver(cid, deliveries[cid]))
            data = on_client(cid, clients[cid].masked_input, inputs[cid], received=down)
            if data is not None:
                masked = MaskedInput.from_bytes(data)
                report.payload_bytes[cid] = len(masked.payload)
                if keep_server_view:
                    report.server_view[cid] = bytes(masked.payload)
                on_server(receive, server.receive_masked_input, MaskedInput, data)
        survivors = on_server(server.close_masked_input)
        survivors_sent = on_server(survivors.to_bytes)

        for cid in stage_senders("consistency"):
            if cid not in survivors.survivors:
                continue
            down = (SurvivorList, deliver(cid, survivors_sent))
            data = on_client(cid, clients[cid].consistency, received=down)
            if data is not None:
                on_server(receive, server.receive_consistency, ConsistencySignature, data)
        bundle = on_server(server.close_consistency)
        bundle_sent = on_server(bundle.to_bytes)

        signers = {s for s, _ in bundle.signatures}
        for cid in stage_senders("unmask"):
            if cid not in signers:
                continue
            down = (ConsistencyBundle, deliver(cid, bundle_sent))
            data = on_client(cid, clients[cid].unmask, received=down)
            if clients[cid].unverified_signers:
                report.unverified_signers[cid] = clients[cid].unverified_signers
            if data is not None:
                on_server(receive, server.receive_unmask, UnmaskShares, data)
        report.result = on_server(server.finalize)
    except InsufficientSharesError as exc:
        report.error = exc
        for client in clients.values():
            client.abort()
    return report
