"""`senformer train`: the recipe against hand computations, the run directory, validation against
an independent Pearson, exact resume after SIGKILL, SIGINT, non-finite stops."""
from __future__ import annotations

import csv
import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import raw_targets
from train_fixtures import (NO_DROPOUT, SMALL, checkpoint_weights, cli_args, data_args,
                            latest_step, run_cli, train_synthetic)

from senformer_cli.config import ModelConfig, TrainConfig
from senformer_cli.errors import SenformerError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_synthetic(tmp_path_factory)


def request(data: Path, out: Path, train: dict, model: dict | None = None,
            heads=("human", "mouse"), **kwargs):
    from senformer_cli.training import TrainRequest

    dirs, genomes = data_args(data, heads)
    return TrainRequest(data=dirs, genomes=genomes, out=out, preset="tiny",
                        model_overrides={**SMALL, **(model or {})}, train_overrides=dict(train),
                        **kwargs)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def train_means(data: Path, head: str) -> np.ndarray:
    """Each track's mean target over the train records, parsed from the record files."""
    return raw_targets(data, head, "train").astype(np.float64).mean(axis=(0, 1))


def inverse_softplus(y: np.ndarray) -> np.ndarray:
    return np.log(np.expm1(y))


# ------------------------------------------------------------------ the recipe's pieces
def test_poisson_loss_is_the_mean_of_prediction_minus_target_log_prediction():
    from senformer_cli.training import poisson_loss

    rng = np.random.default_rng(0)
    predictions = rng.gamma(2.0, 1.0, size=(3, 5, 4)).astype(np.float32)
    targets = rng.poisson(2.0, size=(3, 5, 4)).astype(np.float32)
    predictions[0, 0, 0] = 0.0  # softplus can underflow to 0: the loss stays finite
    targets[0, 0, 0] = 0.0
    expected = np.mean(predictions - targets * np.log(predictions.astype(np.float64) + 1e-7))
    assert float(poisson_loss(targets, predictions)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("epsilon", [1e-6, 0.1])  # 0.1: where epsilon sits shows
def test_adam_matches_the_textbook_update(epsilon):
    import tensorflow as tf

    from senformer_cli.training import Adam

    rng = np.random.default_rng(1)
    start = [rng.normal(size=(3, 2)), rng.normal(size=(4,))]
    variables = [tf.Variable(x.astype(np.float32)) for x in start]
    adam = Adam(variables, beta1=0.9, beta2=0.99, epsilon=epsilon)
    params = [x.copy() for x in start]
    m = [np.zeros_like(x) for x in start]
    v = [np.zeros_like(x) for x in start]
    for t, lr in zip((1, 2, 3), (0.1, 0.05, 0.2)):
        grads = [rng.normal(size=x.shape) for x in start]
        adam.apply([tf.constant(g, tf.float32) for g in grads], variables, lr, t)
        for i, g in enumerate(grads):  # Kingma & Ba, Algorithm 1
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.99 * v[i] + 0.01 * g * g
            params[i] -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.99**t)) + epsilon)
    for variable, expected in zip(variables, params):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_the_update_touches_the_adam_slots_only_after_every_gradient():
    """Ops of the update that read only the slots (beta1 m, beta2 v) would otherwise run as soon as
    the step starts and hold two more copies of the weights through the backward pass (2.1 GB at
    the full width, measured): in the traced step, only the finite-gated cond uses the slots."""
    import tensorflow as tf

    from senformer_cli.training import Adam, clipped_update

    variables = [tf.Variable(tf.ones([4, 3])), tf.Variable(tf.ones([3]))]
    adam = Adam(variables, beta1=0.9, beta2=0.999, epsilon=1e-8)

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.tanh(x @ variables[0] + variables[1]))
        gradients = tape.gradient(loss, variables)
        return clipped_update(adam, gradients, variables, loss, 1.0, 0.1, 1)

    graph = step.get_concrete_function(tf.TensorSpec([2, 4])).graph
    handles = [slot.handle for slot in (*adam.m, *adam.v)]
    inside = [placeholder for external, placeholder in graph.captures
              if any(external is handle for handle in handles)]
    assert len(inside) == 4
    users = {op.type for placeholder in inside for op in placeholder.consumers()}
    assert users <= {"If", "StatelessIf"}, users
    step(tf.ones([2, 4]))
    assert float(tf.reduce_sum(tf.abs(adam.m[0]))) > 0  # the update did run


