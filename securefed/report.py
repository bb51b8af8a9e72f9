"""The privacy report of a run: one self-contained HTML page an auditor can read.

:func:`render_report` turns a run directory (written by ``securefed simulate``)
and an :class:`~securefed.audit.AuditResult` into HTML; :func:`write_report`
writes it atomically (temporary file, fsync, rename). The audit sections
(verification verdict, per-owner epsilon, mechanism parameters, budget stops)
come from the audit of the ledger alone, so they render even when the run
crashed; the run files add the utility curves and the final test metrics.

The page loads nothing: inline CSS, plots as base64 PNG, no script, and a
Content-Security-Policy that forbids every fetch. Every string taken from the
run or the ledger is escaped. Given the same inputs the output is identical
except for the report date (``now``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import statistics
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from securefed import __version__
from securefed.audit import AuditResult, EpsilonCheck, RoundRecord
from securefed.errors import DataError
from securefed.evaluation import SAMPLED_NEGATIVES
from securefed.ledger.entry import EntryKind
from securefed.run_files import CONFIG_FILE, METRICS_FILE, REPORT_FILE, SUMMARY_FILE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["render_report", "write_report"]


LISTED_OWNERS = 30
"""Up to this many owners the privacy table lists every one; above, a summary and the top."""
TOP_OWNERS = 10
"""Owners with the highest independent epsilon shown above the collapsed full table."""
NAMED_CHECKS = 12
"""Flagged owners named in the verdict; the privacy table lists every one."""
PLOT_DPI = 100
"""Resolution of the embedded plots: 8 x 3.6 in at 100 dpi is about 50 kB of PNG each."""

_METRIC_NAMES = {"hr10": "HR@10", "ndcg10": "NDCG@10", "auc": "AUC"}
_METRIC_ORDER = ("hr10", "ndcg10", "auc")
_SAMPLED, _FULL = "sampled_", "full_"
_MISSING = "\N{EM DASH}"


# -- run files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _RoundRow:
    """The fields of one ``metrics.jsonl`` line the report uses."""

    round: int
    cohort: int
    survivors: int
    dropouts: dict[str, int]
    refused: dict[str, int]
    metrics: dict[str, float] | None
    epsilon_max: float
    epsilon_median: float
    epsilon_federation: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Run:
    """What the run directory holds (each file may be absent after a crash)."""

    directory: Path | None
    rounds: tuple[_RoundRow, ...]
    metrics_found: bool
    torn_tail: bool
    """The last line of ``metrics.jsonl`` was cut off mid-write (and ignored)."""
    summary: dict[str, object] | None
    config: dict[str, object] | None


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer")
    return value


def _float(value: object, name: str) -> float:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{name}: expected a number or "inf"')
    return float(value)


def _counts(value: object, name: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected an object of counts")
    return {str(k): _int(v, f"{name}.{k}") for k, v in value.items()}


def _numbers(value: object, name: str) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected null or an object of numbers")
    return {str(k): _float(v, f"{name}.{k}") for k, v in value.items()}


def _round_row(line: bytes) -> _RoundRow:
    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    required = ("round", "cohort", "survivors", "dropouts", "refused", "metrics")
    missing = [name for name in (*required, "epsilon_max", "epsilon_median") if name not in obj]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    federation = obj.get("epsilon_federation")
    return _RoundRow(
        round=_int(obj["round"], "round"),
        cohort=_int(obj["cohort"], "cohort"),
        survivors=_int(obj["survivors"], "survivors"),
        dropouts=_counts(obj["dropouts"], "dropouts"),
        refused=_counts(obj["refused"], "refused"),
        metrics=_numbers(obj["metrics"], "metrics"),
        epsilon_max=_float(obj["epsilon_max"], "epsilon_max"),
        epsilon_median=_float(obj["epsilon_median"], "epsilon_median"),
        epsilon_federation=None if federation is None else _float(federation, "epsilon_federation"),
    )


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None


def _load_metrics(path: Path) -> tuple[tuple[_RoundRow, ...], bool, bool]:
    """``(rows, found, torn_tail)``: a cut-off last line is ignored, any other bad line raises."""
    data = _read_bytes(path)
    if data is None:
        return (), False, False
    lines = data.split(b"\n")
    unterminated = lines[-1] != b""
    if not unterminated:
        lines.pop()
    rows: list[_RoundRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _round_row(line)
        except (ValueError, TypeError) as exc:
            if unterminated and number == len(lines):
                # A crash while writing the last line: the rows before it stand.
                return tuple(rows), True, True
            raise DataError(f"{path.name} line {number}: {exc}") from None
        if rows and row.round <= rows[-1].round:
            raise DataError(f"{path.name} line {number}: round {row.round} out of order")
        rows.append(row)
    return tuple(rows), True, False


def _load_summary(path: Path) -> dict[str, object] | None:
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        _numbers(obj.get("final_test"), "final_test")
        for name in ("noise_multiplier", "planned_epsilon_max"):
            if name in obj:
                _float(obj[name], name)
        for name in ("owners", "parameters"):
            if name in obj:
                _int(obj[name], name)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path.name}: {exc}") from None
    return obj


def _load_config(path: Path) -> dict[str, object] | None:
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path.name}: {exc}") from None


def _load_run(run_dir: Path | None) -> _Run:
    if run_dir is None:
        return _Run(
            directory=None,
            rounds=(),
            metrics_found=False,
            torn_tail=False,
            summary=None,
            config=None,
        )
    if not run_dir.is_dir():
        raise DataError(f"no run directory at {run_dir}")
    rows, found, torn = _load_metrics(run_dir / METRICS_FILE)
    return _Run(
        directory=run_dir,
        rounds=rows,
        metrics_found=found,
        torn_tail=torn,
        summary=_load_summary(run_dir / SUMMARY_FILE),
        config=_load_config(run_dir / CONFIG_FILE),
    )


# -- small helpers -----------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float | None, spec: str = ".6g") -> str:
    if value is None:
        return _MISSING
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "\N{INFINITY}" if value > 0 else "-\N{INFINITY}"
    return format(value, spec)


def _lookup(tree: Mapping[str, object] | None, *path: str) -> object:
    node: object = tree
    for name in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    return node


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table; ``headers`` are plain text, ``rows`` cells already HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{_e(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _rounds_label(first: int, last: int) -> str:
    return f"round {first}" if first == last else f"rounds {first}\N{EN DASH}{last}"


# -- plots -------------------------------------------------------------------------------------


def _figure(rows: int = 1, cols: int = 1, *, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    # The object API (no pyplot): no global state, no backend switch, safe in any process.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, height * rows), dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for line in axes for ax in line]


def _png(fig: Figure, alt: str, caption: str) -> str:
    buffer = io.BytesIO()
    # No "Software" text chunk: the bytes depend on the data and matplotlib only.
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _step_series(
    check: EpsilonCheck, index: Mapping[int, int], size: int, attr: str
) -> npt.NDArray[np.float64]:
    """An owner's epsilon after each round: 0 before its first spend, then carried forward."""
    out = np.zeros(size)
    marks = np.full(size, False)
    for point in check.series:
        position = index[point.round_id]
        out[position] = float(getattr(point, attr))
        marks[position] = True
    last = 0.0
    for i in range(size):
        if marks[i]:
            last = out[i]
        out[i] = last
    return out


def _plain(text: str) -> str:
    """``text`` as a literal matplotlib label: a ``$`` would start (possibly broken) math."""
    return text.replace("$", "\\$")


def _finite(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.where(np.isfinite(values), values, np.nan)


def _epsilon_plot(audit: AuditResult) -> str | None:
    from matplotlib.collections import LineCollection

    fed = audit.federation
    spends = [*audit.owners, *([fed] if fed is not None else [])]
    if not any(c.series for c in spends):
        return None
    rounds = sorted({p.round_id for c in spends for p in c.series})
    index = {r: i for i, r in enumerate(rounds)}
    x = np.array(rounds, dtype=np.float64)
    fig, (ax,) = _figure()
    backend = audit.audit_backend
    if audit.owners:
        independent = np.stack(
            [_step_series(c, index, len(rounds), "independent") for c in audit.owners]
        )
        recorded = np.stack([_step_series(c, index, len(rounds), "recorded") for c in audit.owners])
        n = len(audit.owners)
        # One collection for every owner: a 610-owner run stays one small image.
        segments = np.stack([np.broadcast_to(x, independent.shape), _finite(independent)], -1)
        ax.add_collection(
            LineCollection(
                list(segments),
                linewidths=0.6,
                colors="#7a8ca3",
                alpha=max(0.08, min(0.6, 8.0 / n)),
                label=f"each owner ({backend})",
            )
        )
        # Max and median over the raw values (an infinite epsilon stays infinite), then
        # drawn without the infinite points.
        highlights = (
            (np.max(independent, axis=0), "#b2182b", f"max over owners ({backend})"),
            (np.median(independent, axis=0), "#2166ac", f"median over owners ({backend})"),
        )
        for values, colour, label in highlights:
            ax.plot(x, _finite(values), color=colour, lw=2.0, marker="o", ms=3, label=label)
        ax.plot(
            x,
            _finite(np.max(recorded, axis=0)),
            color="#000000",
            lw=1.0,
            ls="--",
            label=f"max recorded online ({audit.online_backend})",
        )
    if fed is not None and fed.series:
        values = _step_series(fed, index, len(rounds), "independent")
        ax.plot(
            x,
            _finite(values),
            color="#5e3c99",
            lw=2.0,
            marker="s",
            ms=3,
            label=f"federation ({backend})",
        )
    budgets = sorted({c.budget for c in audit.owners if c.budget is not None})
    for budget in budgets[:4]:
        ax.axhline(budget, color="#b2182b", lw=1.0, ls=":", label=f"owner budget {budget:g}")
    if fed is not None and fed.budget is not None:
        label = f"federation budget {fed.budget:g}"
        ax.axhline(fed.budget, color="#5e3c99", lw=1.0, ls=":", label=label)
    ax.autoscale_view()
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon")
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, loc="upper left")
    for handle in legend.legend_handles:
        if handle is not None:
            handle.set_alpha(1.0)  # the owners' faint lines, legible in the legend
    caption = (
        f"Epsilon after each round: every owner (thin lines; 0 before its first spend), "
        f"the max and median over owners re-accounted with {_e(backend)}, the max recorded "
        f"online ({_e(audit.online_backend)}, dashed), "
        + ("the federation, " if fed is not None else "")
        + (
            "and the budgets (dotted)."
            if budgets or (fed is not None and fed.budget is not None)
            else "no budget recorded."
        )
    )
    return _png(fig, "epsilon over rounds", caption)


def _utility_plot(rows: Sequence[_RoundRow], negatives: int) -> str | None:
    evaluated = [(r.round, r.metrics) for r in rows if r.metrics]
    if not evaluated:
        return None
    families: dict[str, list[str]] = {}
    for key in sorted({k for _, metrics in evaluated for k in metrics}):
        family = key
        for prefix in (_SAMPLED, _FULL):
            if key.startswith(prefix):
                family = key[len(prefix) :]
        families.setdefault(family, []).append(key)
    for keys in families.values():
        keys.sort(key=lambda k: (not k.startswith(_SAMPLED), k))
    order = [f for f in _METRIC_ORDER if f in families] + sorted(set(families) - set(_METRIC_ORDER))
    cols = min(3, len(order))
    nrows = math.ceil(len(order) / cols)
    fig, axes = _figure(nrows, cols, height=2.8)
    for ax, family in zip(axes, order, strict=False):
        for key in families[family]:
            points = [(r, metrics[key]) for r, metrics in evaluated if key in metrics]
            xs, ys = zip(*points, strict=True)
            if key.startswith(_SAMPLED):
                label, style, colour = f"sampled ({negatives} negatives)", "-", "#1b7837"
            elif key.startswith(_FULL):
                label, style, colour = "full ranking", "--", "#762a83"
            else:
                label, style, colour = _plain(key), "-.", "#444444"
            ax.plot(
                xs,
                _finite(np.array(ys, dtype=np.float64)),
                ls=style,
                color=colour,
                marker="o",
                ms=3,
                label=label,
            )
        ax.set_title(_METRIC_NAMES.get(family, _plain(family)), fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(order) :]:
        ax.set_axis_off()
    caption = (
        "Held-out metrics over rounds (released without noise: outside the privacy "
        f"guarantee). Solid: sampled ranking (the positive among {negatives} sampled "
        "negatives); dashed: full ranking over every item."
    )
    return _png(fig, "utility over rounds", caption)


def _stacked(ax: Axes, x: Sequence[int], parts: Mapping[str, Sequence[int]], title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    bottom = np.zeros(len(x))
    for name, values in parts.items():
        heights = np.array(values, dtype=np.float64)
        ax.bar(x, heights, bottom=bottom, label=_plain(name), width=0.8)
        bottom += heights
    if not bottom.any():
        ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 1)
    else:
        ax.legend(fontsize=7)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("round", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="y")


def _by_key(items: Sequence[Mapping[str, int]]) -> dict[str, list[int]]:
    keys = sorted({k for item in items for k in item})
    return {k: [item.get(k, 0) for item in items] for k in keys}


def _participation_plot(audit: AuditResult, rows: Sequence[_RoundRow]) -> str | None:
    ledger = sorted(audit.rounds, key=lambda r: r.round_id)
    if not ledger and not rows:
        return None
    fig, (drops, refusals) = _figure(1, 2, height=3.0)
    if ledger:
        x = [r.round_id for r in ledger]
        _stacked(drops, x, _by_key([r.dropouts for r in ledger]), "dropouts by stage (ledger)")
    else:
        x = [r.round for r in rows]
        _stacked(
            drops, x, _by_key([r.dropouts for r in rows]), f"dropouts by stage ({METRICS_FILE})"
        )
    if rows:
        x = [r.round for r in rows]
        _stacked(
            refusals, x, _by_key([r.refused for r in rows]), f"refusals by reason ({METRICS_FILE})"
        )
    else:
        x = [r.round_id for r in ledger]
        declined = {"did not accept the plan": [r.cohort - r.accepted for r in ledger]}
        _stacked(refusals, x, declined, "refusals (ledger: cohort - accepted)")
    caption = (
        "Owners that dropped out of each round, stacked by protocol stage, and owners that "
        "refused a round (by reason when the run's metrics are available)."
    )
    return _png(fig, "dropouts and refusals per round", caption)


