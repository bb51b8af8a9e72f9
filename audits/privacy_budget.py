"""Audit: does a ledger prove the privacy spend it claims?

Verifies a ledger file against the writer's pinned public key (hash chain,
signatures, countersignatures, structure), then re-accounts every data owner's
epsilon (and the federation's, with client-level noise) from the recorded
mechanism parameters with an accountant backend independent of the online one,
and flags every recorded epsilon below the independent one beyond the audit
tolerance. Writes the evidence as the run's HTML privacy report
(securefed.report) and prints a summary.

Exit status: 0 iff the audit passed (chain verified, nothing under-reported);
1 if it failed; 2 for unusable arguments or run files.

Run: .venv/bin/python audits/privacy_budget.py RUN/ledger.db --pubkey RUN/ledger.pub \
        --run-dir RUN --out report.html
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from securefed.audit import AuditResult, audit_ledger, read_public_key
from securefed.errors import SecurefedError
from securefed.privacy.accounting import Backend
from securefed.report import write_report

read_pubkey = read_public_key
"""The writer's pinned key: hex, or a file holding the hex on one line."""


def main(
    ledger: Path,
    pubkey: bytes,
    *,
    run_dir: Path | None = None,
    out: Path = Path("report.html"),
    require_seal: bool = False,
    backend: str | None = None,
) -> AuditResult:
    """Audit ``ledger`` and write the HTML report to ``out``; returns the audit."""
    audit = audit_ledger(
        ledger,
        pubkey,
        require_seal=require_seal,
        backend=None if backend is None else Backend(backend),
    )
    write_report(run_dir, audit, out=out)
    return audit


def summary(audit: AuditResult) -> list[str]:
    """The printed summary: verdict, chain facts, epsilon range, flagged owners."""
    v = audit.verification
    lines = [
        f"verdict: {'VERIFIED' if audit.ok else 'FAILED'}",
        f"chain: {'ok' if v.ok else f'FAILED at entry {v.first_bad}: {v.reason}'} "
        f"({len(v.entries)} of {v.records} records verified, "
        f"{'sealed' if v.sealed else 'not sealed'}, "
        f"{v.countersignatures} countersignatures)",
        *(f"warning: {w}" for w in v.warnings),
        f"accounting: online {audit.online_backend}, audit {audit.audit_backend} "
        f"({audit.distinct_histories} distinct spend histories)",
    ]
    if audit.owners:
        ind = [c.independent for c in audit.owners]
        lines.append(
            f"owners: {len(ind)}; independent epsilon max {max(ind):.6g}, "
            f"median {statistics.median(ind):.6g}, min {min(ind):.6g}"
        )
    fed = audit.federation
    if fed is not None:
        lines.append(f"federation: recorded {fed.recorded:.6g}, independent {fed.independent:.6g}")
    for c in audit.under_reported:
        who = "federation" if c.owner_id is None else f"owner {c.owner_id}"
        lines.append(
            f"UNDER-REPORTED {who}: recorded {c.recorded:.6g} < independent "
            f"{c.independent:.6g} - tolerance {c.tolerance:.3g}"
        )
    for c in (*audit.owners, *([fed] if fed is not None else [])):
        if c.budget is not None and c.independent > c.budget:
            who = "federation" if c.owner_id is None else f"owner {c.owner_id}"
            lines.append(f"OVER BUDGET {who}: independent {c.independent:.6g} > {c.budget:g}")
    lines.extend(f"INCONSISTENT entry {f.seq}: {f.reason}" for f in audit.findings)
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path, help="the ledger (SQLite file or JSON Lines export)")
    parser.add_argument(
        "--pubkey", required=True, help="the writer's initial public key: hex, or a file of it"
    )
    parser.add_argument("--run-dir", type=Path, help="the run directory (metrics, summary)")
    parser.add_argument("--out", type=Path, default=Path("report.html"))
    parser.add_argument("--require-seal", action="store_true", help="fail unless sealed")
    parser.add_argument("--backend", choices=[b.value for b in Backend], help="audit backend")
    args = parser.parse_args()
    try:
        key = read_pubkey(args.pubkey)
        if not args.ledger.is_file():
            raise ValueError(f"no ledger at {args.ledger}")
        result = main(
            args.ledger,
            key,
            run_dir=args.run_dir,
            out=args.out,
            require_seal=args.require_seal,
            backend=args.backend,
        )
    except (OSError, ValueError, SecurefedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print("\n".join(summary(result)))
    print(f"report written to {args.out}; {'PASS' if result.ok else 'FAIL'}")
    raise SystemExit(0 if result.ok else 1)
