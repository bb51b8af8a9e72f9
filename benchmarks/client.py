"""Client throughput: DP-SGD against the same client's non-private training.

    python benchmarks/client.py            # print the figures
    python benchmarks/client.py --write    # also write benchmarks/results/client.json
                                           # and the BENCHMARKS.md section

One data owner of the shipped default job (``examples/recommendation/movielens.toml``:
MovieLens latest-small in 10 silos, MF dim 32, 4 uniform negatives per positive,
record-level DP at the calibrated noise multiplier, clip 1, SGD) trains one local
epoch (``ceil(1/q)`` Poisson steps) alternately with DP-SGD (Opacus ghost
clipping, CSPRNG Gaussian noise with the floating-point mitigation: what the
federation runs) and with the same sampling, batches and step size without
clipping or noise (``DpTrainer.train_nonprivate``). Both run on the same trainer,
in the same process, interleaved, so the machine's load falls on both alike.
Throughput = sampled records per wall-clock second; the target is DP >= 0.33 x
non-private at the default sampling rate. Noise generation alone (one draw per
shared parameter per step, the same stream) is timed too.
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


def measure(rates: list[float], repeats: int) -> dict[str, Any]:
    import torch

    from securefed.config import load_config
    from securefed.federation import Federation
    from securefed.plan import steps_per_round
    from securefed.privacy.events import DpSgdEvent
    from securefed.privacy.noise import SecureGaussianNoise
    from securefed.randomness import DeterministicRandom

    config_path = CONFIG
    config = load_config(config_path)
    fed = Federation(config, root=config_path.parent, rng=DeterministicRandom(b"c" * 32))
    owner = fed.owners[min(fed.owners)]
    trainer = owner.trainer
    t, p = config.training, config.privacy
    records = trainer.data.units(p.unit)
    params = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    shared = int(fed.coordinator.weights.size)
    out: dict[str, Any] = {
        "config": str(config_path.relative_to(ROOT)),
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
            f"q {rate:g}: DP {dp_rate:,.0f} records/s, non-private {plain_rate:,.0f} records/s, "
            f"ratio {dp_rate / plain_rate:.2f}",
            flush=True,
        )
    return out


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    default = data["default_rate"]
    lines = [
        BEGIN,
        "## Client throughput (`benchmarks/client.py`)",
        "",
        f"Command: `{data['command']}` — {data['runtime_s'] / 60:.1f} min.  ",
        f"Machine: {m['nproc']} cores, Python {m['python']}, torch {m['torch']}, "
        f"opacus {m['opacus']}, {data['torch_threads']} torch threads; {m['date']}.",
        "",
        f"One owner of `{data['config']}` ({data['owner_records']:,} training records, "
        f"{data['trained_parameters']:,} trained parameters of which "
        f"{data['shared_parameters']:,} shared; record-level, noise multiplier "
        f"{data['noise_multiplier']:.3f}, clip {data['clip_norm']:g}): one local epoch of "
        "Poisson steps, DP-SGD (Opacus ghost clipping + CSPRNG noise) and the same "
        f"sampling without clipping or noise, interleaved, {data['repeats']} times each; "
        "medians of sampled records per wall-clock second, on the CPU. Noise: the noise of "
        "one epoch alone (one value per trained parameter per step, each the mitigated sum "
        "of four CSPRNG normal draws), included in the DP figure.",
        "",
        "| sampling rate q | expected batch (records) | steps / epoch | DP-SGD records/s "
        "| non-private records/s | DP / non-private | DP epoch (s) | non-private epoch (s) "
        "| noise of one epoch (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rates"]:
        mark = " (shipped default)" if r["sampling_rate"] == default else ""
        lines.append(
            f"| {r['sampling_rate']:g}{mark} | {r['expected_batch']:.0f} | {r['steps']} "
            f"| {r['dp_records_per_s']:,.0f} | {r['plain_records_per_s']:,.0f} "
            f"| {r['ratio']:.2f} | {r['dp_epoch_s']:.2f} | {r['plain_epoch_s']:.2f} "
            f"| {r['noise_epoch_s']:.2f} |"
        )
    shipped = next(r for r in data["rates"] if r["sampling_rate"] == default)
    verdict = "met" if shipped["ratio"] >= TARGET else "not met"
    lines += [
        "",
        f"Target: DP-SGD throughput >= {TARGET} x non-private at the shipped default "
        f"(q = {default:g}, about {shipped['expected_batch']:.0f} records a step): "
        f"{shipped['ratio']:.2f}, {verdict}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", help="sampling rates (default: the shipped rate and 0.2)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    from securefed.config import load_config

    default = load_config(CONFIG).training.sampling_rate
    rates = args.rates or sorted({default, 0.2})
    if default not in rates:
        raise SystemExit(f"the shipped default rate {default:g} must be among --rates")
    started = time.perf_counter()
    data = measure(rates, args.repeats)
    import numpy as np
    import opacus
    import torch

    data.update(
        command="python benchmarks/client.py --write"
        + (f" --rates {' '.join(f'{r:g}' for r in rates)}" if args.rates else "")
        + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        repeats=args.repeats,
        default_rate=default,
        runtime_s=time.perf_counter() - started,
        machine={
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "opacus": opacus.__version__,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
    )
    section = markdown(data)
    print(section)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        write_section(BENCHMARKS_MD, BEGIN, END, section)


if __name__ == "__main__":
    main()
