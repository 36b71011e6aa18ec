"""Building blocks against numpy: attention pooling (outputs, gradients, and no [.., C, C] tensor in
its traced gradient, its element-wise kernel in bfloat16) and its initial scale, GELU (compiled by
XLA; its forward kernel writes only the activation), batch norm's fused training path, Conv1D's
chunked filter gradient and bfloat16 bias gradient, the XLA path of both, `skew` and `slice_axis`
(the tf.slice data movement of the relative shift)."""
from __future__ import annotations

import numpy as np
import pytest
import sonnet as snt
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model.attention import skew, slice_axis
from senformer_cli.model.layers import (BatchNorm, Conv1D, SoftmaxPooling1D, TargetLengthCrop1D,
                                        TAPS_MIN_CHANNELS, _conv1d, _pool_combine,
                                        filter_gradient_chunk, gelu)


def numpy_softmax_pooling(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[B, L, C] -> [B, L/2, C]: per channel, softmax over each pair of x @ w, weighted sum."""
    pairs = x.reshape(x.shape[0], -1, 2, x.shape[-1]).astype(np.float64)
    logits = pairs @ w.astype(np.float64)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    return (pairs * weights).sum(axis=2)


def test_softmax_pooling_outputs_and_gradients_equal_numpy():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 10, 6)).astype(np.float32))
    pool = SoftmaxPooling1D()
    pool(x)
    w = rng.normal(size=(6, 6)).astype(np.float32)
    pool._logit_linear.w.assign(w)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = pool(x)
    np.testing.assert_allclose(y.numpy(), numpy_softmax_pooling(x.numpy(), w), rtol=1e-5, atol=1e-6)
    # Gradient of sum(y * g) w.r.t. x against a central finite difference of the numpy formula.
    g = rng.normal(size=y.shape)
    d_x = tape.gradient(y, x, output_gradients=tf.constant(g, tf.float32)).numpy()
    x64, eps = x.numpy().astype(np.float64), 1e-5
    for index in [(0, 0, 0), (1, 7, 3), (0, 9, 5)]:
        up, down = x64.copy(), x64.copy()
        up[index] += eps
        down[index] -= eps
        numeric = ((numpy_softmax_pooling(up, w) - numpy_softmax_pooling(down, w)) * g).sum() / (2 * eps)
        assert d_x[index] == pytest.approx(numeric, rel=1e-3, abs=1e-4)


def test_pooling_kernel_in_bf16_rounds_once():
    """Attention pooling's element-wise part, second + sigmoid(l) * d, and its gradients with
    respect to d and l, on bfloat16 values: within one bfloat16 rounding (unit roundoff 2^-8) of
    float64 on the same rounded inputs, as the kernels compute in float32."""
    rng = np.random.default_rng(3)
    second, difference, logits, g = (tf.constant(rng.normal(scale=3, size=(64, 7)), tf.bfloat16)
                                     for _ in range(4))
    with tf.GradientTape() as tape:
        tape.watch([difference, logits])
        y = _pool_combine(second, difference, logits)
    d_difference, d_logits = tape.gradient(y, [difference, logits], output_gradients=g)
    s64, d64, l64, g64 = (tf.cast(t, tf.float64).numpy() for t in (second, difference, logits, g))
    weight = 1 / (1 + np.exp(-l64))
    for ours, expected in [(y, s64 + weight * d64), (d_difference, g64 * weight),
                           (d_logits, g64 * d64 * weight * (1 - weight))]:
        assert ours.dtype == tf.bfloat16
        np.testing.assert_allclose(tf.cast(ours, tf.float64).numpy(), expected, rtol=2**-8,
                                   atol=1e-6)


@pytest.mark.parametrize("preset, scale", [("enformer", 2.0), ("tiny", 0.0)])
def test_pooling_init_scale_reaches_every_pooling_layer(preset, scale):
    """Each attention pooling's logit weights start at `pooling_init_scale` x identity (2, the
    published init, near max pooling; 0 for `tiny`, exactly average pooling, checked against the
    numpy mean of each pair)."""
    config = ModelConfig.from_preset(preset, channels=96, num_transformer_layers=1,
                                     num_heads=4, key_size=16, conv_tower_divisible_by=16,
                                     sequence_length=32_768, target_length=128, heads={"h": 1})
    assert config.pooling_init_scale == scale
    model = build_model(config)
    model(tf.zeros([1, config.sequence_length, 4]), is_training=False)
    pools = [v for v in model.variables if "softmax_pooling" in v.name]
    assert len(pools) == 1 + config.num_conv_tower_blocks
    for w in pools:
        np.testing.assert_array_equal(w.numpy(), scale * np.eye(w.shape[0]))
    pool = SoftmaxPooling1D(w_init_scale=scale)
    x = np.random.default_rng(1).normal(size=(2, 8, 6)).astype(np.float32)
    pooled = pool(tf.constant(x)).numpy()
    if scale == 0:
        np.testing.assert_allclose(pooled, x.reshape(2, 4, 2, 6).mean(axis=2), rtol=1e-6)
    else:
        np.testing.assert_allclose(pooled, numpy_softmax_pooling(x, scale * np.eye(6)), rtol=1e-5)


@pytest.mark.parametrize("pool_size", [2, 4])
def test_softmax_pooling_weight_gradient_equals_numpy(pool_size):
    """Pool size 2 runs a closed form (sigmoid of the logit difference), others the softmax."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 12, 5)).astype(np.float32))
    pool = SoftmaxPooling1D(pool_size=pool_size)
    pool(x)
    w = rng.normal(size=(5, 5)).astype(np.float32)
    pool._logit_linear.w.assign(w)
    g = rng.normal(size=(2, 12 // pool_size, 5))
    with tf.GradientTape() as tape:
        y = pool(x)
    d_w = tape.gradient(y, pool._logit_linear.w, output_gradients=tf.constant(g, tf.float32)).numpy()

    def reference(w64):
        windows = x.numpy().astype(np.float64).reshape(2, -1, pool_size, 5)
        logits = windows @ w64
        weights = np.exp(logits - logits.max(axis=2, keepdims=True))
        return (windows * weights / weights.sum(axis=2, keepdims=True)).sum(axis=2)

    np.testing.assert_allclose(y.numpy(), reference(w.astype(np.float64)), rtol=1e-5, atol=1e-6)
    w64, eps = w.astype(np.float64), 1e-6
    for index in [(0, 0), (2, 4), (4, 1)]:
        up, down = w64.copy(), w64.copy()
        up[index] += eps
        down[index] -= eps
        numeric = ((reference(up) - reference(down)) * g).sum() / (2 * eps)
        assert d_w[index] == pytest.approx(numeric, rel=1e-3, abs=1e-4)


def test_softmax_pooling_gradient_graph_has_no_channel_by_channel_tensor():
    """The CPU gradient of a rank-4 broadcast matmul builds [B, L/2, C, C]; the pooling must not."""
    channels, length = 24, 64
    pool = SoftmaxPooling1D()
    pool(tf.zeros([1, length, channels]))

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(pool(x))
        return tape.gradient(loss, [x, pool._logit_linear.w])

    graph = gradients.get_concrete_function(tf.TensorSpec([1, length, channels])).graph
    shapes = [tuple(t.shape.as_list()) for op in graph.get_operations() for t in op.outputs
              if t.shape.rank is not None]
    assert any(s[-2:] == (channels, channels) for s in shapes if len(s) == 2)  # the weight gradient
    bad = [s for s in shapes if len(s) >= 3 and s[-2:] == (channels, channels)]
    assert not bad, f"per-position [.., C, C] tensors in the gradient graph: {bad}"


# bfloat16: one rounding of the exact result (unit roundoff 2^-8), as the kernels compute in float32
@pytest.mark.parametrize("dtype, tolerance", [(tf.float32, 1e-6), (tf.bfloat16, 2**-8)])
def test_gelu_and_its_gradient_equal_numpy(dtype, tolerance):
    """sigmoid(1.702 x) * x and its derivative sigmoid(a x) (1 + a x (1 - sigmoid(a x))), eager
    and inside a traced step, for shapes of several lengths (XLA compiles one kernel per shape)."""
    a = 1.702
    for length in (7, 64):
        x64 = np.random.default_rng(length).normal(scale=3, size=(2, length, 5))
        x = tf.constant(x64, dtype)
        x64 = tf.cast(x, tf.float64).numpy()  # the rounded inputs
        s = 1 / (1 + np.exp(-a * x64))
        g = tf.constant(np.random.default_rng(1).normal(size=x64.shape), dtype)
        g64 = tf.cast(g, tf.float64).numpy()

        def value_and_gradient(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = gelu(inputs)
            return y, tape.gradient(y, inputs, output_gradients=g)

        for run in (value_and_gradient, tf.function(value_and_gradient)):
            y, d_x = run(x)
            assert y.dtype == dtype and d_x.dtype == dtype
            np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), s * x64,
                                       rtol=tolerance, atol=1e-6)
            np.testing.assert_allclose(tf.cast(d_x, tf.float64).numpy(),
                                       g64 * s * (1 + a * x64 * (1 - s)),
                                       rtol=tolerance, atol=4e-6)


def test_gelu_forward_writes_only_the_activation():
    """The traced gradient calls GELU's two kernels, and the forward kernel has one output: the
    backward recomputes the sigmoid instead of reading one written for it (two passes more)."""

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = gelu(x)
        return tape.gradient(y, x)

    graph = gradient.get_concrete_function(tf.TensorSpec([2, 8, 3])).graph
    calls = {op.get_attr("f").name: op for op in graph.get_operations()
             if op.type in ("PartitionedCall", "StatefulPartitionedCall")}
    forward = [op for name, op in calls.items() if "_gelu_forward" in name]
    assert len(forward) == 1 and len(forward[0].outputs) == 1, sorted(calls)
    assert any("_gelu_backward" in name for name in calls), sorted(calls)


def batch_norms():
    """Ours and Sonnet's (the reference), same settings as the model's conv blocks."""
    settings = lambda: dict(create_scale=True, create_offset=True,  # noqa: E731
                            moving_mean=snt.ExponentialMovingAverage(0.9),
                            moving_variance=snt.ExponentialMovingAverage(0.9))
    return BatchNorm(**settings()), snt.distribute.CrossReplicaBatchNorm(**settings())


@pytest.mark.parametrize("jit", [False, True])
def test_batch_norm_training_equals_numpy_and_sonnet(jit):
    """One training call: outputs against numpy, moving averages (biased variance, as Sonnet keeps
    them) against numpy, and the gradients against Sonnet's own CrossReplicaBatchNorm. Under XLA
    (`jit`: `train.jit_compile`) ours takes Sonnet's ops instead of the fused kernel."""
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3, 40, 6)) * 2 + 0.5).astype(np.float32)
    ours, sonnet = batch_norms()
    scale = rng.normal(size=6).astype(np.float32)
    offset = rng.normal(size=6).astype(np.float32)
    first = rng.normal(size=(1, 1, 6)).astype(np.float32)
    for module in (ours, sonnet):  # create the variables, then give both the same values
        module(tf.constant(x), is_training=False, test_local_stats=True)
        module.scale.assign(scale)
        module.offset.assign(offset)
        module.moving_mean.update(tf.constant(first))  # the test checks a second update
        module.moving_variance.update(tf.constant(first ** 2))

    @tf.function(jit_compile=jit)
    def run(module, inputs, g):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = module(inputs, is_training=True)
            loss = tf.reduce_sum(y * g)
        return y, tape.gradient(loss, [inputs, module.scale, module.offset])

    g = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    graph = run.get_concrete_function(ours, tf.constant(x), g).graph
    assert any(op.type == "FusedBatchNormV3" for op in graph.get_operations()) != jit
    y, grads = run(ours, tf.constant(x), g)
    y_ref, grads_ref = run(sonnet, tf.constant(x), g)

    mean, variance = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    np.testing.assert_allclose(y.numpy(), (x - mean) / np.sqrt(variance + 1e-5) * scale + offset,
                               rtol=1e-4, atol=1e-4)

    def average(old, new):  # Sonnet's debiased moving average after its second update
        return (0.9 * 0.1 * old + 0.1 * new) / (1 - 0.9 ** 2)

    np.testing.assert_allclose(ours.moving_mean.value.numpy().ravel(),
                               average(first.ravel(), mean), rtol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.value.numpy().ravel(),
                               average(first.ravel() ** 2, variance), rtol=1e-5)
    for ours_grad, reference in zip(grads, grads_ref):
        np.testing.assert_allclose(ours_grad.numpy(), reference.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_batch_norm_bf16_and_inference_paths():
    """bfloat16 inputs (the mixed-precision step) stay within bfloat16 rounding of float32;
    inference uses the moving statistics, as Sonnet does."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 32, 4)).astype(np.float32)
    ours, sonnet = batch_norms()
    y32 = ours(tf.constant(x), is_training=False, test_local_stats=True)
    y16 = ours(tf.constant(x, tf.bfloat16), is_training=False, test_local_stats=True)
    assert y16.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(), atol=0.05)
    sonnet(tf.constant(x), is_training=False, test_local_stats=True)
    for module in (ours, sonnet):
        module.moving_mean.update(tf.fill([1, 1, 4], 0.5))
        module.moving_variance.update(tf.fill([1, 1, 4], 4.0))
    np.testing.assert_allclose(ours(tf.constant(x), is_training=False).numpy(),
                               (x - 0.5) / np.sqrt(4.0 + 1e-5), rtol=1e-5, atol=1e-5)


def numpy_conv1d_same(x, w, b, g):
    """SAME conv1d of odd width, y[t] = sum_j x[t + j - (k - 1) / 2] w[j] + b, and the gradients
    of sum(y * g) with respect to x, w and b, from shifted slices of the zero-padded arrays."""
    width, length = w.shape[0], x.shape[1]
    half = (width - 1) // 2
    padded = np.pad(x.astype(np.float64), [(0, 0), (half, half), (0, 0)])
    g_padded = np.pad(g.astype(np.float64), [(0, 0), (half, half), (0, 0)])
    y = sum(padded[:, j:j + length] @ w[j] for j in range(width)) + b
    dw = np.stack([np.einsum("btc,btf->cf", padded[:, j:j + length], g) for j in range(width)])
    dx = sum(g_padded[:, width - 1 - j:width - 1 - j + length] @ w[j].T for j in range(width))
    return y, dx, dw, g.sum(axis=(0, 1))


@pytest.mark.parametrize("batch,length,channels,width,filters", [
    (2, 4096 + 300, 64, 5, 24),  # by taps, across two sequences
    (1, 1000, 16, 3, 8),         # by taps, the fewest channels that take them
    (2, 4096 + 300, 64, 1, 8),   # pointwise: one tap
    (2, 32768 + 300, 8, 5, 8),   # few channels (the stem): TensorFlow's kernel on 2 chunks each
    (1, 2 * 32768, 8, 3, 8),     # whole chunks
    (1, 1000, 8, 5, 8),          # shorter than a chunk: one call
])
@pytest.mark.parametrize("jit", [False, True])
def test_conv1d_outputs_and_gradients_equal_numpy(batch, length, channels, width, filters, jit):
    """Conv1D's output and its gradients against numpy, and the filter gradient's path is the one
    traced: by taps (matrix products, no Conv2DBackpropFilter) from TAPS_MIN_CHANNELS channels,
    TensorFlow's kernel on chunks of positions for fewer channels and a long input, except under
    XLA (`jit`: `train.jit_compile`), which keeps Sonnet's convolution."""
    assert filter_gradient_chunk(8) == 32768
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, length, channels)).astype(np.float32)
    g = rng.normal(size=(batch, length, filters)).astype(np.float32)
    conv = Conv1D(filters, width)
    conv(tf.constant(x[:, :8]))
    b = rng.normal(size=filters).astype(np.float32)
    conv.b.assign(b)

    @tf.function(jit_compile=jit)
    def run(inputs, upstream):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(conv(inputs) * upstream)
        return conv(inputs), tape.gradient(loss, [inputs, conv.w, conv.b])

    graph = run.get_concrete_function(tf.constant(x), tf.constant(g)).graph
    kernels = [op.get_attr("padding") for op in graph.get_operations()
               if op.type == "Conv2DBackpropFilter"]
    if jit:
        assert kernels == [b"SAME"]
    elif channels >= TAPS_MIN_CHANNELS:
        assert kernels == []
    else:
        assert kernels == [b"VALID" if length > 32768 and width > 1 else b"SAME"]
    y, grads = run(tf.constant(x), tf.constant(g))
    references = numpy_conv1d_same(x, conv.w.numpy(), b, g)
    for ours, reference in zip([y, *grads], references):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4,
                                   atol=1e-4 * np.abs(reference).max())


