"""Gradient checkpointing (`recompute`, senformer_cli/model/recompute.py): the same gradients,
the same dropout masks, batch norm updated once, the same variables, and less memory."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model import enformer as enformer_module
from senformer_cli.model.recompute import recompute_call

NO_DROPOUT = dict(dropout_rate=0.0, attention_dropout_rate=0.0, positional_dropout_rate=0.0,
                  final_dropout_rate=0.0)
LENGTH = 4096  # 32 tokens


def tiny(attention: str = "sparse", **overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", sequence_length=LENGTH, target_length=16, block_size=4,
                                   attention=attention, **overrides)


def one_hot(config: ModelConfig, seed: int = 0) -> tf.Tensor:
    bases = np.random.default_rng(seed).integers(0, 4, (2, config.sequence_length))
    return tf.one_hot(bases, 4)


@functools.lru_cache(maxsize=None)
def _train_step(config_json: str, compiled: bool, seed: int):
    config = ModelConfig.from_dict(json.loads(config_json))
    tf.random.set_seed(seed)
    model = build_model(config)
    model(tf.zeros([1, config.sequence_length, 4]), is_training=False)  # variables, eagerly
    x = one_hot(config)
    variables = [v for v in model.trainable_variables if "head_mouse" not in v.name]
    weights = tf.reshape(tf.range(16, dtype=tf.float32), [1, 1, 16])

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(model(x, is_training=True)["human"] * weights)
        return loss, tape.gradient(loss, [x] + variables)

    loss, gradients = (tf.function(step, autograph=False) if compiled else step)(x)
    # Batch-norm moving averages (counter, hidden, average of each mean and variance).
    moving = [(v.name, v.numpy()) for v in model.variables
              if not v.trainable and "random_blocks" not in v.name]
    return loss.numpy(), [g.numpy() for g in gradients], moving, model


def train_step(config: ModelConfig, *, compiled: bool = True, seed: int = 1):
    """One training step from the same initial weights: the loss, the gradients of the input and
    of every trunk and human-head variable, the batch-norm moving averages afterwards, the model.
    Cached: several tests look at the same step."""
    return _train_step(json.dumps(config.to_dict()), compiled, seed)


def assert_gradients_close(expected: list[np.ndarray], actual: list[np.ndarray], rtol: float = 1e-5):
    """Equal up to float32 round-off: every entry within `rtol` of the largest gradient entry, and
    each variable whose gradient is not round-off itself (the conv biases before a batch norm have
    a zero gradient in exact arithmetic) within 10 x `rtol` of its own largest entry."""
    scale = max(np.max(np.abs(g)) for g in expected)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)
        if np.max(np.abs(e)) > 1e-2 * scale:
            np.testing.assert_allclose(a, e, rtol=0, atol=10 * rtol * np.max(np.abs(e)))


@pytest.mark.parametrize("attention, compiled", [
    pytest.param("sparse", True, marks=pytest.mark.slow),
    pytest.param("full", True, marks=pytest.mark.slow), ("sparse", False)],
                         ids=["sparse-tf.function", "full-tf.function", "sparse-eager"])
def test_recompute_gives_the_same_gradients(attention, compiled):
    loss, gradients, _, _ = train_step(tiny(attention, **NO_DROPOUT), compiled=compiled)
    loss_r, gradients_r, _, _ = train_step(tiny(attention, recompute=True, **NO_DROPOUT),
                                           compiled=compiled)
    assert loss_r == pytest.approx(loss, rel=1e-6)
    assert len(gradients) == len(gradients_r) == 1 + 7 + 6 * 9 + 2 * 16 + 4 + 2
    assert_gradients_close(gradients, gradients_r)


def test_batch_norm_moving_averages_are_updated_once():
    # The recomputation normalises with the batch statistics without updating the averages again:
    # after one step they equal those of the plain model (a second update would move them on).
    _, _, moving, _ = train_step(tiny(**NO_DROPOUT))
    _, _, moving_r, _ = train_step(tiny(recompute=True, **NO_DROPOUT))
    assert [name for name, _ in moving_r] == [name for name, _ in moving]
    assert len(moving) == 14 * 2 * 3  # 14 batch norms: mean and variance, 3 variables each
    counters = [value for name, value in moving_r if "counter" in name]
    assert len(counters) == 28 and all(int(c) == 1 for c in counters)  # one update each
    for (name, value), (_, value_r) in zip(moving, moving_r):
        np.testing.assert_allclose(value_r, value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_variables_are_the_same_with_recompute():
    *_, plain = train_step(tiny(**NO_DROPOUT))
    *_, recomputed = train_step(tiny(recompute=True, **NO_DROPOUT))
    assert [(v.name, v.shape) for v in recomputed.variables] == [(v.name, v.shape) for v in
                                                                plain.variables]


def test_recompute_with_dropout_draws_the_same_masks(monkeypatch):
    """With dropout on, the checkpointed gradient equals TensorFlow's own gradient of the same
    forward pass (the same per-block seeds, no checkpointing): the recomputation in the backward
    pass drew exactly the masks of the forward pass."""
    config = tiny(recompute=True)  # published dropout rates
    uncached = _train_step.__wrapped__  # the monkeypatch below changes the computation
    _, checkpointed, _, _ = uncached(json.dumps(config.to_dict()), False, 5)

    def plain(block, inputs, *, is_training, **kwargs):
        return recompute_call(block, inputs, is_training=is_training, checkpoint=False, **kwargs)

    monkeypatch.setattr(enformer_module, "recompute_call", plain)
    _, reference, _, _ = uncached(json.dumps(config.to_dict()), False, 5)
    assert_gradients_close(reference, checkpointed)
    # ... and the masks are not all-ones: without dropout the gradients differ.
    _, no_dropout, _, _ = uncached(json.dumps(tiny(recompute=True, **NO_DROPOUT).to_dict()), False, 5)
    assert max(np.max(np.abs(a - b)) for a, b in zip(reference, no_dropout)) > 1e-3


@pytest.mark.slow
def test_recompute_lowers_peak_memory(monkeypatch):
    """One tiny training step in a fresh process each, with and without recompute: the peak of
    the live tensors (TensorFlow's BFC allocator on the CPU reports it) drops by a third or more.
    (A memory ratio, not a timing. The resident-memory peak at this size is dominated by the
    traced graphs and the C allocator's retained pages, about 0.6 GB either way.)"""
    from senformer_cli import profiling

    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")  # inherited by the children
    peaks = {}
    for recompute in (False, True):
        config = profiling.config_for(ModelConfig.from_preset("tiny", recompute=recompute),
                                      "sparse", 65_536)
        spec = {"config": config.to_dict(), "mode": "train", "batch_size": 1, "steps": 1,
                "warmup": 1, "precision": "fp32", "component": "model"}
        row = profiling.run_child(spec, limit_bytes=4_000_000_000)
        assert row["status"] == "ok", row
        peaks[recompute] = row["allocator_peak_bytes"]
    # Measured: 285 MB without, 150 MB with recompute (the stem's forward and backward alone).
    assert peaks[True] < 0.67 * peaks[False], peaks


@pytest.mark.parametrize("trainable", [pytest.param("all", marks=pytest.mark.slow), "attention"])
def test_training_forward_recomputes_and_gives_the_same_gradients(trainable):
    """`senformer train` goes through the model's recompute (a custom gradient per block in its
    traced step) and gets TensorFlow's own gradients of the plain model."""
    from senformer_cli.training import forward, trainable_variables

    results = []
    for recompute in (False, True):
        config = tiny(recompute=recompute, **NO_DROPOUT)
        tf.random.set_seed(3)
        model = build_model(config)
        model(tf.zeros([1, config.sequence_length, 4]), is_training=False)
        variables = trainable_variables(model, trainable, "human", [])
        x = one_hot(config)

        @tf.function(autograph=False)
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(forward(model, x, "human", trainable, tf.constant([1, 2])))
            return loss, tape.gradient(loss, variables)

        graph = step.get_concrete_function(x).graph
        custom = [op for op in graph.get_operations() if op.type == "IdentityN"]
        loss, gradients = step(x)
        results.append((len(custom), loss.numpy(), [g.numpy() for g in gradients]))
    (plain_custom, loss, gradients), (custom, loss_r, gradients_r) = results
    # tf.custom_gradient adds an IdentityN per recomputed block (batch norm has its own too).
    assert custom - plain_custom >= 4  # stem, conv tower and transformer blocks, final
    assert loss_r == pytest.approx(loss, rel=1e-6)
    assert_gradients_close(gradients, gradients_r)
