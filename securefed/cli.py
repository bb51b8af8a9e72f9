"""The ``securefed`` command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from securefed import __version__
from securefed.errors import ConfigError, SecurefedError
from securefed.run_files import (
    CONFIG_FILE,
    LEDGER_FILE,
    LEDGER_KEY_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
)

if TYPE_CHECKING:
    from securefed.audit import AuditResult, EpsilonCheck

__all__ = ["main"]


def _simulate(config_path: str, out: str) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from securefed.config import load_config
    from securefed.federation import Federation, RoundMetrics, run_federation

    console = Console()
    # dp_accounting logs (through absl) every fractional RDP order it drops as
    # unconverged; the bound stays valid, so the command line keeps its output clean.
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Full backward hook")
    config = load_config(config_path)
    rounds = config.federation.rounds
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    ) as progress:
        round_task = progress.add_task("rounds", total=rounds, info="")
        client_task = progress.add_task("clients", total=1, info="")

        def on_start(fed: Federation) -> None:
            console.print(
                f"{len(fed.owners)} data owners, {fed.split.n_users} users, "
                f"{fed.split.n_items} items, {fed.coordinator.weights.size:,} shared parameters; "
                f"noise multiplier {fed.noise_multiplier:.4g}"
            )

        def on_client(done: int, total: int) -> None:
            progress.update(client_task, completed=done, total=total)

        def on_round(row: RoundMetrics) -> None:
            info = f"eps max {row.epsilon_max:.3g}"
            if row.metrics:
                info += f", HR@10 {row.metrics['sampled_hr10']:.3f} (sampled)"
            progress.update(client_task, completed=row.cohort, total=max(1, row.cohort))
            progress.update(round_task, advance=1, info=info)

        result = run_federation(
            config,
            root=Path(config_path).resolve().parent,
            out_dir=Path(out),
            on_round=on_round,
            on_start=on_start,
            on_client=on_client,
        )
    final = result.final_test or {}
    table = Table(title=f"securefed simulate: {config.federation.federation_id}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    last = result.rounds[-1]
    for key, label in [
        ("sampled_hr10", "test HR@10 (99 sampled negatives)"),
        ("sampled_ndcg10", "test NDCG@10 (99 sampled negatives)"),
        ("full_hr10", "test HR@10 (full ranking)"),
        ("full_ndcg10", "test NDCG@10 (full ranking)"),
        ("full_auc", "test AUC (full ranking)"),
    ]:
        table.add_row(label, f"{final.get(key, math.nan):.4f}")
    p = config.privacy
    eps = (
        "not private"
        if not p.enabled
        else f"{last.epsilon_max:.3f} (median {last.epsilon_median:.3f})"
    )
    table.add_row(f"epsilon, {p.unit.value}-level (max over owners), delta {p.delta:g}", eps)
    table.add_row("noise multiplier", f"{result.noise_multiplier:.4g}")
    table.add_row("rounds", str(len(result.rounds)))
    table.add_row("bytes up per client per round", f"{last.bytes_up_per_client:,.0f}")
    table.add_row(
        "client CPU s per round (mean)",
        f"{sum(r.client_seconds_mean for r in result.rounds) / len(result.rounds):.2f}",
    )
    table.add_row(
        "server CPU s per round",
        f"{sum(r.server_seconds for r in result.rounds) / len(result.rounds):.3f}",
    )
    console.print(table)
    if result.stop_reason:
        console.print(f"Stopped: {result.stop_reason}.")
    from securefed.audit import audit_run_dir
    from securefed.report import write_report

    audit = audit_run_dir(out)
    print_audit(audit, console)
    report = write_report(Path(out), audit)
    written = [METRICS_FILE, CONFIG_FILE, SUMMARY_FILE, LEDGER_FILE, LEDGER_KEY_FILE]
    console.print(
        "Held-out metrics are released without noise: they are outside the DP guarantee. "
        f"Written: {', '.join(f'{out}/{name}' for name in written)}, {report}"
    )
    return 0 if audit.ok else 1


def _read_head(text: str | None) -> tuple[int, bytes] | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    try:
        head = (int(seq), bytes.fromhex(digest))
    except ValueError:
        raise ConfigError("--later-head: expected SEQ:HASH (decimal:64 hex digits)") from None
    if head[0] < 0 or len(head[1]) != 32:
        raise ConfigError("--later-head: expected SEQ:HASH (decimal:64 hex digits)")
    return head


_MAX_AUDIT_ROWS = 25


def _id_ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"``."""
    parts: list[str] = []
    ordered = sorted(ids)
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def print_audit(audit: AuditResult, console: Console) -> None:
    """The audit's summary: the verdict, then recorded vs independent epsilon per owner."""
    from rich.table import Table

    v = audit.verification
    if v.ok:
        console.print(
            f"[bold green]ledger verified[/]: {v.records} entries, "
            f"{v.countersignatures} countersignatures, "
            f"{'sealed' if v.sealed else 'NOT sealed'}"
        )
    else:
        console.print(f"[bold red]ledger FAILED at entry {v.first_bad}[/]: {v.reason}")
    for warning in v.warnings:
        console.print(f"[yellow]warning[/]: {warning}")
    checked = "every spend" if audit.every_spend else "each owner's last spend"
    all_checks = [*audit.owners, *([audit.federation] if audit.federation else [])]
    deltas = ", ".join(sorted({f"{c.delta:g}" for c in all_checks})) or "-"
    table = Table(
        title=f"epsilon: recorded (online {audit.online_backend}) vs independent "
        f"({audit.audit_backend}) at {checked}, delta {deltas}; tolerance max(1%, 0.02); "
        f"{audit.distinct_histories} distinct histories accounted"
    )
    table.add_column("scope", overflow="fold", min_width=14)
    for column in ("unit", "spends", "recorded", "indep.", "budget"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("verdict", overflow="fold")
    # Owners with identical figures share one row ("owners 1-10").
    groups: dict[tuple[object, ...], list[EpsilonCheck]] = {}
    for c in [*audit.owners, *([audit.federation] if audit.federation else [])]:
        key = (c.scope, c.unit, c.delta, len(c.series), c.recorded, c.independent, c.budget)
        groups.setdefault(key, []).append(c)
    rows = sorted(groups.values(), key=lambda g: -g[0].independent)
    for group in rows[:_MAX_AUDIT_ROWS]:
        c = group[0]
        verdict = "UNDER-REPORTED" if any(x.under_reported for x in group) else "ok"
        if c.over_budget:
            verdict += ", OVER BUDGET"
        if c.scope == "federation":
            scope = "federation"
        elif len(group) == 1:
            scope = f"owner {c.owner_id}"
        else:
            scope = f"{len(group)} owners: {_id_ranges([x.owner_id or 0 for x in group])}"
        table.add_row(
            scope,
            c.unit.value,
            str(len(c.series)),
            f"{c.recorded:.4f}",
            f"{c.independent:.4f}",
            "-" if c.budget is None else f"{c.budget:g}",
            verdict,
        )
    if len(rows) > _MAX_AUDIT_ROWS:
        table.caption = f"{len(rows) - _MAX_AUDIT_ROWS} more groups not shown (highest first)"
    console.print(table)
    if audit.federation is None and audit.owners:
        worst = max(c.recorded for c in audit.owners)
        console.print(
            "No client-level noise: the federation's guarantee is the maximum "
            f"{audit.owners[0].unit.value}-level epsilon over owners, {worst:.4f}."
        )
    for stop in audit.budget_stops:
        who = f"owner {stop['owner_id']}" if "owner_id" in stop else "the federation"
        console.print(
            f"budget stop: {who} before round {stop['round_id']} "
            f"(spent {stop['epsilon_spent']}, budget {stop['epsilon_budget']})"
        )
    for finding in audit.findings[:20]:
        console.print(f"[bold red]inconsistent entry {finding.seq}[/]: {finding.reason}")
    if len(audit.findings) > 20:
        console.print(f"... and {len(audit.findings) - 20} more inconsistent entries")
    for check in audit.over_budget:
        who = f"owner {check.owner_id}" if check.scope == "owner" else "the federation"
        console.print(
            f"[bold red]over budget[/]: {who}: independent epsilon {check.independent:.4f} "
            f"> budget {check.budget:g}"
        )
    bad = audit.under_reported
    if bad:
        names = ", ".join(
            f"owner {c.owner_id}" if c.scope == "owner" else "federation" for c in bad[:10]
        )
        console.print(f"[bold red]under-reported epsilon[/]: {names}")
    if audit.ok:
        console.print("[bold green]AUDIT PASSED[/]")
    else:
        problem = audit.first_problem
        where = f" (first bad entry: {problem[0]})" if problem and problem[0] is not None else ""
        console.print(f"[bold red]AUDIT FAILED[/]{where}")


def _audit_verify(args: argparse.Namespace) -> int:
    from securefed.audit import audit_ledger, read_owner_keys, read_public_key
    from securefed.privacy.accounting import Backend

    console = Console()
    audit = audit_ledger(
        args.ledger,
        read_public_key(args.pubkey),
        later_head=_read_head(args.later_head),
        owner_keys=read_owner_keys(args.owner_keys) if args.owner_keys else None,
        require_seal=args.require_seal,
        backend=Backend(args.backend) if args.backend else None,
        every_spend=not args.final_only,
    )
    print_audit(audit, console)
    return 0 if audit.ok else 1


def _report(args: argparse.Namespace) -> int:
    from securefed.audit import audit_run_dir
    from securefed.report import write_report

    audit = audit_run_dir(args.run_dir, pubkey=args.pubkey, require_seal=not args.allow_unsealed)
    out = write_report(Path(args.run_dir), audit, out=Path(args.out) if args.out else None)
    Console().print(f"report: {out} ({'audit passed' if audit.ok else 'AUDIT FAILED'})")
    return 0 if audit.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``securefed`` command."""
    parser = argparse.ArgumentParser(prog="securefed", description=__doc__)
    parser.add_argument("--version", action="version", version=f"securefed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the secure-aggregation demo (20 clients, 3 dropouts)")
    demo.add_argument("--clients", type=int, default=20)
    demo.add_argument("--length", type=int, default=10_000)
    simulate = sub.add_parser(
        "simulate", help="run a whole federation in one process (client and server code)"
    )
    simulate.add_argument("config", help="TOML configuration")
    simulate.add_argument("--out", required=True, help="output directory")
    audit = sub.add_parser("audit", help="independent audit of a privacy ledger")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check every signature, hash link and countersignature; re-account every "
        "owner's epsilon with a second backend; exit 1 on tampering or under-reporting",
    )
    verify.add_argument("ledger", help="ledger.db (SQLite) or its JSON Lines export")
    verify.add_argument(
        "--pubkey", required=True, help="the writer's initial public key: hex or file"
    )
    verify.add_argument("--later-head", help="a head held from the federation: SEQ:HASH")
    verify.add_argument("--owner-keys", help="JSON object owner id -> pinned public key (hex)")
    verify.add_argument("--require-seal", action="store_true", help="fail unless sealed")
    verify.add_argument(
        "--final-only",
        action="store_true",
        help="re-account each owner's last spend only (default: every spend)",
    )
    verify.add_argument(
        "--backend",
        choices=["pld", "prv", "rdp"],
        help="audit backend (default: one other than the online backend)",
    )
    report = sub.add_parser("report", help="write RUN_DIR/report.html (audit included)")
    report.add_argument("run_dir", help="a directory written by `securefed simulate`")
    report.add_argument("--pubkey", help="writer public key (default: RUN_DIR/ledger.pub)")
    report.add_argument("--out", help="output file (default: RUN_DIR/report.html)")
    report.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="audit a ledger that is not sealed (a run in progress or cut short)",
    )
    args = parser.parse_args(argv)
    if args.command in ("audit", "report"):
        logging.getLogger("absl").setLevel(logging.ERROR)
        try:
            return _audit_verify(args) if args.command == "audit" else _report(args)
        except (SecurefedError, OSError) as exc:
            print(f"securefed {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    if args.command == "demo":
        from securefed.demo import run_demo

        if args.clients < 16 or args.length < 10:
            parser.error("the demo needs at least 16 clients and 10 parameters")
        return 0 if run_demo(clients=args.clients, length=args.length) else 1
    if args.command == "simulate":
        try:
            return _simulate(args.config, args.out)
        except SecurefedError as exc:
            print(f"securefed simulate: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":
    sys.exit(main())