@pytest.mark.slow  # about 40 s: two traced runs and an eager reference
def test_first_steps_equal_a_hand_computed_update(data: Path, tmp_path: Path):
    """Two steps of 2 accumulated micro-batches, clipped: loss, gradient norm and the weights (and
    the batch-norm moving averages) equal a plain eager computation on the loader's batches.

    Adam's epsilon is raised to 1e-4: some gradients are pure rounding noise (a convolution's
    bias right before batch norm has none, ~1e-8), and with a tiny epsilon Adam turns noise into
    full-size steps of arbitrary sign, which no two summation orders reproduce."""
    import tensorflow as tf

    from senformer_cli.data import load_dataset
    from senformer_cli.model import build_model
    from senformer_cli.training import create_variables, train, variables_by_path

    settings = {"steps": 2, "batch_size": 2, "accumulate": 2, "learning_rate": 0.01,
                "warmup_steps": 4, "clip_norm": 0.5, "eval_every": 100, "eval_sequences": 1,
                "checkpoint_every": 1, "log_every": 1, "seed": 3, "epsilon": 1e-4}
    run = tmp_path / "run"
    train(request(data, run, settings, NO_DROPOUT, heads=("human",)))
    rows = read_metrics(run)

    # The reference: same seed, same loader call, same initial weights; eager GradientTape.
    config = ModelConfig.from_preset("tiny", **SMALL, **NO_DROPOUT)
    recipe = TrainConfig.for_preset("tiny", **settings)
    tf.random.set_seed(3)
    dirs, genomes = data_args(data, ("human",))
    loaded = load_dataset({"human": dirs[0]}, "train", config, batch_size=2, seed=3, repeat=True,
                          reverse_complement=True, max_shift=3,
                          genomes={"human": str(data / "human.fa")}, drop_remainder=True)
    batches = iter(loaded["human"].dataset)
    model = build_model(config)
    create_variables(model)
    # The tiny recipe starts the heads at the mean (head_init="mean"): weights 0, bias the inverse
    # softplus of each track's mean target over the train records (all 8 here).
    assert recipe.head_init == "mean"
    linear = model.heads["human"].layers[0]
    linear.w.assign(tf.zeros_like(linear.w))
    linear.b.assign(inverse_softplus(train_means(data, "human")).astype(np.float32))
    variables = model.trunk.trainable_variables + model.heads["human"].trainable_variables
    m = [np.zeros(v.shape) for v in variables]
    s = [np.zeros(v.shape) for v in variables]
    for step in range(2):
        grads, losses = [np.zeros(v.shape) for v in variables], []
        for _ in range(2):  # micro-batches
            x, y = next(batches)
            with tf.GradientTape() as tape:
                p = tf.cast(model(x, is_training=True)["human"], tf.float64)
                loss = tf.reduce_mean(p - tf.cast(y, tf.float64) * tf.math.log(p + 1e-7))
            for i, g in enumerate(tape.gradient(loss, variables)):
                grads[i] += g.numpy() / 2
            losses.append(float(loss))
        norm = np.sqrt(sum((g**2).sum() for g in grads))
        assert float(rows[step]["loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
        assert float(rows[step]["grad_norm"]) == pytest.approx(norm, rel=1e-3)
        grads = [g * min(1.0, 0.5 / norm) for g in grads]  # clip by the global norm
        lr = 0.01 * (step + 1) / 4
        assert float(rows[step]["learning_rate"]) == pytest.approx(lr)
        t = step + 1
        for i, (variable, g) in enumerate(zip(variables, grads)):
            m[i] = 0.9 * m[i] + 0.1 * g
            s[i] = 0.999 * s[i] + 0.001 * g * g
            update = lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(s[i] / (1 - 0.999**t)) + 1e-4)
            variable.assign(variable.numpy() - update)
    expected = {path: v.numpy() for path, v in variables_by_path(model).items()}
    got = checkpoint_weights(run / "checkpoints" / "ckpt-2", config)
    assert set(got) == set(expected)
    moved = 0
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-3, atol=2e-5, err_msg=name)
        moved += name.endswith("moving_mean/average") and not np.allclose(value, 0)
    assert moved > 0  # batch norm ran in training mode and its averages were checked too
    assert recipe.examples_per_step == 4