# -- sections ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Genesis:
    federation_id: str | None
    securefed_version: str | None
    writer_key: str | None


def _genesis(audit: AuditResult) -> _Genesis:
    entries = audit.verification.entries
    if entries and entries[0].kind is EntryKind.FEDERATION_CREATED:
        try:
            body = entries[0].fields()
        except DataError:  # pragma: no cover - a verified entry has a canonical body
            body = {}
        return _Genesis(
            federation_id=str(body.get("federation_id", "")) or None,
            securefed_version=str(body.get("securefed_version", "")) or None,
            writer_key=str(body.get("writer_key", "")) or None,
        )
    return _Genesis(federation_id=None, securefed_version=None, writer_key=None)


def _verdict(check: EpsilonCheck) -> str:
    flags = []
    if check.under_reported:
        flags.append("UNDER-REPORTED")
    if check.over_budget:
        flags.append("OVER BUDGET")
    if not flags:
        return '<span class="ok">OK</span>'
    return '<span class="bad">' + _e(", ".join(flags)) + "</span>"


def _flagged(check: EpsilonCheck) -> bool:
    return check.under_reported or check.over_budget


def _header(audit: AuditResult, run: _Run, now: datetime) -> str:
    v = audit.verification
    genesis = _genesis(audit)
    federation = genesis.federation_id
    source = "ledger genesis"
    if federation is None:
        fallback = _lookup(run.config, "federation", "federation_id")
        federation = str(fallback) if fallback is not None else None
        source = f"{CONFIG_FILE}, not verified"
    fed_text = _e(federation) + f" <small>({_e(source)})</small>" if federation else _MISSING
    under = audit.under_reported
    over = [c for c in (*audit.owners, audit.federation) if c is not None and c.over_budget]
    if audit.ok:
        verdict = '<p class="verdict ok">VERIFIED</p>'
    else:
        verdict = '<p class="verdict bad">FAILED</p>'
    reasons: list[str] = []
    if not v.ok:
        reasons.append(
            f"Chain verification failed at entry <b>{_e(v.first_bad)}</b>: {_e(v.reason)}. "
            f"The re-accounting below covers only the {len(v.entries)} verified entries "
            f"before it."
        )
    else:
        reasons.append(
            f"Chain verified: {len(v.entries)} entries, each signed under the pinned writer key "
            f"and linked to the one before."
        )
    if under:
        names = _names(under)
        reasons.append(f"Recorded epsilon under-reported for {len(under)}: {_e(names)}.")
    else:
        reasons.append("No recorded epsilon is below the independent one (beyond tolerance).")
    if over:
        names = _names(over)
        reasons.append(f"Independent epsilon above the budget for {len(over)}: {_e(names)}.")
    if audit.findings:
        items = "".join(
            f"<li>entry <b>{_e(f.seq)}</b>: {_e(f.reason)}</li>" for f in audit.findings[:20]
        )
        more = len(audit.findings) - 20
        tail = f"<li>... and {more} more</li>" if more > 0 else ""
        reasons.append(
            f"{len(audit.findings)} entries contradict the rest of the ledger or its "
            f"configuration:<ul>{items}{tail}</ul>"
        )
    else:
        reasons.append(
            "Every round's entries are consistent with each other and the configuration "
            "(spends before the release, one release per round, events as planned)."
        )
    head = _MISSING if v.head is None else f"entry {v.head[0]}, hash {v.head[1].hex()}"
    writer = _MISSING if v.current_key is None else v.current_key.hex()
    facts = [
        ("federation", fed_text),
        ("ledger id", _e(v.ledger_id.hex()) if v.ledger_id is not None else _MISSING),
        ("written by", _e(f"securefed {genesis.securefed_version or _MISSING}")),
        ("report by", _e(f"securefed {__version__}")),
        ("report date", _e(now.strftime("%Y-%m-%d %H:%M UTC"))),
        ("records in the ledger", _e(v.records)),
        ("verified head", _e(head)),
        ("initial writer key (genesis)", _e(genesis.writer_key or _MISSING)),
        ("current writer key", _e(writer)),
        ("sealed", "yes" if v.sealed else '<span class="warn">no</span>'),
        ("countersignatures checked", _e(v.countersignatures)),
        ("accounting", _e(f"online: {audit.online_backend}; audit: {audit.audit_backend}")),
        ("spend histories accounted", _e(f"{audit.distinct_histories} distinct")),
        (
            "recorded epsilon checked at",
            "every spend" if audit.every_spend else "each owner's last spend only",
        ),
    ]
    if run.directory is not None:
        facts.append(("run directory", _e(run.directory.name)))
    notes = list(v.warnings)
    run_federation = _lookup(run.config, "federation", "federation_id")
    if genesis.federation_id is not None and run_federation not in (None, genesis.federation_id):
        notes.append(
            f"the run directory's {CONFIG_FILE} names another federation ({run_federation}): "
            "its metrics may not belong to this ledger"
        )
    warnings = "".join(f'<li class="warn">{_e(w)}</li>' for w in notes)
    return (
        "<header>"
        f"<h1>Privacy report{(': ' + _e(federation)) if federation else ''}</h1>"
        f"{verdict}<ul class='reasons'>"
        + "".join(f"<li>{r}</li>" for r in reasons)
        + "</ul>"
        + (f"<p><b>Warnings</b></p><ul>{warnings}</ul>" if warnings else "")
        + "<h2>1. Verification</h2><dl>"
        + "".join(f"<dt>{_e(k)}</dt><dd>{val}</dd>" for k, val in facts)
        + "</dl></header>"
    )


