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
frame of the positional table followed by a skew; the window's frames are the same for every row.
Nothing of size T x T is built: memory and time are linear in T.
"""
from __future__ import annotations

import numpy as np
import sonnet as snt
import tensorflow as tf

from senformer_cli.model.attention import MultiheadAttention, large_negative, skew


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
                 seed: tuple[int, ...] | int, attention_dropout_rate: float = 0.05,
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
        self._random_blocks = tf.Variable(
            draw_random_blocks(num_blocks, num_heads, window_blocks, num_global_blocks,
                               num_random_blocks, seed),
            trainable=False, name="random_blocks")

    # ------------------------------------------------------------------ the pattern
    @property
    def num_blocks(self) -> int:
        return self._num_tokens // self._block_size

    def key_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Key blocks of every middle query block and head, window slots first.

        Returns (blocks int [H, n - 2g, w + 2g + r], valid bool [H, n - 2g, w + 2g + r]); an invalid
        slot (outside the sequence, a window slot on a global block, or no random block left)
        gets no attention.
        """
        n, g, half = self.num_blocks, self._num_global_blocks, self._window_blocks // 2
        heads = self._num_heads
        rows = np.arange(g, n - g)
        window = rows[:, None] + np.arange(-half, half + 1)[None, :]
        window_valid = (window >= g) & (window < n - g)
        globals_ = np.concatenate([np.arange(g), np.arange(n - g, n)])
        random = self._random_blocks.numpy()
        blocks = np.concatenate([
            np.broadcast_to(window, (heads,) + window.shape),
            np.broadcast_to(globals_, (heads, len(rows), len(globals_))),
            random], axis=-1)
        valid = np.concatenate([
            np.broadcast_to(window_valid, (heads,) + window.shape),
            np.ones((heads, len(rows), len(globals_)), bool),
            random >= 0], axis=-1)
        return blocks, valid

    def pattern_mask(self) -> np.ndarray:
        """The attention pattern as a dense bool [H, T, T] (query, key): for tests and plots only."""
        n, g, b = self.num_blocks, self._num_global_blocks, self._block_size
        block_mask = np.zeros((self._num_heads, n, n), bool)
        block_mask[:, :g, :] = True
        block_mask[:, n - g:, :] = True
        blocks, valid = self.key_blocks()
        heads, rows, slots = np.nonzero(valid)
        block_mask[heads, rows + g, blocks[heads, rows, slots]] = True
        return np.repeat(np.repeat(block_mask, b, axis=1), b, axis=2)

    # ------------------------------------------------------------------ computation
    def _attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, r_k: tf.Tensor, *,
                key_mask: tf.Tensor | None, mask: tf.Tensor | None, is_training: bool) -> tf.Tensor:
        """q, k [B, H, T, K], v [B, H, T, V], r_k [H, 2T-1, K] -> [B, H, T, V]."""
        if mask is not None:
            raise ValueError("sparse attention has its own pattern; a dense mask is not supported")
        num_tokens = q.shape[2]
        if num_tokens != self._num_tokens:
            raise ValueError(f"this sparse attention was built for {self._num_tokens} tokens, "
                             f"got {num_tokens}")
        n, g, b = self.num_blocks, self._num_global_blocks, self._block_size
        half, width = self._window_blocks // 2, self._window_blocks * b
        batch = tf.shape(q)[0]
        heads, key_size, value_size = q.shape[1], q.shape[-1], v.shape[-1]
        q_content = q + self._r_w_bias
        q_relative = q + self._r_r_bias
        if key_mask is not None:
            key_mask = tf.cast(key_mask, tf.bool)  # [B, T]

        # ---- global query rows: dense over all T keys.
        global_rows = []
        for start in (0, num_tokens - g * b):
            rows = slice(start, start + g * b)
            logits = tf.matmul(q_content[:, :, rows], k, transpose_b=True)  # [B, H, gb, T]
            # Row m of the table is distance m - (T-1); query p = start + i needs d = j - p.
            table = r_k[:, num_tokens - g * b - start: 2 * num_tokens - 1 - start]  # [H, T + gb - 1, K]
            logits += skew(tf.matmul(q_relative[:, :, rows], table[tf.newaxis], transpose_b=True))
            if key_mask is not None:
                logits = tf.where(key_mask[:, tf.newaxis, tf.newaxis, :], logits,
                                  large_negative(logits.dtype))
            weights = self._dropout_weights(tf.nn.softmax(logits), is_training)
            global_rows.append(tf.matmul(weights, v))  # [B, H, gb, V]

        # ---- middle query blocks.
        def blocked(x: tf.Tensor) -> tf.Tensor:  # [B, H, T, D] -> [B, H, n, b, D]
            return tf.reshape(x, [batch, heads, n, b, x.shape[-1]])

        def middle(x: tf.Tensor) -> tf.Tensor:  # queries of the middle blocks [B, H, n-2g, b, D]
            return blocked(x)[:, :, g:n - g]

        def window_keys(x: tf.Tensor) -> tf.Tensor:  # [B, H, n, b, D] -> [B, H, n-2g, w*b, D]
            padded = tf.pad(x, [[0, 0], [0, 0], [half, half], [0, 0], [0, 0]])
            slots = [padded[:, :, g + half + delta: n - g + half + delta] for delta in range(-half, half + 1)]
            stacked = tf.stack(slots, axis=3)  # [B, H, n-2g, w, b, D]
            return tf.reshape(stacked, [batch, heads, n - 2 * g, width, x.shape[-1]])

        blocks, valid = self.key_blocks()
        extra_blocks = blocks[:, :, self._window_blocks:]  # [H, n-2g, 2g + r] global + random
        num_extra = extra_blocks.shape[-1]
        extra_index = tf.tile(tf.constant(np.maximum(extra_blocks, 0))[tf.newaxis], [batch, 1, 1, 1])

        def extra_keys(x: tf.Tensor) -> tf.Tensor:  # [B, H, n, b, D] -> [B, H, n-2g, (2g+r)*b, D]
            gathered = tf.gather(x, extra_index, axis=2, batch_dims=2)  # [B, H, n-2g, 2g+r, b, D]
            return tf.reshape(gathered, [batch, heads, n - 2 * g, num_extra * b, x.shape[-1]])

        q_content_mid, q_relative_mid = middle(q_content), middle(q_relative)
        k_blocks, v_blocks = blocked(k), blocked(v)

        # Window: content logits against the stacked neighbours; relative logits against one
        # positional window shared by every row (distances -(half+1)b+1 .. (half+1)b-1).
        window_logits = tf.einsum("bhnqk,bhnck->bhnqc", q_content_mid, window_keys(k_blocks))
        first = (n - 1 - half) * b
        window_table = r_k[:, first:first + width + b - 1]  # [H, (w+1)b - 1, K]
        window_logits += skew(tf.einsum("bhnqk,hrk->bhnqr", q_relative_mid, window_table))

        # Global and random key blocks: frames of the positional table at each pair's block offset.
        frames = tf.signal.frame(r_k, 2 * b - 1, b, axis=1)  # [H, 2n-1, 2b-1, K]; frame f: offset f-(n-1)
        frame_index = extra_blocks - np.arange(g, n - g)[None, :, None] + (n - 1)
        extra_frames = tf.gather(frames, tf.constant(frame_index), axis=1, batch_dims=1)  # [H, n-2g, s, 2b-1, K]
        extra_relative = skew(tf.einsum("bhnqk,hnsrk->bhnsqr", q_relative_mid, extra_frames))
        extra_relative = tf.reshape(tf.transpose(extra_relative, [0, 1, 2, 4, 3, 5]),
                                    [batch, heads, n - 2 * g, b, num_extra * b])
        extra_k = tf.reshape(extra_keys(k_blocks), [batch, heads, n - 2 * g, num_extra * b, key_size])
        extra_logits = tf.einsum("bhnqk,bhnck->bhnqc", q_content_mid, extra_k) + extra_relative

        logits = tf.concat([window_logits, extra_logits], axis=-1)  # [B, H, n-2g, b, (w+2g+r)b]
        slot_valid = np.repeat(valid, b, axis=-1)[None, :, :, None, :]  # [1, H, n-2g, 1, S*b]
        allowed = tf.constant(slot_valid)
        if key_mask is not None:
            key_float = tf.tile(tf.cast(key_mask, q.dtype)[:, tf.newaxis, :, tf.newaxis], [1, heads, 1, 1])
            mask_blocks = blocked(key_float)  # [B, H, n, b, 1]
            key_allowed = tf.concat([window_keys(mask_blocks), extra_keys(mask_blocks)], axis=3)
            allowed = tf.logical_and(allowed, tf.transpose(key_allowed, [0, 1, 2, 4, 3]) > 0.5)
        if not np.all(slot_valid) or key_mask is not None:
            logits = tf.where(allowed, logits, large_negative(logits.dtype))
        weights = self._dropout_weights(tf.nn.softmax(logits), is_training)
        middle_out = (tf.einsum("bhnqc,bhncv->bhnqv", weights[..., :width], window_keys(v_blocks))
                      + tf.einsum("bhnqc,bhncv->bhnqv", weights[..., width:], extra_keys(v_blocks)))
        middle_out = tf.reshape(middle_out, [batch, heads, (n - 2 * g) * b, value_size])
        return tf.concat([global_rows[0], middle_out, global_rows[1]], axis=2)
