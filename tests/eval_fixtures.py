"""Shared set-up for the evaluate/compare tests: one synthetic tiny data set per session (5 test
records in files of 2, so batches cross files and the last batch is partial), a small
deterministic stand-in model, and hand-made `evaluate --out` folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_fixtures import session_synthetic

TEST_RECORDS = 5


def eval_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic data: train 8, valid 4, test 5 records in files of 2, written once."""
    return session_synthetic(tmp_path_factory, "synth-tiny-eval", seed=11,
                             splits={"train": 8, "valid": 4, "test": TEST_RECORDS},
                             records_per_file=2)


def stand_in_model(config, seed: int = 0):
    """A model with the Enformer interface that traces in well under a second: per bin, softplus
    of a fixed random map of the base composition of the bin's two halves (so the forward and the
    reverse-complement predictions differ, and a bin's prediction depends on its own bases only).
    Outputs `{head: [B, target_length, tracks]}`."""
    import sonnet as snt
    import tensorflow as tf

    class StandIn(snt.Module):
        def __init__(self) -> None:
            super().__init__(name="stand_in")
            rng = np.random.default_rng(seed)
            self.config = config
            self.weights = {}
            for head, tracks in config.heads.items():
                weights = rng.normal(size=(8, tracks)).astype(np.float32)
                weights[:, 1] = 0.0  # track 1 predicts a constant: zero variance, r undefined
                self.weights[head] = tf.Variable(weights, name=f"w_{head}")

        def __call__(self, inputs, is_training: bool):
            tokens = config.sequence_length // config.bin_size
            # Base composition of each half of a bin: [B, tokens, 8].
            halves = tf.reshape(inputs, [-1, tokens, 2, config.bin_size // 2, 4])
            features = tf.reshape(tf.reduce_mean(halves, axis=3), [-1, tokens, 8])
            crop = (tokens - config.target_length) // 2
            features = features[:, crop:crop + config.target_length]
            return {head: tf.nn.softplus(4.0 * tf.einsum("btc,cn->btn", features, w))
                    for head, w in self.weights.items()}

    return StandIn()


def write_evaluation_folder(folder: Path, per_sequence: dict[str, np.ndarray], *,
                            mean_r: dict[str, float], split: str = "test", target_length: int = 896,
                            model: str = "model", identifiers: list[str] | None = None) -> Path:
    """An `evaluate --out` folder written by hand: per_sequence maps a track type to its values
    per sequence (NaN allowed); tracks.csv holds one track per type unless `identifiers`."""
    folder.mkdir(parents=True)
    kinds = list(per_sequence)
    n = len(next(iter(per_sequence.values())))
    rows = [{"sequence": s, "track_type": kind, "pearson_r": per_sequence[kind][s]}
            for s in range(n) for kind in kinds]
    pd.DataFrame(rows).to_csv(folder / "sequences.csv", index=False)
    types = [k for k in kinds if k != "all"]
    identifiers = identifiers or [f"T{i}" for i in range(len(types))]
    pd.DataFrame({"index": range(len(types)), "identifier": identifiers,
                  "description": [f"{t.upper()}:x" for t in types], "track_type": types,
                  "pearson_r": [mean_r[t] for t in types]}).to_csv(folder / "tracks.csv", index=False)
    summary = {"model": model, "data": "data/human", "head": "human", "split": split,
               "num_sequences": n, "target_length": target_length}
    for kind in kinds:
        summary[kind] = {"tracks": 1, "mean_r": mean_r[kind], "median_r": mean_r[kind],
                         "excluded_zero_variance": 0}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder
