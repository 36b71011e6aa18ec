"""tf.distribute: two replicas (logical CPU devices, or two worker processes) train exactly like one
device on the same global batch. Logical devices must be configured before TensorFlow starts, so
each distributed run is a fresh process.

Dropout is off (each replica draws its own masks, so the masks cannot match a one-device run's)
and Adam's epsilon is 1e-4 (with 1e-8 a gradient of pure rounding noise, such as a convolution bias
just before batch norm, becomes a full-size step of arbitrary sign)."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import (NO_DROPOUT, REPO, SMALL, checkpoint_weights, cli_args, run_cli,
                            train_synthetic)

from senformer_cli.config import ModelConfig

SETTINGS = {"steps": 4, "batch_size": 4, "learning_rate": 0.002, "warmup_steps": 2,
            "eval_every": 4, "eval_sequences": 2, "checkpoint_every": 4, "log_every": 1,
            "seed": 4, "epsilon": 1e-4}
TWO_CPUS = """
import sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from senformer_cli.cli import main

sys.argv = ["senformer", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_synthetic(tmp_path_factory)


@pytest.fixture(scope="module")
def one_device(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one device, global batch 4, human and mouse alternating."""
    from senformer_cli.training import TrainRequest, train

    run = tmp_path_factory.mktemp("one") / "run"
    result = train(TrainRequest(
        data=[str(data / "human"), str(data / "mouse")],
        genomes=[f"human={data / 'human.fa'}", f"mouse={data / 'mouse.fa'}"], out=run,
        preset="tiny", model_overrides={**SMALL, **NO_DROPOUT},
        train_overrides={**SETTINGS, "strategy": "one-device"}))
    assert (result.strategy, result.replicas) == ("one-device", 1)
    return run


def losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open(newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def initial_weights(config: ModelConfig) -> dict[str, np.ndarray]:
    """The seeded initial weights every run starts from."""
    from senformer_cli.model import build_model
    from senformer_cli.training import create_variables, variables_by_path

    model = build_model(config)
    create_variables(model)
    return {path: v.numpy() for path, v in variables_by_path(model).items()}


def assert_same_training(run: Path, reference: Path) -> None:
    # float32 sums in another order (two replicas), grown over 4 steps: ~1e-5
    np.testing.assert_allclose(losses(run), losses(reference), rtol=1e-4)
    config = ModelConfig.from_preset("tiny", **SMALL, **NO_DROPOUT)
    start = initial_weights(config)
    expected = checkpoint_weights(reference / "checkpoints" / "ckpt-4", config)
    got = checkpoint_weights(run / "checkpoints" / "ckpt-4", config)
    for path in expected:
        # The same updates, to summation order: Adam divides by sqrt(v), so an element whose
        # gradient is near zero moves by a visible part of a step on rounding alone (seen: 3e-4
        # of a 2e-3 step in 15% of the stem's weights in one run of this test, in none in
        # another: the one-device reference varies too). A replica training on the wrong
        # examples, or gradients or batch-norm statistics not reduced across replicas, change the
        # update as a whole. A bias right before batch norm has no gradient but rounding noise
        # (batch norm follows): errors are relative to the update plus 10% of a step per element.
        update, reference_update = got[path] - start[path], expected[path] - start[path]
        floor = 0.1 * SETTINGS["learning_rate"] * np.sqrt(reference_update.size)
        error = (np.linalg.norm(update - reference_update)
                 / (np.linalg.norm(reference_update) + floor))
        assert error < 0.1, (path, error)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_equals_one_device(one_device: Path, data: Path,
                                                        tmp_path: Path):
    """Global batch 4 split 2 + 2 over two replicas, batch-norm statistics synchronised across
    them: the same losses and, after 4 steps, the same weights and moving averages."""
    run = tmp_path / "mirrored"
    args = cli_args(data, run, {**SETTINGS, "strategy": "mirrored"}, NO_DROPOUT) + ["--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", TWO_CPUS, *args], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["strategy"], result["replicas"]) == ("mirrored", 2)
    assert_same_training(run, one_device)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_on_localhost_equal_one_device(one_device: Path, data: Path, tmp_path: Path):
    """MultiWorkerMirroredStrategy configured by TF_CONFIG, as TensorFlow users expect: two
    worker processes, one replica each; the chief (worker 0) writes the run directory, the other
    worker nothing."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": index}})
        try:
            processes.append(run_cli(cli_args(data, tmp_path / f"worker{index}",
                                              {**SETTINGS, "strategy": "multi-worker"},
                                              NO_DROPOUT) + ["--json"]))
        finally:
            del os.environ["TF_CONFIG"]
    outputs = [p.communicate(timeout=900) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
        assert json.loads(out)["replicas"] == 2
    assert not (tmp_path / "worker1").exists()
    assert_same_training(tmp_path / "worker0", one_device)
