"""With `recompute` and `tile_length`, a training step holds one block's activations at a time: its
peak of live tensors is at most the block outputs it keeps, the gradients, and the largest peak of
one block's forward and backward pass run alone. (The graph executor runs an op as soon as its
inputs exist; a backward pass's recomputation that did not wait for its gradient ran during the
forward pass, in every block at once: senformer_cli/model/recompute.py, `sequential_loop`.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

# Run in a fresh process with TensorFlow's BFC allocator, whose statistics count the live tensors.
CHILD = r"""
import json, sys
import numpy as np, tensorflow as tf
from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model.recompute import recompute_call
from senformer_cli.model.tiling import tiled_call

overrides = json.loads(sys.argv[1])
LENGTH, TILE = overrides["sequence_length"], overrides["tile_length"]
config = ModelConfig.from_preset("tiny", recompute=True, **overrides)
model = build_model(config)
model(tf.zeros([1, LENGTH, 4]), is_training=False)
x = tf.one_hot(np.random.default_rng(0).integers(0, 4, (1, LENGTH)), 4)
seed = tf.constant([1, 2])
variables = [v for v in model.trainable_variables if "head_mouse" not in v.name]


def peak_above_current(function, *args):
    function(*args)  # traced, and the allocator's pool grown, before the measured call
    current = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    function(*args)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - current


@tf.function(autograph=False)
def step(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, is_training=True, seed=seed)["human"])
    return tape.gradient(loss, variables)


def alone(block, tiled):
    # The block's forward and backward pass by itself, as the model runs it.
    @tf.function(autograph=False)
    def run(h, upstream):
        with tf.GradientTape() as tape:
            tape.watch(h)
            if tiled:
                y = tiled_call(block, h, is_training=True, tile_length=TILE)
            else:
                y = recompute_call(block, h, is_training=True, seed=seed)
        return tape.gradient(y, [h, *block.trainable_variables], output_gradients=upstream)
    return run


stem, tower, transformer, crop, final = model.trunk.layers
h, kept, peaks = x, x.shape.num_elements() * 4, []
for block, tiled in ([(stem, True)] + [(b, True) for b in tower.layers]
                     + [(b, False) for b in transformer.layers] + [(final, False)]):
    h = crop(h) if block is final else h
    y = block(h, is_training=False, **({} if tiled else {"seed": seed}))
    # ... plus its output's gradient, an argument here (so not in its peak), live in the step
    peaks.append(peak_above_current(alone(block, tiled), h, tf.ones_like(y))
                 + y.shape.num_elements() * 4)
    kept += y.shape.num_elements() * 4
    h = y
print(json.dumps({"step": peak_above_current(step, x), "kept": kept, "largest_block": max(peaks),
                  "gradients": sum(v.shape.num_elements() for v in variables) * 4}))
"""


# The tiny width with the published attention geometry (8 heads of 64, blocks of 64 tokens) and 4
# layers, so that the attention's positional tables weigh as much as a conv block's tile.
OVERRIDES = dict(sequence_length=131_072, tile_length=8_192, num_heads=8, key_size=64,
                 block_size=64, num_transformer_layers=4)


def test_a_recomputed_tiled_step_holds_one_block_at_a_time():
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(OVERRIDES)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    bound = peaks["kept"] + peaks["gradients"] + peaks["largest_block"]
    # Measured (5 runs): 155-170 MB against bounds of 167-182 MB; the executor's order varies a
    # little between runs, hence the 10%. When the tiled blocks' backward loops recomputed their
    # first tile during the forward pass: 218 MB; when the recomputed transformer blocks' positional
    # tables were built at the step's start: 278 MB; when every tiled block's in-place input
    # gradient buffer was: 185 MB against a bound of 165.
    assert peaks["step"] <= 1.1 * bound, peaks
