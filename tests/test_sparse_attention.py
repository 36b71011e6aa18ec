"""S-Enformer's block-sparse attention (`SparseMultiheadAttention`) against independent references:
the dense `MultiheadAttention` with the same weights and a dense mask of the same pattern (outputs
and gradients), the pattern rebuilt with plain numpy from DESIGN.md §4, a chi-square test of the
random blocks, checkpoints, the presets' parameter counts and the traced graph's tensor shapes.
Fresh random inputs everywhere; small sizes so the whole file stays fast on a busy 2-core CPU."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model.attention import MultiheadAttention
from senformer_cli.model.sparse_attention import SparseMultiheadAttention, draw_random_blocks
from senformer_cli.model.summary import build_for_counting, count_variables

CHANNELS, HEADS, KEY_SIZE, FEATURES = 48, 4, 8, 12


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def short_name(variable: tf.Variable) -> str:
    """'sparse_multihead_attention/q_layer/w:0' -> 'q_layer/w'."""
    return variable.name.split("/", 1)[1].split(":")[0]


def sparse_layer(num_tokens: int, block: int, window: int, num_global: int, num_random: int,
                 seed=(0, 0), rows_per_chunk: int | None = None) -> SparseMultiheadAttention:
    return SparseMultiheadAttention(
        CHANNELS // HEADS, KEY_SIZE, HEADS, FEATURES, block_size=block,
        num_random_blocks=num_random, window_blocks=window, num_global_blocks=num_global,
        num_tokens=num_tokens, seed=seed, rows_per_chunk=rows_per_chunk, zero_initialize=False)


def built(layer: MultiheadAttention, num_tokens: int) -> MultiheadAttention:
    layer(tf.zeros([1, num_tokens, CHANNELS]))  # Sonnet creates the linear layers' variables here
    return layer


def copy_weights(source: MultiheadAttention, target: MultiheadAttention) -> None:
    """Assign source's trainable variables to target's, matched by name below the module."""
    by_name = {short_name(v): v for v in source.trainable_variables}
    names = [short_name(v) for v in target.trainable_variables]
    assert sorted(names) == sorted(by_name) and len(names) == 8
    for variable in target.trainable_variables:
        variable.assign(by_name[short_name(variable)])


def sparse_and_dense(num_tokens: int, *pattern, rows_per_chunk: int | None = None, seed=(0, 0)):
    """A sparse layer and a dense one with the same (random, non-zero) weights, and the sparse
    layer's pattern as a dense [1, H, T, T] mask."""
    sparse = built(sparse_layer(num_tokens, *pattern, seed=seed, rows_per_chunk=rows_per_chunk),
                   num_tokens)
    dense = built(MultiheadAttention(CHANNELS // HEADS, KEY_SIZE, HEADS, FEATURES,
                                     zero_initialize=False), num_tokens)
    copy_weights(sparse, dense)
    return sparse, dense, tf.constant(sparse.pattern_mask()[np.newaxis])


def random_inputs(batch: int, num_tokens: int, seed: int) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal(
        (batch, num_tokens, CHANNELS)).astype(np.float32))


# ----------------------------------------------------------------------------- sparse == masked dense
CASES = [  # num_tokens, block, window, globals, random, rows_per_chunk
    pytest.param(128, 8, 3, 1, 3, None, id="T128-b8-w3-g1-r3"),
    pytest.param(128, 16, 5, 1, 2, None, id="T128-b16-w5-g1-r2"),
    pytest.param(256, 16, 3, 2, 3, None, id="T256-b16-w3-g2-r3"),
    pytest.param(96, 8, 3, 1, 0, None, id="T96-b8-w3-g1-r0"),
    # Chunked: 15 middle rows in 8 chunks of 2 (one padded row) / 20 in 7 chunks of 3.
    pytest.param(136, 8, 3, 1, 3, 2, id="T136-b8-chunks2-padded"),
    pytest.param(192, 8, 5, 2, 1, 3, id="T192-b8-w5-g2-chunks3-padded"),
]


