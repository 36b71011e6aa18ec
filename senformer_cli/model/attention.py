"""Enformer's multi-head self-attention with relative positional encodings.

Parameters (published names): q_layer, k_layer [C, H*K], v_layer [C, H*V] without bias,
r_k_layer [F, H*K] for the F positional features, embedding_layer [H*V, C] with bias and zero
init, r_w_bias and r_r_bias [1, H, 1, K]. Logits for query i and key j:

    (q_i + r_w_bias) . k_j  +  (q_i + r_r_bias) . r_k[j - i]

`MultiheadAttention` computes them densely ([B, H, T, T]); `sparse_attention.SparseMultiheadAttention`
subclasses it and only swaps `_attend`, so the two have the same variables and weights transfer.
"""
from __future__ import annotations

import sonnet as snt
import tensorflow as tf

from senformer_cli.model.positional import relative_distance_table


def large_negative(dtype: tf.dtypes.DType) -> float:
    """A logit that vanishes in a softmax without overflowing `dtype` when added to."""
    return -1e9 if dtype in (tf.float32, tf.float64) else float(dtype.min) / 2


def skew(x: tf.Tensor) -> tf.Tensor:
    """[..., Q, W] -> [..., Q, W - Q + 1] with out[q, c] = x[q, c + Q - 1 - q].

    Turns logits per relative distance into logits per key: if column m of query row q holds
    the distance m - (Q - 1) + c0 - p0 for keys from c0 and queries from p0, output column c
    holds key c0 + c. Pure data movement (flatten, drop Q - 1 leading entries, re-fold), with
    `tf.slice` as in the published shift: Python slicing becomes StridedSlice, whose gradient
    is several times slower on the CPU.
    """
    num_queries, width = x.shape[-2], x.shape[-1]
    if num_queries == 1:
        return x
    lead = tf.shape(x)[:-2]
    rank = x.shape.rank
    flat = tf.reshape(x, tf.concat([lead, [num_queries * width]], 0))
    flat = tf.slice(flat, [0] * (rank - 2) + [num_queries - 1],
                    [-1] * (rank - 2) + [num_queries * (width - 1)])
    folded = tf.reshape(flat, tf.concat([lead, [num_queries, width - 1]], 0))
    return tf.slice(folded, [0] * rank, [-1] * (rank - 1) + [width - num_queries + 1])


def slice_axis(x: tf.Tensor, axis: int, start, size: int) -> tf.Tensor:
    """x[..., start:start + size, ...] along `axis` with `tf.slice` (not StridedSlice, whose
    gradient is slow on the CPU). `start` may be a tensor."""
    rank = x.shape.rank
    axis = axis % rank
    begin = tf.stack([0] * axis + [start] + [0] * (rank - axis - 1))
    return tf.slice(x, begin, [-1] * axis + [size] + [-1] * (rank - axis - 1))


def relative_shift(x: tf.Tensor) -> tf.Tensor:
    """[..., T, 2T-1] logits per distance (column m = distance m - (T-1)) -> [..., T, T] per key:
    out[i, j] = x[i, T - 1 + j - i], the published Transformer-XL shift."""
    return skew(x)


