"""BigBird block-sparse attention with Enformer's relative positions (S-Enformer, done properly).

The T tokens are cut into n = T / b blocks. The first and last `num_global_blocks` blocks are global:
they attend to every token and every token attends to them. Every other ("middle") query block i
attends to
  - its window: blocks i - w//2 .. i + w//2 (slots that fall on a global block are masked, since
    the global slots already hold that block: each block is attended once),
  - the global blocks,
  - `num_random_blocks` random middle blocks outside its window, drawn per layer and per head from a
    seeded generator, uniformly over all eligible blocks, and kept in a non-trainable variable
    (`random_blocks`) so a checkpoint or SavedModel predicts the same thing after loading.

Logits are those of the dense module, (q_i + r_w_bias).k_j + (q_i + r_r_bias).r_k[j - i], computed
only for the attended pairs. For a query block and a key block at block offset delta the token
offsets are delta*b + (-(b-1) .. b-1), so the relative term of that pair is a [b, 2b-1] product with a
frame of the positional table followed by a skew; the window's frame is the same for every row.
Nothing of size T x T is built. Past 2,048 tokens the middle query blocks run in chunks inside a
tf.while_loop and are recomputed in the backward pass, so memory is linear in T with a small
constant. (Each chunk's backward pass still adds a gradient the size of the whole k, v and r_k
into the loop's accumulators: an O(T) term per chunk, small at the lengths benchmarked.)
"""
from __future__ import annotations

import functools

import numpy as np
import sonnet as snt
import tensorflow as tf

from senformer_cli.model.attention import MultiheadAttention, dense_attention, large_negative, skew


def draw_random_blocks(num_blocks: int, num_heads: int, window_blocks: int, num_global_blocks: int,
                       num_random_blocks: int, seed: tuple[int, ...] | int) -> np.ndarray:
    """Random key blocks of every middle query block: int32 [H, n - 2g, r]; -1 where none is left.

    Drawn without replacement, uniformly over the middle blocks outside the row's window.
    """
    rng = np.random.default_rng(seed)
    g, half = num_global_blocks, window_blocks // 2
    middle = np.arange(g, num_blocks - g)
    table = np.full((num_heads, len(middle), num_random_blocks), -1, dtype=np.int32)
    for row, block in enumerate(middle):
        eligible = middle[np.abs(middle - block) > half]
        take = min(num_random_blocks, len(eligible))
        for head in range(num_heads):
            table[head, row, :take] = rng.choice(eligible, size=take, replace=False)
    return table