def test_conv1d_keeps_sonnets_names_and_bf16():
    """Same variable names as Sonnet's Conv1D (the published checkpoint's); bfloat16 inputs and
    weights (the mixed-precision step) give a gradient within bfloat16 rounding of float32."""
    conv = Conv1D(8, 5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 4096 + 64, 64)).astype(np.float32)
    conv(tf.constant(x[:, :8]))
    assert [v.name for v in conv.variables] == ["conv1_d/b:0", "conv1_d/w:0"]

    def filter_gradient(dtype):
        w = tf.cast(conv.w, dtype)
        with tf.GradientTape() as tape:
            tape.watch(w)
            y = _conv1d(tf.constant(x, dtype), w, tf.cast(conv.b, dtype))
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        return tf.cast(tape.gradient(loss, w), tf.float32).numpy()

    full, half = filter_gradient(tf.float32), filter_gradient(tf.bfloat16)
    np.testing.assert_allclose(half, full, atol=0.03 * np.abs(full).max())


@pytest.mark.parametrize("width", [1, 5])
def test_conv1d_bf16_bias_gradient_accumulates_in_float32(width):
    """Mixed precision: the bias gradient, a sum over 65,536 positions of values near 1, within
    one bfloat16 rounding of the float64 sum (TensorFlow's CPU BiasAddGrad, accumulating in
    bfloat16, gives about 2,600 instead of 65,600)."""
    from senformer_cli.precision import mixed_precision

    conv = Conv1D(8, width)
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(2, 32768, 4)), tf.bfloat16)
    g = tf.constant(1 + rng.normal(size=(2, 32768, 8)), tf.bfloat16)
    conv(tf.cast(x, tf.float32))
    with tf.GradientTape() as tape:
        with mixed_precision("bf16"):  # (reads conv.b as bfloat16 inside)
            y = conv(x)
    assert y.dtype == tf.bfloat16
    gradient = tape.gradient(y, conv.b, output_gradients=g)
    expected = tf.reduce_sum(tf.cast(g, tf.float64), [0, 1]).numpy()
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=2**-8)