def zero_positional_term(layer: MultiheadAttention) -> None:
    layer._r_r_bias.assign(tf.zeros_like(layer._r_r_bias))
    layer._r_k_layer.w.assign(tf.zeros_like(layer._r_k_layer.w))


@pytest.mark.parametrize("num_tokens, block, window, num_global, num_random, rows_per_chunk", CASES)
def test_sparse_equals_dense_attention_with_the_same_pattern(num_tokens, block, window, num_global,
                                                             num_random, rows_per_chunk):
    sparse, dense, mask = sparse_and_dense(num_tokens, block, window, num_global, num_random,
                                           rows_per_chunk=rows_per_chunk)
    assert not mask.numpy().all()  # a real sparse pattern
    x = random_inputs(2, num_tokens, seed=num_tokens + block + window)
    expected = dense(x, mask=mask).numpy()
    actual = sparse(x).numpy()
    assert actual.shape == expected.shape == (2, num_tokens, CHANNELS)
    assert relative_error(actual, expected) < 1e-5
    # The comparison is sensitive to the relative-position term: without it the output moves >1%.
    zero_positional_term(sparse)
    assert relative_error(sparse(x).numpy(), expected) > 1e-2


@pytest.mark.parametrize("num_tokens, block, window, num_global, num_random", [
    pytest.param(64, 16, 3, 1, 3, id="4-blocks"),  # window + globals cover every block
    pytest.param(80, 16, 3, 1, 1, id="5-blocks-random-completes"),  # the one eligible random block
    pytest.param(40, 8, 1, 2, 2, id="one-middle-block"),
    pytest.param(48, 8, 5, 1, 2, id="window-past-both-ends"),
])
def test_pattern_covering_every_block_equals_full_attention(num_tokens, block, window, num_global,
                                                             num_random):
    sparse, dense, mask = sparse_and_dense(num_tokens, block, window, num_global, num_random)
    assert mask.numpy().all()
    x = random_inputs(2, num_tokens, seed=num_tokens)
    assert relative_error(sparse(x).numpy(), dense(x).numpy()) < 1e-5  # no mask at all


def padding_mask(num_tokens: int) -> tf.Tensor:
    """Batch element 0 padded at its first 11 tokens, element 1 at its last 13."""
    key_mask = np.ones((2, num_tokens), bool)
    key_mask[0, :11] = False
    key_mask[1, -13:] = False
    return tf.constant(key_mask)


