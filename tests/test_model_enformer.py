"""The Enformer model (`attention='full'`) against the published implementation's oracles in
`../shared/reference/`, plus gradient flow, training/inference modes and the relative shift."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model.attention import relative_shift, skew
from senformer_cli.model.pretrained import assign_by_name, read_npz_weights


def one_hot(sequence_index: np.ndarray) -> np.ndarray:
    """uint8 [L] with 0..3 = A,C,G,T and 4 = N -> float32 [L, 4], N = all zeros."""
    return np.eye(5, 4, dtype=np.float32)[sequence_index]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# ----------------------------------------------------------------------------- published variables
def test_enformer_preset_creates_the_published_variables(reference_dir: Path):
    with open(reference_dir / "enformer_variables.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    expected = [(row["name"], tuple(int(d) for d in row["shape"].split("x") if d),
                 row["trainable"] == "True") for row in rows]
    assert len(expected) == 329

    # The preset's modules create their variables in a trace without autograph, zero-filled
    # instead of drawing 251M random initial values (a third of the time); name, shape and
    # trainability are what the modules ask for either way.
    from senformer_cli.model.summary import build_for_counting

    model = build_for_counting(ModelConfig.from_preset("enformer"))
    actual = [(v.name, tuple(v.shape), bool(v.trainable)) for v in model.variables]

    for index, (ours, published) in enumerate(zip(actual, expected)):
        assert ours == published, f"variable {index}: ours {ours}, published {published}"
    assert len(actual) == len(expected)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == 251_221_292


# ----------------------------------------------------------------------------- published outputs
C384_CONFIG = dict(channels=384, num_transformer_layers=2, sequence_length=131_072,
                   heads={"human": 64, "mouse": 16})


@pytest.fixture(scope="module")
def published_c384(reference_dir: Path):
    """The C = 384, 2-layer model with the reference weights, run once (eagerly) on the reference
    input; the trunk embedding is captured on the way (Sonnet 2.0.2 has no method interceptors)."""
    path = reference_dir / "enformer_c384_l2.npz"
    archive = np.load(path)
    model = build_model(ModelConfig.from_preset("enformer", **C384_CONFIG), create_variables=True)
    assigned = assign_by_name(model.variables, read_npz_weights(path), source=str(path))
    trunk, captured = model.trunk, {}

    def capturing_trunk(inputs: tf.Tensor, is_training: bool) -> tf.Tensor:
        captured["trunk"] = trunk(inputs, is_training=is_training)
        return captured["trunk"]

    model._trunk = capturing_trunk
    try:
        outputs = model(tf.constant(one_hot(archive["sequence_index"])[np.newaxis]), is_training=False)
    finally:
        model._trunk = trunk
    attention = model.attention_layers()[0]
    return {
        "model": model,
        "assigned": assigned,
        "reference": {key: archive[key] for key in archive.files if not key.startswith("w::")},
        "outputs": {key: value.numpy()[0] for key, value in outputs.items()},
        "trunk_first64": captured["trunk"].numpy()[0, :, :64],
        "attention0": attention(tf.constant(archive["attention0_input"][np.newaxis]),
                                is_training=False).numpy()[0],
    }


def test_reference_weights_cover_every_variable(published_c384):
    assert published_c384["assigned"] == len(published_c384["model"].variables) == 185


@pytest.mark.parametrize("head", ["human", "mouse"])
def test_head_outputs_match_published_model(published_c384, head):
    actual, expected = published_c384["outputs"][head], published_c384["reference"][head]
    assert actual.shape == expected.shape == (896, {"human": 64, "mouse": 16}[head])
    assert relative_error(actual, expected) < 1e-5


def test_trunk_embedding_matches_published_model(published_c384):
    actual, expected = published_c384["trunk_first64"], published_c384["reference"]["trunk_first64"]
    assert actual.shape == expected.shape == (896, 64)
    assert relative_error(actual, expected) < 1e-5


def test_first_attention_layer_matches_published_model(published_c384):
    actual = published_c384["attention0"]
    expected = published_c384["reference"]["attention0_output"]
    assert actual.shape == expected.shape == (1024, 384)
    # The reference weights make the positional term matter (dropping it moves the output ~23%,
    # a reversed shift ~17%), so this pins the relative positions down too.
    assert relative_error(actual, expected) < 1e-5


# ----------------------------------------------------------------------------- training behaviour
def tiny_full_config() -> ModelConfig:
    return ModelConfig.from_preset("tiny", attention="full")


def random_one_hot(config: ModelConfig, batch: int, seed: int) -> tf.Tensor:
    index = np.random.default_rng(seed).integers(0, 4, size=(batch, config.sequence_length))
    return tf.constant(one_hot(index.astype(np.uint8)))


def test_gradients_reach_every_trainable_variable():
    config = tiny_full_config()
    model = build_model(config)
    x = random_one_hot(config, batch=2, seed=2)
    model(x, is_training=False)  # creates the variables
    # The attention output layers start at zero, which zeroes the gradients of every weight
    # before them in the attention block; move them off zero first.
    rng = np.random.default_rng(1)
    for layer in model.attention_layers():
        w = layer._embedding_layer.w
        w.assign(0.1 * rng.standard_normal(w.shape).astype(np.float32))
    targets = {head: tf.constant(rng.poisson(1.0, (2, config.target_length, tracks)), tf.float32)
               for head, tracks in config.heads.items()}
    with tf.GradientTape() as tape:
        outputs = model(x, is_training=True)
        loss = tf.add_n([tf.reduce_mean(outputs[h] - targets[h] * tf.math.log(outputs[h] + 1e-8))
                         for h in outputs])
    variables = model.trainable_variables
    gradients = tape.gradient(loss, variables)
    # stem 7 (conv w, b; batch norm scale, offset; conv w, b; pooling w) + conv tower 6 x 9
    # + transformer 2 x (layer norm 2, attention 8, layer norm 2, two linears 4)
    # + final pointwise 4 + two heads x 2.
    assert len(variables) == 7 + 6 * 9 + 2 * 16 + 4 + 2 * 2
    missing = [v.name for v, g in zip(variables, gradients) if g is None]
    zero = [v.name for v, g in zip(variables, gradients)
            if g is not None and not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing, f"no gradient for {missing}"
    assert not zero, f"all-zero gradient for {zero}"


def test_inference_is_deterministic_and_training_mode_differs():
    config = tiny_full_config()
    model = build_model(config)
    x = random_one_hot(config, batch=1, seed=3)
    first = model(x, is_training=False)["human"].numpy()
    second = model(x, is_training=False)["human"].numpy()
    np.testing.assert_array_equal(first, second)
    # Training mode: batch statistics instead of moving averages, and dropout.
    training = model(x, is_training=True)["human"].numpy()
    assert np.max(np.abs(training - first)) > 1e-3


def test_training_mode_applies_dropout():
    config = tiny_full_config()
    model = build_model(config)
    x = random_one_hot(config, batch=1, seed=4)
    tf.random.set_seed(0)
    a = model(x, is_training=True)["human"].numpy()
    b = model(x, is_training=True)["human"].numpy()
    assert np.max(np.abs(a - b)) > 1e-4


# ----------------------------------------------------------------------------- relative shift
@pytest.mark.parametrize("num_tokens", [1, 2, 5, 16])
def test_relative_shift_picks_the_offset_of_each_key(num_tokens):
    x = np.random.default_rng(num_tokens).standard_normal((2, 3, num_tokens, 2 * num_tokens - 1))
    expected = np.empty((2, 3, num_tokens, num_tokens))
    for i in range(num_tokens):
        for j in range(num_tokens):
            expected[..., i, j] = x[..., i, num_tokens - 1 + j - i]
    np.testing.assert_array_equal(relative_shift(tf.constant(x)).numpy(), expected)


@pytest.mark.parametrize("num_queries, width", [(4, 7), (4, 11), (3, 3), (1, 5)])
def test_skew_matches_its_definition(num_queries, width):
    x = np.random.default_rng(width).standard_normal((2, num_queries, width))
    expected = np.empty((2, num_queries, width - num_queries + 1))
    for q in range(num_queries):
        for c in range(width - num_queries + 1):
            expected[:, q, c] = x[:, q, c + num_queries - 1 - q]
    np.testing.assert_array_equal(skew(tf.constant(x)).numpy(), expected)
