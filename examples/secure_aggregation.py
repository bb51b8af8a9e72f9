"""Secure aggregation in a few lines: 10 clients, one drops, the server learns only the mean.

Run: .venv/bin/python examples/secure_aggregation.py
"""

import numpy as np

from securefed.client import PlaintextUpdate, quantize_update
from securefed.config import SecAggConfig
from securefed.secagg import IdentityKey, Roster, RosterEntry, RoundContext, model_digest
from securefed.server import aggregate_mean
from securefed.simulation import run_secagg_round

ids = range(1, 11)
keys = {i: IdentityKey.generate() for i in ids}
roster = Roster(
    federation_id="example",
    version=1,
    entries=tuple(
        RosterEntry(client_id=i, name=f"bank-{i}", identity_key=keys[i].public_key) for i in ids
    ),
)
params = SecAggConfig().to_params(vector_length=1000)
model = {"weight": np.zeros(1000, dtype=np.float32)}
context = RoundContext(
    federation_id="example",
    round_id=1,
    model_hash=model_digest(model),
    roster_hash=roster.digest(),
    params=params,
)
data = np.random.default_rng(0)
updates = {i: PlaintextUpdate(tensors={"weight": data.normal(0, 0.1, 1000)}) for i in ids}
inputs = {i: quantize_update(updates[i], params.quantization) for i in ids}
report = run_secagg_round(
    roster=roster, identities=keys, context=context, inputs=inputs, drops={"masked_input": [7]}
)
if report.result is None:
    raise SystemExit(f"round aborted: {report.error}")
mean = aggregate_mean(report.result, params.quantization)
truth = np.mean([updates[i].flatten() for i in report.result.survivors], axis=0)
print(f"survivors {mean.survivors}; max error {np.abs(mean.mean - truth).max():.1e}")
