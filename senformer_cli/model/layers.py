"""Building blocks of the Enformer trunk, pure Sonnet + tf.

Module and attribute names follow the released Sonnet model, so variable names, and the order in
which `module.variables` lists them, equal the published checkpoint's.
`is_training` is routed explicitly: `Sequential` passes it to every layer that takes it (the
`TRAINING_AWARE` attribute), instead of inspecting signatures at run time.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, Sequence

import sonnet as snt
import tensorflow as tf

from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext

from senformer_cli.model.attention import slice_axis
from senformer_cli.model.recompute import recomputing


_GELU_SCALE = 1.702


# An element-wise XLA kernel (compiled once per shape). The kernels below compute in float32 and
# round once at the end: XLA's CPU code for bfloat16 rounds (and converts) after every operation,
# for GELU 1.3x (forward) and 2.4x (backward) slower on this project's bf16 activations, and less
# accurate. For float32 the casts are no-ops.
_xla_kernel = functools.partial(tf.function, jit_compile=True, autograph=False,
                                reduce_retracing=True)


@_xla_kernel
def _gelu_forward(x: tf.Tensor) -> tf.Tensor:
    x32 = tf.cast(x, tf.float32)
    return tf.cast(tf.nn.sigmoid(_GELU_SCALE * x32) * x32, x.dtype)


@_xla_kernel
def _gelu_backward(x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
    x32 = tf.cast(x, tf.float32)
    s = tf.nn.sigmoid(_GELU_SCALE * x32)
    return tf.cast(tf.cast(upstream, tf.float32) * (s + _GELU_SCALE * x32 * s * (1 - s)), x.dtype)


@tf.custom_gradient
def gelu(x: tf.Tensor):
    """The sigmoid approximation of GELU used by Enformer: sigmoid(1.702 x) * x.

    Each direction is one XLA kernel (compiled once per shape): as three TensorFlow ops forward
    and five backward it was a sixth of a small model's training step on CPU, all passes over the
    activations. The gradient recomputes the sigmoid from x: differentiating the compiled forward
    instead made it write the sigmoid as a second output and read it back, two more passes."""
    return _gelu_forward(x), lambda upstream: _gelu_backward(x, upstream)


@_xla_kernel
def _pool_combine_forward(second: tf.Tensor, difference: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    weight = tf.sigmoid(tf.cast(logits, tf.float32))
    return tf.cast(tf.cast(second, tf.float32) + weight * tf.cast(difference, tf.float32),
                   second.dtype)


@_xla_kernel
def _pool_combine_backward(upstream: tf.Tensor, difference: tf.Tensor, logits: tf.Tensor):
    weight = tf.sigmoid(tf.cast(logits, tf.float32))
    upstream32 = tf.cast(upstream, tf.float32)
    logits_gradient = upstream32 * tf.cast(difference, tf.float32) * weight * (1 - weight)
    return (tf.cast(upstream32 * weight, upstream.dtype),
            tf.cast(logits_gradient, upstream.dtype))


@tf.custom_gradient
def _pool_combine(second: tf.Tensor, difference: tf.Tensor, logits: tf.Tensor):
    """second + sigmoid(logits) * difference, attention pooling's element-wise part: one XLA
    kernel each way, in float32 with one rounding (as GELU's). As TensorFlow ops (a sigmoid, two
    casts, a multiplication and an addition forward, more backward) it took 11% longer for the
    stem's pooling alone in float32 and 37% longer in bfloat16."""

    def gradient(upstream: tf.Tensor):
        difference_gradient, logits_gradient = _pool_combine_backward(upstream, difference, logits)
        return upstream, difference_gradient, logits_gradient

    return _pool_combine_forward(second, difference, logits), gradient