def _scope_name(check: EpsilonCheck) -> str:
    return "the federation" if check.owner_id is None else f"owner {check.owner_id}"


def _names(checks: Sequence[EpsilonCheck]) -> str:
    names = ", ".join(_scope_name(c) for c in checks[:NAMED_CHECKS])
    more = len(checks) - NAMED_CHECKS
    return names + (f" and {more} more (section 2)" if more > 0 else "")


def _privacy_row(check: EpsilonCheck) -> list[str]:
    return [
        _e("federation" if check.owner_id is None else check.owner_id),
        _e(check.unit.value),
        _e(_fmt(check.delta, "g")),
        _e(_fmt(check.recorded)),
        _e(_fmt(check.independent)),
        _e(_fmt(check.tolerance, ".3g")),
        _e(_fmt(check.budget, "g")),
        _verdict(check),
    ]


def _privacy_section(audit: AuditResult) -> str:
    owners = sorted(audit.owners, key=lambda c: c.owner_id or 0)
    headers = [
        "owner",
        "unit",
        "delta",
        f"recorded epsilon ({audit.online_backend}, online)",
        f"independent epsilon ({audit.audit_backend}, audit)",
        "tolerance",
        "budget",
        "verdict",
    ]
    parts = ["<section><h2>2. Privacy summary</h2>"]
    if not owners:
        parts.append("<p>The ledger records no data owner's spend.</p>")
    elif len(owners) <= LISTED_OWNERS:
        parts.append(_table(headers, (_privacy_row(c) for c in owners)))
    else:
        ind = [c.independent for c in owners]
        rec = [c.recorded for c in owners]
        parts.append(
            f"<p>{len(owners)} owners. Independent epsilon ({_e(audit.audit_backend)}): "
            f"max {_e(_fmt(max(ind)))}, median {_e(_fmt(statistics.median(ind)))}, "
            f"min {_e(_fmt(min(ind)))}. Recorded ({_e(audit.online_backend)}): max "
            f"{_e(_fmt(max(rec)))}, median {_e(_fmt(statistics.median(rec)))}, min "
            f"{_e(_fmt(min(rec)))}.</p>"
        )
        top = sorted(owners, key=lambda c: (-c.independent, c.owner_id or 0))[:TOP_OWNERS]
        shown = {c.owner_id for c in top}
        flagged = [c for c in owners if _flagged(c) and c.owner_id not in shown]
        parts.append(f"<p>The {len(top)} highest independent epsilons")
        parts.append(f", then every other flagged owner ({len(flagged)})" if flagged else "")
        parts.append(":</p>")
        parts.append(_table(headers, (_privacy_row(c) for c in [*top, *flagged])))
        parts.append(
            f"<details><summary>All {len(owners)} owners</summary>"
            + _table(headers, (_privacy_row(c) for c in owners))
            + "</details>"
        )
    fed = audit.federation
    if fed is not None:
        parts.append("<h3>Federation (client-level)</h3>")
        parts.append(_table(headers, [_privacy_row(fed)]))
    elif owners:
        worst = max(owners, key=lambda c: (c.independent, -(c.owner_id or 0)))
        units = "/".join(sorted({c.unit.value for c in owners}))
        parts.append(
            f"<p>No client-level noise: the federation's guarantee is the maximum "
            f"{_e(units)}-level epsilon over owners = <b>{_e(_fmt(worst.independent))}</b> "
            f"({_e(audit.audit_backend)}; recorded {_e(_fmt(worst.recorded))}) at delta "
            f"{_e(_fmt(worst.delta, 'g'))}, reached by owner {_e(worst.owner_id)}.</p>"
        )
    parts.append(
        "<p class='note'>UNDER-REPORTED: a recorded (online) epsilon, at this or any earlier "
        "spend, below the independent one by more than the tolerance; OVER BUDGET: the "
        "independent epsilon above the configured budget.</p></section>"
    )
    return "".join(parts)


