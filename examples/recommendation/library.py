"""The federated recommender of `make demo`, from Python (README: "Library example").

Ten shops (silos) train one matrix-factorisation recommender on MovieLens
latest-small: record-level DP-SGD on each shop, secure aggregation of every
update, FedAvg on the server. Run: ``python examples/recommendation/library.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from securefed.config import (
    DataConfig,
    DataFormat,
    FederationConfig,
    ModelConfig,
    PriorConfig,
    PrivacyConfig,
    QuantizationConfig,
    SecAggConfig,
    SecurefedConfig,
    StrategyConfig,
    TrainingConfig,
    UpdateConfig,
)
from securefed.federation import run_federation

DATA = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"


def main(
    data: Path = DATA,
    *,
    rounds: int = 10,
    silos: int = 10,
    data_format: DataFormat = DataFormat.MOVIELENS,
    out: Path | None = None,
) -> dict[str, float]:
    config = SecurefedConfig(
        federation=FederationConfig(rounds=rounds),
        data=DataConfig(path=str(data), format=data_format, partition="silos", silos=silos),
        # User embeddings never leave their owner; items are scored against fixed vectors
        # from the public catalogue (genres, release decade), so DP-SGD trains only the
        # user embeddings and the biases.
        model=ModelConfig(kind="mf", dim=32, item_features=("genres", "decade"), feature_scale=4.0),
        training=TrainingConfig(sampling_rate=0.2, learning_rate=10.0, negatives=4),
        privacy=PrivacyConfig(unit="record", target_epsilon=8.0, delta=1e-5),  # DP-SGD
        prior=PriorConfig(enabled=True, epsilon_share=0.5),  # round 0: noisy item counts
        update=UpdateConfig(clip_norm=20.0),  # L2 bound before quantisation
        secagg=SecAggConfig(quantization=QuantizationConfig(bits=20, clip=20.0)),
        strategy=StrategyConfig(kind="fedavg", server_lr=1.0),  # or fedadam / fedyogi
    )
    result = run_federation(config, out_dir=out)
    last = result.rounds[-1]
    print(f"test HR@10 (99 sampled negatives): {result.final_test['sampled_hr10']:.3f}")
    print(f"test HR@10 (full ranking):         {result.final_test['full_hr10']:.3f}")
    print(f"record-level epsilon (max owner):  {last.epsilon_max:.2f} at delta 1e-5")
    return result.final_test


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