def _compiling_with_xla() -> bool:
    """True while tracing inside an XLA-compiled function (`train.jit_compile`), where the
    modules below keep Sonnet's ops."""
    return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _call_layer(layer, inputs: tf.Tensor, is_training: bool, **kwargs) -> tf.Tensor:
    """Call `layer` with what it takes: our modules (TRAINING_AWARE) get is_training and the
    keyword arguments (e.g. an attention key mask, a dropout seed), batch norm and Sonnet's
    dropout get is_training."""
    if getattr(layer, "TRAINING_AWARE", False):
        return layer(inputs, is_training=is_training, **kwargs)
    if is_training and recomputing() and isinstance(layer, (snt.BatchNorm,
                                                           snt.distribute.CrossReplicaBatchNorm)):
        # Recomputing for the gradient: the same batch statistics, moving averages left alone.
        return layer(inputs, is_training=False, test_local_stats=True)
    if isinstance(layer, (snt.BatchNorm, snt.distribute.CrossReplicaBatchNorm, snt.Dropout)):
        return layer(inputs, is_training=is_training)
    return layer(inputs)


class Sequential(snt.Module):
    """Layers applied in order; `is_training` goes to the layers that take it.

    `layers` may be a callable returning the layers: it is called inside this module's constructor,
    hence inside its name scope, so the layers' variables are named `.../<name>/...` as in the
    published model.
    """

    TRAINING_AWARE = True

    def __init__(self, layers: Callable[[], Iterable] | Sequence, name: str | None = None):
        super().__init__(name=name)
        if callable(layers):
            layers = layers()
        self._layers = [layer for layer in layers if layer is not None]

    @property
    def layers(self) -> list:
        return self._layers

    def __call__(self, inputs: tf.Tensor, is_training: bool, **kwargs) -> tf.Tensor:
        outputs = inputs
        for layer in self._layers:
            outputs = _call_layer(layer, outputs, is_training, **kwargs)
        return outputs


class Dropout(snt.Module):
    """Dropout that is stateless when the call gets a `seed`.

    A training step given `seed` ([2] int; every dropout site folds in its own `site` number)
    draws the same masks whenever it is run again with that seed, so a resumed run replays the
    interrupted one exactly. Without a seed it is `tf.nn.dropout` (stateful), as in Sonnet.
    """

    TRAINING_AWARE = True

    def __init__(self, rate: float, site: int = 0, name: str = "dropout"):
        super().__init__(name=name)
        self._rate = rate
        self._site = site

    def __call__(self, inputs: tf.Tensor, is_training: bool, seed: tf.Tensor | None = None,
                 **unused) -> tf.Tensor:
        if not is_training or self._rate == 0:
            return inputs
        if seed is None:
            return tf.nn.dropout(inputs, rate=self._rate)
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=self._rate, seed=tf.random.experimental.stateless_fold_in(seed, self._site))


class Residual(snt.Module):
    """x + module(x)."""

    TRAINING_AWARE = True

    def __init__(self, module: snt.Module, name: str = "residual"):
        super().__init__(name=name)
        self._module = module

    def __call__(self, inputs: tf.Tensor, is_training: bool, **kwargs) -> tf.Tensor:
        return inputs + self._module(inputs, is_training=is_training, **kwargs)


