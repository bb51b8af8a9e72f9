"""Ledger benchmarks: append latency, and verifying + re-accounting a 10,000-entry ledger.

    python benchmarks/ledger.py                 # print the figures
    python benchmarks/ledger.py --write         # also write benchmarks/results/ledger.{json,md}

Append: SPEND entries appended one by one to a ledger on local disk (WAL,
synchronous=FULL: every append is a committed, fsynced transaction); median
and p99 per append. Audit: a synthetic federation of 100 owners sampled at rate
0.5 per round, with a SPEND and a COUNTERSIGNATURE per participant plus the
round's ROUND_PLANNED, MECHANISM and AGGREGATE_RELEASED, until the ledger holds
at least 10,000 entries; then ``audit_ledger`` (every signature, hash link and
countersignature, then every owner's epsilon re-accounted with PLD) is timed:
with one plan for the whole run, re-accounting every spend; and with the noise
changed every 10 rounds, where nearly every (owner, spend) is a distinct
history, re-accounting each owner's last spend (``--final-only``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from securefed.audit import audit_ledger
from securefed.ledger import EntryKind, Ledger, ProtectionMode, verify_ledger
from securefed.ledger.bodies import (
    aggregate_released_body,
    federation_created_body,
    mechanism_body,
    round_planned_body,
    spend_body,
)
from securefed.privacy.accounting import Backend, new_accountant
from securefed.privacy.events import DpSgdEvent, PrivacyUnit
from securefed.randomness import DeterministicRandom
from securefed.secagg.roster import IdentityKey

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _genesis() -> dict[str, object]:
    return federation_created_body(
        federation_id="bench",
        securefed_version="bench",
        roster_hash=bytes(32),
        protocol_versions={"ledger": "securefed/ledger/v1", "accounting_online": "rdp"},
        config={"privacy": {"enabled": True, "budget_epsilon": "1000.0"}},
    )


def _event(sigma: float) -> DpSgdEvent:
    return DpSgdEvent(sampling_rate=0.05, noise_multiplier=sigma, steps=20, unit=PrivacyUnit.RECORD)


def bench_append(directory: Path, count: int) -> dict[str, float]:
    rng = DeterministicRandom(b"a" * 32)
    ledger = Ledger.create(directory / "append.db", IdentityKey.generate(rng),
                           federation=_genesis(), rng=rng)  # fmt: skip
    event = _event(1.0)
    times = []
    for i in range(count):
        body = spend_body(owner_id=i % 100, round_id=1 + i // 100, event=event, delta=1e-5,
                          epsilon_after=0.5)  # fmt: skip
        start = time.perf_counter()
        ledger.append(EntryKind.SPEND, body)
        times.append(time.perf_counter() - start)
    ledger.close()
    ms = np.array(times) * 1e3
    return {
        "appends": count,
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def build_federation_ledger(path: Path, *, entries: int, vary_plan: bool) -> tuple[bytes, int]:
    rng = DeterministicRandom(b"l" * 32)
    writer = IdentityKey.generate(rng)
    owners = {i: IdentityKey.generate(rng) for i in range(1, 101)}
    ledger = Ledger.create(path, writer, federation=_genesis(), rng=rng)
    sampler = np.random.default_rng(4)
    online = {i: new_accountant(Backend.RDP) for i in owners}
    r = 0
    while ledger.head()[0] + 1 < entries:
        r += 1
        sigma = 1.0 + 0.1 * ((r - 1) // 10) if vary_plan else 1.0
        event = _event(sigma)
        cohort = [i for i in owners if sampler.random() < 0.5]
        ledger.append(EntryKind.ROUND_PLANNED, round_planned_body(
            round_id=r, cohort=cohort, sampling_rate=0.5, protection=ProtectionMode.SECAGG,
            plan_hash=bytes(32), accepted=cohort))  # fmt: skip
        ledger.append(EntryKind.MECHANISM, mechanism_body(round_id=r, event=event, clip_norm=1.0))
        for i in cohort:
            online[i].compose(event)
            eps = online[i].epsilon(1e-5)
            entry = ledger.append(EntryKind.SPEND, spend_body(
                owner_id=i, round_id=r, event=event, delta=1e-5, epsilon_after=eps))  # fmt: skip
            ledger.countersign(entry.seq, owners[i])
        ledger.append(EntryKind.AGGREGATE_RELEASED, aggregate_released_body(
            round_id=r, aggregate_hash=bytes(32), model_hash=bytes(32)))  # fmt: skip
    ledger.seal(reason="bench")
    count = ledger.head()[0] + 1
    ledger.close()
    return writer.public_key, count


def bench_audit(
    directory: Path, *, entries: int, vary_plan: bool, every_spend: bool
) -> dict[str, object]:
    path = directory / f"audit-{int(vary_plan)}.db"
    start = time.perf_counter()
    if not path.exists():
        build_federation_ledger(path, entries=entries, vary_plan=vary_plan)
    build = time.perf_counter() - start
    key = IdentityKey.generate(DeterministicRandom(b"l" * 32)).public_key
    start = time.perf_counter()
    report = verify_ledger(path, key, require_seal=True)
    verify = time.perf_counter() - start
    count = report.records
    start = time.perf_counter()
    audit = audit_ledger(path, key, require_seal=True, every_spend=every_spend)
    total = time.perf_counter() - start
    if not (report.ok and audit.ok):
        raise SystemExit(f"benchmark ledger failed its audit: {report.reason}")
    return {
        "entries": count,
        "owners": len(audit.owners),
        "spends": sum(len(c.series) for c in audit.owners),
        "distinct_histories": audit.distinct_histories,
        "vary_plan": vary_plan,
        "every_spend": every_spend,
        "build_seconds": build,
        "verify_seconds": verify,
        "audit_seconds": total,
        "max_recorded": max(c.recorded for c in audit.owners),
        "max_independent": max(c.independent for c in audit.owners),
    }


def render(results: dict[str, object]) -> str:
    a = results["append"]
    assert isinstance(a, dict)
    lines = [
        "### Ledger (`benchmarks/ledger.py`)",
        "",
        f"Command: `{results['command']}`; {results['machine']}; {results['date']}.",
        "",
        f"- Append (SPEND, WAL + synchronous=FULL, local disk): median "
        f"{a['median_ms']:.2f} ms, p99 {a['p99_ms']:.2f} ms, max {a['max_ms']:.1f} ms over "
        f"{a['appends']} appends (target: median <= 2 ms).",
        "",
        "| ledger | entries | owners | spends | re-accounted at | distinct histories | "
        "verify s | verify + re-account (PLD) s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["audit"]:  # type: ignore[attr-defined]
        label = "plan changes every 10 rounds" if row["vary_plan"] else "one plan"
        at = "every spend" if row["every_spend"] else "last spend"
        lines.append(
            f"| {label} | {row['entries']:,} | {row['owners']} | {row['spends']:,} | {at} | "
            f"{row['distinct_histories']} | {row['verify_seconds']:.1f} | "
            f"{row['audit_seconds']:.1f} |"
        )
    lines += ["", "Target: verifying a 10,000-entry ledger, re-accounting included, < 60 s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(dir=os.environ.get("LEDGER_BENCH_DIR")) as tmp:
        directory = Path(tmp)
        results: dict[str, object] = {
            "command": "python benchmarks/ledger.py --write",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "date": datetime.date.today().isoformat(),
            "append": bench_append(directory, args.appends),
            "audit": [
                bench_audit(directory, entries=args.entries, vary_plan=False, every_spend=True),
                bench_audit(directory, entries=args.entries, vary_plan=True, every_spend=False),
            ],
        }
    print(json.dumps(results, indent=2))
    text = render(results)
    print(text)
    if args.write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "ledger.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "ledger.md").write_text(text)


if __name__ == "__main__":
    main()