def test_heads_start_at_the_track_means(data: Path):
    """`head_init="mean"`: each track's mean over the train records, computed from the record
    files directly, and a model whose every output is that mean, whatever the input."""
    import tensorflow as tf

    from senformer_cli.model import build_model
    from senformer_cli.training import create_variables, initialise_heads_at_mean, track_means

    config = ModelConfig.from_preset("tiny", **SMALL)
    expected = train_means(data, "human")
    means = track_means(str(data / "human"), "human", config)
    np.testing.assert_allclose(means, expected, rtol=1e-6)
    assert means.std() > 0.1 * means.mean()  # tracks differ: one constant would not do
    model = build_model(config)
    create_variables(model)
    initialise_heads_at_mean(model, {"human": means})
    x = tf.one_hot(np.random.default_rng(0).integers(0, 4, (2, config.sequence_length)), 4)
    prediction = model(x, is_training=False)["human"].numpy()
    np.testing.assert_allclose(prediction, np.broadcast_to(expected, prediction.shape), rtol=1e-5)


# ------------------------------------------------------------------ one reference run
REFERENCE = {"steps": 6, "batch_size": 2, "learning_rate": 0.002, "warmup_steps": 2,
             "eval_every": 3, "eval_sequences": 2, "eval_batch_size": 2, "checkpoint_every": 2,
             "keep": 2, "log_every": 1, "seed": 1}