class SoftmaxPooling1D(snt.Module):
    """Attention pooling: a softmax-weighted sum over each window of `pool_size` positions.

    [B, T, C] -> [B, T / pool_size, C]; the weights are per channel, logits = x @ W with W
    initialised to `w_init_scale` x identity (so it starts close to max pooling).
    """

    def __init__(self, pool_size: int = 2, per_channel: bool = True, w_init_scale: float = 2.0,
                 name: str = "softmax_pooling"):
        super().__init__(name=name)
        self._pool_size = pool_size
        self._per_channel = per_channel
        self._w_init_scale = w_init_scale
        self._logit_linear = None

    @snt.once
    def _initialize(self, num_features: int) -> None:
        self._logit_linear = snt.Linear(
            output_size=num_features if self._per_channel else 1,
            with_bias=False,  # Softmax is agnostic to shifts.
            w_init=snt.initializers.Identity(self._w_init_scale))

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        _, length, num_features = inputs.shape
        self._initialize(num_features)
        if self._pool_size == 2:
            return self._pool_pairs(inputs)
        windows = tf.reshape(inputs, (-1, length // self._pool_size, self._pool_size, num_features))
        # The linear runs on [B * L, C]: applied to the rank-4 windows, TensorFlow's CPU gradient of
        # the broadcast matmul builds a [B, L / 2, C, C] tensor of per-position outer products
        # (232 GB for the full-width stem at 196,608 bp). Same variables, same numbers.
        logits = tf.reshape(self._logit_linear(tf.reshape(inputs, (-1, num_features))),
                            tf.shape(windows))
        weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-2), inputs.dtype)
        return tf.reduce_sum(windows * weights, axis=-2)

    def _pool_pairs(self, inputs: tf.Tensor) -> tf.Tensor:
        """Pool size 2 (every pooling of Enformer) in closed form: the softmax of a pair is
        sigmoid(l0 - l1), and the logits are linear without bias, so l0 - l1 = (x0 - x1) @ W.
        So y = x1 + sigmoid((x0 - x1) @ W) * (x0 - x1): one [B * L / 2, C] matmul instead of a
        [B * L, C] one and no softmax over a middle axis (several times faster on CPU, forward
        and backward). Same variables, same numbers (within rounding)."""
        _, length, num_features = inputs.shape
        pairs = tf.reshape(inputs, (-1, 2, num_features))  # [B * L / 2, 2, C]
        # unstack: its gradient is one Pack; two slices would each write a zero-filled full copy.
        first, second = tf.unstack(pairs, axis=1)
        difference = first - second
        pooled = _pool_combine(second, difference, self._logit_linear(difference))
        return tf.reshape(pooled, (-1, length // 2, num_features))


class MaxPooling1D(snt.Module):
    """Max pooling with SAME padding: [B, T, C] -> [B, ceil(T / pool_size), C]."""

    def __init__(self, pool_size: int = 2, name: str = "max_pooling"):
        super().__init__(name=name)
        self._pool_size = pool_size

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.max_pool1d(inputs, self._pool_size, self._pool_size, padding="SAME")


def pooling_module(kind: str, pool_size: int, init_scale: float) -> snt.Module:
    """`init_scale`: attention pooling's initial logit weights / identity (ModelConfig's
    `pooling_init_scale`)."""
    if kind == "attention":
        return SoftmaxPooling1D(pool_size=pool_size, per_channel=True, w_init_scale=init_scale)
    if kind == "max":
        return MaxPooling1D(pool_size=pool_size)
    raise ValueError(f"unknown pooling type {kind!r}")


class TargetLengthCrop1D(snt.Module):
    """Keep the centre `target_length` positions: [B, T, C] -> [B, target_length, C]."""

    def __init__(self, target_length: int, name: str = "target_length_crop"):
        super().__init__(name=name)
        self._target_length = target_length

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        trim = (inputs.shape[-2] - self._target_length) // 2
        if trim < 0:
            raise ValueError(f"inputs of length {inputs.shape[-2]} are shorter than the target "
                             f"length {self._target_length}")
        return slice_axis(inputs, -2, trim, self._target_length)


class BatchNorm(snt.distribute.CrossReplicaBatchNorm):
    """Sonnet's CrossReplicaBatchNorm (same variables, names and moving averages) whose batch
    statistics, on one replica, come from TensorFlow's fused kernel.

    Sonnet computes a [B, T, C] input's batch statistics as two means (of x and of x^2) and
    normalises with several element-wise ops, each a pass over the activations forward and
    backward; at the stem's full resolution these passes are a large part of a small model's
    training step on CPU. `FusedBatchNormV3` does the statistics and the normalisation in one op
    and its gradient in one more. Its variance is E[(x - mean)^2] (equal within rounding to
    Sonnet's E[x^2] - mean^2); its variance output is Bessel-corrected, so the moving average is
    given the biased one, as Sonnet does. Several replicas and the moving statistics (inference)
    take Sonnet's path, and so does XLA (`train.jit_compile`), which runs the fused op 3x slower
    than Sonnet's ops.
    """

    def __init__(self, **kwargs):
        super().__init__(name="cross_replica_batch_norm", **kwargs)

    def __call__(self, inputs: tf.Tensor, is_training: bool, test_local_stats: bool = False):
        context = tf.distribute.get_replica_context()
        if (not (is_training or test_local_stats) or inputs.shape.rank != 3 or context is None
                or context.num_replicas_in_sync != 1 or _compiling_with_xla()):
            return super().__call__(inputs, is_training, test_local_stats)
        self._initialize(inputs)
        empty = tf.constant([], tf.float32)
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=tf.expand_dims(inputs, 1), scale=tf.cast(self.scale, tf.float32),
            offset=tf.cast(self.offset, tf.float32), mean=empty,
            variance=empty, epsilon=self._eps, is_training=True, data_format="NHWC")
        if is_training:
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            biased = variance * (count - 1) / count
            self._update_statistics(tf.reshape(mean, self.shape), tf.reshape(biased, self.shape))
        return tf.squeeze(outputs, 1)  # reshapes (a strided slice's gradient is a full pass)


class Conv1D(snt.Conv1D):
    """Sonnet's Conv1D (same variables and names) with a gradient of its own (`_conv1d`) for
    odd-width, stride-1 SAME convolutions with a bias, outside XLA (XLA keeps Sonnet's ops):

    - the filter gradient, where the input has at least `TAPS_MIN_CHANNELS` channels (every
      convolution but the stem's), is one matrix product per tap (`_filter_gradient_by_taps`).
      TensorFlow's CPU kernel for it is slow on this model's shapes: for 4 x 16,384 positions of
      48 channels, width 5, it takes 50-75 ms against 20 ms by taps on a 2-core AVX2 machine (both
      with oneDNN), and for 65,536 positions of 192 channels 2.6 s (0.3-0.6 s cut into chunks)
      against 0.18 s. The products also sum in a better order (1e-6 of float64's result against
      1e-5);
    - the stem's filter gradient (4 input channels, where TensorFlow's kernel is the fastest) is
      computed on chunks of positions stacked along the batch axis when the input is long:
      `filter_gradient_chunk` positions of about 2^18 input values each (at 131,072 positions,
      28 ms against 42 ms in one call);
    - the bias gradient is summed in float32: TensorFlow's CPU `BiasAddGrad` accumulates bfloat16
      in bfloat16, so a sum over 65,536 positions of values near 1 comes out as about 2,600
      (mixed precision).
    The forward pass and the input gradient are TensorFlow's own.
    """

    def __init__(self, output_channels: int, kernel_shape: int, **kwargs):
        super().__init__(output_channels, kernel_shape, name="conv1_d", **kwargs)

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        self._initialize(inputs)
        if (self.kernel_shape % 2 == 0 or self.stride != 1 or self.rate != 1
                or self.conv_padding != "SAME" or self.padding_func or not self.with_bias
                or inputs.shape[1] is None or _compiling_with_xla()):
            return super().__call__(inputs)
        return _conv1d(inputs, self.w, self.b)


# Input channels from which `Conv1D`'s filter gradient is computed by taps (below that, the stem's
# 4 channels, TensorFlow's kernel is faster: 10 ms against 40-55 ms at 4 x 32,768 positions).
TAPS_MIN_CHANNELS = 16


def filter_gradient_chunk(channels: int) -> int:
    """Positions per chunk of `Conv1D`'s filter gradient by TensorFlow's kernel: a power of two
    near 2^18 / channels (measured fastest on this project's shapes), at least 256."""
    return max(256, 2 ** round(math.log2(2 ** 18 / channels)))


def _filter_gradient_by_taps(inputs: tf.Tensor, upstream: tf.Tensor, width: int) -> tf.Tensor:
    """The SAME convolution's filter gradient, sum over b, t of x[b, t + j - left]^T g[b, t] for
    each tap j, as one matrix product per tap. The zero-padded input is flattened to rows, so tap
    j's rows are the contiguous slice [j, j + n); the upstream gradient gets width - 1 zero rows
    after each sequence, so the rows that run into the next sequence are multiplied by zeros.
    The taps run one after another, so that one tap's slice is alive at a time."""
    channels, filters = inputs.shape[-1], upstream.shape[-1]
    left = (width - 1) // 2
    x_rows = tf.reshape(tf.pad(inputs, [[0, 0], [left, width - 1 - left], [0, 0]]), [-1, channels])
    x_rows = tf.pad(x_rows, [[0, width - 1], [0, 0]])
    g_rows = tf.reshape(tf.pad(upstream, [[0, 0], [0, width - 1], [0, 0]]), [-1, filters])
    rows = tf.shape(g_rows)[0]
    taps: list[tf.Tensor] = []
    for j in range(width):
        with tf.control_dependencies(taps[-1:]):
            taps.append(tf.matmul(x_rows[j:j + rows], g_rows, transpose_a=True))
    return tf.stack(taps)


@tf.custom_gradient
def _conv1d(inputs: tf.Tensor, w: tf.Tensor, b: tf.Tensor):
    """conv1d(inputs, w, SAME) + b with `Conv1D`'s filter and bias gradients."""
    outputs = tf.nn.bias_add(tf.nn.conv1d(inputs, w, 1, "SAME"), b)

    def gradient(upstream: tf.Tensor):
        width, channels, filters = w.shape
        chunk = filter_gradient_chunk(channels)
        length = inputs.shape[1]
        if channels >= TAPS_MIN_CHANNELS:
            w_gradient = _filter_gradient_by_taps(inputs, upstream, width)
        elif width == 1 or length <= chunk:
            w_gradient = tf.raw_ops.Conv2DBackpropFilter(
                input=tf.expand_dims(inputs, 1), filter_sizes=[1, width, channels, filters],
                out_backprop=tf.expand_dims(upstream, 1), strides=[1, 1, 1, 1],
                padding="SAME")[0]
        else:
            extra = -length % chunk  # zero positions that complete the last chunk
            left = (width - 1) // 2
            # Chunk i holds input positions [i * chunk - left, (i + 1) * chunk + left): its own
            # outputs' whole receptive field, so a VALID filter gradient per chunk sums to the
            # SAME one.
            padded = tf.pad(inputs, [[0, 0], [left, width - 1 - left + extra], [0, 0]])
            framed = tf.signal.frame(padded, chunk + width - 1, chunk, axis=1)
            upstream_chunks = tf.pad(upstream, [[0, 0], [0, extra], [0, 0]])
            w_gradient = tf.raw_ops.Conv2DBackpropFilter(
                input=tf.reshape(framed, [-1, 1, chunk + width - 1, channels]),
                filter_sizes=[1, width, channels, filters],
                out_backprop=tf.reshape(upstream_chunks, [-1, 1, chunk, filters]),
                strides=[1, 1, 1, 1], padding="VALID")[0]
        inputs_gradient = tf.nn.conv1d_transpose(upstream, w, tf.shape(inputs), 1, "SAME")
        rows = tf.cast(tf.reshape(upstream, [-1, filters]), tf.float32)
        b_gradient = tf.cast(tf.reduce_sum(rows, 0), upstream.dtype)
        return inputs_gradient, w_gradient, b_gradient

    return outputs, gradient


def conv_block(filters: int, width: int = 1, w_init=None, name: str = "conv_block") -> Sequential:
    """BatchNorm -> GELU -> Conv1D(filters, width, SAME)."""
    return Sequential(lambda: [
        BatchNorm(
            create_scale=True,
            create_offset=True,
            scale_init=snt.initializers.Ones(),
            moving_mean=snt.ExponentialMovingAverage(0.9),
            moving_variance=snt.ExponentialMovingAverage(0.9)),
        gelu,
        Conv1D(filters, width, w_init=w_init),
    ], name=name)
