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
Nothing of size T x T is built. Up to 2,048 tokens all middle query blocks go at once and
TensorFlow differentiates them. Past that they run in chunks, one after the other in a
tf.while_loop, with a hand-written backward pass that recomputes each chunk and scatter-adds its key
and value gradients into one buffer each; the positional term is then taken in feature space
((q + r_r_bias) . W f(d) = (W^T (q + r_r_bias)) . f(d)), so no table of r_k's size is built or
differentiated. Memory is then q, k, v, their gradients and one chunk: linear in T, small constant.
"""
from __future__ import annotations

import functools

import numpy as np
import sonnet as snt
import tensorflow as tf

from senformer_cli.config import SPARSE_CHUNK_TOKENS, SPARSE_UNCHUNKED_TOKENS
from senformer_cli.model.attention import MultiheadAttention, skew, slice_axis, weighted_values
from senformer_cli.model.recompute import sequential_loop, zero_after


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
                 initializer: snt.initializers.Initializer | None = None, dropout_site: int = 0,
                 name: str | None = None):
        super().__init__(value_size, key_size, num_heads, num_relative_position_features,
                         attention_dropout_rate=attention_dropout_rate,
                         positional_dropout_rate=positional_dropout_rate,
                         zero_initialize=zero_initialize, initializer=initializer,
                         dropout_site=dropout_site, name=name)
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
        # Middle query blocks per chunk. Up to 2,048 tokens everything fits easily and one chunk
        # (no recomputation) is fastest; longer sequences go 256 query tokens at a time, so the
        # attention itself adds a small constant to q, k, v and their gradients (a trade-off
        # measured in benchmarks/attention.py).
        if rows_per_chunk is None:
            rows_per_chunk = (num_blocks if num_tokens <= SPARSE_UNCHUNKED_TOKENS
                              else max(1, SPARSE_CHUNK_TOKENS // block_size))
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
    def _attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, features: tf.Tensor, *,
                key_mask: tf.Tensor | None, mask: tf.Tensor | None, is_training: bool,
                seed: tf.Tensor | None = None) -> tf.Tensor:
        """q, k [B, H, T, K], v [B, H, T, V], positional features [2T-1, F] -> [B, T, H, V]."""
        if mask is not None:
            raise ValueError("sparse attention has its own pattern; a dense mask is not supported")
        if q.shape[2] != self._num_tokens:
            raise ValueError(f"this sparse attention was built for {self._num_tokens} tokens, "
                             f"got {q.shape[2]}")
        n, g, b = self.num_blocks, self._num_global_blocks, self._block_size
        heads, key_size = q.shape[1], q.shape[-1]
        num_middle = n - 2 * g
        num_chunks = -(-num_middle // self._rows_per_chunk)
        rows = -(-num_middle // num_chunks)  # equal chunks; the last one's extra rows are masked
        seed = self._dropout_seed(is_training, seed)
        blocks, valid = self.key_blocks()  # [H, n-2g, S]
        pad = num_chunks * rows - num_middle
        blocks = tf.pad(blocks, [[0, 0], [0, pad], [0, 0]])
        valid = tf.pad(valid, [[0, 0], [0, pad], [0, 0]])
        key_blocks_allowed = None
        if key_mask is not None:
            key_blocks_allowed = tf.tile(tf.reshape(tf.cast(key_mask, tf.bool), [-1, 1, n, b]),
                                         [1, heads, 1, 1])
        pieces = _Pieces(blocks=blocks, valid=valid, key_blocks_allowed=key_blocks_allowed,
                         num_blocks=n, block_size=b, num_global_blocks=g,
                         window_blocks=self._window_blocks, rows=rows,
                         dropout_rate=self._attention_dropout_rate, seed=seed)
        if num_chunks == 1:  # short sequences: everything at once, plain autodiff
            return pieces.attend(q, k, v, self._relative_keys(features), None,
                                 self._r_w_bias, self._r_r_bias)
        # Long sequences: the positional term in feature space, with the constant features
        # [1, 2T-1, F] as the table and the queries projected by r_k_layer's weights [F, H, K]
        # (q . W f(d) = (W^T q) . f(d)), so nothing of r_k's size [H, 2T-1, K] is built or
        # differentiated. (3x the multiply-adds of that term, which is small.)
        self._r_k_layer(features[:1])  # creates r_k_layer's weights on the first call
        r_k_weights = tf.reshape(self._r_k_layer.w, [-1, heads, key_size])
        return pieces.attend_in_chunks(q, k, v, tf.stop_gradient(features)[tf.newaxis], r_k_weights,
                                       tf.convert_to_tensor(self._r_w_bias),
                                       tf.convert_to_tensor(self._r_r_bias), num_chunks)


class _Pieces:
    """The sparse attention of one call, cut into pieces: the global query rows, and chunks of
    `rows` middle query blocks (chunk c: middle rows c*rows ..; padded rows are masked).

    Positional tables: `table` [H, 2T-1, K] is r_k (`r_k_weights` None), or [1, 2T-1, F] the features
    with `r_k_weights` [F, H, K] the r_k projection. r_w_bias, r_r_bias [1, H, 1, K].
    """

    def __init__(self, *, blocks: tf.Tensor, valid: tf.Tensor, key_blocks_allowed: tf.Tensor | None,
                 num_blocks: int, block_size: int, num_global_blocks: int, window_blocks: int,
                 rows: int, dropout_rate: float, seed: tf.Tensor | None):
        self.blocks, self.valid = blocks, valid  # [H, padded middle rows, S], window slots first
        self.key_blocks_allowed = key_blocks_allowed  # [B, H, n, b] bool or None
        self.n, self.b, self.g, self.w = num_blocks, block_size, num_global_blocks, window_blocks
        self.rows = rows
        self.dropout_rate, self.seed = dropout_rate, seed

    def _seed(self, index) -> tf.Tensor | None:
        return None if self.seed is None else tf.random.experimental.stateless_fold_in(self.seed, index)

    # -------------------------------------------------------------- the global rows
    def ends(self, x: tf.Tensor, axis: int = 2) -> tf.Tensor:
        """The first and the last g blocks' rows of x's token axis: [B, H, T, D] -> [B, H, 2gb, D]."""
        span, num_tokens = self.g * self.b, self.n * self.b
        return tf.concat([slice_axis(x, axis, 0, span), slice_axis(x, axis, num_tokens - span, span)],
                         axis=axis)

    def global_rows(self, q_ends: tf.Tensor, k: tf.Tensor, v: tf.Tensor, table: tf.Tensor,
                    r_k_weights: tf.Tensor | None, r_w_bias: tf.Tensor, r_r_bias: tf.Tensor
                    ) -> tf.Tensor:
        """The first and last g blocks' queries q_ends [B, H, 2gb, K] over all T keys: dense, in
        one softmax and one product with v (so v gets one gradient). -> [B, H, 2gb, V]."""
        num_tokens, span = self.n * self.b, self.g * self.b
        content = tf.matmul(q_ends + r_w_bias, k, transpose_b=True)  # [B, H, 2gb, T]
        relative_queries = _relative_queries(q_ends + r_r_bias, r_k_weights)
        relative = []
        for end, start in enumerate((0, num_tokens - span)):
            # Row m of the table is distance m - (T-1); queries from `start` need
            # -(start + span - 1) .. T - 1 - start.
            frame = slice_axis(table, 1, num_tokens - span - start, num_tokens + span - 1)
            relative.append(skew(tf.matmul(slice_axis(relative_queries, 2, end * span, span),
                                           tf.expand_dims(frame, 0), transpose_b=True)))
        mask = None
        if self.key_blocks_allowed is not None:
            mask = tf.reshape(self.key_blocks_allowed[:, :1], [-1, 1, 1, num_tokens])
        return weighted_values(content + tf.concat(relative, axis=2), v, mask=mask,
                               dropout_rate=self.dropout_rate, seed=self._seed(-1))

    # -------------------------------------------------------------- the middle rows
    def row_blocks(self, chunk) -> tf.Tensor:
        """The query blocks of chunk `chunk`, int32 [R]; padded rows run past n - g - 1."""
        return self.g + chunk * self.rows + tf.range(self.rows)

    def chunk_slots(self, chunk, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, table: tf.Tensor,
                    ) -> tuple[tf.Tensor, ...]:
        """Inputs of chunk `chunk` gathered from q, k [B, H, T, K], v [B, H, T, V]:
        (q_rows [B, H, R, b, K], k_slots [B, H, R, S*b, K], v_slots [B, H, R, S*b, V],
        allowed [B or 1, H, R, 1, S*b] bool, window_table [H or 1, (w+1)b - 1, D],
        frames [H, R, s, 2b-1, D] (the table rows of the s non-window slots), index [B, H, R, S]
        (the key block of each slot))."""
        n, b, rows = self.n, self.b, self.rows
        batch, heads = tf.shape(q)[0], q.shape[1]
        lo = chunk * rows
        blocks = self.blocks[:, lo:lo + rows]  # [H, R, S]
        valid = self.valid[:, lo:lo + rows]
        row_blocks = self.row_blocks(chunk)
        slots = blocks.shape[-1]
        blocks = tf.clip_by_value(blocks, 0, n - 1)  # invalid slots point anywhere, masked
        index = tf.tile(blocks[tf.newaxis], [batch, 1, 1, 1])

        def by_block(x: tf.Tensor) -> tf.Tensor:  # [B, H, T, ...] -> [B, H, n, b, ...]
            return tf.reshape(x, tf.concat([[batch, heads, n, b], tf.shape(x)[3:]], 0))

        def gather_slots(x: tf.Tensor) -> tf.Tensor:  # [B, H, n, b, ...] -> [B, H, R, S*b, ...]
            gathered = tf.gather(x, index, axis=2, batch_dims=2)
            shape = tf.concat([[batch, heads, rows, slots * b], tf.shape(x)[4:]], 0)
            return tf.reshape(gathered, shape)

        q_rows = tf.gather(by_block(q), tf.minimum(row_blocks, n - 1), axis=2)  # padded rows: anywhere
        allowed = tf.repeat(valid, b, axis=-1)[tf.newaxis, :, :, tf.newaxis, :]
        if self.key_blocks_allowed is not None:
            keys_allowed = gather_slots(self.key_blocks_allowed)[:, :, :, tf.newaxis]
            allowed = tf.logical_and(allowed, keys_allowed)
        # The window's positional term uses one frame of the table for every row: distances
        # -(w//2 + 1)b + 1 .. (w//2 + 1)b - 1. The other slots' offsets vary by row: the 2b-1
        # distances from (delta-1)b+1 to (delta+1)b-1 of block offset delta start at row
        # (n - 1 + delta) b.
        first = (n - 1 - self.w // 2) * b
        window_table = slice_axis(table, 1, first, (self.w + 1) * b - 1)
        delta = blocks[:, :, self.w:] - row_blocks[tf.newaxis, :, tf.newaxis]  # [H, R, s]
        first_row = tf.clip_by_value(n - 1 + delta, 0, 2 * n - 2) * b  # padded rows: anywhere
        table_rows = first_row[..., tf.newaxis] + tf.range(2 * b - 1)
        if table.shape[0] == 1:
            frames = tf.gather(table[0], table_rows)
        else:
            frames = tf.gather(table, table_rows, axis=1, batch_dims=1)
        return (q_rows, gather_slots(by_block(k)), gather_slots(by_block(v)), allowed, window_table,
                frames, index)

    def middle_rows(self, chunk, q_rows: tf.Tensor, k_slots: tf.Tensor, v_slots: tf.Tensor,
                    allowed: tf.Tensor, window_table: tf.Tensor, frames: tf.Tensor,
                    r_k_weights: tf.Tensor | None, r_w_bias: tf.Tensor, r_r_bias: tf.Tensor
                    ) -> tf.Tensor:
        """One chunk's query blocks over their S key blocks (see `chunk_slots`) -> [B, H, R, b, V]."""
        batch, heads, rows, b = tf.shape(q_rows)[0], q_rows.shape[1], q_rows.shape[2], q_rows.shape[3]
        r_w_bias, r_r_bias = tf.expand_dims(r_w_bias, 2), tf.expand_dims(r_r_bias, 2)
        logits = tf.matmul(q_rows + r_w_bias, k_slots, transpose_b=True)  # [B, H, R, b, S*b]
        relative_queries = _relative_queries(q_rows + r_r_bias, r_k_weights)  # [B, H, R, b, D]
        window = skew(tf.matmul(relative_queries, tf.expand_dims(tf.expand_dims(window_table, 0), 2),
                                transpose_b=True))  # [B, H, R, b, w*b]
        # [B, H, R, 1, b, D] x [1, H, R, s, 2b-1, D]^T: a broadcasting batch matmul, 1.7x faster
        # forward and backward than the same contraction as an einsum on the CPU.
        extra = skew(tf.matmul(tf.expand_dims(relative_queries, 3), tf.expand_dims(frames, 0),
                               transpose_b=True))  # [B, H, R, s, b, b]
        extra = tf.reshape(tf.transpose(extra, [0, 1, 2, 4, 3, 5]),
                           [batch, heads, rows, b, extra.shape[3] * b])
        return weighted_values(logits + tf.concat([window, extra], axis=-1), v_slots, mask=allowed,
                               dropout_rate=self.dropout_rate, seed=self._seed(chunk))

    # -------------------------------------------------------------- assembly
    def assemble(self, global_rows: tf.Tensor, middle: tf.Tensor) -> tf.Tensor:
        """global_rows [B, H, 2gb, D] and middle [chunks, B, H, R, b, D] -> [B, T, H, D]."""
        batch, heads, depth = tf.shape(global_rows)[0], global_rows.shape[1], global_rows.shape[-1]
        span, b = self.g * self.b, self.b
        middle = tf.reshape(tf.transpose(middle, [1, 0, 3, 4, 2, 5]), [batch, -1, heads, depth])
        middle = slice_axis(middle, 1, 0, (self.n - 2 * self.g) * b)
        global_rows = tf.transpose(global_rows, [0, 2, 1, 3])
        return tf.concat([slice_axis(global_rows, 1, 0, span), middle,
                          slice_axis(global_rows, 1, span, span)], axis=1)

    # -------------------------------------------------------------- drivers
    def attend(self, q, k, v, table, r_k_weights, r_w_bias, r_r_bias) -> tf.Tensor:
        """All middle rows as one chunk; differentiated by TensorFlow. -> [B, T, H, V]."""
        parameters = (r_k_weights, r_w_bias, r_r_bias)
        inputs = self.chunk_slots(0, q, k, v, table)[:-1]
        return self.assemble(self.global_rows(self.ends(q), k, v, table, *parameters),
                             tf.expand_dims(self.middle_rows(0, *inputs, *parameters), 0))

    def attend_in_chunks(self, q, k, v, table, r_k_weights, r_w_bias, r_r_bias, num_chunks: int
                         ) -> tf.Tensor:
        """The middle rows chunk by chunk in a sequential tf.while_loop, with a hand-written
        backward pass: it recomputes each chunk under its own tape and adds the chunk's key and
        value gradients into one [B, H, n, b, D] buffer each (a scatter-add), so memory is q, k,
        v, their gradients and one chunk's intermediates, whatever T is. (TensorFlow's own
        gradient of a while loop adds a whole-size k and v gradient per iteration.) The table
        must be constant here. -> [B, T, H, V]."""
        n, b = self.n, self.b
        step = functools.partial(sequential_loop, num_chunks)

        @tf.custom_gradient
        def attend(q, k, v, r_k_weights, r_w_bias, r_r_bias):
            parameters = (r_k_weights, r_w_bias, r_r_bias)
            global_rows = self.global_rows(self.ends(q), k, v, table, *parameters)

            def forward(chunk, outputs):
                inputs = self.chunk_slots(chunk, q, k, v, table)[:-1]
                return (outputs.write(chunk, self.middle_rows(chunk, *inputs, *parameters)),)

            middle, = step(forward, tf.TensorArray(q.dtype, size=num_chunks))
            output = self.assemble(global_rows, middle.stack())

            def backward(d_output: tf.Tensor):  # [B, T, H, V]
                batch, heads = tf.shape(q)[0], q.shape[1]
                # The recomputation waits for d_output, or it would run during the forward pass
                # and hold its logits until then, in every layer.
                q_ends = self.ends(q) + tf.cast(zero_after(d_output), q.dtype)
                with tf.GradientTape() as tape:
                    tape.watch([q_ends, k, v, *parameters])
                    out = self.global_rows(q_ends, k, v, table, *parameters)
                d_ends, d_k, d_v, *d_parameters = tape.gradient(
                    out, [q_ends, k, v, *parameters],
                    output_gradients=tf.transpose(self.ends(d_output, axis=1), [0, 2, 1, 3]))
                d_rows = tf.reshape(d_output, [batch, n, b, heads, -1])

                def backward_chunk(chunk, d_q, d_k, d_v, *d_parameters):
                    q_rows, k_slots, v_slots, allowed, window_table, frames, index = \
                        self.chunk_slots(chunk, q, k, v, table)
                    row_blocks = self.row_blocks(chunk)
                    d_out = tf.gather(d_rows, tf.minimum(row_blocks, n - 1), axis=1)  # [B, R, b, H, V]
                    real = tf.cast(row_blocks < n - self.g, d_out.dtype)  # 0 on padded rows
                    d_out = tf.transpose(d_out * real[:, tf.newaxis, tf.newaxis, tf.newaxis],
                                         [0, 3, 1, 2, 4])
                    with tf.GradientTape() as tape:
                        tape.watch([q_rows, k_slots, v_slots, *parameters])
                        out = self.middle_rows(chunk, q_rows, k_slots, v_slots, allowed,
                                               window_table, frames, *parameters)
                    grads = tape.gradient(out, [q_rows, k_slots, v_slots, *parameters],
                                          output_gradients=d_out)
                    return (d_q.write(chunk, grads[0]), _scatter_add(d_k, index, grads[1]),
                            _scatter_add(d_v, index, grads[2]),
                            *(total + new for total, new in zip(d_parameters, grads[3:])))

                d_q, d_k, d_v, *d_parameters = step(
                    backward_chunk, tf.TensorArray(q.dtype, size=num_chunks),
                    tf.reshape(d_k, [batch, heads, n, b, -1]),
                    tf.reshape(d_v, [batch, heads, n, b, -1]), *d_parameters, after=d_output)
                d_q = tf.transpose(self.assemble(d_ends, d_q.stack()), [0, 2, 1, 3])
                return (d_q, tf.reshape(d_k, tf.shape(k)), tf.reshape(d_v, tf.shape(v)),
                        *d_parameters)

            return output, backward

        return attend(q, k, v, r_k_weights, r_w_bias, r_r_bias)


