"""Weights: each sparse layer's own random blocks, Enformer weights restored into S-Enformer by
name, and the error paths of `assign_by_name` / `read_npz_weights`."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.model import build_model
from senformer_cli.model.enformer import Enformer
from senformer_cli.model.pretrained import assign_by_name, read_npz_weights


# ----------------------------------------------------------------------------- random blocks
def random_block_tables(config: ModelConfig) -> list[np.ndarray]:
    """Each attention layer's random-block table (drawn in the constructor: nothing to run)."""
    return [layer._random_blocks.numpy() for layer in Enformer(config).attention_layers()]


def test_each_layer_draws_its_own_random_blocks():
    config = ModelConfig.from_preset("tiny", num_transformer_layers=4, random_seed=3)
    tables = random_block_tables(config)
    assert len(tables) == 4 and tables[0].shape == (4, 14, 2)  # heads, middle blocks, random
    for first, second in itertools.combinations(tables, 2):
        assert not np.array_equal(first, second)
    # The same configuration draws the same tables; another random_seed draws other ones.
    for again, table in zip(random_block_tables(config), tables):
        np.testing.assert_array_equal(again, table)
    for other, table in zip(random_block_tables(config.replace(random_seed=4)), tables):
        assert not np.array_equal(other, table)


# ------------------------------------------------------------------- Enformer -> S-Enformer
def one_hot(config: ModelConfig, seed: int) -> tf.Tensor:
    index = np.random.default_rng(seed).integers(0, 4, size=(1, config.sequence_length))
    return tf.constant(np.eye(4, dtype=np.float32)[index])


def trained_looking_enformer(config: ModelConfig, x: tf.Tensor):
    """A full-attention model whose weights all matter: batch-norm statistics from one training
    pass and non-zero attention output layers (zero-initialised)."""
    model = build_model(config)
    model(x, is_training=True)
    rng = np.random.default_rng(1)
    for layer in model.attention_layers():
        w = layer._embedding_layer.w
        w.assign(0.2 * rng.standard_normal(w.shape).astype(np.float32))
    return model


def weights_by_name(model) -> dict[str, list[np.ndarray]]:
    """name -> the values of the variables of that name, in `model.variables` order."""
    values: dict[str, list[np.ndarray]] = {}
    for variable in model.variables:
        values.setdefault(variable.name, []).append(variable.numpy())
    return values


@pytest.fixture(scope="module")
def enformer_run() -> dict:
    """The tiny model with full attention (block size plays no part), its weights and outputs."""
    config = ModelConfig.from_preset("tiny", attention="full")
    x = one_hot(config, seed=2)
    full = trained_looking_enformer(config, x)
    return {"x": x, "values": weights_by_name(full), "num_variables": len(full.variables),
            "outputs": {head: out.numpy() for head, out in full(x, is_training=False).items()}}


@pytest.mark.parametrize("block_size, covers_every_block", [(64, True), (16, False)],
                         ids=["4-blocks-all-covered", "16-blocks-sparse"])
def test_enformer_weights_load_into_s_enformer_by_name(enformer_run, block_size,
                                                       covers_every_block):
    """tiny at 256 tokens: blocks of 64 leave 4 blocks, all attended by window + globals, so the
    sparse model must equal the full one; blocks of 16 are a real sparse pattern, which must not."""
    config = ModelConfig.from_preset("tiny", block_size=block_size)
    assert config.attention == "sparse"
    x, values = enformer_run["x"], enformer_run["values"]
    sparse = build_model(config)
    sparse(x, is_training=False)  # creates the variables (random initial values)
    with pytest.raises(SenformerError, match=r"source.npz: no weights for variable "
                                             r"'.*attention_0/random_blocks:0'"):
        assign_by_name(sparse.variables, values, "source.npz")
    assigned = assign_by_name(sparse.variables, values, "source.npz",
                              allow_missing=("random_blocks",))
    assert assigned == enformer_run["num_variables"] == len(sparse.variables) - 2
    actual = sparse(x, is_training=False)
    for head, expected in enformer_run["outputs"].items():
        error = np.abs(actual[head].numpy() - expected).max() / np.abs(expected).max()
        assert (error < 1e-5) == covers_every_block, (head, error)
        if not covers_every_block:
            assert error > 1e-3, (head, error)


