"""Client throughput: DP-SGD against the same client's non-private training.

    python benchmarks/client.py            # print the figures
    python benchmarks/client.py --write    # also write benchmarks/results/client.json
                                           # and the BENCHMARKS.md section

One data owner of the shipped default job (``examples/recommendation/movielens.toml``:
MovieLens latest-small in 10 silos, MF dim 32 over fixed item vectors from the
catalogue's genres and release decade, 4 uniform negatives per positive, record-level
DP at the calibrated noise multiplier, clip 1, SGD) trains one local epoch
(``ceil(1/q)`` Poisson steps) alternately with DP-SGD (Opacus ghost clipping, CSPRNG
Gaussian noise with the floating-point mitigation: what the federation runs) and
with the same sampling, batches and step size without clipping or noise
(``DpTrainer.train_nonprivate``). Both run on the same trainer, in the same process,
interleaved, so the machine's load falls on both alike. Throughput = sampled records
per wall-clock second; the target is DP >= 0.33 x non-private at the default
sampling rate. The same owner with a learned item table (``item_features = []``,
321,487 shared parameters) is measured the same way, for comparison. Noise
generation alone (one draw per trained parameter per step, the same stream) is
timed too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from sections import write_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "client.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
CONFIG = ROOT / "examples" / "recommendation" / "movielens.toml"
BEGIN, END = "<!-- client:begin -->", "<!-- client:end -->"
TARGET = 0.33


def measure(config: Any, rates: list[float], repeats: int) -> dict[str, Any]:
    import torch

    from securefed.federation import Federation
    from securefed.plan import steps_per_round
    from securefed.privacy.events import DpSgdEvent
    from securefed.privacy.noise import SecureGaussianNoise
    from securefed.randomness import DeterministicRandom

    fed = Federation(config, root=CONFIG.parent, rng=DeterministicRandom(b"c" * 32))
    owner = fed.owners[min(fed.owners)]
    trainer = owner.trainer
    t, p = config.training, config.privacy
    records = trainer.data.units(p.unit)
    params = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    shared = int(fed.coordinator.weights.size)
    out: dict[str, Any] = {
        "item_features": [f.value for f in config.model.item_features],
        "owner_records": records,
        "trained_parameters": params,
        "shared_parameters": shared,
        "noise_multiplier": fed.noise_multiplier,
        "clip_norm": p.clip_norm,
        "torch_threads": torch.get_num_threads(),
        "rates": [],
    }
    noise = SecureGaussianNoise(trainer._stream)
    for rate in rates:
        steps = steps_per_round(t.local_epochs, rate)
        event = DpSgdEvent(
            sampling_rate=rate, noise_multiplier=fed.noise_multiplier, steps=steps, unit=p.unit
        )
        dp: list[dict[str, float]] = []
        plain: list[dict[str, float]] = []
        draw: list[float] = []
        for _ in range(repeats):
            for kind in ("dp", "plain"):
                start = time.perf_counter()
                if kind == "dp":
                    stats = trainer.train(
                        event=event, clip_norm=p.clip_norm, learning_rate=t.learning_rate,
                        negatives=t.negatives, optimizer=t.optimizer,
                    )  # fmt: skip
                else:
                    stats = trainer.train_nonprivate(
                        rate=rate, steps=steps, learning_rate=t.learning_rate,
                        negatives=t.negatives, optimizer=t.optimizer,
                    )  # fmt: skip
                wall = time.perf_counter() - start
                (dp if kind == "dp" else plain).append(
                    {"wall_s": wall, "cpu_s": stats.seconds, "records": stats.sampled_units}
                )
            start = time.perf_counter()
            for _ in range(steps):
                noise.sample(params, fed.noise_multiplier * p.clip_norm)
            draw.append(time.perf_counter() - start)

        def rate_of(runs: list[dict[str, float]]) -> float:
            return statistics.median(r["records"] / r["wall_s"] for r in runs)

        dp_rate, plain_rate = rate_of(dp), rate_of(plain)
        out["rates"].append(
            {
                "sampling_rate": rate,
                "steps": steps,
                "expected_batch": rate * records,
                "dp_records_per_s": dp_rate,
                "plain_records_per_s": plain_rate,
                "ratio": dp_rate / plain_rate,
                "dp_epoch_s": statistics.median(r["wall_s"] for r in dp),
                "plain_epoch_s": statistics.median(r["wall_s"] for r in plain),
                "noise_epoch_s": statistics.median(draw),
                "runs": {"dp": dp, "plain": plain, "noise_s": draw},
            }
        )
        print(
            f"{_model(out)}, q {rate:g}: DP {dp_rate:,.0f} records/s, "
            f"non-private {plain_rate:,.0f} records/s, ratio {dp_rate / plain_rate:.2f}",
            flush=True,
        )
    return out


def _model(entry: dict[str, Any]) -> str:
    blocks = entry["item_features"]
    return f"fixed item vectors ({' + '.join(blocks)})" if blocks else "learned item table"


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    default = data["default_rate"]
    shipped_model = data["models"][0]
    lines = [
        BEGIN,
        "## Client throughput (`benchmarks/client.py`)",
        "",
        f"Command: `{data['command']}` — {data['runtime_s'] / 60:.1f} min.  ",
        f"Machine: {m['nproc']} cores, Python {m['python']}, torch {m['torch']}, "
        f"opacus {m['opacus']}, {shipped_model['torch_threads']} torch threads; {m['date']}.",
        "",
        f"One owner of `{data['config']}` ({shipped_model['owner_records']:,} training "
        f"records; record-level, noise multiplier {shipped_model['noise_multiplier']:.3f}, "
        f"clip {shipped_model['clip_norm']:g}): one local epoch of Poisson steps, DP-SGD "
        "(Opacus ghost clipping + CSPRNG noise) and the same sampling without clipping or "
        f"noise, interleaved, {data['repeats']} times each; medians of sampled records per "
        "wall-clock second, on the CPU. First the shipped model, then the same owner with "
        "a learned item table. Noise: the noise of one epoch alone (one value per trained "
        "parameter per step, each the mitigated sum of four CSPRNG normal draws), "
        "included in the DP figure.",
        "",
        "| model (trained / shared parameters) | sampling rate q | expected batch (records) "
        "| steps / epoch | DP-SGD records/s | non-private records/s | DP / non-private "
        "| DP epoch (s) | non-private epoch (s) | noise of one epoch (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in data["models"]:
        label = (
            f"{_model(entry)} ({entry['trained_parameters']:,} / {entry['shared_parameters']:,})"
        )
        for r in entry["rates"]:
            mark = " (shipped default)" if r["sampling_rate"] == default else ""
            lines.append(
                f"| {label} | {r['sampling_rate']:g}{mark} | {r['expected_batch']:.0f} "
                f"| {r['steps']} | {r['dp_records_per_s']:,.0f} "
                f"| {r['plain_records_per_s']:,.0f} | {r['ratio']:.2f} "
                f"| {r['dp_epoch_s']:.3f} | {r['plain_epoch_s']:.3f} "
                f"| {r['noise_epoch_s']:.3f} |"
            )
    shipped = next(r for r in shipped_model["rates"] if r["sampling_rate"] == default)
    verdict = "met" if shipped["ratio"] >= TARGET else "not met"
    lines += [
        "",
        f"Target: DP-SGD throughput >= {TARGET} x non-private at the shipped default "
        f"({_model(shipped_model)}, q = {default:g}, about {shipped['expected_batch']:.0f} "
        f"records a step): {shipped['ratio']:.2f}, {verdict}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        help="sampling rates (default: the shipped rate, 0.05 and 0.2)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    from securefed.config import load_config

    shipped = load_config(CONFIG)
    default = shipped.training.sampling_rate
    rates = args.rates or sorted({default, 0.05, 0.2})
    if default not in rates:
        raise SystemExit(f"the shipped default rate {default:g} must be among --rates")
    learned = shipped.model_copy(
        update={"model": shipped.model.model_copy(update={"item_features": ()})}
    )
    started = time.perf_counter()
    models = [measure(config, rates, args.repeats) for config in (shipped, learned)]
    import numpy as np
    import opacus
    import torch

    data: dict[str, Any] = {
        "config": str(CONFIG.relative_to(ROOT)),
        "models": models,
        "command": "python benchmarks/client.py --write"
        + (f" --rates {' '.join(f'{r:g}' for r in rates)}" if args.rates else "")
        + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "repeats": args.repeats,
        "default_rate": default,
        "runtime_s": time.perf_counter() - started,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "opacus": opacus.__version__,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
    }
    section = markdown(data)
    print(section)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_section(BENCHMARKS_MD, BEGIN, END, section)


if __name__ == "__main__":
    main()