def _relative_queries(queries: tf.Tensor, r_k_weights: tf.Tensor | None) -> tf.Tensor:
    """(q + r_r_bias) [B, H, ..., K] in the table's space: itself for r_k, projected onto the
    feature axis (r_k_weights [F, H, K]) for the features table."""
    if r_k_weights is None:
        return queries
    shape = tf.shape(queries)
    flat = tf.reshape(queries, [shape[0], shape[1], -1, queries.shape[-1]])
    projected = tf.matmul(flat, tf.expand_dims(tf.transpose(r_k_weights, [1, 2, 0]), 0))  # [B, H, T', F]
    return tf.reshape(projected, tf.concat([shape[:-1], [r_k_weights.shape[0]]], 0))


def _scatter_add(target: tf.Tensor, index: tf.Tensor, slots: tf.Tensor) -> tf.Tensor:
    """target [B, H, n, b, D] += the slot gradients slots [B, H, R, S*b, D] at key blocks
    index [B, H, R, S] (repeated blocks add up)."""
    shape = tf.shape(index)
    batch = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis, tf.newaxis, tf.newaxis], shape)
    head = tf.broadcast_to(tf.range(shape[1])[tf.newaxis, :, tf.newaxis, tf.newaxis], shape)
    updates = tf.reshape(slots, tf.concat([shape, tf.shape(target)[3:]], 0))
    return tf.tensor_scatter_nd_add(target, tf.stack([batch, head, index], axis=-1), updates)
