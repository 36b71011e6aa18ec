"""Exact tiling of the stem and the conv tower blocks (`tile_length`): a block runs over tiles of
its input, each with a halo as wide as its convolution reaches, so it never holds more than one
tile's activations, in the forward pass or in the backward pass (which recomputes each tile).

A block is `first -> Residual(conv_block(f, 1)) -> pool 2`, where `first` is the stem's Conv1D(15)
or a tower block's conv_block(f, 5) = BatchNorm -> GELU -> Conv1D(5). Only `first` reaches across
positions, by (width - 1) / 2; the pointwise block and the pooling are local. So for a tile owning
input positions [s, e) (s, e and the halo even, so pooling pairs stay aligned) the tile computes
`first` on [s - halo, e + halo) clipped to the sequence; its outputs on [s, e) are exact: a
convolution's SAME zero padding only falls inside the halo, except at the sequence's own ends, where
the clipped tile pads exactly as the whole sequence does.

Batch norm in training mode normalises with statistics over every position, so tiles are not
independent. The statistics are computed first, tile by tile, over the owned positions only:
E[x] and E[x^2] per channel, var = E[x^2] - E[x]^2, the formula of Sonnet's CrossReplicaBatchNorm
(whose batch norms these are). A tower block needs two (of its input, then of `first`'s output),
the stem one. Then the outputs, tile by tile. The moving averages are updated once, as the
untiled block does. The backward pass (a custom gradient) runs the tiles again under a tape for
the gradients of the input, the variables and the statistics, then carries the statistics'
gradients back through the tiles that produced them. Every loop is a sequential tf.while_loop;
the backward pass's loops start only once the gradients they use exist (`sequential_loop`'s
`after`), or their first tile would be recomputed during the forward pass and held until then.
In inference mode the moving averages are the statistics and there is one pass.
"""
from __future__ import annotations

from typing import Callable

import sonnet as snt
import tensorflow as tf
from tensorflow.python.eager import record

from senformer_cli.config import num_tiles
from senformer_cli.model.layers import Residual, Sequential
from senformer_cli.model.recompute import sequential_loop, zero_after


