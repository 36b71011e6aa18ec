"""The `--model` resolver: each spec kind, the published checkpoint layout, and bad specs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.model.load import (PRETRAINED_PREFIX, build_for_restore, find_pretrained,
                                      load_model)

# The tiny preset at 8,192 bp: 64 tokens, 4 sparse blocks of 16; builds and runs in about a second.
SMALL = {"sequence_length": 8192, "target_length": 32}


def one_hot(sequence_index: np.ndarray) -> np.ndarray:
    """uint8 [L] with 0..3 = A,C,G,T and 4 = N -> float32 [L, 4], N = all zeros."""
    return np.eye(5, 4, dtype=np.float32)[sequence_index]


# ----------------------------------------------------------------------------- presets
def test_preset_weights_are_initialised_and_seeded():
    first = load_model("tiny", SMALL)
    assert first.kind == "preset"
    assert first.config == ModelConfig.from_preset("tiny", **SMALL)
    assert "untrained" in first.description and "tiny" in first.description
    # Every weight matrix holds random values, except the attention output projection, which the
    # published model initialises to zero, and attention pooling's, which `tiny` starts at zero
    # (average pooling; test_layers.py checks its init).
    kernels = [(v.name, v.numpy()) for v in first.model.trainable_variables if v.name.endswith("/w:0")]
    assert len(kernels) > 20
    for name, value in kernels:
        if "embedding_layer" in name or "softmax_pooling" in name:
            assert not value.any(), name
        else:
            assert value.std() > 1e-3, f"{name} was not initialised"
    # Same seed, same weights, also after other random draws in between; another seed differs.
    tf.random.uniform([7])
    again = load_model("tiny", SMALL)
    for a, b in zip(first.model.variables, again.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    other = load_model("tiny", {**SMALL, "random_seed": 1})
    differs = [a.name for a, b in zip(first.model.trainable_variables, other.model.trainable_variables)
               if not np.array_equal(a.numpy(), b.numpy())]
    assert len(differs) > 20


def test_preset_runs_with_overrides():
    loaded = load_model("tiny", {**SMALL, "heads": {"human": 3}, "attention": "full"})
    assert loaded.config.heads == {"human": 3} and loaded.config.attention == "full"
    outputs = loaded.model(tf.zeros([2, 8192, 4]), is_training=False)
    assert set(outputs) == {"human"} and outputs["human"].shape == (2, 32, 3)
    assert np.all(outputs["human"].numpy() > 0)  # softplus


# ----------------------------------------------------------------------------- run directories
def _fill(model: tf.Module, step: int) -> dict[str, np.ndarray]:
    """Give every variable of `model` a value that says which step and which variable it is:
    step + index / 1000 (random-block tables keep theirs). Returns the values by index."""
    values = {}
    for index, variable in enumerate(model.variables):
        if "random_blocks" in variable.name:
            values[index] = variable.numpy()
            continue
        value = np.full(variable.shape, step + index / 1000).astype(variable.dtype.as_numpy_dtype)
        variable.assign(value)
        values[index] = value
    return values


def write_run(run_dir: Path, steps=(10, 20, 30), best_step: int | None = 20,
              config: ModelConfig | None = None) -> dict[int, dict[int, np.ndarray]]:
    """A run directory in the layout of `senformer train` (contract 3) whose checkpoint at step s
    holds the values `_fill(model, s)`. Returns step -> variable index -> value."""
    config = config or ModelConfig.from_preset("tiny", **SMALL)
    model = build_for_restore(config)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(
        {"model": config.to_dict(), "train": {"learning_rate": 1e-3}, "preset": "tiny"}))
    step = tf.Variable(0, dtype=tf.int64)
    optimizer = tf.Module()
    optimizer.slots = [tf.Variable(tf.ones([3])), tf.Variable(tf.zeros([2, 2]))]
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step),
        run_dir / "checkpoints", max_to_keep=5)
    best = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step),
                                      run_dir / "checkpoints" / "best", max_to_keep=1)
    saved = {}
    for number in steps:
        saved[number] = _fill(model, number)
        step.assign(number)
        manager.save(checkpoint_number=number)
        if number == best_step:
            best.save(checkpoint_number=number)
    return saved


def assert_holds(model: tf.Module, values: dict[int, np.ndarray]) -> None:
    assert len(model.variables) == len(values)
    for index, variable in enumerate(model.variables):
        np.testing.assert_array_equal(variable.numpy(), values[index], err_msg=variable.name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("runs") / "tiny"
    return root, write_run(root)


def test_run_dir_loads_the_best_checkpoint(run_dir):
    root, saved = run_dir
    loaded = load_model(str(root))
    assert loaded.kind == "run"
    assert loaded.config == ModelConfig.from_preset("tiny", **SMALL)
    assert_holds(loaded.model, saved[20])
    assert "ckpt-20" in loaded.description and "best" in loaded.description
    assert "step 20" in loaded.description


def test_run_dir_without_best_loads_the_latest(tmp_path: Path):
    saved = write_run(tmp_path / "run", steps=(5, 7), best_step=None)
    loaded = load_model(str(tmp_path / "run"))
    assert_holds(loaded.model, saved[7])
    assert "ckpt-7" in loaded.description and "latest" in loaded.description


@pytest.mark.parametrize("name, step", [("ckpt-10", 10), ("ckpt-30", 30), ("best/ckpt-20", 20)])
def test_explicit_checkpoint_is_loaded(run_dir, name: str, step: int):
    root, saved = run_dir
    loaded = load_model(str(root / "checkpoints" / name))
    assert loaded.kind == "checkpoint"
    assert_holds(loaded.model, saved[step])
    assert f"ckpt-{step}" in loaded.description


def test_run_overrides_that_keep_the_architecture(run_dir):
    root, saved = run_dir
    loaded = load_model(str(root), {"dropout_rate": 0.1, "attention_dropout_rate": 0.0})
    assert loaded.config.dropout_rate == 0.1 and loaded.config.attention_dropout_rate == 0.0
    assert_holds(loaded.model, saved[20])


def test_run_restored_model_computes_with_the_weights(tmp_path: Path):
    """A run saved from a seeded preset gives that preset's outputs after the round trip."""
    preset = load_model("tiny", SMALL)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": preset.config.to_dict(), "preset": "tiny"}))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=preset.model), run / "checkpoints",
                               max_to_keep=1).save(checkpoint_number=3)
    restored = load_model(str(run))
    inputs = tf.constant(one_hot(np.random.default_rng(0).integers(0, 5, 8192))[np.newaxis])
    expected = preset.model(inputs, is_training=False)
    actual = restored.model(inputs, is_training=False)
    for head in expected:
        np.testing.assert_allclose(actual[head].numpy(), expected[head].numpy(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- bad specs
def test_run_override_that_changes_the_architecture_names_the_variable(run_dir):
    root, _ = run_dir
    with pytest.raises(SenformerError) as error:
        load_model(str(root), {"channels": 192})
    message = str(error.value)
    assert "\n" not in message
    # The first variable in creation order is the human head's kernel: [2 C, 16] tracks.
    assert "head_human" in message and "(384, 16)" in message and "(192, 16)" in message


def test_run_checkpoint_with_fewer_layers_than_the_model(run_dir):
    root, _ = run_dir
    with pytest.raises(SenformerError, match="no value for the model's variable"):
        load_model(str(root), {"num_transformer_layers": 3})
    with pytest.raises(SenformerError, match="no counterpart in the model"):
        load_model(str(root), {"num_transformer_layers": 1})


def test_missing_checkpoint_number_lists_the_present_ones(run_dir):
    root, _ = run_dir
    with pytest.raises(SenformerError, match=r"no checkpoint ckpt-99 .*ckpt-10, ckpt-20, ckpt-30"):
        load_model(str(root / "checkpoints" / "ckpt-99"))


def test_run_without_checkpoints(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": ModelConfig.from_preset("tiny").to_dict()}))
    with pytest.raises(SenformerError, match="no checkpoint in"):
        load_model(str(run))


@pytest.mark.parametrize("text, match", [("{", "not valid JSON"), ('{"train": {}}', "under 'model'"),
                                         ('{"model": {"channels": 0}}', "channels")])
def test_run_with_bad_config(tmp_path: Path, text: str, match: str):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    with pytest.raises(SenformerError, match=match):
        load_model(str(run))


@pytest.mark.parametrize("make, match", [
    (lambda tmp: "no-such-model", "not a preset .*no file or folder no-such-model"),
    (lambda tmp: str(tmp), "holds no config.json"),
    (lambda tmp: str(tmp / "file.txt"), "is a file"),
])
def test_unknown_spec_says_what_was_tried(tmp_path: Path, make, match: str):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SenformerError, match=match) as error:
        load_model(make(tmp_path))
    assert "enformer-pretrained" in str(error.value) and "tiny" in str(error.value)


def test_weights_only_with_pretrained(tmp_path: Path):
    with pytest.raises(SenformerError, match="--weights"):
        load_model("tiny", SMALL, weights=tmp_path)


# ----------------------------------------------------------------------------- published weights
C384 = {"channels": 384, "num_transformer_layers": 2, "heads": {"human": 64, "mouse": 16},
        "sequence_length": 131_072}


@pytest.fixture(scope="module")
def released_layout(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference Sonnet checkpoint under the released file names (`checkpoint` rewritten)."""
    source = reference_dir / "enformer_c384_l2_sonnet"
    folder = tmp_path_factory.mktemp("enformer-weights")
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(source / f"enformer-c384-l2-1{suffix}", folder / f"{PRETRAINED_PREFIX}{suffix}")
    text = (source / "checkpoint").read_text().replace("enformer-c384-l2-1", PRETRAINED_PREFIX)
    (folder / "checkpoint").write_text(text)
    return folder


@pytest.fixture(scope="module")
def pretrained_c384(released_layout: Path):
    return load_model("enformer-pretrained", C384, weights=released_layout)


def test_published_checkpoint_gives_the_published_outputs(pretrained_c384, reference_dir: Path):
    archive = np.load(reference_dir / "enformer_c384_l2.npz")
    loaded = pretrained_c384
    assert loaded.kind == "pretrained"
    assert loaded.config == ModelConfig.from_preset("enformer", **C384)
    outputs = loaded.model(tf.constant(one_hot(archive["sequence_index"])[np.newaxis]), is_training=False)
    for head in ("human", "mouse"):
        expected = archive[head]
        error = np.max(np.abs(outputs[head].numpy()[0] - expected)) / np.max(np.abs(expected))
        assert error < 1e-5, f"{head}: relative error {error:.2e}"


def test_published_checkpoint_restores_every_variable(pretrained_c384, reference_dir: Path):
    """Each variable equals the reference weights stored by name (an independent record of the
    same model), so no variable kept its zero fill or got another variable's value."""
    from senformer_cli.model.pretrained import read_npz_weights, variables_by_name

    weights = read_npz_weights(reference_dir / "enformer_c384_l2.npz")
    named = variables_by_name(pretrained_c384.model.variables)
    assert sum(len(group) for group in named.values()) == len(pretrained_c384.model.variables) == 185
    for name, group in named.items():
        for variable, expected in zip(group, weights[name]):
            np.testing.assert_array_equal(variable.numpy(), expected, err_msg=name)


# The variables do not depend on the input length (except a sparse model's random-block tables),
# so checks of the restore itself run the published weights at 32,768 bp: built in a second.
SHORT = {"sequence_length": 32_768, "target_length": 32}


def test_published_weights_into_sparse_attention(released_layout: Path, pretrained_c384):
    sparse = load_model("enformer-pretrained", {**C384, **SHORT, "attention": "sparse"},
                        weights=released_layout)
    assert sparse.config.attention == "sparse" and sparse.config.sequence_length == 32_768
    assert "random-block" in sparse.description
    seeded = build_for_restore(sparse.config)  # fresh tables from the configuration's seed
    tables = [(v, fresh) for v, fresh in zip(sparse.model.variables, seeded.variables)
              if "random_blocks" in v.name]
    assert len(tables) == 2
    for variable, fresh in tables:
        assert variable.name == fresh.name
        np.testing.assert_array_equal(variable.numpy(), fresh.numpy())
    # Everything else equals the full-attention model's restored weights, in the same order.
    others = [v for v in sparse.model.variables if "random_blocks" not in v.name]
    full = pretrained_c384.model.variables
    assert [v.name for v in others] == [v.name for v in full]
    for variable, expected in zip(others, full):
        np.testing.assert_array_equal(variable.numpy(), expected.numpy(), err_msg=variable.name)


@pytest.mark.parametrize("overrides, match", [
    ({"heads": {"human": 32, "mouse": 16}},
     r"head_human/linear/b:0' has shape \(32,\) in the model, \(64,\) in the checkpoint"),
    ({"num_transformer_layers": 3}, "no value for the model's variable"),
    ({"heads": {"human": 64}}, "has no counterpart in the model"),
])
def test_published_checkpoint_that_does_not_fit(released_layout: Path, overrides, match: str):
    with pytest.raises(SenformerError, match=match) as error:
        load_model("enformer-pretrained", {**C384, **SHORT, **overrides}, weights=released_layout)
    assert "\n" not in str(error.value)


def test_published_weights_are_looked_for_in_order(released_layout: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SENFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SENFORMER_ENFORMER_WEIGHTS", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SenformerError) as error:
        find_pretrained(empty)
    message = str(error.value)
    assert "\n" not in message
    assert str(empty) in message and "SENFORMER_ENFORMER_WEIGHTS (unset)" in message
    assert str(tmp_path / "cache" / "enformer-pretrained") in message
    assert "gsutil -m cp 'gs://dm-enformer/models/enformer/sonnet_weights/*'" in message

    monkeypatch.setenv("SENFORMER_ENFORMER_WEIGHTS", str(released_layout))
    assert find_pretrained(empty) == released_layout / PRETRAINED_PREFIX
    monkeypatch.delenv("SENFORMER_ENFORMER_WEIGHTS")
    shutil.copytree(released_layout, tmp_path / "cache" / "enformer-pretrained")
    assert find_pretrained(None) == tmp_path / "cache" / "enformer-pretrained" / PRETRAINED_PREFIX
    assert find_pretrained(released_layout) == released_layout / PRETRAINED_PREFIX


def test_damaged_published_checkpoint(released_layout: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(released_layout, broken)
    (broken / f"{PRETRAINED_PREFIX}.index").write_bytes(b"not an index")
    with pytest.raises(SenformerError, match="cannot read checkpoint") as error:
        load_model("enformer-pretrained", {**C384, **SHORT}, weights=broken)
    assert "\n" not in str(error.value)