class MultiheadAttention(snt.Module):
    """Dense multi-head attention with relative positions: [B, T, C] -> [B, T, C]."""

    TRAINING_AWARE = True

    def __init__(self, value_size: int, key_size: int, num_heads: int,
                 num_relative_position_features: int, attention_dropout_rate: float = 0.05,
                 positional_dropout_rate: float = 0.01, zero_initialize: bool = True,
                 initializer: snt.initializers.Initializer | None = None, dropout_site: int = 0,
                 name: str | None = None):
        super().__init__(name=name)
        # Folded into a call's `seed` so every layer draws its own dropout masks from it.
        self._dropout_site = dropout_site
        self._value_size = value_size
        self._key_size = key_size
        self._num_heads = num_heads
        self._num_relative_position_features = num_relative_position_features
        self._attention_dropout_rate = attention_dropout_rate
        self._positional_dropout_rate = positional_dropout_rate
        initializer = initializer or snt.initializers.VarianceScaling(scale=2.0)
        key_proj_size = key_size * num_heads
        embedding_size = value_size * num_heads
        # Sonnet runs the constructor inside this module's name scope: "attention_i/q_layer".
        self._q_layer = snt.Linear(key_proj_size, name="q_layer", with_bias=False, w_init=initializer)
        self._k_layer = snt.Linear(key_proj_size, name="k_layer", with_bias=False, w_init=initializer)
        self._v_layer = snt.Linear(embedding_size, name="v_layer", with_bias=False, w_init=initializer)
        # Zero-initialised output: each residual attention block starts as the identity.
        w_init = snt.initializers.Zeros() if zero_initialize else initializer
        self._embedding_layer = snt.Linear(embedding_size, name="embedding_layer", w_init=w_init)
        self._r_k_layer = snt.Linear(key_proj_size, name="r_k_layer", with_bias=False, w_init=initializer)
        self._r_w_bias = tf.Variable(initializer([1, num_heads, 1, key_size], dtype=tf.float32),
                                     name="r_w_bias")
        self._r_r_bias = tf.Variable(initializer([1, num_heads, 1, key_size], dtype=tf.float32),
                                     name="r_r_bias")

    # ----------------------------------------------------------------- shared parts
    def _heads(self, linear: snt.Linear, inputs: tf.Tensor) -> tf.Tensor:
        """[B, T, C] -> [B, H, T, D]."""
        output = linear(inputs)
        shape = tf.shape(output)
        output = tf.reshape(output, [shape[0], shape[1], self._num_heads, output.shape[-1] // self._num_heads])
        return tf.transpose(output, [0, 2, 1, 3])

    def relative_features(self, seq_len: int, is_training: bool, dtype: tf.dtypes.DType,
                          seed: tf.Tensor | None = None) -> tf.Tensor:
        """Positional features of every offset -(T-1)..(T-1), dropout applied: [2T-1, F].
        With `seed` ([2] int) the dropout mask is stateless (the same for the same seed)."""
        features = relative_distance_table(seq_len, self._num_relative_position_features)
        if is_training and self._positional_dropout_rate > 0:
            if seed is None:
                features = tf.nn.dropout(features, rate=self._positional_dropout_rate)
            else:
                features = tf.nn.experimental.stateless_dropout(
                    features, rate=self._positional_dropout_rate, seed=seed)
        return tf.cast(features, dtype)

    def __call__(self, inputs: tf.Tensor, is_training: bool = False,
                 key_mask: tf.Tensor | None = None, mask: tf.Tensor | None = None,
                 seed: tf.Tensor | None = None) -> tf.Tensor:
        """inputs [B, T, C]; key_mask [B, T] bool, False = key gets no attention (N padding);
        mask [B or 1, H or 1, T, T] bool, a dense attention pattern (full attention only);
        seed [2] int: draw the dropout masks statelessly from it (a replayable training step)."""
        seq_len = inputs.shape[1]
        positional_seed = None
        if seed is not None:
            seed = tf.random.experimental.stateless_fold_in(seed, self._dropout_site)
            positional_seed = tf.random.experimental.stateless_fold_in(seed, 1)
        q = self._heads(self._q_layer, inputs) * self._key_size**-0.5  # [B, H, T, K]
        k = self._heads(self._k_layer, inputs)  # [B, H, T, K]
        v = self._heads(self._v_layer, inputs)  # [B, H, T, V]
        features = self.relative_features(seq_len, is_training, inputs.dtype,
                                          positional_seed)  # [2T-1, F]
        output = self._attend(q, k, v, features, key_mask=key_mask, mask=mask,
                              is_training=is_training, seed=seed)
        shape = tf.shape(output)  # [B, T, H, V]
        output = tf.reshape(output, [shape[0], shape[1], self._num_heads * self._value_size])
        return self._embedding_layer(output)

    def _relative_keys(self, features: tf.Tensor) -> tf.Tensor:
        """The positional features [2T-1, F] projected by r_k_layer: r_k [H, 2T-1, K]."""
        return tf.squeeze(self._heads(self._r_k_layer, tf.expand_dims(features, 0)), 0)

    def _dropout_seed(self, is_training: bool, seed: tf.Tensor | None = None) -> tf.Tensor | None:
        """The seed of the stateless attention dropout (None when there is no dropout): derived
        from the call's `seed` when given, else a fresh one."""
        if is_training and self._attention_dropout_rate > 0:
            if seed is not None:
                return tf.random.experimental.stateless_fold_in(seed, 0)
            return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        return None

    # ----------------------------------------------------------------- dense core
    def _attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, features: tf.Tensor, *,
                key_mask: tf.Tensor | None, mask: tf.Tensor | None, is_training: bool,
                seed: tf.Tensor | None = None) -> tf.Tensor:
        """q, k [B, H, T, K], v [B, H, T, V], positional features [2T-1, F] -> [B, T, H, V]."""
        if key_mask is not None:
            key_mask = tf.cast(key_mask, tf.bool)[:, tf.newaxis, tf.newaxis, :]
            mask = key_mask if mask is None else tf.logical_and(mask, key_mask)
        output = dense_attention(q, k, v, self._relative_keys(features), self._r_w_bias,
                                 self._r_r_bias, mask=mask, dropout_rate=self._attention_dropout_rate,
                                 seed=self._dropout_seed(is_training, seed))
        return tf.transpose(output, [0, 2, 1, 3])


def dense_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, table: tf.Tensor, r_w_bias: tf.Tensor,
                    r_r_bias: tf.Tensor, *, mask: tf.Tensor | None = None, dropout_rate: float = 0.0,
                    seed: tf.Tensor | None = None) -> tf.Tensor:
    """Queries q [B, H, Tq, K] at positions p0 .. p0+Tq-1 attending to every one of T keys.

    k [B, H, T, K], v [B, H, T, V]; `table` [H, T + Tq - 1, K] holds the projected positional
    features of the distances -(p0 + Tq - 1) .. T - 1 - p0 (for Tq = T: the whole r_k table).
    Logits (q + r_w_bias) k^T + skew((q + r_r_bias) table^T); `mask` bool, broadcastable to
    [B, H, Tq, T], False = no attention; stateless attention dropout when `seed` is given.
    Returns [B, H, Tq, V].
    """
    content_logits = tf.matmul(q + r_w_bias, k, transpose_b=True)  # [B, H, Tq, T]
    # [B, H, Tq, T+Tq-1]
    relative_logits = tf.matmul(q + r_r_bias, tf.expand_dims(table, 0), transpose_b=True)
    return weighted_values(content_logits + skew(relative_logits), v, mask=mask,
                           dropout_rate=dropout_rate, seed=seed)


def weighted_values(logits: tf.Tensor, values: tf.Tensor, *, mask: tf.Tensor | None,
                    dropout_rate: float, seed: tf.Tensor | None) -> tf.Tensor:
    """softmax(logits) @ values: logits [..., Q, N], values [..., N, V] -> [..., Q, V]; `mask` bool,
    broadcastable to the logits, False = no attention; stateless dropout of the weights when
    `seed` is given."""
    if mask is not None:
        logits = tf.where(mask, logits, large_negative(logits.dtype))
    weights = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32)), values.dtype)  # float32 (bf16)
    if seed is not None:
        weights = tf.nn.experimental.stateless_dropout(weights, rate=dropout_rate, seed=seed)
    return tf.matmul(weights, values)
