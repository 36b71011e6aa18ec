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
- **It runs after the upstream gradient exists.** The graph executor runs an op as soon as its
  inputs exist. A recomputation's input gets a data dependency on the incoming gradient
  (`zero_after`), and its other ops a control dependency on that input, so none of it runs during
  the forward pass (and Grappler cannot merge it with the forward ops), which would keep every
  block's activations alive at once again. In the same way the forward pass of a block waits for
  its input: otherwise the ops that do not read it (the sparse attention's positional tables) run
  for every layer at the step's start and stay alive until their layer's turn.

Variables are neither created nor renamed here: the model's first call (the one that creates the
variables) runs the plain trunk, and the wrapping happens at call time, so the model's variable
names and creation order are those of the published model.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator

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
        with record.stop_recording(), tf.control_dependencies([x]):
            outputs = run(x, list(tensors))

        def gradient(upstream: tf.Tensor, variables: list[tf.Variable] | None = None):
            x_again = x + tf.cast(zero_after(upstream), x.dtype)  # waits for the gradient
            variables = list(variables or [])
            with tf.GradientTape() as tape, tf.control_dependencies([x_again]):
                tape.watch(x_again)
                tape.watch(variables)
                with _recomputing():
                    recomputed = run(x_again, list(tensors))
            grads = tape.gradient(recomputed, [x_again] + variables, output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [grads[0]] + [None] * len(tensors), grads[1:]

        return outputs, gradient

    return checkpointed(inputs, *extras)


def zero_after(tensor: tf.Tensor) -> tf.Tensor:
    """An int32 0 computed from `tensor`'s first element: an op that reads it cannot run before
    `tensor` exists. (A data dependency: first == first is true, NaN aside, but only known at run
    time, so Grappler cannot fold it away. A NaN gives 0 too.)"""
    first = tf.reshape(tensor, [-1])[:1]
    return tf.maximum(tf.cast(tf.reduce_all(tf.equal(first, first)), tf.int32) - 1, 0)


def sequential_loop(count: int, body: Callable, *state: Any, after: tf.Tensor | None = None):
    """state = body(index, *state) (a tuple) for index = 0 .. count - 1, one iteration at a time,
    in a tf.while_loop. `after`: the loop starts only once this tensor exists. A backward pass's
    loop that recomputes activations needs it: its first iteration's recomputation does not read
    the incoming gradient, so the executor would otherwise run it during the forward pass and keep
    its activations until the gradient arrives."""
    start = tf.constant(0) if after is None else zero_after(after)
    final = tf.while_loop(lambda index, *_: index < count,
                          lambda index, *rest: (index + 1, *body(index, *rest)),
                          (start, *state), parallel_iterations=1)
    return final[1:]