def _negatives(audit: AuditResult, run: _Run) -> int:
    for tree in (audit.config, run.config):
        value = _as_int(_lookup(tree, "evaluation", "sampled_negatives"))
        if value is not None:
            return value
    return SAMPLED_NEGATIVES


def _planned_rounds(audit: AuditResult, run: _Run) -> int | None:
    for tree in (audit.config, run.config):
        value = _as_int(_lookup(tree, "federation", "rounds"))
        if value is not None:
            return value
    return None


def _utility_note(audit: AuditResult, run: _Run) -> str:
    if run.directory is None:
        return "<p>No run directory was given: utility over rounds is not shown.</p>"
    if not run.metrics_found:
        return (
            f"<p class='warn'>No {METRICS_FILE} in the run directory (a crashed or "
            "incomplete run): utility over rounds is not available. The audit sections come "
            "from the ledger alone.</p>"
        )
    notes = []
    planned = _planned_rounds(audit, run)
    count = len(run.rounds)
    span = f" (rounds {run.rounds[0].round}\N{EN DASH}{run.rounds[-1].round})" if count else ""
    evaluated = sum(1 for r in run.rounds if r.metrics)
    notes.append(f"{METRICS_FILE}: {count} rounds{span}, {evaluated} with held-out metrics.")
    if planned is not None and count < planned:
        notes.append(
            f"The run planned {planned} rounds and recorded {count}: it stopped early "
            "(a budget stop or a crash)."
        )
    if run.torn_tail:
        notes.append("Its last line was cut off mid-write and is ignored.")
    return "<p>" + " ".join(_e(n) for n in notes) + "</p>"


def _plots_section(audit: AuditResult, run: _Run) -> str:
    negatives = _negatives(audit, run)
    parts = ["<section><h2>3. Plots</h2>", "<h3>Epsilon over rounds</h3>"]
    eps = _epsilon_plot(audit)
    parts.append(eps or "<p>No spend was recorded: nothing to plot.</p>")
    parts.append("<h3>Utility over rounds</h3>")
    parts.append(_utility_note(audit, run))
    utility = _utility_plot(run.rounds, negatives)
    if utility is not None:
        parts.append(utility)
    elif run.metrics_found:
        parts.append("<p>No round recorded held-out metrics.</p>")
    parts.append("<h3>Dropouts and refusals</h3>")
    part = _participation_plot(audit, run.rounds)
    parts.append(part or "<p>No rounds recorded.</p>")
    parts.append("</section>")
    return "".join(parts)


_MECHANISM_FIELDS = ("noise_multiplier", "sampling_rate", "steps", "clip_norm", "unit")


def _mechanism_key(r: RoundRecord) -> tuple[str, ...]:
    m = r.mechanism
    return (
        *(m.get(name, _MISSING) for name in _MECHANISM_FIELDS),
        r.protection,
        str(r.cohort),
        str(r.accepted),
        str(sum(r.dropouts.values())),
        "yes" if r.released else "no",
    )


def _mechanism_section(audit: AuditResult) -> str:
    groups: list[tuple[int, int, tuple[str, ...]]] = []
    for r in sorted(audit.rounds, key=lambda r: r.round_id):
        key = _mechanism_key(r)
        if groups and groups[-1][2] == key and groups[-1][1] + 1 == r.round_id:
            groups[-1] = (groups[-1][0], r.round_id, key)
        else:
            groups.append((r.round_id, r.round_id, key))
    headers = [
        "rounds",
        "noise multiplier",
        "sampling rate",
        "steps",
        "clip norm",
        "unit",
        "protection",
        "cohort",
        "accepted",
        "dropped",
        "released",
    ]
    parts = ["<section><h2>4. Mechanism parameters per round</h2>"]
    if not groups:
        parts.append("<p>The (verified part of the) ledger records no rounds.</p>")
    else:
        parts.append(
            "<p>As recorded in the ledger (ROUND_PLANNED, MECHANISM, DROPOUTS and "
            "AGGREGATE_RELEASED entries); identical consecutive rounds are merged. "
            "Sampling rate and steps are per owner (DP-SGD); released: whether the "
            "round's aggregate was released.</p>"
        )
        rows = ([_e(_rounds_label(a, b)), *(_e(c) for c in key)] for a, b, key in groups)
        parts.append(_table(headers, rows, cls="compact"))
        if any(not r.mechanism for r in audit.rounds):
            parts.append(
                f"<p class='warn'>{_MISSING}: no MECHANISM entry for the round (no noise "
                "was recorded).</p>"
            )
    parts.append("</section>")
    return "".join(parts)


def _budget_section(audit: AuditResult) -> str:
    parts = ["<section><h2>5. Budget stops</h2>"]
    if not audit.budget_stops:
        parts.append(
            "<p>No BUDGET_EXHAUSTED entry: no budget stopped an owner or the federation.</p>"
        )
    else:
        names = ("round_id", "scope", "owner_id", "epsilon_spent", "epsilon_budget", "delta")
        rows = ([_e(stop.get(n, _MISSING)) for n in names] for stop in audit.budget_stops)
        parts.append(_table(["round", "scope", "owner", "epsilon spent", "budget", "delta"], rows))
    parts.append("</section>")
    return "".join(parts)


def _prior_release(audit: AuditResult) -> dict[str, object] | None:
    """Round 0's ``release`` object (the item-popularity prior), if the ledger has one."""
    for entry in audit.verification.entries:
        if entry.kind is not EntryKind.ROUND_PLANNED:
            continue
        try:
            body = entry.fields()
        except DataError:  # pragma: no cover - a verified entry has a canonical body
            continue
        plan = body.get("plan")
        release = plan.get("release") if isinstance(plan, dict) else None
        if body.get("round_id") == "0" and isinstance(release, dict):
            return dict(release)
    return None


def _guarantees_section(audit: AuditResult) -> str:
    v = audit.verification
    units = sorted({c.unit.value for c in audit.owners}) or ["record"]
    deltas = sorted({c.delta for c in audit.owners})
    delta = ", ".join(_fmt(d, "g") for d in deltas) or _MISSING
    tail = (
        "This ledger is sealed."
        if v.sealed
        else "This ledger is <b>not sealed</b>: unless the verifier held a later head at its "
        "end, its tail could have been cut."
    )
    failed = (
        [
            "<b>This audit failed</b> (see the verdict above): until the failure is explained, "
            "the statements below describe what the ledger claims, not what it proves."
        ]
        if not audit.ok
        else []
    )
    items = [
        *failed,
        f"Each data owner's training data has {_e('/'.join(units))}-level "
        f"(epsilon, delta)-differential privacy at delta = {_e(delta)}, with the independent "
        "epsilon of section 2, for everything computed from the noised, clipped training "
        "updates (the released aggregates and the models built from them). A person whose "
        "data several owners hold is covered by each owner's guarantee separately, not by one "
        "of them alone.",
        *_prior_items(audit),
        "Held-out metrics (the utility plots and section 7) are computed on the owners' data "
        "and released without noise: they are outside the guarantee.",
        "The ledger proves integrity under the pinned writer key (these entries were signed "
        "by that key, in this order, and not altered since), not that what was recorded is "
        "true. On the spend side, owners' countersignatures "
        f"({v.countersignatures} checked) and the independent re-accounting of the "
        "recorded mechanism parameters cover it.",
        "An unsealed ledger verified without a later head can have had its tail cut: "
        "entries after its last one could have been removed undetected "
        f"(protocols/ledger.md \N{SECTION SIGN}8.3). {tail}",
    ]
    return (
        "<section><h2>6. What this guarantees and what it does not</h2><ul>"
        + "".join(f"<li>{item}</li>" for item in items)
        + "</ul></section>"
    )


def _prior_items(audit: AuditResult) -> list[str]:
    release = _prior_release(audit)
    if release is None:
        return []
    if release.get("noise") != "distributed":
        return [
            "Round 0 (the item-popularity prior) released the owners' exact item counts, "
            "summed by secure aggregation, without noise."
        ]
    return [
        "Round 0 (the item-popularity prior) is part of each owner's epsilon, but its noise "
        "is <b>distributed</b>: each owner added a share of it, counting on "
        f"{_e(str(release.get('honest_shares')))} honest inputs in the sum. That part of "
        "the guarantee holds against the server and up to a fraction "
        f"{_e(str(release.get('corrupt_fraction')))} of colluding owners only while secure "
        "aggregation holds (protocols/ledger.md \N{SECTION SIGN}5.12); the owners' DP-SGD "
        "noise does not depend on that."
    ]


