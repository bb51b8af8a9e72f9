"""Secure aggregation (Bonawitz et al. 2017 with the SecAgg+ graph of Bell et al. 2020).

Sans-I/O: the client and server sessions are pure state machines over messages;
transports and runtimes drive them. Specification: ``protocols/secagg.md``.

This package namespace deliberately does not import the client session
(:mod:`securefed.secagg.client`) or the plaintext quantised input
(:mod:`securefed.secagg.client_input`): importing the server side must never load
a plaintext update type. Import those modules by their full names.
"""

from __future__ import annotations

from securefed.secagg.context import PROTOCOL_VERSION, RoundContext, SecAggParams, model_digest
from securefed.secagg.graph import GraphKind, GraphParameters, ThreatModel, choose_parameters
from securefed.secagg.messages import MaskedInput
from securefed.secagg.quantize import QuantizationSpec, dequantize
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry, SignedRoster
from securefed.secagg.server import AggregateResult, SecAggServer, ServerStage

__all__ = [
    "PROTOCOL_VERSION",
    "AggregateResult",
    "GraphKind",
    "GraphParameters",
    "IdentityKey",
    "MaskedInput",
    "QuantizationSpec",
    "Roster",
    "RosterEntry",
    "RoundContext",
    "SecAggParams",
    "SecAggServer",
    "ServerStage",
    "SignedRoster",
    "ThreatModel",
    "choose_parameters",
    "dequantize",
    "model_digest",
]
