"""The ``securefed`` command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from securefed import __version__
from securefed.errors import SecurefedError

__all__ = ["main"]


def _simulate(config_path: str, out: str) -> int:
    from rich.console import Console
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
    console.print(
        "Held-out metrics are released without noise: they are outside the DP guarantee. "
        f"Written: {out}/metrics.jsonl, {out}/config.toml, {out}/summary.json"
    )
    return 0


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
    args = parser.parse_args(argv)
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