def _batch_norm(module: snt.Module, inputs: tf.Tensor, stats: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
    """The batch norm `module` applied with the given (mean, variance), as its unfused path does."""
    mean, variance = stats
    return tf.nn.batch_normalization(inputs, mean=mean, variance=variance, offset=module.offset,
                                     scale=module.scale, variance_epsilon=module._eps)


def _conv_block(block: Sequential, inputs: tf.Tensor, stats) -> tf.Tensor:
    """conv_block = [batch norm, gelu, Conv1D] with the batch norm's statistics given."""
    batch_norm, activation, conv = block.layers
    return conv(activation(_batch_norm(batch_norm, inputs, stats)))


def _reduce_mean(value: tf.Tensor) -> tf.Tensor:
    """The mean across replicas, as CrossReplicaBatchNorm takes it (a no-op on one replica)."""
    context = tf.distribute.get_replica_context()
    return value if context is None else context.all_reduce("MEAN", value)


def _moments(sums: tf.Tensor, squares: tf.Tensor, count: tf.Tensor, dtype: tf.DType
             ) -> tuple[tf.Tensor, tf.Tensor]:
    """(mean, variance) from float32 sums over `count` positions, in `dtype`."""
    mean = _reduce_mean(sums / count)
    variance = _reduce_mean(squares / count) - tf.square(mean)
    return tf.cast(mean, dtype), tf.cast(variance, dtype)


def _sums(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-channel sums of values and of their squares, [1, 1, C] each, in float32."""
    values = tf.cast(values, tf.float32)
    return (tf.reduce_sum(values, [0, 1], keepdims=True),
            tf.reduce_sum(tf.square(values), [0, 1], keepdims=True))


class _Plan:
    """Tile geometry of one block call: `num_tiles` tiles of `tile` input positions, halo `halo`."""

    def __init__(self, length: int, tile: int, halo: int):
        self.length, self.tile, self.halo = length, tile, halo
        self.num_tiles = length // tile

    def window(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(begin, size, offset): the tile's input window [begin, begin + size) and where its
        owned positions start inside it."""
        start = index * self.tile
        begin = tf.maximum(start - self.halo, 0)
        end = tf.minimum(start + self.tile + self.halo, self.length)
        return begin, end - begin, start - begin


def _slice_positions(x: tf.Tensor, begin, size) -> tf.Tensor:
    return tf.slice(x, tf.stack([0, begin, 0]), tf.stack([-1, size, -1]))


def tileable(block: snt.Module) -> bool:
    """Whether `block` has the stem / conv tower block structure this module tiles."""
    layers = getattr(block, "layers", None)
    if not layers or len(layers) != 3 or not isinstance(layers[1], Residual):
        return False
    first = layers[0]
    return isinstance(first, snt.Conv1D) or (
        isinstance(first, Sequential) and len(first.layers) == 3
        and isinstance(first.layers[0], (snt.BatchNorm, snt.distribute.CrossReplicaBatchNorm)))


def tiled_call(block: Sequential, inputs: tf.Tensor, *, is_training: bool, tile_length: int
               ) -> tf.Tensor:
    """`block(inputs, is_training=is_training)` computed over `num_tiles(length, tile_length)`
    equal tiles; the same outputs and gradients, up to float rounding."""
    first, residual, pool = block.layers
    pointwise = residual._module  # conv_block(f, 1)
    first_is_conv_block = not isinstance(first, snt.Conv1D)
    conv = first.layers[2] if first_is_conv_block else first
    width = conv.kernel_shape if isinstance(conv.kernel_shape, int) else conv.kernel_shape[0]
    halo = 2 * -(-((width - 1) // 2) // 2)  # the conv's reach, rounded up to an even number
    length = int(inputs.shape[1])
    tiles = num_tiles(length, tile_length)
    if length % (2 * tiles):
        raise ValueError(f"{length} positions do not split into {tiles} tiles of an even length")
    plan = _Plan(length, length // tiles, halo)
    batch_norms = ([first.layers[0]] if first_is_conv_block else []) + [pointwise.layers[0]]

    def first_stage(window: tf.Tensor, stats: list) -> tf.Tensor:
        return _conv_block(first, window, stats[0]) if first_is_conv_block else first(window)

    def owned(values: tf.Tensor, offset) -> tf.Tensor:
        return tf.slice(values, tf.stack([0, offset, 0]), tf.stack([-1, plan.tile, -1]))

    def tile_output(window: tf.Tensor, offset, stats: list) -> tf.Tensor:
        z = owned(first_stage(window, stats), offset)
        z = z + _conv_block(pointwise, z, stats[-1])
        return pool(z)

    count = tf.cast(tf.shape(inputs)[0] * length, tf.float32)

    def statistics(x: tf.Tensor) -> list:
        """[(mean, variance)] of each batch norm's input, [1, 1, C] each, tile by tile."""
        stats = []
        if first_is_conv_block:  # the block's input itself
            def input_sums(index, sums, squares):
                tile_sums = _sums(_slice_positions(x, index * plan.tile, plan.tile))
                return sums + tile_sums[0], squares + tile_sums[1]
            zeros = tf.zeros([1, 1, x.shape[-1]])
            sums = sequential_loop(plan.num_tiles, input_sums, zeros, zeros)
            stats.append(_moments(*sums, count, x.dtype))

        def stage_sums(index, sums, squares):
            begin, size, offset = plan.window(index)
            tile_sums = _sums(owned(first_stage(_slice_positions(x, begin, size), stats), offset))
            return sums + tile_sums[0], squares + tile_sums[1]
        zeros = tf.zeros([1, 1, conv.output_channels])
        stats.append(_moments(*sequential_loop(plan.num_tiles, stage_sums, zeros, zeros), count,
                              x.dtype))
        return stats

    def outputs(x: tf.Tensor, stats: list) -> tf.Tensor:
        def body(index, pieces):
            begin, size, offset = plan.window(index)
            return (pieces.write(index, tile_output(_slice_positions(x, begin, size), offset, stats)),)
        pieces, = sequential_loop(plan.num_tiles, body,
                                  tf.TensorArray(x.dtype, size=plan.num_tiles))
        stacked = pieces.stack()  # [tiles, B, tile / 2, C]
        stacked = tf.transpose(stacked, [1, 0, 2, 3])
        return tf.reshape(stacked, [tf.shape(x)[0], length // 2, stacked.shape[-1]])

    if not is_training:  # the moving averages are the statistics: one pass
        def forward(x: tf.Tensor):
            stats = [(bn.moving_mean.value, bn.moving_variance.value) for bn in batch_norms]
            return outputs(x, stats), stats
    else:
        def forward(x: tf.Tensor):
            stats = statistics(x)
            for bn, (mean, variance) in zip(batch_norms, stats):
                bn._update_statistics(mean, variance)  # once per step, as the untiled block does
            return outputs(x, stats), stats

    return _checkpointed(inputs, forward, plan, tile_output, first_stage, owned, count,
                         batch_statistics=is_training, input_statistics=first_is_conv_block)


def _checkpointed(inputs: tf.Tensor, forward: Callable, plan: _Plan, tile_output: Callable,
                  first_stage: Callable, owned: Callable, count: tf.Tensor, *,
                  batch_statistics: bool, input_statistics: bool) -> tf.Tensor:
    """forward(x) -> (y, stats) with the tile-by-tile gradient. With `batch_statistics` the
    statistics are functions of x (training mode) and are differentiated through;
    `input_statistics`: the first ones are of x itself."""

    @tf.custom_gradient
    def run(x: tf.Tensor):
        with record.stop_recording():
            y, stats = forward(x)

        def gradient(d_y: tf.Tensor, variables: list[tf.Variable] | None = None):
            variables = list(variables or [])
            flat_stats = [t for pair in stats for t in pair]

            def with_stats(values: list) -> list:
                return [tuple(values[i:i + 2]) for i in range(0, len(values), 2)]

            # 1. The outputs: gradients of x, the variables and every statistic.
            def output_tile(index, d_x, d_stats, d_variables):
                begin, size, offset = plan.window(index)
                window = _slice_positions(x, begin, size)
                d_out = _slice_positions(d_y, index * (plan.tile // 2), plan.tile // 2)
                with tf.GradientTape() as tape:
                    tape.watch([window, *flat_stats, *variables])
                    out = tile_output(window, offset, with_stats(flat_stats))
                grads = tape.gradient(out, [window, *flat_stats, *variables], output_gradients=d_out,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return (_add_positions(d_x, begin, grads[0]),
                        [a + g for a, g in zip(d_stats, grads[1:1 + len(flat_stats)])],
                        [a + g for a, g in zip(d_variables, grads[1 + len(flat_stats):])])

            # The input gradient is accumulated position-major, [L, B, C], so each tile's part is
            # added to its rows in place (`_add_positions`): one whole-length buffer, where a
            # scatter-add in a loop held two or three (a new output per tile).
            d_x = _accumulator(tf.gather(tf.shape(x), [1, 0, 2]), x.dtype, after=d_y)
            d_stats = [tf.zeros_like(t) for t in flat_stats]
            d_variables = [tf.zeros_like(v) for v in variables]
            d_x, d_stats, d_variables = sequential_loop(plan.num_tiles, output_tile, d_x, d_stats,
                                                        d_variables, after=d_y)
            # 2. Back through the statistics, last batch norm first: mean = E[z], var = E[z^2] -
            # mean^2, so z's gradient is (d_mean - 2 mean d_var) / n + 2 z d_var / n.
            for k in reversed(range(len(stats) if batch_statistics else 0)):
                mean, _ = stats[k]
                d_mean, d_var = d_stats[2 * k], d_stats[2 * k + 1]
                linear = (d_mean - 2.0 * mean * d_var) / tf.cast(count, mean.dtype)
                quadratic = d_var / tf.cast(count, mean.dtype)
                if k == 0 and input_statistics:  # a tower block's first statistics: of x itself
                    def input_tile(index, d_x):
                        start = index * plan.tile
                        owned_x = _slice_positions(x, start, plan.tile)
                        return (_add_positions(d_x, start, linear + 2.0 * owned_x * quadratic),)
                    d_x, = sequential_loop(plan.num_tiles, input_tile, d_x, after=linear)
                    continue
                earlier = flat_stats[:2 * k]

                def stats_tile(index, d_x, d_earlier, d_variables):
                    begin, size, offset = plan.window(index)
                    window = _slice_positions(x, begin, size)
                    with tf.GradientTape() as tape:
                        tape.watch([window, *earlier, *variables])
                        z = owned(first_stage(window, with_stats(earlier)), offset)
                        surrogate = tf.reduce_sum(z * linear) + tf.reduce_sum(tf.square(z) * quadratic)
                    grads = tape.gradient(surrogate, [window, *earlier, *variables],
                                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    return (_add_positions(d_x, begin, grads[0]),
                            [a + g for a, g in zip(d_earlier, grads[1:1 + len(earlier)])],
                            [a + g for a, g in zip(d_variables, grads[1 + len(earlier):])])

                d_x, d_earlier, d_variables = sequential_loop(plan.num_tiles, stats_tile, d_x,
                                                              d_stats[:2 * k], d_variables,
                                                              after=linear)
                d_stats = list(d_earlier) + d_stats[2 * k:]
            return tf.transpose(d_x, [1, 0, 2]), d_variables

        return y, gradient

    return run(inputs)


def _accumulator(shape: tf.Tensor, dtype: tf.DType, after: tf.Tensor) -> tf.Tensor:
    """A new zero tensor of `shape`, made once `after` exists, for `_add_positions` to add into in
    place: an `Empty` op, which makes its own buffer on every run (a zeros_like may be folded into
    a constant, whose buffer is shared between runs). Without `after` its shape is a constant and
    the executor makes it at the step's start, for every tiled block at once."""
    return tf.raw_ops.Empty(shape=shape + zero_after(after), dtype=dtype, init=True)


def _add_positions(total: tf.Tensor, begin, values: tf.Tensor) -> tf.Tensor:
    """total [L, B, C] position-major (an `_accumulator`, read by nothing else);
    total[begin:begin + n] += values [B, n, C], in total's own buffer (InplaceAdd)."""
    positions = begin + tf.range(tf.shape(values)[1])
    return tf.raw_ops.InplaceAdd(x=total, i=positions, v=tf.transpose(values, [1, 0, 2]))
