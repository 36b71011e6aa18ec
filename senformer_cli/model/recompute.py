"""Gradient checkpointing (`recompute`): a block keeps only its input for the backward pass and
recomputes its activations there, one block at a time.

`recompute_call(block, x, is_training=..., **kwargs)` returns `block(x, is_training=..., **kwargs)`;
under a gradient tape the block's intermediate activations are not kept: the backward pass runs
the block again under its own tape. The recomputation is exact:

- **Dropout draws the same masks.** With `recompute` on, a training call of the model always has a
  dropout `seed` (drawn once per call when the caller gives none), and every dropout site draws its
  mask statelessly from it (`layers.Dropout`, the attention layers); the seed is one of the block's
  recorded inputs, so the recomputation draws the same masks.
- **Batch norm is not updated twice.** In training mode the forward pass normalises with the batch
  statistics and updates the moving averages; the recomputation (`recomputing()` is True) uses the
  same batch statistics without touching the moving averages.
- **It runs after the upstream gradient exists.** The recomputation's input gets a data dependency
  on the incoming gradient, so the graph executor cannot schedule it during the forward pass (and
  Grappler cannot merge it with the forward ops), which would keep every activation alive again.

Variables are neither created nor renamed here: the model's first call (the one that creates the
variables) runs the plain trunk, and the wrapping happens at call time, so the model's variable
names and creation order are those of the published model.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import sonnet as snt
import tensorflow as tf
# The public tf.recompute_grad uses the same private context manager to keep the forward pass off
# the tape (its intermediates would otherwise stay referenced in eager mode).
from tensorflow.python.eager import record

_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("senformer_recomputing",
                                                                    default=False)


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def recomputing() -> bool:
    """True while a block is being recomputed for its gradient (batch norm must not update)."""
    return _RECOMPUTING.get()


def recompute_call(block: snt.Module, inputs: tf.Tensor, *, is_training: bool,
                   checkpoint: bool = True, **kwargs: Any) -> tf.Tensor:
    """`block(inputs, is_training=is_training, **kwargs)` with its activations recomputed in the
    backward pass. Keyword arguments are tensors (an attention key mask, a dropout seed) or None.
    The block's variables must exist (it has been called once).

    `checkpoint=False` is the same call without checkpointing: TensorFlow's own gradient of it is
    the reference the tests hold the recomputation to.
    """
    if not checkpoint:
        return block(inputs, is_training=is_training, **kwargs)
    names = sorted(name for name, value in kwargs.items() if value is not None)
    extras = [tf.convert_to_tensor(kwargs[name]) for name in names]

    def run(x: tf.Tensor, tensors: list[tf.Tensor]) -> tf.Tensor:
        return block(x, is_training=is_training, **dict(zip(names, tensors)))

    @tf.custom_gradient
    def checkpointed(x: tf.Tensor, *tensors: tf.Tensor):
        with record.stop_recording():
            outputs = run(x, list(tensors))

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
                with _recomputing():
                    recomputed = run(x_again, list(tensors))
            grads = tape.gradient(recomputed, [x_again] + variables, output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [grads[0]] + [None] * len(tensors), grads[1:]

        return outputs, gradient

    return checkpointed(inputs, *extras)
