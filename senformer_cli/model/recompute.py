"""Gradient checkpointing (`recompute`): a block keeps only its input for the backward pass and
recomputes its activations there, one block at a time.

`recompute_call(block, x, is_training=...)` returns `block(x, is_training=...)`; under a gradient
tape the block's intermediate activations are not kept: the backward pass runs the block again
under its own tape. The recomputation is exact:

- **Dropout draws the same masks.** Every dropout inside a recomputed block is stateless, seeded
  from one seed drawn for the block call (`dropout_seed()` hands out `fold_in(seed, k)` for the
  k-th draw; the recomputation makes the same draws in the same order). Outside a recomputed
  block `dropout_seed()` is None and the layers use their usual stateful dropout.
- **Batch norm is not updated twice.** In training mode the forward pass normalises with the batch
  statistics and updates the moving averages; the recomputation (`recomputing()` is True) uses the
  same batch statistics without touching the moving averages.
- **It runs after the upstream gradient exists.** The recomputation's inputs get a data dependency
  on the incoming gradient, so the graph executor cannot schedule it during the forward pass (and
  Grappler cannot merge it with the forward ops), which would keep every activation alive again.

Variables are neither created nor renamed here: a block whose variables do not exist yet (the very
first trace) is called plainly, and the wrapping happens at call time, so the model's variable
names and creation order are those of the published model.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Iterator

import sonnet as snt
import tensorflow as tf
# The public recompute_grad uses the same private context manager to keep the forward pass off
# the tape (its intermediates would otherwise stay referenced in eager mode).
from tensorflow.python.eager import record


@dataclass
class _Recomputation:
    seed: tf.Tensor | None  # [2] int32, or None when there is no dropout (inference)
    recomputing: bool
    draws: int = 0


_STATE: contextvars.ContextVar[_Recomputation | None] = contextvars.ContextVar(
    "senformer_recompute", default=None)


@contextlib.contextmanager
def _recomputation(seed: tf.Tensor | None, recomputing: bool) -> Iterator[_Recomputation]:
    token = _STATE.set(_Recomputation(seed, recomputing))
    try:
        yield _STATE.get()
    finally:
        _STATE.reset(token)


def dropout_seed() -> tf.Tensor | None:
    """Inside a recomputed block in training mode: the next stateless seed ([2] int32), the same
    sequence in the forward pass and in its recomputation. Elsewhere None."""
    state = _STATE.get()
    if state is None or state.seed is None:
        return None
    state.draws += 1
    return tf.random.experimental.stateless_fold_in(state.seed, state.draws)


def recomputing() -> bool:
    """True while a block is being recomputed for its gradient (batch norm must not update)."""
    state = _STATE.get()
    return state is not None and state.recomputing


def dropout(x: tf.Tensor, rate: float, noise_shape: Any = None) -> tf.Tensor:
    """`tf.nn.dropout`, stateless (same mask when recomputed) inside a recomputed block."""
    seed = dropout_seed()
    if seed is None:
        return tf.nn.dropout(x, rate=rate, noise_shape=noise_shape)
    return tf.nn.experimental.stateless_dropout(x, rate=rate, noise_shape=noise_shape, seed=seed)


class Dropout(snt.Dropout):
    """`snt.Dropout` that draws its mask through `dropout()` (no variables, same behaviour
    outside recomputed blocks)."""

    def __call__(self, x: tf.Tensor, is_training: bool) -> tf.Tensor:
        if not is_training:
            return x
        return dropout(x, rate=self._rate, noise_shape=self._noise_shape)


def _tensor_kwargs(kwargs: dict[str, Any]) -> tuple[list[str], list[tf.Tensor]]:
    names = sorted(name for name, value in kwargs.items() if value is not None)
    return names, [tf.convert_to_tensor(kwargs[name]) for name in names]


def recompute_call(block: snt.Module, inputs: tf.Tensor, *, is_training: bool,
                   checkpoint: bool = True, **kwargs: Any) -> tf.Tensor:
    """`block(inputs, is_training=is_training, **kwargs)` with its activations recomputed in the
    backward pass. Keyword arguments are tensors (e.g. an attention key mask) or None.

    `checkpoint=False` runs the same computation (the same dropout seeds) without checkpointing:
    TensorFlow's own gradient of it is the reference the tests hold the recomputation to.
    """
    if not block.variables:  # first call: let the block create its variables normally
        return block(inputs, is_training=is_training, **kwargs)
    names, extras = _tensor_kwargs(kwargs)
    seed = (tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32) if is_training else None)
    recorded_extras = extras + ([seed] if seed is not None else [])

    def run(x: tf.Tensor, tensors: list[tf.Tensor], recomputing: bool) -> tf.Tensor:
        block_kwargs = dict(zip(names, tensors[:len(names)]))
        with _recomputation(tensors[len(names)] if seed is not None else None, recomputing):
            return block(x, is_training=is_training, **block_kwargs)

    if not checkpoint:
        return run(inputs, recorded_extras, recomputing=False)

    @tf.custom_gradient
    def checkpointed(x: tf.Tensor, *tensors: tf.Tensor):
        with record.stop_recording():
            outputs = run(x, list(tensors), recomputing=False)

        def gradient(upstream: tf.Tensor, variables: list[tf.Variable] | None = None):
            # A zero that depends on the upstream gradient: the recomputation waits for it.
            # (As tf.recompute_grad does: x == x is always true, but only known at run time.)
            first = tf.cast(tf.reduce_max(tf.reshape(upstream, [-1])[:1]), tf.bool)
            after = tf.where(tf.equal(first, first), 0.0, float("nan"))
            x_again = tf.identity(x) + tf.cast(after, x.dtype)
            variables = list(variables or [])
            with tf.GradientTape() as tape:
                tape.watch(x_again)
                tape.watch(variables)
                recomputed = run(x_again, list(tensors), recomputing=True)
            grads = tape.gradient(recomputed, [x_again] + variables, output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [grads[0]] + [None] * len(tensors), grads[1:]

        return outputs, gradient

    return checkpointed(inputs, *recorded_extras)