def numpy_skew(x: np.ndarray) -> np.ndarray:
    """out[..., q, c] = x[..., q, c + Q - 1 - q]."""
    num_queries, width = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (num_queries, width - num_queries + 1), x.dtype)
    for q in range(num_queries):
        out[..., q, :] = x[..., q, num_queries - 1 - q:width - q]
    return out


@pytest.mark.parametrize("shape", [(1, 5), (3, 5), (4, 7), (2, 3, 7, 13), (1, 2, 16, 31),
                                   (2, 2, 3, 8, 40)])
def test_skew_equals_numpy(shape):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(skew(tf.constant(x)).numpy(), numpy_skew(x))


def test_skew_with_unknown_batch_inside_tf_function():
    x = np.random.default_rng(2).normal(size=(3, 2, 6, 11)).astype(np.float32)
    traced = tf.function(skew, input_signature=[tf.TensorSpec([None, 2, 6, 11])])
    out = traced(tf.constant(x))
    np.testing.assert_array_equal(out.numpy(), numpy_skew(x))


def test_slice_axis_and_crop_equal_numpy_slicing():
    x = np.arange(2 * 9 * 3, dtype=np.float32).reshape(2, 9, 3)
    np.testing.assert_array_equal(slice_axis(tf.constant(x), 1, 2, 4).numpy(), x[:, 2:6])
    np.testing.assert_array_equal(slice_axis(tf.constant(x), -1, tf.constant(1), 2).numpy(), x[..., 1:3])
    assert slice_axis(tf.constant(x), 1, 2, 4).shape.as_list() == [2, 4, 3]
    np.testing.assert_array_equal(TargetLengthCrop1D(5)(tf.constant(x)).numpy(), x[:, 2:7])