def _final_section(audit: AuditResult, run: _Run) -> str:
    parts = ["<section><h2>7. Final test metrics</h2>"]
    summary = run.summary
    if summary is None:
        where = "no run directory was given" if run.directory is None else f"no {SUMMARY_FILE}"
        parts.append(f"<p>Not available: {_e(where)} (the run may not have finished).</p>")
        parts.append("</section>")
        return "".join(parts)
    negatives = _negatives(audit, run)
    final = _numbers(summary.get("final_test"), "final_test") or {}
    ordered = []
    for key in final:
        if key.startswith(_SAMPLED):
            family, rank, protocol = key[len(_SAMPLED) :], 0, f"sampled: {negatives} negatives"
        elif key.startswith(_FULL):
            family, rank, protocol = key[len(_FULL) :], 1, "full ranking"
        else:
            family, rank, protocol = key, 2, _MISSING
        known = _METRIC_ORDER.index(family) if family in _METRIC_ORDER else len(_METRIC_ORDER)
        ordered.append(((known, family, rank), family, protocol, final[key]))
    rows = [
        [_e(_METRIC_NAMES.get(family, family)), _e(protocol), _e(_fmt(value, ".4f"))]
        for _, family, protocol, value in sorted(ordered)
    ]
    if rows:
        parts.append(
            "<p>On the test split, after the last round; released without noise (outside "
            "the guarantee).</p>"
        )
        parts.append(_table(["metric", "ranking", "value"], rows))
    else:
        parts.append("<p>The run recorded no final test metrics.</p>")
    facts = []
    for name, label in (
        ("noise_multiplier", "noise multiplier"),
        ("planned_epsilon_max", "planned max epsilon"),
    ):
        if name in summary:
            facts.append(f"<dt>{_e(label)}</dt><dd>{_e(_fmt(_float(summary[name], name)))}</dd>")
    for name, label in (("owners", "owners"), ("parameters", "model parameters")):
        if name in summary:
            facts.append(f"<dt>{_e(label)}</dt><dd>{_e(summary[name])}</dd>")
    if facts:
        parts.append("<dl>" + "".join(facts) + "</dl>")
    parts.append("</section>")
    return "".join(parts)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #111;
  max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem;
  border-bottom: 1px solid #999; margin-top: 2rem; } h3 { font-size: 1rem; }
.verdict { font-size: 2.6rem; font-weight: 800; margin: 0.3rem 0; letter-spacing: 0.05em; }
.ok { color: #1a7f37; } .bad { color: #b00020; font-weight: 700; } .warn { color: #8a5300; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; font-family: monospace; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #bbb; padding: 0.2rem 0.45rem; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.5rem 0; } img { max-width: 100%; height: auto; }
figcaption, .note { font-size: 0.8rem; color: #444; }
details summary { cursor: pointer; font-weight: 600; }
@media print { body { max-width: none; margin: 0; } section, figure, table {
  break-inside: avoid; } a { color: inherit; } }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""No fetch of any kind: the page shows only what it contains."""


def render_report(run_dir: Path | None, audit: AuditResult, *, now: datetime | None = None) -> str:
    """The privacy report of a run as one self-contained HTML page.

    Args:
        run_dir: the run directory (``metrics.jsonl``, ``summary.json``,
            ``config.toml``), any of whose files may be missing after a crash;
            None for an audit-only report.
        audit: the audit of the run's ledger (:func:`securefed.audit.audit_ledger`).
        now: the report date (default: the current time); the only input that
            is not in ``run_dir`` or ``audit``.

    Returns:
        The HTML text.

    Raises:
        DataError: ``run_dir`` is not a directory, or one of its files is
            malformed or unreadable (the message names the file, and the line
            of ``metrics.jsonl``).
    """
    run = _load_run(run_dir)
    when = datetime.now(UTC) if now is None else now
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    federation = _genesis(audit).federation_id or _lookup(run.config, "federation", "federation_id")
    title = "securefed privacy report" + (f": {federation}" if federation else "")
    sections = [
        _header(audit, run, when),
        _privacy_section(audit),
        _plots_section(audit, run),
        _mechanism_section(audit),
        _budget_section(audit),
        _guarantees_section(audit),
        _final_section(audit, run),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


def write_report(
    run_dir: Path | None,
    audit: AuditResult,
    *,
    out: Path | None = None,
    now: datetime | None = None,
) -> Path:
    """Render the report and write it atomically (temporary file, fsync, rename).

    Args:
        run_dir: as for :func:`render_report`.
        audit: as for :func:`render_report`.
        out: where to write (default: ``run_dir / "report.html"``).
        now: as for :func:`render_report`.

    Returns:
        The path written.

    Raises:
        ValueError: neither ``run_dir`` nor ``out`` is given.
        DataError: as for :func:`render_report`.
    """
    if out is None:
        if run_dir is None:
            raise ValueError("give run_dir or out")
        out = run_dir / REPORT_FILE
    data = render_report(run_dir, audit, now=now).encode("utf-8")
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_directory(out.parent)
    return out


def _fsync_directory(path: Path) -> None:
    # Make the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