# ----------------------------------------------------------------------------- assign_by_name
def variables(*specs: tuple[str, tuple[int, ...]]) -> list[tf.Variable]:
    return [tf.Variable(np.zeros(shape, np.float32), name=name) for name, shape in specs]


def test_assign_by_name_gives_repeated_names_their_arrays_in_order():
    """A batch norm's moving mean and variance share a name: the k-th variable gets array k."""
    first, second, other = variables(("bn/average", (2,)), ("bn/average", (2,)), ("w", (1, 3)))
    count = assign_by_name([first, second, other], {
        "bn/average:0": [np.array([1.0, 2.0]), np.array([3.0, 4.0])],
        "w:0": [np.array([[5.0, 6.0, 7.0]])], "unused:0": [np.zeros(9)]}, "weights.npz")
    assert count == 3
    np.testing.assert_array_equal(first.numpy(), [1, 2])
    np.testing.assert_array_equal(second.numpy(), [3, 4])
    np.testing.assert_array_equal(other.numpy(), [[5, 6, 7]])


@pytest.mark.parametrize("values, allow_missing, message", [
    ({"w:0": [np.zeros((1, 3))]}, (), r"weights.npz: no weights for variable 'bn/average:0'"),
    ({"w:0": [np.zeros((1, 3))], "bn/average:0": [np.zeros(2)]}, (),
     r"weights.npz: no weights for variable 'bn/average:0'"),  # one array for two variables
    ({"w:0": [np.zeros((3, 1))], "bn/average:0": [np.zeros(2)] * 2}, (),
     r"weights.npz: variable 'w:0' has shape \(1, 3\), the weights have \(3, 1\)"),
    ({"bn/average:0": [np.zeros(2)] * 2}, ("bn/",), r"no weights for variable 'w:0'"),
], ids=["missing", "too-few-arrays", "shape", "allow-missing-is-by-name"])
def test_assign_by_name_errors_name_the_source_and_variable(values, allow_missing, message):
    targets = variables(("bn/average", (2,)), ("bn/average", (2,)), ("w", (1, 3)))
    with pytest.raises(SenformerError, match=message):
        assign_by_name(targets, values, "weights.npz", allow_missing=allow_missing)


# ----------------------------------------------------------------------------- read_npz_weights
def test_read_npz_weights_groups_arrays_by_name_in_numeric_order(tmp_path: Path):
    arrays = {f"w::bn/average:0#{k}": np.full(2, k, np.float32) for k in (10, 2, 0, 1)}
    arrays["w::conv/w:0#0"] = np.ones((3, 4), np.float32)
    arrays["sequence_index"] = np.arange(5)  # not a weight: ignored
    path = tmp_path / "weights.npz"
    np.savez(path, **arrays)
    values = read_npz_weights(path)
    assert sorted(values) == ["bn/average:0", "conv/w:0"]
    assert [int(a[0]) for a in values["bn/average:0"]] == [0, 1, 2, 10]  # 10 after 2
    np.testing.assert_array_equal(values["conv/w:0"][0], np.ones((3, 4)))


def truncated(raw: bytes) -> bytes:
    return raw[:len(raw) // 2]  # an interrupted download


def corrupted(raw: bytes) -> bytes:
    return raw[:100] + bytes(300) + raw[400:]  # an array's header and data overwritten



@pytest.mark.parametrize("damage", [
    pytest.param(None, id="missing"),
    pytest.param(lambda raw: b"not a zip archive", id="text"),
    pytest.param(truncated, id="truncated"),
    pytest.param(corrupted, id="corrupted"),
])
def test_read_npz_weights_rejects_unreadable_files(tmp_path: Path, damage):
    path = tmp_path / "weights.npz"
    if damage is not None:
        np.savez(path, **{"w::conv/w:0#0": np.arange(1000, dtype=np.float32)})
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SenformerError, match=rf"{path}: cannot read weights"):
        read_npz_weights(path)
