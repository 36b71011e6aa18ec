"""Enformer's relative positional basis functions (Transformer-XL style relative attention).

For a distance table `positions` (any shape, usually the 2T-1 offsets -(T-1)..(T-1)) the features are
three families of `feature_size / 6` basis functions each -- exponential decay, central mask and
gamma pdf -- evaluated at |d|, followed by the same features multiplied by sign(d):
`[..., feature_size]`. These are the published definitions, evaluated in float32.
"""
from __future__ import annotations

import tensorflow as tf

FEATURE_FUNCTIONS = ("exponential", "central_mask", "gamma")


def _prepend_dims(x: tf.Tensor, num_dims: int) -> tf.Tensor:
    return tf.reshape(x, [1] * num_dims + x.shape.as_list())


def features_exponential(abs_positions: tf.Tensor, feature_size: int, seq_length: int,
                         min_half_life: float = 3.0) -> tf.Tensor:
    """exp(-ln2 |d| / h) with half lives h = 2^linspace(3, log2 T, feature_size)."""
    max_range = tf.math.log(tf.cast(seq_length, tf.float32)) / tf.math.log(2.0)
    half_life = tf.pow(2.0, tf.linspace(min_half_life, max_range, feature_size))
    half_life = _prepend_dims(half_life, abs_positions.shape.rank)
    return tf.exp(-tf.math.log(2.0) / half_life * abs_positions[..., tf.newaxis])


def features_central_mask(abs_positions: tf.Tensor, feature_size: int, seq_length: int) -> tf.Tensor:
    """1[2^k - 1 > |d|] for k = 1..feature_size."""
    del seq_length
    center_widths = tf.pow(2.0, tf.range(1, feature_size + 1, dtype=tf.float32)) - 1
    center_widths = _prepend_dims(center_widths, abs_positions.shape.rank)
    return tf.cast(center_widths > abs_positions[..., tf.newaxis], tf.float32)


def _gamma_pdf(x: tf.Tensor, concentration: tf.Tensor, rate: tf.Tensor) -> tf.Tensor:
    log_unnormalized = tf.math.xlogy(concentration - 1.0, x) - rate * x
    log_normalization = tf.math.lgamma(concentration) - concentration * tf.math.log(rate)
    return tf.exp(log_unnormalized - log_normalization)


def features_gamma(abs_positions: tf.Tensor, feature_size: int, seq_length: int) -> tf.Tensor:
    """Gamma pdfs with means linspace(T/fs, T, fs) and stddev T/(2 fs), each scaled to max 1.

    The maximum is taken over the distances in `abs_positions` (the published code normalises
    over axis 1 of a [1, 2T-1, fs] table), so pass the whole distance table.
    """
    stddev = seq_length / (2 * feature_size)
    start_mean = seq_length / feature_size
    mean = tf.linspace(float(start_mean), float(seq_length), feature_size)
    mean = _prepend_dims(mean, abs_positions.shape.rank)
    concentration = (mean / stddev) ** 2
    rate = mean / stddev**2
    probabilities = _gamma_pdf(abs_positions[..., tf.newaxis], concentration, rate) + 1e-8
    reduce_axes = list(range(abs_positions.shape.rank))
    return probabilities / tf.reduce_max(probabilities, axis=reduce_axes, keepdims=True)


_FUNCTIONS = {
    "exponential": features_exponential,
    "central_mask": features_central_mask,
    "gamma": features_gamma,
}


def relative_position_features(positions: tf.Tensor, feature_size: int, seq_length: int) -> tf.Tensor:
    """Features of signed distances `positions` [...] -> [..., feature_size] (not symmetric)."""
    num_components = 2 * len(FEATURE_FUNCTIONS)
    if feature_size % num_components:
        raise ValueError(f"feature_size {feature_size} must be divisible by {num_components}")
    per_function = feature_size // num_components
    positions = tf.cast(positions, tf.float32)
    abs_positions = tf.abs(positions)
    embeddings = tf.concat(
        [_FUNCTIONS[name](abs_positions, per_function, seq_length) for name in FEATURE_FUNCTIONS],
        axis=-1)
    return tf.concat([embeddings, tf.sign(positions)[..., tf.newaxis] * embeddings], axis=-1)


def relative_distance_table(seq_length: int, feature_size: int) -> tf.Tensor:
    """Features for every offset d = -(T-1)..(T-1): [2T-1, feature_size]; row d + T - 1."""
    distances = tf.range(-seq_length + 1, seq_length, dtype=tf.float32)
    return relative_position_features(distances, feature_size, seq_length)