@pytest.fixture(scope="module")
def killed(data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A CLI run of the reference's settings in another process, killed with SIGKILL (by a
    watching thread) once ckpt-2 is written: (run directory, whether it was killed, its stderr).

    Started before the reference run and beside it: each spends most of its time tracing Python,
    on one core each."""
    import threading

    run = tmp_path_factory.mktemp("killed") / "run"
    process = run_cli(cli_args(data, run, REFERENCE))
    state = run / "checkpoints" / "checkpoint"
    outcome = {}

    def watch():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if state.is_file() and "ckpt-2" in state.read_text():
                break
            time.sleep(0.05)
        outcome["killed"] = process.poll() is None
        process.send_signal(signal.SIGKILL)
        _, outcome["stderr"] = process.communicate()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield lambda: (watcher.join(), (run, outcome["killed"], outcome["stderr"]))[1]
    watcher.join()


@pytest.fixture(scope="module")
def reference(data: Path, killed, tmp_path_factory: pytest.TempPathFactory):
    """Six steps alternating human and mouse, validated at steps 3 and 6."""
    from senformer_cli.training import train

    run = tmp_path_factory.mktemp("reference") / "run"
    states, notices = [], []
    result = train(request(data, run, REFERENCE), progress=states.append, notify=notices.append)
    return run, result, states, notices


def test_run_directory_holds_config_checkpoints_metrics_and_logs(reference):
    run, result, _, _ = reference
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "tiny"
    assert config["model"] == ModelConfig.from_preset("tiny", **SMALL).to_dict()
    assert TrainConfig.from_dict(config["train"]) == TrainConfig.for_preset(
        "tiny", **REFERENCE, data={h: str(d) for h, d in zip(("human", "mouse"),
                                                              data_args(run.parents[1], ())[0])}
    ).replace(data=config["train"]["data"], genomes=config["train"]["genomes"])
    assert set(config["train"]["data"]) == {"human", "mouse"}
    assert (result.status, result.step, result.start_step) == ("completed", 6, 0)
    # keep 2: ckpt-4 and ckpt-6 (ckpt-2 deleted); the checkpoint file names the latest.
    names = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert names == ["ckpt-4.index", "ckpt-6.index"]
    assert 'model_checkpoint_path: "ckpt-6"' in (run / "checkpoints" / "checkpoint").read_text()
    assert list((run / "logs").glob("events.out.tfevents.*"))


def test_training_starts_the_heads_at_the_track_means(reference, data: Path):
    """Four steps in (two per head, Adam moving each weight by at most about the learning rate,
    0.002, a step), each head's weights are still near 0 and its biases near the inverse softplus
    of the track means: the tiny recipe's head_init="mean" was applied (random weights are
    ~0.1)."""
    run, _, _, _ = reference
    weights = checkpoint_weights(run / "checkpoints" / "ckpt-4",
                                 ModelConfig.from_preset("tiny", **SMALL))
    for head in ("human", "mouse"):
        w = weights[f"_heads/{head}/_layers/0/w"]
        b = weights[f"_heads/{head}/_layers/0/b"]
        assert np.abs(w).max() < 0.01
        np.testing.assert_allclose(b, inverse_softplus(train_means(data, head)), atol=0.01)


def test_heads_alternate_step_by_step(reference):
    _, _, states, _ = reference
    heads = [s["head"] for s in states if s["phase"] == "train"]
    assert heads == ["human", "mouse"] * 3


def test_metrics_csv_has_every_step_and_both_validations(reference):
    run, _, _, _ = reference
    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert list(rows[0])[:5] == ["step", "loss", "learning_rate", "grad_norm", "steps_per_s"]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [0.001, 0.002, 0.002, 0.002, 0.002, 0.002])
    validated = [int(r["step"]) for r in rows if r["valid_mean_r"]]
    assert validated == [3, 6]
    for r in rows:
        if r["valid_mean_r"]:
            means = [float(r[f"valid_r_{h}_all"]) for h in ("human", "mouse")]
            assert float(r["valid_mean_r"]) == pytest.approx(np.mean(means), rel=1e-5)
    # steps/s leaves out each head's first (compiling) step: steps 1 and 2 have none
    assert [bool(r["steps_per_s"]) for r in rows] == [False, False, True, True, True, True]


def test_tensorboard_events_repeat_the_metrics(reference):
    import tensorflow as tf

    run, _, _, _ = reference
    seen: dict[tuple[str, int], float] = {}
    for path in (run / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                seen[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    rows = {int(r["step"]): r for r in read_metrics(run)}
    assert seen[("loss", 4)] == pytest.approx(float(rows[4]["loss"]), rel=1e-5)
    assert seen[("learning_rate", 1)] == pytest.approx(0.001)
    assert seen[("valid/mouse_cage", 6)] == pytest.approx(float(rows[6]["valid_r_mouse_cage"]),
                                                          rel=1e-5)


def test_best_checkpoint_is_the_best_validation(reference):
    run, result, _, _ = reference
    rows = [r for r in read_metrics(run) if r["valid_mean_r"]]
    best = max(rows, key=lambda r: float(r["valid_mean_r"]))
    best_files = sorted(p.name for p in (run / "checkpoints" / "best").glob("ckpt-*.index"))
    assert best_files == [f"ckpt-{best['step']}.index"]
    assert result.best["step"] == int(best["step"])
    assert result.final["step"] == 6
    assert result.best["heads"]["human"]["cage"] == pytest.approx(
        float(best["valid_r_human_cage"]), rel=1e-5)


def test_validation_is_the_per_track_pearson_of_the_final_weights(reference, data: Path):
    """The r recorded at step 6 equals numpy's Pearson over (sequence, bin) of the first
    `eval_sequences` valid records, per track, averaged per track type."""
    from senformer_cli.data import load_dataset
    from senformer_cli.model import build_model
    from senformer_cli.training import create_variables

    import tensorflow as tf

    run, _, _, _ = reference
    config = ModelConfig.from_preset("tiny", **SMALL)
    model = build_model(config)
    create_variables(model)
    tf.train.Checkpoint(model=model).restore(str(run / "checkpoints" / "ckpt-6")).expect_partial()
    row = read_metrics(run)[-1]
    for head in ("human", "mouse"):
        loaded = load_dataset({head: data / head}, "valid", config, batch_size=2,
                              genomes={head: data / f"{head}.fa"})
        x, y = next(iter(loaded[head]))
        prediction = model(x, is_training=False)[head].numpy().reshape(-1, y.shape[-1])
        target = y.numpy().reshape(-1, y.shape[-1])
        r = np.array([np.corrcoef(prediction[:, i], target[:, i])[0, 1]
                      for i in range(target.shape[1])])
        types = loaded[head].targets["track_type"].to_numpy()
        for kind in ("dnase_atac", "chip_histone", "chip_tf", "cage"):
            assert float(row[f"valid_r_{head}_{kind}"]) == pytest.approx(
                np.nanmean(r[types == kind]), abs=2e-4)
        assert float(row[f"valid_r_{head}_all"]) == pytest.approx(np.nanmean(r), abs=2e-4)


def test_resume_after_sigkill_gives_same_weights(reference, killed):
    """A CLI run of the reference's settings, killed with SIGKILL once ckpt-2 is written, leaving
    the debris of a half-written next checkpoint, then resumed: the same weights at step 6."""
    run, was_killed, stderr = killed()
    assert was_killed, f"finished before it could be killed: {stderr}"
    killed_at = latest_step(run)
    assert killed_at is not None and killed_at < 6
    # What a crash in the middle of saving the next checkpoint leaves: TensorFlow writes the data
    # and index files first and the `checkpoint` file last, so they are not referenced.
    debris = f"ckpt-{killed_at + 2}"
    (run / "checkpoints" / f"{debris}_temp").mkdir()
    (run / "checkpoints" / f"{debris}_temp" / "part-00000-of-00001.data-00000-of-00001"
     ).write_bytes(b"\0" * 100)
    (run / "checkpoints" / f"{debris}.index").write_bytes(b"truncated")

    # The resumed run: the same CLI, in this process (TensorFlow is already imported here).
    resumed = cli_result(["train", "--resume", "--out", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed {run} at step {killed_at}" in " ".join(resumed.stderr.split())
    config = ModelConfig.from_preset("tiny", **SMALL)
    expected = checkpoint_weights(reference[0] / "checkpoints" / "ckpt-6", config)
    got = checkpoint_weights(run / "checkpoints" / "ckpt-6", config)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert [r["loss"] for r in read_metrics(run)] == [r["loss"] for r in read_metrics(reference[0])]


# ------------------------------------------------------------------ stops
def test_sigint_saves_a_checkpoint_and_stops(data: Path, tmp_path: Path):
    import os

    from senformer_cli.training import train

    def interrupt(state):
        if state["phase"] == "train" and state["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # a background job starts with SIGINT ignored
    result = train(request(data, run, {**REFERENCE, "checkpoint_every": 100}, heads=("human",)),
                   progress=interrupt)
    assert (result.status, result.step) == ("interrupted", 2)
    assert result.message.startswith("SIGINT")
    assert latest_step(run) == 2
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data: Path, tmp_path: Path):
    from senformer_cli.training import train

    run = tmp_path / "run"
    # A learning rate of 1e30 blows the weights up at once; the loss of step 2 or 3 is not finite.
    result = train(request(data, run, {**REFERENCE, "learning_rate": 1e30, "warmup_steps": 0,
                                       "checkpoint_every": 1}, heads=("human",)))
    assert result.status == "non-finite"
    bad_step = int(result.message.split(" at step ")[1].split()[0])
    assert bad_step > 1
    assert latest_step(run) == bad_step - 1
    assert f"ckpt-{bad_step - 1}" in result.message
    assert [int(r["step"]) for r in read_metrics(run)] == list(range(1, bad_step))


# ------------------------------------------------------------------ planning, user errors
def test_no_data_trains_tiny_on_the_synthetic_set(data: Path, tmp_path: Path):
    from senformer_cli.training import TrainRequest, plan_run

    plan = plan_run(TrainRequest(runs_root=tmp_path / "runs"), ensure_data=lambda: data)
    assert plan.preset == "tiny" and plan.model_config == ModelConfig.from_preset("tiny")
    assert plan.train_config.data == {"human": str(data / "human"), "mouse": str(data / "mouse")}
    assert plan.train_config.genomes["mouse"] == str(data / "mouse.fa")
    assert plan.run_dir == tmp_path / "runs" / "tiny"
    assert len(plan.notices) == 1 and "synthetic" in plan.notices[0]
    full = plan_run(TrainRequest(runs_root=tmp_path / "runs",
                                 model_overrides={"attention": "full"}), ensure_data=lambda: data)
    assert full.run_dir == tmp_path / "runs" / "tiny-full"


def test_heads_follow_the_data_track_counts(data: Path, tmp_path: Path):
    """A head whose track count differs from its data, or that the model lacks, is made fresh
    for the data (one notice each); other heads are kept."""
    from senformer_cli.training import TrainRequest, plan_run

    plan = plan_run(TrainRequest(data=[f"human={data / 'human'}", f"worm={data / 'mouse'}"],
                                 preset="tiny", out=tmp_path / "run",
                                 model_overrides={**SMALL, "heads": {"human": 5, "fly": 3}}))
    assert plan.model_config.heads == {"human": 16, "fly": 3, "worm": 8}
    assert plan.new_heads == ["human", "worm"]
    assert [n.split(" (")[0] for n in plan.notices] == [
        f"new 'human' head with 16 tracks for {data / 'human'}",
        f"new 'worm' head with 8 tracks for {data / 'mouse'}"]


def cli_result(args: list[str]):
    """`senformer ARGS` in this process (typer's test runner: stdout and stderr kept apart)."""
    from typer.testing import CliRunner

    from senformer_cli.cli import app

    return CliRunner().invoke(app, args)


def cli_error(args: list[str]) -> tuple[str, str]:
    result = cli_result(args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0], result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.stepz=3"], "unknown train field 'stepz'"),
    (["--set", "colour=red"], "unknown config field 'colour'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--resume", "--overwrite"], "contradict"),
    (["--config", "x.json"], "--preset and --config each choose the model"),
    (["--strategy", "mirrored"], "--strategy mirrored needs at least two devices"),
    (["--strategy", "tpu"], "--strategy tpu: no TPU found"),  # this machine has no TPU
    (["--data", "elsewhere/fly"], "not a head of the model"),
])
def test_user_errors_are_one_line_and_write_nothing(data: Path, tmp_path: Path, extra, message):
    out = tmp_path / "run"
    args = cli_args(data, out, {"steps": 1, "batch_size": 2})
    args = [a for a in args if a != "huge"]
    if "--preset" in extra:  # replace the preset given by cli_args
        i = args.index("--preset")
        del args[i:i + 2]
    line, _ = cli_error(args + extra)
    assert message in line
    assert not out.exists()


