"""The secure-aggregation server on its own: one round's messages replayed into fresh servers.

Usage::

    python benchmarks/secagg_replay.py n10-m1e5-d10 [--replays 31]

``benchmarks/secagg.py`` times the server inside a simulated round, where every
client runs in the same process between the server's calls; on a 2-core machine
the clients' mask expansions (megabytes per client) evict the server's working
set between messages, a cost a server on its own machine does not pay. Here one
round runs through the simulation, every client -> server message is recorded
as bytes, and the recorded round is replayed (decode, receive, close, finalize)
into a fresh server ``--replays`` times. Each replay is paired with the server
PRG floor measured right before and after it (the smaller is kept, as in
``secagg.py``); the median, least and largest ratio are printed. The ratio
``secagg.py`` reports stays the one the target is judged by: this is a second
view, not a replacement.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import secagg as bench  # the benchmark module beside this file

RECEIVES = (
    "receive_advertisement",
    "receive_share_keys",
    "receive_masked_input",
    "receive_consistency",
    "receive_unmask",
)
CLOSE_AFTER = {
    "receive_advertisement": "close_advertise",
    "receive_share_keys": "close_share_keys",
    "receive_masked_input": "close_masked_input",
    "receive_consistency": "close_consistency",
}


def record_round(setup: dict[str, Any]) -> list[tuple[str, type, bytes]]:
    """Run one simulated round; return its client -> server messages in order."""
    import securefed.simulation as simulation
    from securefed.secagg.server import SecAggServer

    log: list[tuple[str, type, bytes]] = []

    def recording(name: str) -> Any:
        receive = getattr(SecAggServer, name)

        def call(self: SecAggServer, message: Any) -> None:
            log.append((name, type(message), message.to_bytes()))
            receive(self, message)

        return call

    recorder = type("Recording", (SecAggServer,), {n: recording(n) for n in RECEIVES})
    original = simulation.SecAggServer
    simulation.SecAggServer = recorder  # type: ignore[misc]
    try:
        report = simulation.run_secagg_round(
            roster=setup["roster"],
            identities=setup["identities"],
            context=setup["context"],
            inputs=setup["inputs"],
            drops={"masked_input": setup["dropped"]} if setup["dropped"] else None,
        )
    finally:
        simulation.SecAggServer = original  # type: ignore[misc]
    if report.result is None:
        raise SystemExit(f"the recorded round aborted: {report.error!r}")
    return log


def replay(setup: dict[str, Any], log: list[tuple[str, type, bytes]]) -> float:
    """CPU seconds of a fresh server fed the recorded messages, finalize included."""
    from securefed.secagg.server import SecAggServer

    server = SecAggServer(roster=setup["roster"], context=setup["context"])
    start = time.process_time()
    previous = None
    for name, kind, data in log:
        if previous is not None and name != previous:
            getattr(server, CLOSE_AFTER[previous])()
        getattr(server, name)(kind.from_bytes(data))
        previous = name
    server.finalize()
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("config", help="a configuration name of secagg.py, e.g. n10-m1e5-d10")
    parser.add_argument("--replays", type=int, default=31)
    args = parser.parse_args(argv)
    configs = {c.name: c for c in bench.main_configs(False)}
    if args.config not in configs:
        raise SystemExit(f"unknown configuration; one of {sorted(configs)}")
    cfg = configs[args.config]
    setup = bench._setup(cfg)
    log = record_round(setup)
    bits = setup["context"].params.ring_bits
    # The server PRG floor, on the graph the round used.
    from securefed.secagg.cohort import cohort_layout
    from securefed.secagg.messages import AdvertiseKeys

    ads = [AdvertiseKeys.from_bytes(d) for _, kind, d in log if kind is AdvertiseKeys]
    _, neighbours, _ = cohort_layout({a.client_id: a for a in ads}, setup["context"])
    survivors = {a.client_id for a in ads} - set(setup["dropped"])
    expansions = bench.server_mask_count(neighbours, survivors, setup["dropped"])
    ratios = []
    for _ in range(args.replays):
        gc.collect()
        gc.disable()
        before = bench._server_floor(cfg.m, bits, expansions)
        seconds = replay(setup, log)
        after = bench._server_floor(cfg.m, bits, expansions)
        gc.enable()
        ratios.append(seconds / min(before, after))
    print(
        f"{cfg.name}: replayed server / PRG floor ({expansions} expansions): median "
        f"{np.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x "
        f"over {args.replays} replays"
    )


if __name__ == "__main__":
    main()
