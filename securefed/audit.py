"""Independent audit of a ledger: verify the chain, then re-account every spend.

``audit_ledger`` verifies a ledger file (``securefed.ledger.verify_ledger``) and
recomputes every data owner's epsilon (and the federation's, when client-level
noise was configured) from the recorded mechanism parameters with an accountant
backend other than the one that ran online. A recorded epsilon lower than the
independent one by more than the audit tolerance (1% relative or 0.02
absolute, whichever is larger) is under-reporting, and fails the audit.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from securefed.errors import ConfigError
from securefed.ledger.bodies import SCHEMAS, client_gaussian_event, dp_sgd_event
from securefed.ledger.canonical import CanonicalValue, parse_decimal, parse_uint
from securefed.ledger.entry import Countersignature, Entry, EntryKind
from securefed.ledger.verify import VerificationReport, verify_ledger
from securefed.prior import CONTRIBUTION_BOUND, PRIOR_PROCEDURE_HASH, PRIOR_ROUND
from securefed.privacy.accounting import (
    Accountant,
    Backend,
    audit_tolerance,
    independent_backend,
    new_accountant,
)
from securefed.privacy.events import PrivacyEvent, PrivacyUnit
from securefed.run_files import LEDGER_FILE, LEDGER_KEY_FILE, OWNER_KEYS_FILE
from securefed.secagg.graph import ThreatModel, full_parameters
from securefed.secagg.primitives import KEY_BYTES

_PRIOR_HASH = PRIOR_PROCEDURE_HASH.hex()

__all__ = [
    "AuditResult",
    "EpsilonCheck",
    "Finding",
    "RoundRecord",
    "SpendPoint",
    "audit_ledger",
    "audit_run_dir",
    "read_owner_keys",
    "read_public_key",
]


@dataclass(frozen=True, slots=True)
class Finding:
    """An inconsistency the audit found in a verified ledger, at entry ``seq``."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendPoint:
    """One recorded spend: after ``round_id``, the recorded and independent epsilon."""

    round_id: int
    recorded: float
    independent: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EpsilonCheck:
    """One owner's (``scope`` ``"owner"``) or the federation's recorded vs independent epsilon."""

    scope: str
    """``"owner"`` or ``"federation"``."""
    owner_id: int | None
    """The owner, for scope ``"owner"``; None for the federation."""
    unit: PrivacyUnit
    delta: float
    recorded: float
    """The last recorded ``epsilon_after`` (online backend's upper bound); 0 with no spend."""
    independent: float
    """The same history re-accounted with the audit backend."""
    tolerance: float
    """max(0.01 x independent, 0.02)."""
    budget: float | None
    """The configured budget epsilon, when the ledger records one."""
    series: tuple[SpendPoint, ...] = field(repr=False)
    """Every spend in order (epsilon over rounds)."""

    @property
    def under_reported(self) -> bool:
        """Whether any recorded epsilon is below the independent one minus the tolerance.

        Checked at every spend, not only the last: a budget check that ran on an
        under-reported figure is a failure even if later figures are right.
        """
        if self.recorded < self.independent - self.tolerance:
            return True
        return any(
            p.recorded < p.independent - audit_tolerance(p.independent)
            for p in self.series
            if not math.isnan(p.independent)  # not re-accounted (``every_spend=False``)
        )

    @property
    def over_budget(self) -> bool:
        """Whether the independent epsilon exceeds the recorded budget."""
        return self.budget is not None and self.independent > self.budget


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """What the ledger says about one round."""

    round_id: int
    cohort: int
    accepted: int
    protection: str
    """``"secagg"`` or ``"he"``."""
    dropouts: dict[str, int]
    """Owners that dropped out, by protocol stage."""
    released: bool
    """Whether an AGGREGATE_RELEASED entry exists for the round."""
    mechanism: dict[str, str]
    """The MECHANISM entry's fields (decimal strings), empty if none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditResult:
    """The outcome of an audit: chain verification plus independent re-accounting."""

    verification: VerificationReport
    online_backend: str
    audit_backend: str
    owners: tuple[EpsilonCheck, ...]
    federation: EpsilonCheck | None
    rounds: tuple[RoundRecord, ...]
    budget_stops: tuple[dict[str, str], ...]
    """The BUDGET_EXHAUSTED bodies, in order."""
    config: dict[str, object]
    """The resolved configuration recorded at genesis (numbers as strings)."""
    findings: tuple[Finding, ...] = ()
    """Entries that contradict the rest of the ledger or its configuration (a release
    before, or without, the spends it needs; a second release; a spend whose delta,
    unit or event differs from the configuration or the round's mechanism ...)."""
    every_spend: bool = True
    """Whether every spend was re-accounted (else each owner's last one only)."""
    distinct_histories: int
    """How many distinct spend histories (multisets of events, with their delta) were
    accounted; identical histories, and every prefix shared by several, once."""

    @property
    def under_reported(self) -> tuple[EpsilonCheck, ...]:
        """The checks whose recorded epsilon is too low."""
        checks = [*self.owners, *([self.federation] if self.federation else [])]
        return tuple(c for c in checks if c.under_reported)

    @property
    def over_budget(self) -> tuple[EpsilonCheck, ...]:
        """The checks whose independent epsilon exceeds the configured budget."""
        checks = [*self.owners, *([self.federation] if self.federation else [])]
        return tuple(c for c in checks if c.over_budget)

    @property
    def ok(self) -> bool:
        """Verified, consistent, no epsilon under-reported and no budget exceeded."""
        return (
            self.verification.ok
            and not self.under_reported
            and not self.findings
            and not self.over_budget
        )

    @property
    def first_problem(self) -> tuple[int | None, str] | None:
        """(entry, reason) of the first failure: tampering first, then inconsistencies."""
        if not self.verification.ok:
            return self.verification.first_bad, self.verification.reason
        if self.findings:
            return self.findings[0].seq, self.findings[0].reason
        return None


class _HistoryCache:
    """Epsilon per distinct spend history, each accounted once.

    Composition commutes, so a history is keyed by its multiset of events: owners
    that took part in the same number of rounds of the same plan share one entry
    whatever rounds they were sampled in.
    """

    def __init__(self) -> None:
        self._epsilons: dict[tuple[frozenset[tuple[PrivacyEvent, int]], float], float] = {}

    @property
    def distinct(self) -> int:
        return len(self._epsilons)

    def epsilon(self, counts: Counter[PrivacyEvent], accountant: Accountant, delta: float) -> float:
        key = (frozenset(counts.items()), delta)
        if key not in self._epsilons:
            self._epsilons[key] = float(accountant.epsilon(delta))
        return self._epsilons[key]


def _section(config: Mapping[str, CanonicalValue], name: str) -> dict[str, CanonicalValue]:
    value = config.get(name)
    return dict(value) if isinstance(value, dict) else {}


def _decimal(section: Mapping[str, CanonicalValue], name: str) -> float | None:
    value = section.get(name)
    return parse_decimal(value) if isinstance(value, str) else None


def _config_budget(config: Mapping[str, CanonicalValue], section: str = "privacy") -> float | None:
    """The budget a section of the genesis configuration sets (None when it is off)."""
    values = _section(config, section)
    if values.get("enabled") is not True:
        return None
    budget = _decimal(values, "budget_epsilon")
    return budget if budget is not None else _decimal(values, "target_epsilon")


_FEDERATION = -1
"""Key of the federation's (client-level) spends among the owners' histories."""


@dataclass(slots=True)
class _OwnerSpends:
    unit: PrivacyUnit
    delta: float
    points: list[tuple[int, PrivacyEvent, float, float, int]] = field(default_factory=list)
    """(round id, event, recorded epsilon, the delta it is stated at, entry seq)."""


@dataclass(slots=True)
class _RoundInfo:
    cohort: int = 0
    accepted: int = 0
    protection: str = ""
    dropouts: dict[str, int] = field(default_factory=dict)
    released: bool = False
    mechanism: dict[str, str] = field(default_factory=dict)


def _count(value: CanonicalValue) -> int:
    return len(value) if isinstance(value, list) else 0


_ROUND_KINDS = frozenset(kind for kind, schema in SCHEMAS.items() if "round_id" in schema)
"""The kinds whose body names a round (what the audit reads after verification)."""

_Record = tuple[Entry, dict[str, CanonicalValue]]
"""A verified entry and its decoded body."""


def _collect(
    records: Iterable[_Record],
) -> tuple[dict[int, _OwnerSpends], dict[int, _RoundInfo], list[dict[str, str]], list[Finding]]:
    owners: dict[int, _OwnerSpends] = {}
    rounds: dict[int, _RoundInfo] = {}
    findings: list[Finding] = []
    stops: list[dict[str, str]] = []
    for entry, body in records:
        kind = entry.kind
        r = parse_uint(body["round_id"])
        info = rounds.setdefault(r, _RoundInfo())
        if kind is EntryKind.ROUND_PLANNED:
            info.cohort = _count(body["cohort"])
            info.accepted = _count(body["accepted"])
            info.protection = str(body["protection"])
        elif kind is EntryKind.MECHANISM:
            info.mechanism = {k: str(v) for k, v in body.items() if k != "round_id"}
        elif kind is EntryKind.DROPOUTS:
            info.dropouts[str(body["stage"])] = _count(body["dropped"])
        elif kind is EntryKind.AGGREGATE_RELEASED:
            info.released = True
        elif kind is EntryKind.BUDGET_EXHAUSTED:
            stops.append({k: str(v) for k, v in body.items()})
        elif kind is EntryKind.FEDERATION_SPEND:
            fed_event = client_gaussian_event(body)
            delta = parse_decimal(body["delta"])
            spends = owners.setdefault(_FEDERATION, _OwnerSpends(unit=fed_event.unit, delta=delta))
            spends.points.append(
                (r, fed_event, parse_decimal(body["epsilon_after"]), delta, entry.seq)
            )
        else:  # SPEND
            event = dp_sgd_event(body)
            owner = parse_uint(body["owner_id"])
            delta = parse_decimal(body["delta"])
            spends = owners.setdefault(owner, _OwnerSpends(unit=event.unit, delta=delta))
            if spends.unit is not event.unit:
                findings.append(
                    Finding(entry.seq, f"owner {owner}'s spends mix privacy units (not accounted)")
                )
                continue
            spends.points.append((r, event, parse_decimal(body["epsilon_after"]), delta, entry.seq))
    return owners, rounds, stops, findings


@dataclass(slots=True)
class _RoundCheck:
    accepted: frozenset[int] = frozenset()
    mechanism: PrivacyEvent | None = None
    spent: set[int] = field(default_factory=set)
    federation_spent: bool = False
    released: bool = False
    dropped: set[int] = field(default_factory=set)
    prior_threshold: int | None = None
    """Round 0 (the prior): the threshold of the full graph at its ``min_cohort``."""
    prior_bound: float | None = None


def _prior_problems(
    r: int,
    plan: Mapping[str, CanonicalValue],
    config: Mapping[str, CanonicalValue],
    *,
    private: bool,
) -> tuple[list[str], int | None, float | None]:
    """What is wrong with a round-0 plan's prior release claims (protocols/ledger.md §5.12).

    ``private``: whether the configuration enables DP (the release must then be noised).
    Returns (problems, the session's threshold, the contribution bound).
    """
    problems = []
    if r != PRIOR_ROUND:
        problems.append(f"the prior's procedure in round {r}, not round {PRIOR_ROUND}")
    if _section(config, "prior").get("enabled") is not True:
        problems.append("a prior release, but the configuration has no [prior]")
    if plan.get("training_procedure_hash") != _PRIOR_HASH:
        problems.append("round 0 is the prior's, but its plan names another procedure")
    release = plan.get("release")
    if not isinstance(release, dict) or release.get("kind") != "item_counts":
        return [*problems, "round 0 does not describe its release (plan.release)"], None, None
    try:
        cohort = parse_uint(release["min_cohort"])
        honest = parse_uint(release["honest_shares"])
        fraction = parse_decimal(release["corrupt_fraction"])
        bound = parse_decimal(release["contribution_bound"])
        graph = full_parameters(cohort, ThreatModel(corrupt_fraction=fraction))
    except (KeyError, TypeError, ValueError):
        return [*problems, "round 0's release fields are missing or invalid"], None, None
    if bound != CONTRIBUTION_BOUND:
        problems.append(f"contribution bound {bound:g} is not {CONTRIBUTION_BOUND:g}")
    if release.get("noise") != ("distributed" if private else "none"):
        problems.append(f"noise {release.get('noise')!r} does not match privacy.enabled")
    configured = _decimal(_section(_section(config, "secagg"), "threat"), "corrupt_fraction")
    if configured is not None and fraction < configured:
        problems.append(
            f"the release assumes corrupt fraction {fraction:g}, "
            f"below the configured {configured:g}"
        )
    if honest != graph.threshold - graph.corrupt_bound:
        problems.append(
            f"honest_shares {honest} is not t - n_c = {graph.threshold - graph.corrupt_bound} "
            f"of a full graph of {cohort}"
        )
    return problems, graph.threshold, bound


def _consistency(records: Iterable[_Record], config: Mapping[str, CanonicalValue]) -> list[Finding]:
    """Cross-check each round's entries against each other and the genesis configuration.

    A ledger securefed writes passes every check; each failure names the entry.
    """
    privacy = _section(config, "privacy")
    client = _section(config, "client_privacy")
    update = _section(config, "update")
    delta = _decimal(privacy, "delta")
    private = privacy.get("enabled") is not False
    unit = privacy.get("unit")
    client_on = client.get("enabled") is True
    client_delta = _decimal(client, "delta")
    client_z = _decimal(client, "noise_multiplier")
    clip = _decimal(update, "clip_norm")
    rounds: dict[int, _RoundCheck] = {}
    out: list[Finding] = []
    first_model: str | None = None

    def bad(entry: Entry, reason: str) -> None:
        out.append(Finding(entry.seq, f"{entry.kind.wire_name}: {reason}"))

    for entry, body in records:
        kind = entry.kind
        if kind is EntryKind.DROPOUTS:
            dropped_round = rounds.get(parse_uint(body["round_id"]))
            ids = body["dropped"]
            if dropped_round is not None and isinstance(ids, list):
                dropped_round.dropped.update(parse_uint(x) for x in ids)
            continue
        if kind is EntryKind.BUDGET_EXHAUSTED:
            continue
        r = parse_uint(body["round_id"])
        if kind is EntryKind.ROUND_PLANNED:
            if r in rounds:
                bad(entry, f"round {r} planned twice")
            accepted = body["accepted"]
            ids = accepted if isinstance(accepted, list) else []
            rounds[r] = _RoundCheck(accepted=frozenset(parse_uint(x) for x in ids))
            plan = body.get("plan")
            plan = plan if isinstance(plan, dict) else {}
            model = plan.get("model_hash")
            if isinstance(model, str):
                if first_model is None:
                    first_model = model
                elif model != first_model:
                    # The architecture (and any fixed item features) is the owners'
                    # policy pin: a run whose model changes is not one run.
                    bad(entry, f"round {r}'s model hash differs from the first round's")
            if r == PRIOR_ROUND or plan.get("training_procedure_hash") == _PRIOR_HASH:
                problems, threshold, bound = _prior_problems(r, plan, config, private=private)
                for problem in problems:
                    bad(entry, problem)
                rounds[r].prior_threshold, rounds[r].prior_bound = threshold, bound
            continue
        state = rounds.get(r)
        if state is None:
            bad(entry, f"round {r} was never planned")
            continue
        if kind is EntryKind.MECHANISM:
            state.mechanism = dp_sgd_event(body)
            if state.prior_bound is not None and (
                state.mechanism.sampling_rate != 1.0
                or state.mechanism.steps != 1
                or parse_decimal(body["clip_norm"]) != state.prior_bound
            ):
                bad(entry, "the prior's mechanism is not one full-batch release at its bound")
        elif kind is EntryKind.SPEND:
            owner = parse_uint(body["owner_id"])
            event = dp_sgd_event(body)
            if state.released:
                bad(entry, f"owner {owner}'s spend follows round {r}'s release")
            if owner not in state.accepted:
                bad(entry, f"owner {owner} did not accept round {r}")
            if owner in state.spent:
                bad(entry, f"owner {owner}'s spend for round {r} is recorded twice")
            if state.mechanism is None or event != state.mechanism:
                bad(entry, f"owner {owner}'s event differs from round {r}'s mechanism")
            if delta is not None and parse_decimal(body["delta"]) != delta:
                bad(entry, f"delta {body['delta']} is not the configured privacy.delta")
            if isinstance(unit, str) and event.unit.value != unit:
                bad(entry, f"unit {event.unit.value} is not the configured privacy.unit")
            state.spent.add(owner)
        elif kind is EntryKind.FEDERATION_SPEND:
            fed_event = client_gaussian_event(body)
            if not client_on:
                bad(entry, "client-level DP is not configured")
            if state.released:
                bad(entry, f"follows round {r}'s release")
            if state.federation_spent:
                bad(entry, f"round {r}'s federation spend is recorded twice")
            if client_delta is not None and parse_decimal(body["delta"]) != client_delta:
                bad(entry, "delta is not the configured client_privacy.delta")
            if client_z is not None and fed_event.noise_multiplier != client_z:
                bad(entry, "noise multiplier is not the configured client_privacy one")
            if clip is not None and parse_decimal(body["sensitivity"]) < clip:
                bad(entry, "sensitivity is below the configured update.clip_norm")
            if fed_event.cohort_rate != 1.0:
                bad(entry, "claims amplification by cohort sampling, but the cohort is recorded")
            state.federation_spent = True
        else:  # AGGREGATE_RELEASED
            if state.released:
                bad(entry, f"round {r} is released twice")
            survivors = len(state.accepted - state.dropped)
            if state.prior_threshold is not None and state.mechanism is None and private:
                bad(entry, "the prior of a private federation is released with no mechanism")
            if state.prior_threshold is not None and survivors < state.prior_threshold:
                bad(
                    entry,
                    f"the prior is released from {survivors} inputs, below the threshold "
                    f"{state.prior_threshold} its noise shares count on",
                )
            if state.mechanism is not None:
                missing = sorted(state.accepted - state.spent)
                if missing:
                    bad(entry, f"accepted owners {missing[:10]} have no spend before the release")
            if client_on and not state.federation_spent:
                bad(entry, f"round {r} has no federation spend before the release")
            state.released = True
    return out


def _online_backend(
    seq: int, genesis: Mapping[str, CanonicalValue], config: Mapping[str, CanonicalValue]
) -> tuple[Backend, list[Finding]]:
    """The online backend the genesis names, and the findings about it.

    A missing or unknown name, or one that is not the configuration's
    ``privacy.accountant``, is a finding; RDP, the loosest, is then assumed, so that
    the independent re-accounting is PLD.
    """
    versions = genesis.get("protocol_versions")
    name = versions.get("accounting_online") if isinstance(versions, dict) else None
    known = {b.value for b in Backend}
    if not isinstance(name, str) or name not in known:
        return Backend.RDP, [Finding(seq, f"unknown online accountant {name!r}")]
    privacy = config.get("privacy")
    configured = privacy.get("accountant") if isinstance(privacy, dict) else None
    if configured is not None and configured != name:
        reason = f"the genesis names the {name} accountant, the configuration {configured!r}"
        return Backend.RDP, [Finding(seq, reason)]
    return Backend(name), []


def audit_ledger(
    source: str | os.PathLike[str],
    pinned_key: bytes,
    *,
    later_head: tuple[int, bytes] | None = None,
    owner_keys: Mapping[int, bytes] | None = None,
    receipts: Iterable[Countersignature] = (),
    require_seal: bool = False,
    backend: Backend | None = None,
    every_spend: bool = True,
) -> AuditResult:
    """Verify a ledger, then re-account every owner's spends with an independent backend.

    Args:
        source: the ledger's SQLite file or its JSON Lines export.
        pinned_key: the writer's initial public key (from outside the ledger).
        later_head: a head held from the federation (sequence number, hash).
        owner_keys: the owners' pinned identity keys (countersignatures).
        receipts: owners' countersignatures held as receipts.
        require_seal: fail unless the ledger ends with a seal.
        backend: the audit backend; default: the one independent of the online
            backend the ledger's genesis names (``protocol_versions.accounting_online``;
            a missing or unknown name, or one that is not the configuration's
            ``privacy.accountant``, is a finding).
        every_spend: check the recorded epsilon at every spend (default); False
            checks each owner's last spend only (one accounting per distinct final
            history: for large ledgers whose plans change often; the earlier
            points' independent figure is then NaN).

    Only the verified prefix is re-accounted. Identical histories (the same
    multiset of events: composition commutes) are accounted once.

    Raises:
        ConfigError: ``backend`` is the online backend (the audit must be
            independent), or RDP for a ledger accounted on PLD or PRV (RDP's looser
            bound would report the honest ledger as under-reporting).
    """
    report = verify_ledger(
        source,
        pinned_key,
        later_head=later_head,
        owner_keys=owner_keys,
        receipts=receipts,
        require_seal=require_seal,
    )
    entries = report.entries
    config: dict[str, CanonicalValue] = {}
    online = Backend.RDP
    genesis_findings: list[Finding] = []
    if entries and entries[0].kind is EntryKind.FEDERATION_CREATED:
        genesis = entries[0].fields()
        cfg = genesis.get("config")
        config = dict(cfg) if isinstance(cfg, dict) else {}
        online, genesis_findings = _online_backend(entries[0].seq, genesis, config)
    audit = backend if backend is not None else independent_backend(online)
    if audit is online:
        raise ConfigError(f"the audit backend must differ from the online one ({online.value})")
    if audit is Backend.RDP and online is not Backend.RDP:
        raise ConfigError(
            f"RDP is looser than the ledger's online {online.value} accountant: it would "
            "report an honest ledger as under-reporting; audit with "
            f"{independent_backend(online).value}"
        )
    records = [(e, e.fields()) for e in entries if e.kind in _ROUND_KINDS]
    owners, rounds, stops, findings = _collect(records)
    findings += genesis_findings
    findings += _consistency(records, config)
    budget = _config_budget(config)
    cache = _HistoryCache()
    checks = []
    federation: EpsilonCheck | None = None
    for owner_id in sorted(owners):
        spends = owners[owner_id]
        accountant = new_accountant(audit)
        counts: Counter[PrivacyEvent] = Counter()
        series = []
        for i, (round_id, event, recorded, delta, seq) in enumerate(spends.points):
            accountant.compose(event)
            counts[event] += 1
            independent = math.nan
            if every_spend or i == len(spends.points) - 1:
                try:
                    independent = cache.epsilon(counts, accountant, delta)
                except ValueError as exc:  # the audit backend cannot evaluate this history
                    findings.append(Finding(seq, f"cannot be re-accounted: {exc}"))
            series.append(SpendPoint(round_id=round_id, recorded=recorded, independent=independent))
        last = series[-1]
        is_federation = owner_id == _FEDERATION
        check = EpsilonCheck(
            scope="federation" if is_federation else "owner",
            owner_id=None if is_federation else owner_id,
            unit=spends.unit,
            delta=spends.delta,
            recorded=last.recorded,
            independent=last.independent,
            tolerance=audit_tolerance(last.independent)
            if math.isfinite(last.independent)
            else math.nan,
            budget=_config_budget(config, "client_privacy") if is_federation else budget,
            series=tuple(series),
        )
        if is_federation:
            federation = check
        else:
            checks.append(check)
    findings.sort(key=lambda f: f.seq)
    round_records = tuple(
        RoundRecord(
            round_id=r,
            cohort=info.cohort,
            accepted=info.accepted,
            protection=info.protection,
            dropouts=dict(info.dropouts),
            released=info.released,
            mechanism=dict(info.mechanism),
        )
        for r, info in sorted(rounds.items())
    )
    return AuditResult(
        verification=report,
        online_backend=online.value,
        audit_backend=audit.value,
        owners=tuple(checks),
        federation=federation,
        rounds=round_records,
        budget_stops=tuple(stops),
        config=dict(config),
        distinct_histories=cache.distinct,
        findings=tuple(findings),
        every_spend=every_spend,
    )


def read_public_key(text: str, *, option: str = "--pubkey") -> bytes:
    """A pinned Ed25519 public key given as hex, or as a file holding the hex.

    Raises:
        ConfigError: not 32 bytes of hex (nor a file holding them); names ``option``.
    """
    candidate = Path(text)
    raw = candidate.read_text().strip() if candidate.is_file() else text.strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise ConfigError(f"{option}: expected 64 hex digits or a file holding them") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{option}: an Ed25519 public key is 32 bytes (64 hex digits)")
    return key


def read_owner_keys(path: str | os.PathLike[str]) -> dict[int, bytes]:
    """Owners' pinned public keys from a JSON object ``{"<owner id>": "<hex>"}``.

    Raises:
        ConfigError: unreadable, not such an object, or a key that is not 32 bytes.
    """
    try:
        data = json.loads(Path(path).read_text())
        keys = {int(k): bytes.fromhex(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{path}: expected a JSON object owner id -> hex key ({exc})") from None
    if any(len(k) != KEY_BYTES for k in keys.values()):
        raise ConfigError(f"{path}: every owner key must be 32 bytes")
    return keys


def audit_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    pubkey: str | None = None,
    require_seal: bool = True,
) -> AuditResult:
    """Audit the ledger a ``securefed simulate`` run directory holds.

    Pins the writer key from ``pubkey`` (hex or a file; default: the directory's
    ``ledger.pub``) and, when the directory has them, the owners' keys.

    Raises:
        ConfigError: a key file is malformed.
    """
    directory = Path(run_dir)
    owner_keys = directory / OWNER_KEYS_FILE
    return audit_ledger(
        directory / LEDGER_FILE,
        read_public_key(pubkey or str(directory / LEDGER_KEY_FILE)),
        owner_keys=read_owner_keys(owner_keys) if owner_keys.is_file() else None,
        require_seal=require_seal,
    )