@pytest.mark.parametrize("rows_per_chunk", [None, 2])
def test_key_mask_matches_dense_and_padded_keys_get_no_attention(rows_per_chunk):
    num_tokens = 136
    sparse, dense, mask = sparse_and_dense(num_tokens, 8, 3, 1, 3, rows_per_chunk=rows_per_chunk)
    key_mask = padding_mask(num_tokens)
    x = random_inputs(2, num_tokens, seed=3)
    actual = sparse(x, key_mask=key_mask).numpy()
    expected = dense(x, key_mask=key_mask, mask=mask).numpy()
    assert relative_error(actual, expected) < 1e-5
    # Padding changes the result (the mask is really applied)...
    assert relative_error(sparse(x).numpy(), expected) > 1e-3
    # ...and padded tokens' keys and values are never read: new inputs there (which change only
    # their own query rows besides their keys and values) leave every unpadded row unchanged.
    noise = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32) * 10
    perturbed = x + tf.where(key_mask[..., tf.newaxis], 0.0, noise)
    moved = sparse(perturbed, key_mask=key_mask).numpy()
    keep = key_mask.numpy()
    np.testing.assert_allclose(moved[keep], actual[keep], rtol=0, atol=1e-6 * np.abs(actual).max())
    assert np.abs(moved[~keep] - actual[~keep]).max() > 1e-2


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("rows_per_chunk", [None, 2], ids=["one-chunk", "while-loop-chunks"])
@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_gradients_equal_those_of_masked_dense_attention(traced, rows_per_chunk):
    """Dropout off, with a key mask. One chunk (every preset up to 2,048 tokens; TensorFlow's own
    gradient) and 8 chunks of 2 rows through the while loop with its hand-written backward pass
    (one padded row)."""
    num_tokens = 136  # 15 middle rows
    sparse, dense, mask = sparse_and_dense(num_tokens, 8, 3, 1, 3, rows_per_chunk=rows_per_chunk)
    assert (sparse._rows_per_chunk >= 15) == (rows_per_chunk is None)
    x = random_inputs(2, num_tokens, seed=5)
    key_mask = padding_mask(num_tokens)
    cotangent = tf.constant(np.random.default_rng(6).standard_normal(x.shape).astype(np.float32))

    def gradients(layer, **kwargs):
        def run(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(layer(inputs, key_mask=key_mask, **kwargs) * cotangent)
            return tape.gradient(loss, [inputs] + list(layer.trainable_variables))
        if traced:  # graph mode, with an unknown batch size
            run = tf.function(run, input_signature=[tf.TensorSpec([None, num_tokens, CHANNELS])])
        return dict(zip(["inputs"] + [short_name(v) for v in layer.trainable_variables], run(x)))

    actual, expected = gradients(sparse), gradients(dense, mask=mask)
    assert sorted(actual) == sorted(expected) and len(actual) == 9
    for name, value in expected.items():
        assert actual[name] is not None and np.any(value.numpy()), name
        assert relative_error(actual[name].numpy(), value.numpy()) < 1e-4, name


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_training_gradients_with_attention_dropout_match_finite_differences(traced):
    """With dropout the recomputed chunks must redraw the forward pass's dropout masks: the
    gradient along a random direction equals a central difference of the loss (same seed)."""
    num_tokens = 136
    layer = SparseMultiheadAttention(
        CHANNELS // HEADS, KEY_SIZE, HEADS, FEATURES, block_size=8, num_random_blocks=3,
        window_blocks=3, num_global_blocks=1, num_tokens=num_tokens, seed=(1, 0), rows_per_chunk=2,
        attention_dropout_rate=0.3, positional_dropout_rate=0.0, zero_initialize=False)
    built(layer, num_tokens)
    x = random_inputs(1, num_tokens, seed=12)
    cotangent, direction = random_inputs(1, num_tokens, seed=13), random_inputs(1, num_tokens, seed=14)

    def loss(inputs):
        return tf.reduce_sum(layer(inputs, is_training=True) * cotangent)

    def loss_and_gradient(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            value = loss(inputs)
        return value, tape.gradient(value, inputs)

    if traced:
        loss, loss_and_gradient = tf.function(loss), tf.function(loss_and_gradient)

    def seeded(function, inputs):
        tf.random.set_seed(21)
        return function(inputs)

    value, gradient = seeded(loss_and_gradient, x)
    assert float(seeded(loss, x)) == float(value)  # the seed fixes the dropout masks...
    assert float(loss(x)) != float(value)  # ...and the next call draws new ones
    eps = 1e-2
    finite_difference = (float(seeded(loss, x + eps * direction)) -
                         float(seeded(loss, x - eps * direction))) / (2 * eps)
    analytic = float(tf.reduce_sum(gradient * direction))
    assert abs(finite_difference - analytic) < 2e-2 * abs(analytic)


# ----------------------------------------------------------------------------- the pattern
@pytest.mark.parametrize("window, num_global, num_random", [(3, 1, 3), (5, 2, 3), (5, 1, 2)])
def test_pattern_follows_design(window, num_global, num_random):
    n, block = 24, 4
    layer = sparse_layer(n * block, block, window, num_global, num_random, seed=(11, 3))
    mask = layer.pattern_mask()
    assert mask.shape == (HEADS, n * block, n * block) and mask.dtype == bool
    block_mask = mask[:, ::block, ::block]
    # The mask is constant over each block x block tile.
    np.testing.assert_array_equal(np.repeat(np.repeat(block_mask, block, 1), block, 2), mask)
    blocks, valid = (t.numpy() for t in layer.key_blocks())
    table = layer._random_blocks.numpy()
    g, half = num_global, window // 2
    globals_ = set(range(g)) | set(range(n - g, n))
    assert blocks.shape == valid.shape == (HEADS, n - 2 * g, window + 2 * g + num_random)
    assert table.shape == (HEADS, n - 2 * g, num_random)
    assert block_mask[:, :g].all() and block_mask[:, n - g:].all()  # global rows see everything
    for head in range(HEADS):
        for row, i in enumerate(range(g, n - g)):
            window_set = {j for j in range(i - half, i + half + 1) if 0 <= j < n}
            randoms = [int(j) for j in table[head, row]]
            # Random blocks: distinct middle blocks outside the window (n is large enough here).
            assert len(set(randoms)) == num_random, (head, i, randoms)
            assert all(g <= j < n - g and abs(j - i) > half for j in randoms), (head, i, randoms)
            expected = window_set | globals_ | set(randoms)
            assert set(np.nonzero(block_mask[head, i])[0]) == expected, (head, i)
            # Each block is attended through exactly one valid slot (no duplicate near the ends).
            slots = blocks[head, row][valid[head, row]]
            assert sorted(slots.tolist()) == sorted(expected), (head, i)
            if not window_set & globals_:
                assert len(expected) == window + 2 * g + num_random


def test_random_blocks_when_too_few_are_eligible():
    """7 blocks, window 3: block 3's eligible blocks are 1 and 5 only; 3 are asked for."""
    table = draw_random_blocks(7, 2, 3, 1, 3, seed=1)  # rows are blocks 1..5
    assert table.shape == (2, 5, 3)
    for head in range(2):
        assert sorted(table[head, 2, :2]) == [1, 5] and table[head, 2, 2] == -1
        assert sorted(table[head, 0]) == [3, 4, 5]  # block 1: everything but 1, 2 (0 is global)


@pytest.mark.parametrize("block_index", [12, 21, 2])
def test_random_blocks_are_uniform_over_eligible_blocks(block_index):
    """400 draws for n = 24 blocks; a middle row, one next to the end and one next to the start."""
    n, window, g, r = 24, 3, 1, 3
    eligible = [j for j in range(g, n - g) if abs(j - block_index) > window // 2]
    counts = np.zeros(n, int)
    for seed in range(400):
        table = draw_random_blocks(n, 1, window, g, r, seed=(seed, 0))
        drawn = table[0, block_index - g]
        assert len(set(drawn.tolist())) == r
        np.add.at(counts, drawn, 1)
    assert counts.sum() == 400 * r
    assert set(np.nonzero(counts)[0]) == set(eligible)  # late blocks too, never ineligible ones
    assert scipy.stats.chisquare(counts[eligible]).pvalue > 1e-3


def test_heads_and_layers_get_different_random_blocks():
    first = draw_random_blocks(24, 8, 3, 1, 3, seed=(4, 0))
    second = draw_random_blocks(24, 8, 3, 1, 3, seed=(4, 1))
    assert not np.array_equal(first, second)
    for head in range(1, 8):
        assert not np.array_equal(first[0], first[head])


# ----------------------------------------------------------------------------- seeds
def test_same_seed_same_pattern_and_outputs_different_seed_different_pattern():
    num_tokens, pattern = 128, (8, 3, 1, 3)
    first = built(sparse_layer(num_tokens, *pattern, seed=(7, 0)), num_tokens)
    second = built(sparse_layer(num_tokens, *pattern, seed=(7, 0)), num_tokens)
    other = built(sparse_layer(num_tokens, *pattern, seed=(8, 0)), num_tokens)
    copy_weights(first, second)
    copy_weights(first, other)
    np.testing.assert_array_equal(first.pattern_mask(), second.pattern_mask())
    x = random_inputs(2, num_tokens, seed=7)
    np.testing.assert_array_equal(first(x).numpy(), second(x).numpy())
    assert not np.array_equal(first.pattern_mask(), other.pattern_mask())
    assert relative_error(other(x).numpy(), first(x).numpy()) > 1e-3


# ----------------------------------------------------------------------------- the tiny model
def random_one_hot(config: ModelConfig, batch: int, seed: int) -> tf.Tensor:
    index = np.random.default_rng(seed).integers(0, 4, size=(batch, config.sequence_length))
    return tf.constant(np.eye(4, dtype=np.float32)[index])


def unzero_attention_outputs(model, seed: int) -> None:
    """Small random weights for the attention output layers (zero-initialised)."""
    rng = np.random.default_rng(seed)
    for layer in model.attention_layers():
        w = layer._embedding_layer.w
        w.assign(0.1 * rng.standard_normal(w.shape).astype(np.float32))


def test_random_blocks_are_saved_and_restored_with_the_model(tmp_path):
    config = ModelConfig.from_preset("tiny")
    x = random_one_hot(config, batch=1, seed=8)
    model = build_model(config)
    model(x, is_training=False)  # creates the variables eagerly (faster than tracing)
    layers = model.attention_layers()
    assert all(isinstance(layer, SparseMultiheadAttention) for layer in layers)
    unzero_attention_outputs(model, seed=9)  # make attention matter to the output
    expected = model(x, is_training=False)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))

    restored = build_model(config.replace(random_seed=config.random_seed + 1))
    restored(x, is_training=False)
    before = [layer._random_blocks.numpy() for layer in restored.attention_layers()]
    assert not any(np.array_equal(b, layer._random_blocks.numpy()) for b, layer in zip(before, layers))
    tf.train.Checkpoint(model=restored).read(path).assert_consumed()
    for ours, theirs in zip(restored.attention_layers(), layers):
        np.testing.assert_array_equal(ours._random_blocks.numpy(), theirs._random_blocks.numpy())
        np.testing.assert_array_equal(ours.pattern_mask(), theirs.pattern_mask())
    actual = restored(x, is_training=False)
    for head in expected:
        np.testing.assert_allclose(actual[head].numpy(), expected[head].numpy(), rtol=1e-6, atol=0)


def test_gradients_reach_every_trainable_variable_of_the_tiny_sparse_model():
    config = ModelConfig.from_preset("tiny")
    assert config.attention == "sparse"
    model = build_model(config)
    x = random_one_hot(config, batch=2, seed=10)
    model(x, is_training=False)
    # Zero-initialised attention outputs would zero every gradient before them in the block.
    unzero_attention_outputs(model, seed=11)
    rng = np.random.default_rng(12)
    with tf.GradientTape() as tape:
        outputs = model(x, is_training=True)
        # Poisson negative log-likelihood (up to a constant) against random counts.
        loss = sum(tf.reduce_mean(tf.nn.log_poisson_loss(
            tf.constant(rng.poisson(1.0, out.shape), tf.float32), tf.math.log(out + 1e-8)))
            for out in outputs.values())
    variables = model.trainable_variables
    assert len(variables) == 7 + 6 * 9 + 2 * 16 + 4 + 2 * 2  # exactly the full model's
    assert not any("random_blocks" in v.name for v in variables)
    without = {v.name: "none" if g is None else "all zero"
               for v, g in zip(variables, tape.gradient(loss, variables))
               if g is None or not np.any(tf.convert_to_tensor(g).numpy())}
    assert not without, f"variables without a gradient: {without}"


# ----------------------------------------------------------------------------- presets
def assert_same_parameters_plus_random_block_tables(full_config: ModelConfig,
                                                    sparse_config: ModelConfig) -> int:
    """Both built by `summary.build_for_counting` (the real modules, zero-filled; what `summarize`
    counts): the same trainable variables in the same order, plus one non-trainable int32 table
    [H, n - 2g, r] per layer. Returns the number of trainable parameters."""
    full = build_for_counting(full_config).variables
    sparse = build_for_counting(sparse_config).variables
    assert count_variables(sparse)["parameters"] == count_variables(full)["parameters"]
    extra = [v for v in sparse if "random_blocks" in v.name]
    assert len(extra) == sparse_config.num_transformer_layers
    shape = (sparse_config.num_heads, sparse_config.num_blocks - 2 * sparse_config.num_global_blocks,
             sparse_config.num_random_blocks)
    assert all(tuple(v.shape) == shape and not v.trainable and v.dtype == tf.int32 for v in extra)
    rest = [(v.name, tuple(v.shape), v.trainable) for v in sparse if "random_blocks" not in v.name]
    assert rest == [(v.name, tuple(v.shape), v.trainable) for v in full]
    return count_variables(sparse)["parameters"]


def test_s_enformer_preset_differs_from_enformer_only_in_its_attention():
    full, sparse = ModelConfig.from_preset("enformer"), ModelConfig.from_preset("s-enformer")
    differing = {key for key, value in sparse.to_dict().items() if full.to_dict()[key] != value}
    assert differing == {"attention"}  # block size, random, window, globals: defaults = preset
    assert (sparse.block_size, sparse.num_random_blocks, sparse.window_blocks,
            sparse.num_global_blocks) == (64, 3, 3, 1)


def test_sparse_presets_have_the_parameters_of_full_attention_at_small_width():
    """The presets with small widths (the full-size count is the slow test below)."""
    small = dict(channels=96, num_heads=4, key_size=16, conv_tower_divisible_by=16,
                 num_transformer_layers=2, sequence_length=32_768, target_length=128, block_size=16)
    assert_same_parameters_plus_random_block_tables(ModelConfig.from_preset("enformer", **small),
                                                    ModelConfig.from_preset("s-enformer", **small))


@pytest.mark.slow
def test_s_enformer_has_the_parameters_of_enformer_plus_random_block_tables():
    """About 30 s: both published-size models are built (zero-filled)."""
    full, sparse = ModelConfig.from_preset("enformer"), ModelConfig.from_preset("s-enformer")
    assert assert_same_parameters_plus_random_block_tables(full, sparse) == 251_221_292
    # n = 1,536 / 64 = 24 blocks: 22 middle rows, 8 heads, 3 random blocks, one table per layer.
    assert (sparse.num_heads, sparse.num_blocks - 2, sparse.num_random_blocks,
            sparse.num_transformer_layers) == (8, 22, 3, 11)


# ----------------------------------------------------------------------------- linear memory
def graph_tensors(graph, seen=None):
    """Every op output of `graph` and of the functions it calls (while bodies, gradients)."""
    seen = set() if seen is None else seen
    for op in graph.get_operations():
        yield from op.outputs
    for name, function in graph._functions.items():
        if name not in seen:
            seen.add(name)
            yield from graph_tensors(function.graph, seen)


def traced_and_run_shapes(layer: MultiheadAttention, num_tokens: int, channels: int, dump_dir
                          ) -> tuple[list, dict]:
    """A training step (forward and gradient of every input and variable) of `layer`, traced and
    run once on random [1, T, C] inputs with TensorFlow's debugger recording the shape of every
    tensor that every executed op produces, inside while loops and gradient functions too.

    Returns (every tensor of the traced graphs, {(graph name, op name, output): (op type, element
    count, shape)} of the executed ones)."""
    from tensorflow.python.debug.lib.debug_events_reader import DebugDataReader

    x = tf.random.normal([1, num_tokens, channels])
    layer(x)  # the variables first, so the step is traced once (creating them takes a second trace)
    tf.debugging.experimental.enable_dump_debug_info(
        str(dump_dir), tensor_debug_mode="SHAPE", circular_buffer_size=-1)
    try:
        @functools.partial(tf.function, autograph=False)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, is_training=True))
            return tape.gradient(loss, [x] + list(layer.trainable_variables))

        step(x)
        graph = step.get_concrete_function(x).graph
    finally:
        tf.debugging.experimental.disable_dump_debug_info()
    sized = {}
    with DebugDataReader(str(dump_dir)) as reader:
        reader.update()
        for trace in reader.graph_execution_traces():
            # SHAPE mode: [tensor id, dtype, rank, element count, dims (the first 6)]
            rank, count = int(trace.debug_tensor_value[2]), int(trace.debug_tensor_value[3])
            dims = [int(d) for d in trace.debug_tensor_value[4:4 + min(rank, 6)]]
            key = (reader.graph_by_id(trace.graph_id).name, trace.op_name, trace.output_slot)
            sized[key] = (trace.op_type, count, dims)
    tensors = [t for t in graph_tensors(graph) if not t.op.type.startswith("Debug")]
    return tensors, sized


