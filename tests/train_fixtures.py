"""Shared set-up for the training tests: one small synthetic data set per session, a small model
(the tiny preset at the records' 16,384-bp centre, 48 channels, one transformer layer) and helpers
to read a run back."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import session_synthetic

# The tiny preset, narrower, with one transformer layer and at the records' centre (no flanks
# needed): a step takes well under a second on a quiet 2-core CPU. What costs is tracing each
# head's step (and validation) once per run, in proportion to the graph's size: a sparse
# transformer layer is about a third of it, so one layer instead of the preset's two halves it.
SMALL = {"sequence_length": 16_384, "channels": 48, "num_transformer_layers": 1}
NO_DROPOUT = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0, "positional_dropout_rate": 0.0,
              "final_dropout_rate": 0.0}
REPO = Path(__file__).resolve().parents[1]


def train_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic data: train 8, valid 4, test 2 records per organism in files of 4."""
    return session_synthetic(tmp_path_factory, "synth-tiny-train", seed=5,
                             splits={"train": 8, "valid": 4, "test": 2}, records_per_file=4)


def data_args(root: Path, heads=("human", "mouse")) -> tuple[list[str], list[str]]:
    """(--data values, --genome values) for the synthetic set."""
    return ([str(root / h) for h in heads], [f"{h}={root / f'{h}.fa'}" for h in heads])


def cli_args(root: Path, out: Path, train: dict, model: dict | None = None,
             heads=("human", "mouse")) -> list[str]:
    """`senformer train` arguments equivalent to a TrainRequest(preset='tiny', ...)."""
    data, genomes = data_args(root, heads)
    args = ["train", "--preset", "tiny", "--out", str(out)]
    for d in data:
        args += ["--data", d]
    for g in genomes:
        args += ["--genome", g]
    for key, value in {**SMALL, **(model or {})}.items():
        args += ["--set", f"{key}={value}"]
    for key, value in train.items():
        args += ["--set", f"train.{key}={value}"]
    return args


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    """`senformer ARGS` in a fresh Python process (this checkout first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "senformer_cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def checkpoint_weights(prefix: str | Path, config) -> dict[str, np.ndarray]:
    """Every variable of a model restored from a checkpoint (the resolver's way), by attribute path
    (names are not unique: a conv block's two moving averages share theirs)."""
    import tensorflow as tf

    from senformer_cli.model import build_model
    from senformer_cli.training import create_variables, variables_by_path

    model = build_model(config)
    create_variables(model)
    status = tf.train.Checkpoint(model=model).restore(str(prefix))
    status.assert_existing_objects_matched().expect_partial()  # the optimizer etc. are not wanted
    return {path: v.numpy() for path, v in variables_by_path(model).items()}


def latest_step(run_dir: Path) -> int | None:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return None if latest is None else int(latest.rsplit("-", 1)[1])
