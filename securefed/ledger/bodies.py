"""Typed body schemas of every entry kind, with builders (protocols/ledger.md §5).

A body is a canonical JSON object (:mod:`securefed.ledger.canonical`): numbers
are decimal strings, digests and keys lower-case hex, sets of ids strictly
increasing lists. Each kind has a fixed set of fields; a missing required field,
an unknown field or a value outside its type is refused, both when a body is
appended and when a ledger is verified. The builders below are the intended way
to make bodies; :func:`validate_body` is the check both sides run.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from securefed.errors import DataError
from securefed.ledger.canonical import (
    Body,
    CanonicalValue,
    decimal_text,
    parse_decimal,
    parse_uint,
    uint_text,
)
from securefed.ledger.entry import EntryKind
from securefed.privacy.events import ClientGaussianEvent, DpSgdEvent, PrivacyUnit

__all__ = [
    "SCHEMAS",
    "BudgetScope",
    "Field",
    "FieldType",
    "Mechanism",
    "ProtectionMode",
    "aggregate_released_body",
    "budget_exhausted_body",
    "client_gaussian_event",
    "dp_sgd_event",
    "dropouts_body",
    "federation_created_body",
    "federation_spend_body",
    "mechanism_body",
    "round_planned_body",
    "spend_body",
    "validate_body",
]

MAX_TEXT_CHARS = 4096
"""Longest free-text field (names, versions, stages, reasons)."""
_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{128}")


class ProtectionMode(Enum):
    """How updates were protected in a round (recorded in ROUND_PLANNED)."""

    SECAGG = "secagg"
    HE = "he"


class BudgetScope(Enum):
    """Whose budget a BUDGET_EXHAUSTED entry is about."""

    OWNER = "owner"
    FEDERATION = "federation"


class Mechanism(Enum):
    """Mechanism type of MECHANISM and SPEND entries; a new mechanism gets a new value."""

    DP_SGD = "dp_sgd"
    """Poisson-sampled Gaussian, self-composed ``steps`` times (:class:`DpSgdEvent`)."""
    CLIENT_GAUSSIAN = "client_gaussian"
    """Client-level Gaussian noise added by the server to the unmasked sum of clipped
    updates, under Poisson cohort sampling (:class:`ClientGaussianEvent`); trusts the server."""


class FieldType(Enum):
    """The type of one body field (protocols/ledger.md §5)."""

    UINT = "uint"
    """Decimal string of an integer in [0, 2^64 - 1]."""
    DECIMAL = "decimal"
    """Decimal string of a finite real (§3.3)."""
    TEXT = "text"
    """A string of 1 to ``MAX_TEXT_CHARS`` characters."""
    HEX32 = "hex32"
    """32 bytes (a digest or an Ed25519 public key) as 64 lower-case hex digits."""
    HEX64 = "hex64"
    """64 bytes (an Ed25519 signature) as 128 lower-case hex digits."""
    UINT_SET = "uint_set"
    """An array of UINT strings, strictly increasing (a set of ids)."""
    OBJECT = "object"
    """Any canonical JSON object."""
    CHOICE = "choice"
    """One of a fixed set of strings."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a body schema."""

    type: FieldType
    required: bool = True
    choices: frozenset[str] = frozenset()


def _choice(enum: type[Enum]) -> Field:
    return Field(FieldType.CHOICE, choices=frozenset(str(m.value) for m in enum))


_UINT = Field(FieldType.UINT)
_DECIMAL = Field(FieldType.DECIMAL)
_TEXT = Field(FieldType.TEXT)
_HASH = Field(FieldType.HEX32)
_SET = Field(FieldType.UINT_SET)
_OBJECT = Field(FieldType.OBJECT)
_DP_SGD: dict[str, Field] = {
    "mechanism": _choice(Mechanism),
    "unit": _choice(PrivacyUnit),
    "sampling_rate": _DECIMAL,
    "noise_multiplier": _DECIMAL,
    "steps": _UINT,
}

SCHEMAS: Mapping[EntryKind, Mapping[str, Field]] = {
    EntryKind.FEDERATION_CREATED: {
        "ledger_id": _HASH,
        "writer_key": _HASH,
        "federation_id": _TEXT,
        "securefed_version": _TEXT,
        "roster_hash": _HASH,
        "protocol_versions": _OBJECT,
        "config": _OBJECT,
    },
    EntryKind.ROUND_PLANNED: {
        "round_id": _UINT,
        "cohort": _SET,
        "sampling_rate": _DECIMAL,
        "protection": _choice(ProtectionMode),
        "plan_hash": _HASH,
        "accepted": _SET,
        "plan": Field(FieldType.OBJECT, required=False),
    },
    EntryKind.MECHANISM: {"round_id": _UINT, **_DP_SGD, "clip_norm": _DECIMAL},
    EntryKind.SPEND: {
        "owner_id": _UINT,
        "round_id": _UINT,
        **_DP_SGD,
        "delta": _DECIMAL,
        "epsilon_after": _DECIMAL,
    },
    EntryKind.DROPOUTS: {"round_id": _UINT, "stage": _TEXT, "dropped": _SET},
    EntryKind.AGGREGATE_RELEASED: {
        "round_id": _UINT,
        "aggregate_hash": _HASH,
        "model_hash": _HASH,
    },
    EntryKind.BUDGET_EXHAUSTED: {
        "round_id": _UINT,
        "scope": _choice(BudgetScope),
        "owner_id": Field(FieldType.UINT, required=False),
        "epsilon_spent": _DECIMAL,
        "epsilon_budget": _DECIMAL,
        "delta": _DECIMAL,
    },
    EntryKind.KEY_ROTATION: {"new_key": _HASH},
    EntryKind.COUNTERSIGNATURE: {
        "entry_seq": _UINT,
        "entry_hash": _HASH,
        "owner_id": _UINT,
        "owner_key": _HASH,
        "signature": Field(FieldType.HEX64),
    },
    EntryKind.SEAL: {"reason": Field(FieldType.TEXT, required=False)},
    EntryKind.FEDERATION_SPEND: {
        "round_id": _UINT,
        "mechanism": _choice(Mechanism),
        "unit": _choice(PrivacyUnit),
        "sampling_rate": _DECIMAL,
        "noise_multiplier": _DECIMAL,
        "steps": _UINT,
        "sensitivity": _DECIMAL,
        "delta": _DECIMAL,
        "epsilon_after": _DECIMAL,
    },
}


def _check_field(name: str, spec: Field, value: CanonicalValue) -> None:
    kind = spec.type
    if kind is FieldType.UINT or kind is FieldType.DECIMAL:
        try:
            parse_uint(value) if kind is FieldType.UINT else parse_decimal(value)
        except DataError as exc:
            raise DataError(f"{name}: {exc}") from None
    elif kind is FieldType.TEXT:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CHARS:
            raise DataError(f"{name}: expected text of 1 to {MAX_TEXT_CHARS} characters")
    elif kind is FieldType.HEX32 or kind is FieldType.HEX64:
        pattern = _HEX32 if kind is FieldType.HEX32 else _HEX64
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise DataError(f"{name}: expected lower-case hex ({kind.value})")
    elif kind is FieldType.UINT_SET:
        if not isinstance(value, list):
            raise DataError(f"{name}: expected an array of ids")
        try:
            ids = [parse_uint(item) for item in value]
        except DataError as exc:
            raise DataError(f"{name}: {exc}") from None
        if any(a >= b for a, b in itertools.pairwise(ids)):
            raise DataError(f"{name}: ids must be strictly increasing")
    elif kind is FieldType.OBJECT:
        if not isinstance(value, dict):
            raise DataError(f"{name}: expected an object")
    elif kind is FieldType.CHOICE and (not isinstance(value, str) or value not in spec.choices):
        raise DataError(f"{name}: expected one of {sorted(spec.choices)}")


def validate_body(kind: EntryKind, body: Body) -> None:
    """Check ``body`` against the schema of ``kind`` (protocols/ledger.md §5).

    Raises:
        DataError: a required field is missing, a field is unknown or ill-typed,
            or a cross-field rule fails.
    """
    schema = SCHEMAS[kind]
    unknown = set(body) - set(schema)
    if unknown:
        raise DataError(f"{kind.wire_name}: unknown fields {sorted(unknown)}")
    for name, spec in schema.items():
        if name in body:
            _check_field(name, spec, body[name])
        elif spec.required:
            raise DataError(f"{kind.wire_name}: missing field {name!r}")
    if kind is EntryKind.BUDGET_EXHAUSTED:
        owner_scope = body["scope"] == BudgetScope.OWNER.value
        if owner_scope != ("owner_id" in body):
            raise DataError("budget_exhausted: owner_id is required for, and only for, scope owner")
    if kind in (EntryKind.MECHANISM, EntryKind.SPEND):
        try:
            dp_sgd_event(body)
        except ValueError as exc:
            raise DataError(f"{kind.wire_name}: {exc}") from None
    if kind is EntryKind.FEDERATION_SPEND:
        try:
            client_gaussian_event(body)
        except ValueError as exc:
            raise DataError(f"{kind.wire_name}: {exc}") from None


