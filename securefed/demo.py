"""The secure-aggregation demo behind ``make demo``.

Twenty clients, three of which drop out at different stages. It prints what the
server saw (masked vectors that look uniformly random) and checks that the
unmasked result equals the exact sum of the survivors' quantised inputs.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from securefed.client.update import PlaintextUpdate, quantize_update
from securefed.config import SecurefedConfig
from securefed.randomness import OsRandom
from securefed.secagg.context import RoundContext, model_digest
from securefed.secagg.packing import unpack
from securefed.secagg.roster import IdentityKey, Roster, RosterEntry, SignedRoster
from securefed.server.aggregation import aggregate_mean
from securefed.simulation import run_secagg_round

__all__ = ["run_demo"]

_CHI2_15_999 = 37.697
"""Chi-square critical value, 15 degrees of freedom, upper 0.1% (a uniformity check)."""


def _chi_square_16(values: np.ndarray, bits: int) -> float:
    bins = np.bincount(
        (values.astype(np.uint64) >> np.uint64(bits - 4)).astype(np.int64), minlength=16
    )
    expected = values.size / 16
    return float(((bins - expected) ** 2 / expected).sum())


def run_demo(*, clients: int = 20, length: int = 10_000, console: Console | None = None) -> bool:
    """Run the demo round and print what happened. Returns True when the sum is exact."""
    out = console or Console()
    rng = OsRandom()
    ids = list(range(1, clients + 1))
    identities = {i: IdentityKey.generate(rng) for i in ids}
    owners = [IdentityKey.generate(rng) for _ in range(3)]
    roster = SignedRoster.sign(
        Roster(
            federation_id="securefed-demo",
            version=1,
            entries=tuple(
                RosterEntry(
                    client_id=i, name=f"owner-{i:02d}", identity_key=identities[i].public_key
                )
                for i in ids
            ),
        ),
        owners,
    ).verify(trusted=[o.public_key for o in owners], required=3)
    config = SecurefedConfig()
    params = config.secagg.to_params(length)
    model = {"item_embedding": np.zeros((length // 10, 10), dtype=np.float32)}
    context = RoundContext(
        federation_id=roster.federation_id,
        round_id=1,
        model_hash=model_digest(model, b"demo plan"),
        roster_hash=roster.digest(),
        params=params,
    )
    # Each client's update; a fixed, public generator only makes the demo's inputs.
    data_rng = np.random.default_rng(2026)
    updates = {
        i: PlaintextUpdate(tensors={"item_embedding": data_rng.normal(0, 0.1, (length // 10, 10))})
        for i in ids
    }
    spec = params.quantization
    inputs = {i: quantize_update(updates[i], spec, weight=1, rng=rng) for i in ids}
    drops = {"share_keys": [4], "masked_input": [9], "unmask": [15]}
    out.rule("[bold]securefed secure aggregation demo")
    out.print(
        f"{clients} clients, {length:,} parameters each, ring Z_2^{params.ring_bits}, "
        f"quantisation {spec.bits} bits over [-{spec.clip}, {spec.clip}]"
    )
    out.print(
        "dropouts: client 4 before sharing keys, client 9 before sending its masked input, "
        "client 15 before unmasking"
    )
    report = run_secagg_round(
        roster=roster,
        identities=identities,
        context=context,
        inputs=inputs,
        drops=drops,
        keep_server_view=True,
    )
    if report.result is None:
        out.print(f"[red]round aborted: {report.error}")
        return False
    result = report.result
    g = result.graph
    out.print(f"graph: {g.kind.name.lower()}, degree {g.degree}, threshold t = {g.threshold}")

    table = Table(title="What the server saw (first 3 clients)")
    table.add_column("client")
    table.add_column("masked values (first 4)")
    table.add_column("mean / 2^b")
    table.add_column("chi-square, 16 bins")
    for cid in sorted(report.server_view)[:3]:
        seen = unpack(report.server_view[cid], params.ring_bits, length + 1)
        table.add_row(
            str(cid),
            " ".join(str(int(v)) for v in seen[:4]),
            f"{float(seen.mean()) / 2**params.ring_bits:.3f}",
            f"{_chi_square_16(seen, params.ring_bits):.1f} (< {_CHI2_15_999} at 0.1%)",
        )
    out.print(table)

    survivors = result.survivors
    expected = sum((inputs[i].values for i in survivors), np.zeros(length + 1, dtype=np.uint64))
    exact = bool(np.array_equal(expected, result.total.astype(np.uint64)))
    aggregate = aggregate_mean(result, spec)
    true_mean = np.mean([updates[i].flatten() for i in survivors], axis=0)
    error = float(np.max(np.abs(aggregate.mean - true_mean)))
    summary = Table(title="Result")
    summary.add_column("")
    summary.add_column("")
    summary.add_row("survivors in the sum", f"{len(survivors)} of {clients}")
    summary.add_row(
        "dropped (stage: clients)",
        "; ".join(f"{k}: {list(v)}" for k, v in result.dropped.items() if v),
    )
    summary.add_row(
        "unmasked sum == survivors' exact quantised sum", "[green]yes" if exact else "[red]NO"
    )
    summary.add_row("max |mean error| vs float mean", f"{error:.2e} (one step = {spec.step:.2e})")
    summary.add_row(
        "bytes per client: masked payload / protocol overhead",
        f"{report.payload_bytes[survivors[0]]:,} / "
        f"{report.bytes_up[survivors[0]] - report.payload_bytes[survivors[0]]:,}",
    )
    out.print(summary)
    return exact