def quadratic_tensors(tensors: list, sized: dict, num_tokens: int) -> list:
    """Tensors with two dimensions of at least T, or T x T elements or more. Every dimension is
    sized: by the static shape, else by the run. A tensor sized neither way fails the test, except
    a function's Placeholder inputs, which alias tensors of the calling graph checked there."""
    found, unsized = [], []
    for tensor, static in ((t, t.shape) for t in tensors):
        run = sized.get((tensor.graph.name, tensor.op.name, tensor.value_index))
        if run is not None:
            _, count, dims = run
            if count >= num_tokens**2 or sum(d >= num_tokens for d in dims) >= 2:
                found.append((tensor.name, dims))
        elif static.rank is None or None in static.as_list():
            if tensor.op.type != "Placeholder":
                unsized.append((tensor.name, static))
        if static.rank is not None and sum(d is not None and d >= num_tokens
                                           for d in static.as_list()) >= 2:
            found.append((tensor.name, static))
    assert not unsized, f"tensors neither statically shaped nor run: {unsized[:5]}"
    return found


def test_no_tensor_of_size_t_by_t_in_forward_and_backward(tmp_path):
    """4,096 tokens: 62 middle rows in 16 chunks of 4 through the while loop and its hand-written
    backward pass, both traced and run."""
    num_tokens, block, channels = 4096, 64, 16
    sparse = SparseMultiheadAttention(8, 8, 2, 6, block_size=block, num_random_blocks=3,
                                      window_blocks=3, num_global_blocks=1, num_tokens=num_tokens,
                                      seed=0, zero_initialize=False)
    tensors, sized = traced_and_run_shapes(sparse, num_tokens, channels, tmp_path / "sparse")
    assert not quadratic_tensors(tensors, sized, num_tokens)
    # The run went through both while loops: the forward chunks (a softmax over 8 blocks of keys
    # for 4 query blocks at a time) and the custom backward pass (its scatter-add of key and value
    # gradients), once per chunk each.
    bodies = {graph for graph, _, _ in sized if "while_body" in graph}
    assert len(bodies) == 2
    softmaxes = [dims for (graph, _, _), (kind, _, dims) in sized.items()
                 if kind == "Softmax" and "while_body" in graph]
    assert [1, 2, 4, 64, 8 * block] in softmaxes
    assert any(kind == "TensorScatterAdd" and "while_body" in graph
               for (graph, _, _), (kind, _, _) in sized.items())
    # The detector does see a T x T tensor where there is one (dense attention, fewer tokens).
    dense = MultiheadAttention(8, 8, 2, 6)
    tensors, sized = traced_and_run_shapes(dense, 256, channels, tmp_path / "dense")
    assert quadratic_tensors(tensors, sized, 256)


# ----------------------------------------------------------------------------- errors
def test_tokens_not_a_multiple_of_the_block_size_are_rejected():
    with pytest.raises(ValueError, match="multiple of the block size"):
        sparse_layer(100, 16, 3, 1, 3)


def test_a_call_with_another_number_of_tokens_is_rejected():
    layer = sparse_layer(128, 16, 3, 1, 3)
    with pytest.raises(ValueError, match="built for 128 tokens"):
        layer(tf.zeros([1, 64, CHANNELS]))
