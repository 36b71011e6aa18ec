"""Exact tiling of the stem and conv tower (`tile_length`, senformer_cli/model/tiling.py): the
tiled model's outputs, gradients and batch-norm moving averages equal the untiled model's."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig, num_tiles
from senformer_cli.errors import SenformerError
from senformer_cli.model import build_model

NO_DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0, positional_dropout_rate=0.0,
                  final_dropout_rate=0.0)
# 4,096 bp: the stem's input is 4,096 positions, the conv tower's 2,048 .. 64. Tiles of at most
# 512 positions: 8 tiles in the stem, 4 and 2 in the first tower blocks, the rest whole (each tile
# adds its share of the traced graph).
TILE = 512
# Tiling touches the stem and the conv tower only: one transformer layer of full attention (the
# smallest graph after them) keeps each model's tracing short.
TRUNK_ONLY = dict(attention="full", num_transformer_layers=1)


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", sequence_length=4096, target_length=16, block_size=4,
                                   **NO_DROPOUT, **{**TRUNK_ONLY, **overrides})


@functools.lru_cache(maxsize=None)
def _step(config_json: str, is_training: bool, compiled: bool):
    """Outputs and gradients (input, every trunk and human-head variable) of one call, from the
    same weights and moving averages (set by one earlier training call), and the moving averages
    after it."""
    config = ModelConfig.from_dict(json.loads(config_json))
    tf.random.set_seed(3)
    model = build_model(config)
    model(tf.zeros([2, config.sequence_length, 4]), is_training=False)
    rng = np.random.default_rng(9)
    model(tf.one_hot(rng.integers(0, 4, (2, config.sequence_length)), 4), is_training=True)
    x = tf.one_hot(np.random.default_rng(0).integers(0, 4, (2, config.sequence_length)), 4)
    variables = [v for v in model.trainable_variables if "head_mouse" not in v.name]
    weights = tf.reshape(tf.range(16, dtype=tf.float32), [1, 1, 16])

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = model(x, is_training=is_training)["human"]
            loss = tf.reduce_sum(outputs * weights)
        return outputs, tape.gradient(loss, [x] + variables)

    outputs, gradients = (tf.function(step, autograph=False) if compiled else step)(x)
    moving = [v.numpy() for v in model.variables if not v.trainable and "random" not in v.name]
    return outputs.numpy(), [g.numpy() for g in gradients], moving


def step(config: ModelConfig, is_training: bool, compiled: bool = True):
    return _step(json.dumps(config.to_dict()), is_training, compiled)


@pytest.mark.parametrize("is_training, compiled", [
    (True, True), pytest.param(False, True, marks=pytest.mark.slow), (True, False)],
                         ids=["train-tf.function", "predict-tf.function", "train-eager"])
def test_tiled_model_equals_the_untiled_model(is_training, compiled):
    outputs, gradients, moving = step(tiny(), is_training, compiled)
    outputs_t, gradients_t, moving_t = step(tiny(tile_length=TILE), is_training, compiled)
    np.testing.assert_allclose(outputs_t, outputs, rtol=0, atol=1e-5 * np.max(np.abs(outputs)))
    scale = max(np.max(np.abs(g)) for g in gradients)
    assert len(gradients_t) == len(gradients) == 84  # the input and every trunk and human-head
    # variable
    for g_t, g in zip(gradients_t, gradients):
        np.testing.assert_allclose(g_t, g, rtol=0, atol=2e-5 * scale)
    # Batch norm: the averages after the call (updated once in training, untouched in inference).
    assert len(moving_t) == len(moving) == 14 * 2 * 3
    for m_t, m in zip(moving_t, moving):
        np.testing.assert_allclose(m_t, m, rtol=1e-5, atol=1e-5)


def test_tiling_with_recompute_equals_the_plain_model():
    outputs, gradients, _ = step(tiny(), True)
    outputs_t, gradients_t, _ = step(tiny(tile_length=TILE, recompute=True), True)
    np.testing.assert_allclose(outputs_t, outputs, rtol=0, atol=1e-5 * np.max(np.abs(outputs)))
    scale = max(np.max(np.abs(g)) for g in gradients)
    for g_t, g in zip(gradients_t, gradients):
        np.testing.assert_allclose(g_t, g, rtol=0, atol=2e-5 * scale)


def test_tile_counts():
    assert [num_tiles(4096 >> k, 256) for k in range(7)] == [16, 8, 4, 2, 1, 1, 1]
    assert num_tiles(196_608, 16_384) == 16  # 12,288 positions each
    assert num_tiles(1000, 0) == 1


@pytest.mark.parametrize("tile_length, needle", [(255, "even"), (-2, "even"),
                                                 (2, "equal tiles of an even length")])
def test_bad_tile_lengths_name_the_field(tile_length, needle):
    # 6,144 = 3 x 2,048 positions do not split into 4,096 tiles of at most 2.
    with pytest.raises(SenformerError, match=f"tile_length.*{needle}"):
        tiny(tile_length=tile_length).replace(sequence_length=6144)


def test_repeated_calls_give_the_same_gradients():
    """The input gradient is accumulated in place (tiling.py `_add_positions`): its buffer must be
    new on every call. (Built from zeros_like, Grappler folds it into a constant whose buffer every
    call adds into: the second call's gradients were 2x the first, the third's 3x.)"""
    from senformer_cli.model.tiling import tiled_call

    config = tiny()
    model = build_model(config)
    model(tf.zeros([1, config.sequence_length, 4]), is_training=False)
    stem, tower = model.trunk.layers[0], model.trunk.layers[1]
    rng = np.random.default_rng(4)
    for block, x in [(stem, tf.one_hot(rng.integers(0, 4, (2, 4096)), 4)),
                     (tower.layers[0], tf.constant(rng.normal(size=(2, 2048, 48)), tf.float32))]:
        def gradients(x, upstream, tile_length):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = (tiled_call(block, x, is_training=True, tile_length=tile_length) if tile_length
                     else block(x, is_training=True))
            return tape.gradient(y, [x, *block.trainable_variables], output_gradients=upstream)

        upstream = tf.constant(rng.normal(size=block(x, is_training=False).shape), tf.float32)
        reference = [g.numpy() for g in gradients(x, upstream, 0)]  # untiled, eager
        compiled = tf.function(gradients, autograph=False)
        for _ in range(3):
            for got, want in zip(compiled(x, upstream, TILE), reference):
                np.testing.assert_allclose(got.numpy(), want, atol=1e-5 * np.abs(want).max())