class SparseMultiheadAttention(MultiheadAttention):
    """Block-sparse attention: [B, T, C] -> [B, T, C], T = `num_tokens`, same variables as the dense
    module plus the non-trainable `random_blocks` table."""

    def __init__(self, value_size: int, key_size: int, num_heads: int,
                 num_relative_position_features: int, *, block_size: int, num_random_blocks: int,
                 window_blocks: int, num_global_blocks: int, num_tokens: int,
                 seed: tuple[int, ...] | int, rows_per_chunk: int | None = None,
                 attention_dropout_rate: float = 0.05,
                 positional_dropout_rate: float = 0.01, zero_initialize: bool = True,
                 initializer: snt.initializers.Initializer | None = None, name: str | None = None):
        super().__init__(value_size, key_size, num_heads, num_relative_position_features,
                         attention_dropout_rate=attention_dropout_rate,
                         positional_dropout_rate=positional_dropout_rate,
                         zero_initialize=zero_initialize, initializer=initializer, name=name)
        if num_tokens % block_size:
            raise ValueError(f"{num_tokens} tokens are not a multiple of the block size {block_size}")
        if window_blocks % 2 == 0:
            raise ValueError("window_blocks must be odd")
        num_blocks = num_tokens // block_size
        if num_blocks < 2 * num_global_blocks + 1:
            raise ValueError(f"{num_blocks} blocks leave no middle block next to "
                             f"{num_global_blocks} global blocks at each end")
        self._block_size = block_size
        self._window_blocks = window_blocks
        self._num_global_blocks = num_global_blocks
        self._num_tokens = num_tokens
        # Middle query blocks per recomputed chunk. Up to 2,048 tokens everything fits easily and
        # one chunk is fastest; longer sequences go 256 query tokens at a time, so the memory of
        # the attention itself stays a small constant on top of q, k and v (a trade-off measured
        # in benchmarks/attention.py).
        if rows_per_chunk is None:
            rows_per_chunk = num_blocks if num_tokens <= 2048 else max(1, 256 // block_size)
        self._rows_per_chunk = rows_per_chunk
        self._random_blocks = tf.Variable(
            draw_random_blocks(num_blocks, num_heads, window_blocks, num_global_blocks,
                               num_random_blocks, seed),
            trainable=False, name="random_blocks")

    # ------------------------------------------------------------------ the pattern
    @property
    def num_blocks(self) -> int:
        return self._num_tokens // self._block_size

    def key_blocks(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Key blocks of every middle query block and head, window slots first.

        Returns (blocks int32 [H, n - 2g, w + 2g + r], valid bool [H, n - 2g, w + 2g + r]); an
        invalid slot (outside the sequence, a window slot on a global block, or no random block
        left) gets no attention. The random part is read from the `random_blocks` variable, so a
        restored checkpoint brings its own pattern.
        """
        n, g, half = self.num_blocks, self._num_global_blocks, self._window_blocks // 2
        heads = self._num_heads
        rows = np.arange(g, n - g)
        window = rows[:, None] + np.arange(-half, half + 1)[None, :]
        window_valid = (window >= g) & (window < n - g)
        globals_ = np.concatenate([np.arange(g), np.arange(n - g, n)])
        static_blocks = np.concatenate([
            np.broadcast_to(window, (heads,) + window.shape),
            np.broadcast_to(globals_, (heads, len(rows), len(globals_)))], axis=-1).astype(np.int32)
        static_valid = np.concatenate([
            np.broadcast_to(window_valid, (heads,) + window.shape),
            np.ones((heads, len(rows), len(globals_)), bool)], axis=-1)
        random = tf.convert_to_tensor(self._random_blocks)
        blocks = tf.concat([tf.constant(static_blocks), random], axis=-1)
        valid = tf.concat([tf.constant(static_valid), random >= 0], axis=-1)
        return blocks, valid

    def pattern_mask(self) -> np.ndarray:
        """The attention pattern as a dense bool [H, T, T] (query, key): for tests and plots only."""
        n, g, b = self.num_blocks, self._num_global_blocks, self._block_size
        block_mask = np.zeros((self._num_heads, n, n), bool)
        block_mask[:, :g, :] = True
        block_mask[:, n - g:, :] = True
        blocks, valid = (t.numpy() for t in self.key_blocks())
        heads, rows, slots = np.nonzero(valid)
        block_mask[heads, rows + g, blocks[heads, rows, slots]] = True
        return np.repeat(np.repeat(block_mask, b, axis=1), b, axis=2)

    # ------------------------------------------------------------------ computation
    def _attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, r_k: tf.Tensor, features: tf.Tensor, *,
                key_mask: tf.Tensor | None, mask: tf.Tensor | None, is_training: bool) -> tf.Tensor:
        """q, k [B, H, T, K], v [B, H, T, V], r_k [H, 2T-1, K] (= features [2T-1, F] projected by
        r_k_layer) -> [B, T, H, V]."""
        if mask is not None:
            raise ValueError("sparse attention has its own pattern; a dense mask is not supported")
        num_tokens = q.shape[2]
        if num_tokens != self._num_tokens:
            raise ValueError(f"this sparse attention was built for {self._num_tokens} tokens, "
                             f"got {num_tokens}")
        n, g, b = self.num_blocks, self._num_global_blocks, self._block_size
        batch = tf.shape(q)[0]
        heads, key_size, value_size = q.shape[1], q.shape[-1], v.shape[-1]
        num_middle = n - 2 * g
        # Chunks of middle query blocks whose intermediates are recomputed in the backward pass
        # (only q, k, v and the positional table are kept), run one after the other by a
        # tf.while_loop, so the backward pass holds one chunk's intermediates and one gradient
        # accumulator per input: memory stays linear in T with a small constant. Equal chunks;
        # the last rows are padded and fully masked.
        num_chunks = -(-num_middle // self._rows_per_chunk)
        rows = -(-num_middle // num_chunks)
        pad = num_chunks * rows - num_middle
        recompute = num_chunks > 1
        seed = self._dropout_seed(is_training)

        def chunk_seed(index) -> tf.Tensor | None:
            return None if seed is None else tf.random.experimental.stateless_fold_in(seed, index)

        # ---- global query rows: dense over all T keys (one function, so k, v and r_k each get
        # one gradient buffer from it).
        core = functools.partial(_global_rows, global_tokens=g * b,
                                 mask=None if key_mask is None else
                                 tf.cast(key_mask, tf.bool)[:, tf.newaxis, tf.newaxis, :],
                                 dropout_rate=self._attention_dropout_rate, seed=chunk_seed(num_chunks))
        if recompute:
            core = tf.recompute_grad(core)
        first_rows, last_rows = core(q, k, v, r_k, self._r_w_bias, self._r_r_bias)  # [B, H, gb, V]

        # ---- middle query blocks.
        blocks, valid = self.key_blocks()  # [H, n-2g, S]
        num_slots = blocks.shape[-1]
        k_blocks = tf.reshape(k, [batch, heads, n, b, key_size])
        v_blocks = tf.reshape(v, [batch, heads, n, b, value_size])
        q_middle = tf.reshape(q, [batch, heads, n, b, key_size])[:, :, g:n - g]
        key_blocks_allowed = None
        if key_mask is not None:
            key_blocks_allowed = tf.tile(tf.reshape(tf.cast(key_mask, tf.bool), [batch, 1, n, b]),
                                         [1, heads, 1, 1])
        if pad:
            q_middle = tf.pad(q_middle, [[0, 0], [0, 0], [0, pad], [0, 0], [0, 0]])
            blocks = tf.pad(blocks, [[0, 0], [0, pad], [0, 0]])
            valid = tf.pad(valid, [[0, 0], [0, pad], [0, 0]])

        # The window's positional logits use one slice of r_k for every row: distances
        # -(half+1)b+1 .. (half+1)b-1. The other slots' offsets vary by row: one chunk reads
        # their rows of r_k; chunks in the loop instead project the query into feature space
        # (q . W f(d) = (W^T q) . f(d)) and read the constant feature table, so no chunk adds a
        # gradient the size of r_k (3x the multiply-adds of that term, for less memory).
        first = (n - 1 - self._window_blocks // 2) * b
        window_table = r_k[:, first:first + (self._window_blocks + 1) * b - 1]  # [H, (w+1)b - 1, K]
        r_k_weights = tf.reshape(self._r_k_layer.w, [-1, heads, key_size])  # [F, H, K]
        table = tf.stop_gradient(features) if recompute else r_k

        def chunk_output(chunk) -> tf.Tensor:  # [B, H, rows, b, V]
            lo = chunk * rows
            core = functools.partial(
                _middle_rows, blocks=tf.reshape(blocks[:, lo:lo + rows], [heads, rows, num_slots]),
                valid=tf.reshape(valid[:, lo:lo + rows], [heads, rows, num_slots]),
                row_blocks=tf.range(g + lo, g + lo + rows), table=table, project_queries=recompute,
                key_blocks_allowed=key_blocks_allowed,
                window_blocks=self._window_blocks, num_blocks=n,
                dropout_rate=self._attention_dropout_rate, seed=chunk_seed(chunk))
            if recompute:
                core = tf.recompute_grad(core)
            q_chunk = tf.reshape(q_middle[:, :, lo:lo + rows], [batch, heads, rows, b, key_size])
            return core(q_chunk, k_blocks, v_blocks, window_table, r_k_weights, self._r_w_bias,
                        self._r_r_bias)

        # Outputs are assembled once, straight into the [B, T, H, V] layout the caller needs.
        if num_chunks == 1:
            middle_out = chunk_output(0)[tf.newaxis]
        else:
            outputs = tf.TensorArray(q.dtype, size=num_chunks, infer_shape=True)
            _, outputs = tf.while_loop(
                lambda chunk, _: chunk < num_chunks,
                lambda chunk, ta: (chunk + 1, ta.write(chunk, chunk_output(chunk))),
                (tf.constant(0), outputs), parallel_iterations=1)
            middle_out = outputs.stack()  # [chunks, B, H, rows, b, V]
        middle_out = tf.reshape(tf.transpose(middle_out, [1, 0, 3, 4, 2, 5]),
                                [batch, (num_middle + pad) * b, heads, value_size])
        if pad:
            middle_out = middle_out[:, :num_middle * b]
        first_rows, last_rows = (tf.transpose(x, [0, 2, 1, 3]) for x in (first_rows, last_rows))
        return tf.concat([first_rows, middle_out, last_rows], axis=1)


def _global_rows(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, r_k: tf.Tensor, r_w_bias: tf.Tensor,
                 r_r_bias: tf.Tensor, *, global_tokens: int, mask: tf.Tensor | None,
                 dropout_rate: float, seed: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """Dense attention of the first and the last `global_tokens` queries over all T keys.

    q, k [B, H, T, K], v [B, H, T, V], r_k [H, 2T-1, K] -> two [B, H, global_tokens, V].
    """
    num_tokens = q.shape[2]
    outputs = []
    for index, start in enumerate((0, num_tokens - global_tokens)):
        # Row m of r_k is distance m - (T-1); queries from `start` need -(start+gb-1) .. T-1-start.
        table = r_k[:, num_tokens - global_tokens - start: 2 * num_tokens - 1 - start]  # [H, T+gb-1, K]
        outputs.append(dense_attention(
            q[:, :, start:start + global_tokens], k, v, table, r_w_bias, r_r_bias, mask=mask,
            dropout_rate=dropout_rate,
            seed=None if seed is None else tf.random.experimental.stateless_fold_in(seed, index)))
    return outputs[0], outputs[1]


def _middle_rows(q: tf.Tensor, k_blocks: tf.Tensor, v_blocks: tf.Tensor, window_table: tf.Tensor,
                 r_k_weights: tf.Tensor, r_w_bias: tf.Tensor, r_r_bias: tf.Tensor, *,
                 blocks: tf.Tensor, valid: tf.Tensor, row_blocks: tf.Tensor, table: tf.Tensor,
                 project_queries: bool, key_blocks_allowed: tf.Tensor | None, window_blocks: int, num_blocks: int,
                 dropout_rate: float, seed: tf.Tensor | None) -> tf.Tensor:
    """Attention of R middle query blocks over their S key blocks.

    q [B, H, R, b, K] for the query blocks `row_blocks` [R]; k_blocks [B, H, n, b, K], v_blocks
    [B, H, n, b, V]; window_table [H, (w+1)b - 1, K] (r_k rows of the window's distances);
    `table` is r_k [H, 2T-1, K], or with `project_queries` the features [2T-1, F] with
    r_k = features @ r_k_weights [F, H, K] (otherwise r_k_weights is unused); r_w_bias,
    r_r_bias [1, H, 1, K]; blocks, valid [H, R, S] (window slots first); key_blocks_allowed
    [B, H, n, b] bool or None. Returns [B, H, R, b, V].
    """
    batch, heads, rows, b = tf.shape(q)[0], q.shape[1], q.shape[2], q.shape[3]
    slots = blocks.shape[-1]
    q_content = q + r_w_bias[:, :, tf.newaxis]
    q_relative = q + r_r_bias[:, :, tf.newaxis]
    blocks = tf.clip_by_value(blocks, 0, num_blocks - 1)  # invalid slots point anywhere, masked below
    index = tf.tile(blocks[tf.newaxis], [batch, 1, 1, 1])  # [B, H, R, S]

    def gather_slots(x: tf.Tensor) -> tf.Tensor:  # [B, H, n, b, ...] -> [B, H, R, S * b, ...]
        gathered = tf.gather(x, index, axis=2, batch_dims=2)
        return tf.reshape(gathered, tf.concat([[batch, heads, rows, slots * b], tf.shape(x)[4:]], 0))

    logits = tf.einsum("bhrqk,bhrck->bhrqc", q_content, gather_slots(k_blocks))  # [B, H, R, b, S*b]
    window_relative = skew(tf.einsum("bhrqk,hmk->bhrqm", q_relative, window_table))  # [.., b, w*b]
    # Table rows for each (query block, key block) pair: the 2b-1 distances from (delta-1)b+1
    # to (delta+1)b-1 start at row (n - 1 + delta) b.
    delta = blocks[:, :, window_blocks:] - row_blocks[tf.newaxis, :, tf.newaxis]  # [H, R, s]
    first_row = tf.clip_by_value(num_blocks - 1 + delta, 0, 2 * num_blocks - 2) * b  # padded rows: anywhere
    table_rows = first_row[..., tf.newaxis] + tf.range(2 * b - 1)  # [H, R, s, 2b-1]
    if project_queries:
        frames = tf.gather(table, table_rows)  # [H, R, s, 2b-1, F]
        q_table = tf.einsum("bhrqk,fhk->bhrqf", q_relative, r_k_weights)  # [B, H, R, b, F]
    else:
        frames = tf.gather(table, table_rows, axis=1, batch_dims=1)  # [H, R, s, 2b-1, K]
        q_table = q_relative
    extra_relative = skew(tf.einsum("bhrqd,hrsmd->bhrsqm", q_table, frames))  # [B, H, R, s, b, b]
    extra_relative = tf.reshape(tf.transpose(extra_relative, [0, 1, 2, 4, 3, 5]),
                                [batch, heads, rows, b, (slots - window_blocks) * b])
    logits += tf.concat([window_relative, extra_relative], axis=-1)
    allowed = tf.repeat(valid, b, axis=-1)[tf.newaxis, :, :, tf.newaxis, :]  # [1, H, R, 1, S*b]
    if key_blocks_allowed is not None:
        allowed = tf.logical_and(allowed, gather_slots(key_blocks_allowed)[:, :, :, tf.newaxis, :])
    logits = tf.where(allowed, logits, large_negative(logits.dtype))
    weights = tf.nn.softmax(logits)
    if seed is not None:
        weights = tf.nn.experimental.stateless_dropout(weights, rate=dropout_rate, seed=seed)
    return tf.einsum("bhrqc,bhrcv->bhrqv", weights, gather_slots(v_blocks))