def test_existing_run_dir_needs_resume_or_overwrite(data: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line, _ = cli_error(cli_args(data, out, {"steps": 1}))
    assert f"{out} already exists: add --resume" in line and "--overwrite" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_resume_needs_a_run_directory(tmp_path: Path):
    line, _ = cli_error(["train", "--resume", "--out", str(tmp_path / "nowhere")])
    assert "is not a run directory" in line
    (tmp_path / "empty").mkdir()
    line, _ = cli_error(["train", "--resume", "--out", str(tmp_path / "empty")])
    assert "not a run directory (no config.json)" in line


def test_resume_refuses_to_change_the_trajectory(reference, tmp_path: Path):
    run = tmp_path / "copy"
    shutil.copytree(reference[0], run)
    line, _ = cli_error(["train", "--resume", "--out", str(run), "--learning-rate", "0.1"])
    assert "'learning_rate' is 0.002" in line and "steps" in line
    with pytest.raises(SenformerError, match="model of .* is fixed"):
        from senformer_cli.training import TrainRequest, plan_run

        plan_run(TrainRequest(out=run, resume=True, model_overrides={"channels": 96}))
    # more steps is allowed
    from senformer_cli.training import TrainRequest, plan_run

    plan = plan_run(TrainRequest(out=run, resume=True, train_overrides={"steps": 9}))
    assert plan.train_config.steps == 9 and plan.resume