# -- builders -------------------------------------------------------------------------------


def _ids(values: Iterable[int]) -> list[CanonicalValue]:
    return [uint_text(v) for v in sorted(set(values))]


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_CHARS:
        raise ValueError(f"{name} must be text of 1 to {MAX_TEXT_CHARS} characters")
    return value


def _digest(name: str, value: bytes) -> str:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes")
    return value.hex()


def _event_fields(event: DpSgdEvent) -> dict[str, CanonicalValue]:
    return {
        "mechanism": Mechanism.DP_SGD.value,
        "unit": event.unit.value,
        "sampling_rate": decimal_text(event.sampling_rate),
        "noise_multiplier": decimal_text(event.noise_multiplier),
        "steps": uint_text(event.steps),
    }


def federation_created_body(
    *,
    federation_id: str,
    securefed_version: str,
    roster_hash: bytes,
    protocol_versions: Mapping[str, str],
    config: Body,
) -> dict[str, CanonicalValue]:
    """The genesis fields a caller supplies to :meth:`Ledger.create`.

    ``Ledger.create`` adds ``ledger_id`` and ``writer_key``. ``config`` is the
    resolved configuration, its numbers as strings.
    """
    return {
        "federation_id": _text("federation_id", federation_id),
        "securefed_version": _text("securefed_version", securefed_version),
        "roster_hash": _digest("roster_hash", roster_hash),
        "protocol_versions": {k: _text(k, v) for k, v in protocol_versions.items()},
        "config": dict(config),
    }


def round_planned_body(
    *,
    round_id: int,
    cohort: Iterable[int],
    sampling_rate: float,
    protection: ProtectionMode,
    plan_hash: bytes,
    accepted: Iterable[int],
    plan: Body | None = None,
) -> dict[str, CanonicalValue]:
    """A planned round.

    Who was sampled (at cohort rate q), how updates are protected, the plan's
    hash and the owners that accepted it under their policies.
    """
    if not isinstance(protection, ProtectionMode):
        raise TypeError("protection must be a ProtectionMode")
    body: dict[str, CanonicalValue] = {
        "round_id": uint_text(round_id),
        "cohort": _ids(cohort),
        "sampling_rate": decimal_text(sampling_rate),
        "protection": protection.value,
        "plan_hash": _digest("plan_hash", plan_hash),
        "accepted": _ids(accepted),
    }
    if plan is not None:
        body["plan"] = dict(plan)
    return body


def mechanism_body(
    *, round_id: int, event: DpSgdEvent, clip_norm: float
) -> dict[str, CanonicalValue]:
    """The mechanism parameters of a round (the event each participating owner runs)."""
    return {
        "round_id": uint_text(round_id),
        **_event_fields(event),
        "clip_norm": decimal_text(clip_norm),
    }


def spend_body(
    *, owner_id: int, round_id: int, event: DpSgdEvent, delta: float, epsilon_after: float
) -> dict[str, CanonicalValue]:
    """One owner's spend: the event, and its epsilon at ``delta`` after composing it."""
    return {
        "owner_id": uint_text(owner_id),
        "round_id": uint_text(round_id),
        **_event_fields(event),
        "delta": decimal_text(delta),
        "epsilon_after": decimal_text(epsilon_after),
    }


def federation_spend_body(
    *,
    round_id: int,
    event: ClientGaussianEvent,
    sensitivity: float,
    delta: float,
    epsilon_after: float,
) -> dict[str, CanonicalValue]:
    """The federation's client-level spend for one round (durable before the release).

    ``sensitivity`` is the L2 bound on one client's contribution to the sum the
    noise is added to (clip norm plus the quantisation slack); the noise's
    standard deviation is ``noise_multiplier * sensitivity``.
    """
    if not isinstance(event, ClientGaussianEvent):
        raise TypeError("event must be a ClientGaussianEvent")
    return {
        "round_id": uint_text(round_id),
        "mechanism": Mechanism.CLIENT_GAUSSIAN.value,
        "unit": PrivacyUnit.CLIENT.value,
        "sampling_rate": decimal_text(event.cohort_rate),
        "noise_multiplier": decimal_text(event.noise_multiplier),
        "steps": uint_text(event.rounds),
        "sensitivity": decimal_text(sensitivity),
        "delta": decimal_text(delta),
        "epsilon_after": decimal_text(epsilon_after),
    }


def dropouts_body(
    *, round_id: int, stage: str, dropped: Iterable[int]
) -> dict[str, CanonicalValue]:
    """The owners that dropped out of ``round_id`` at protocol ``stage``."""
    return {
        "round_id": uint_text(round_id),
        "stage": _text("stage", stage),
        "dropped": _ids(dropped),
    }


def aggregate_released_body(
    *, round_id: int, aggregate_hash: bytes, model_hash: bytes
) -> dict[str, CanonicalValue]:
    """The hashes of a released aggregate and of the global model made from it."""
    return {
        "round_id": uint_text(round_id),
        "aggregate_hash": _digest("aggregate_hash", aggregate_hash),
        "model_hash": _digest("model_hash", model_hash),
    }


def budget_exhausted_body(
    *,
    round_id: int,
    scope: BudgetScope,
    owner_id: int | None = None,
    epsilon_spent: float,
    epsilon_budget: float,
    delta: float,
) -> dict[str, CanonicalValue]:
    """A budget stopped an owner (``scope`` OWNER, with ``owner_id``) or the federation."""
    if not isinstance(scope, BudgetScope):
        raise TypeError("scope must be a BudgetScope")
    if (scope is BudgetScope.OWNER) != (owner_id is not None):
        raise ValueError("owner_id is required for, and only for, BudgetScope.OWNER")
    body: dict[str, CanonicalValue] = {
        "round_id": uint_text(round_id),
        "scope": scope.value,
        "epsilon_spent": decimal_text(epsilon_spent),
        "epsilon_budget": decimal_text(epsilon_budget),
        "delta": decimal_text(delta),
    }
    if owner_id is not None:
        body["owner_id"] = uint_text(owner_id)
    return body


def dp_sgd_event(body: Body) -> DpSgdEvent:
    """The :class:`DpSgdEvent` a MECHANISM or SPEND body records (for re-accounting).

    Raises:
        DataError: a field is malformed.
        ValueError: the values do not form a valid event.
    """
    if body.get("mechanism") != Mechanism.DP_SGD.value:
        raise DataError("not a dp_sgd mechanism")
    unit = body.get("unit")
    if not isinstance(unit, str) or unit not in {u.value for u in PrivacyUnit}:
        raise DataError("unknown privacy unit")
    if unit == PrivacyUnit.CLIENT.value:
        raise DataError("dp_sgd runs at record or person level, not client level")
    return DpSgdEvent(
        sampling_rate=parse_decimal(body.get("sampling_rate")),
        noise_multiplier=parse_decimal(body.get("noise_multiplier")),
        steps=parse_uint(body.get("steps")),
        unit=PrivacyUnit(unit),
    )


def client_gaussian_event(body: Body) -> ClientGaussianEvent:
    """The :class:`ClientGaussianEvent` a FEDERATION_SPEND body records (for re-accounting).

    Raises:
        DataError: a field is malformed, or the mechanism or unit is not client-level.
        ValueError: the values do not form a valid event.
    """
    if body.get("mechanism") != Mechanism.CLIENT_GAUSSIAN.value:
        raise DataError("not a client_gaussian mechanism")
    if body.get("unit") != PrivacyUnit.CLIENT.value:
        raise DataError("a client-level mechanism must record unit client")
    if parse_decimal(body.get("sensitivity")) <= 0:
        raise ValueError("sensitivity must be positive")
    return ClientGaussianEvent(
        cohort_rate=parse_decimal(body.get("sampling_rate")),
        noise_multiplier=parse_decimal(body.get("noise_multiplier")),
        rounds=parse_uint(body.get("steps")),
    )
