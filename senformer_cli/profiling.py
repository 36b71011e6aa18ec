"""Peak memory and step time of Enformer and S-Enformer as the input grows (`senformer profile`).

Each model x length runs in a fresh child process (`python -m senformer_cli.profiling --child
SPEC`), so one configuration's memory never leaks into the next. The child builds the model,
runs `warmup` steps (tracing, first allocations, optimizer slots), then times `steps` steps and
prints one JSON line. `steps` 0 measures the warm-up steps themselves (peak and time with tracing):
for lengths where one step takes many minutes and only the peak matters.

What a row measures:

- **Step.** `train`: forward pass in training mode, Poisson loss on the first head against random
  targets, gradients of every variable that loss reaches, clipping to global norm 0.2 and one Adam
  update (the published recipe's step, with `senformer train`'s optimizer and update). `predict`:
  forward pass in inference mode, every head.
  `--component attention`: one attention layer alone at L / bin_size tokens, forward (+ backward
  for `train`) with `is_training=False`, as `benchmarks/attention.py` has always measured it.
- **Step time.** Median over the timed steps; the spread is (slowest - fastest) / median.
- **Peak memory.** On a CPU: the child's peak resident set size during the timed steps (VmHWM,
  reset with /proc/self/clear_refs after the warm-up steps) minus its baseline: VmRSS after
  importing TensorFlow and this package, before the model is built. So it counts the weights,
  gradients, optimizer slots, activations and TensorFlow's graph, not the interpreter and
  libraries. On a GPU: TensorFlow's allocator peak on GPU:0 during the timed steps
  (`reset_memory_stats` / `get_memory_info`), whose baseline is zero.
- **Limits are rows.** Before running, `estimate_peak_bytes` predicts the peak from the
  configuration; above `--max-memory` the row says "skipped: estimated X GB > limit" and nothing
  runs. A child that goes over the limit anyway is stopped by the parent (CPU: its resident memory
  is polled); one that runs out of memory (ResourceExhausted, or killed by the kernel) is a row
  "out of memory".
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from senformer_cli import host
from senformer_cli.config import (ATTENTION_TYPES, PRECISIONS, SPARSE_CHUNK_TOKENS,
                                  SPARSE_UNCHUNKED_TOKENS, ModelConfig, TrainConfig, num_tiles)
from senformer_cli.errors import SenformerError
from senformer_cli.precision import mixed_precision

MODES = ("train", "predict")
COMPONENTS = ("model", "attention")
# The measured process's CPU allocator. TensorFlow's x86 builds with oneDNN allocate through a
# caching allocator that keeps freed buffers for reuse and never returns them to the system, so at
# long inputs the resident peak also holds its fragmentation, which can differ with the order the
# ops happened to run in. "system" sets SYSTEM_ALLOCATOR_ENV: malloc and free, freed buffers go
# back to the system, and the resident peak is closer to what the step holds at once, at the cost
# of slower steps.
ALLOCATORS = ("tensorflow", "system")
SYSTEM_ALLOCATOR_ENV = {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}
# The lengths of the S-Enformer report's memory figure, up to 1 Mb (multiples of 128 x 64 bp).
DEFAULT_LENGTHS = (131_072, 196_608, 393_216, 786_432, 1_048_576)
# No --preset or --config on a CPU: a width and lengths that finish in under 5 minutes.
CPU_DEFAULT_PRESET = "tiny"
CPU_DEFAULT_LENGTHS = (32_768, 65_536, 131_072)
MODEL_NAMES = {"full": "enformer", "sparse": "s-enformer"}
POISSON_EPSILON = 1e-6  # keeps log(prediction) finite in the loss
CLIP_NORM = 0.2
LEARNING_RATE = 5e-4

ProgressCallback = Callable[[int, int, str], None]


# ============================================================================= parsing
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str, option: str = "--max-memory") -> int:
    """'20GB' -> 20e9 bytes. KB/MB/GB/TB (and K/M/G/T) are decimal, KiB/MiB/GiB/TiB binary; a bare
    number is bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise SenformerError(f"{option} '{text}': expected a size such as 20GB, 512MB or 16GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_int_list(text: str, option: str) -> list[int]:
    """'131072,196608' -> [131072, 196608] (underscores allowed inside a number)."""
    values = []
    for item in str(text).split(","):
        item = item.strip().replace("_", "")
        if not item.isdigit() or int(item) < 1:
            raise SenformerError(f"{option} '{text}': expected positive whole numbers separated by "
                                 f"commas, e.g. 131072,196608")
        values.append(int(item))
    return values


def parse_attention_kinds(text: str) -> list[str]:
    kinds = [item.strip() for item in str(text).split(",") if item.strip()]
    for kind in kinds:
        if kind not in ATTENTION_TYPES:
            raise SenformerError(f"--attention '{kind}': unknown attention kind; choose from "
                                 f"{', '.join(ATTENTION_TYPES)}")
    if not kinds:
        raise SenformerError("--attention: name at least one attention kind (full, sparse)")
    return list(dict.fromkeys(kinds))


def format_bytes(value: float) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


# ============================================================================= configurations
def length_unit(config: ModelConfig, kind: str) -> int:
    """Input lengths must be multiples of this: the bin size (full attention), times the block size
    for sparse attention."""
    return config.bin_size * (config.block_size if kind == "sparse" else 1)


def minimum_length(config: ModelConfig, kind: str) -> int:
    if kind == "sparse":
        return length_unit(config, kind) * (2 * config.num_global_blocks + 1)
    return 2 * config.bin_size


def config_for(base: ModelConfig, kind: str, length: int) -> ModelConfig:
    """`base` with attention `kind` at input `length`. The output keeps the base's target length
    (bins), or all the tokens when the input is shorter, with an even crop on both sides."""
    tokens = length // base.bin_size
    target = min(base.target_length, tokens)
    if (tokens - target) % 2:
        target -= 1
    return base.replace(attention=kind, sequence_length=length, target_length=max(target, 1))


def check_lengths(base: ModelConfig, kinds: Sequence[str], lengths: Sequence[int]) -> None:
    """SenformerError naming the first length no model can take, with the nearest valid ones."""
    unit = max(length_unit(base, kind) for kind in kinds)
    smallest = max(minimum_length(base, kind) for kind in kinds)
    for length in lengths:
        if length % unit == 0 and length >= smallest:
            continue
        below = (length // unit) * unit
        candidates = [value for value in (below, below + unit) if value >= smallest] or [smallest]
        nearest = " or ".join(f"{value:,}" for value in dict.fromkeys(candidates))
        why = (f"a multiple of {unit:,} bp (bin size {base.bin_size} x block size {base.block_size}"
               f" for sparse attention)" if "sparse" in kinds else
               f"a multiple of the bin size {base.bin_size} bp")
        if length % unit == 0:
            why = f"at least {smallest:,} bp"
        raise SenformerError(f"--lengths {length:,}: must be {why}; nearest valid lengths: {nearest}")


# ============================================================================= memory estimate
def parameter_count(config: ModelConfig) -> int:
    """Trainable parameters, from the architecture (equals the built model's count; tested)."""
    c = config.channels
    half = c // 2
    pool = (lambda f: f * f) if config.pooling == "attention" else (lambda f: 0)
    total = 4 * 15 * half + half + 2 * half + half * half + half + pool(half)  # stem
    previous = half
    for filters in config.conv_tower_filters:
        total += 2 * previous + previous * 5 * filters + filters  # conv_block(filters, 5)
        total += 2 * filters + filters * filters + filters + pool(filters)  # pointwise, pooling
        previous = filters
    h, k, f = config.num_heads, config.key_size, config.relative_position_features
    layer = 2 * c + 2 * c * h * k + c * h * config.value_size + h * config.value_size * c + c
    layer += f * h * k + 2 * h * k  # r_k, r_w_bias, r_r_bias
    layer += 2 * c + c * 2 * c + 2 * c + 2 * c * c + c  # mlp
    total += config.num_transformer_layers * layer
    total += 2 * c + c * 2 * c + 2 * c  # final pointwise
    total += sum(2 * c * tracks + tracks for tracks in config.heads.values())
    return total


# Memory of each block of the trunk, in float32 numbers, measured on this machine's TensorFlow CPU
# build with its BFC allocator (TF_CPU_ALLOCATOR_USE_BFC=true reports the peak bytes of live
# tensors) on the tiny width and twice that width, which agree to 8%: the stem's forward and
# backward pass alone peaks at 11.6 copies of its [L, C/2] output, a conv tower block at 11 times
# (input length x (input + output channels)); a forward pass at 4.8 copies of the stem's. Of what
# a block holds at its peak, 45% stays alive for the backward pass when nothing is recomputed
# (that reproduces the whole training step, 23-25 copies, and the full-width s-enformer
# step at 196,608 bp, 23 GB). The transformer's share is counted from its tensors.
STEM_COST, TOWER_COST, STEM_LIVE, TOWER_LIVE, KEPT_FRACTION = 11.6, 11.0, 4.8, 2.4, 0.45


def _stages(config: ModelConfig, batch: int) -> list[dict[str, float]]:
    """The blocks the trunk runs, in order, with float counts: `cost` = the peak of the block's
    forward and backward pass alone, `kept` = what it keeps for the backward pass, `live` = its
    peak in a forward pass, `output` = its output (a checkpoint under recompute)."""
    length = config.sequence_length * batch
    half = config.channels // 2

    def conv_stage(name: str, positions: int, channels_in: int, filters: int, cost_per: float,
                   live_per: float, halo: int) -> dict[str, float]:
        share = 1.0
        if config.tile_length and positions // batch > config.tile_length:
            # Tiled: one tile (with its halo) at a time, plus the whole-length input gradient
            # (added into in place) and output gradient; the input and output are kept outputs.
            tile = positions // batch // num_tiles(positions // batch, config.tile_length)
            share = min(1.0, (tile + 2 * halo) * batch / positions)
        io = positions * channels_in + positions // 2 * filters if share < 1 else 0
        cost = cost_per * share + io
        return {"name": name, "cost": cost, "kept": KEPT_FRACTION * cost, "tiled": share < 1,
                "live": live_per * share + io / 2, "output": positions // 2 * filters}

    stages = [conv_stage("stem", length, 4, half, STEM_COST * length * half,
                         STEM_LIVE * length * half, 8)]
    previous, position = half, length // 2
    for i, filters in enumerate(config.conv_tower_filters):
        stages.append(conv_stage(f"conv_tower_block_{i}", position, previous, filters,
                                 TOWER_COST * position * (previous + filters),
                                 TOWER_LIVE * position * (previous + filters), 2))
        previous, position = filters, position // 2
    tokens, c, h = config.num_tokens * batch, config.channels, config.num_heads
    # A recomputed transformer block's forward and backward pass alone (`cost`), measured with the
    # BFC allocator at the full width: full attention 5.0 [H, T, T] copies + 31.5 floats per token
    # and channel (2,048 and 3,072 tokens), sparse attention in chunks 2.2 copies of its logits +
    # 16.5 (4,096 tokens; the small width at 8,192 agrees); unchunked, the small width's 1,024
    # and 2,048 tokens give 6.8 copies.
    if config.attention == "full":
        # [H, T, T]: softmax weights, dropout mask and dropped weights kept; the logits (content,
        # 2T-1 wide relative, skewed, summed) and their gradients on top in the backward pass.
        scores = h * config.num_tokens * tokens
        per_token = 32
        scores_kept, scores_cost, scores_live = 3 * scores, 5.5 * scores, 5 * scores
    else:  # gathered keys and values alike
        scores = _sparse_scores(config, config.num_tokens, batch)
        per_token = 17
        chunked = config.num_tokens > SPARSE_UNCHUNKED_TOKENS
        scores_cost = (2.5 if chunked else 7) * scores
        scores_kept, scores_live = 6 * scores, 6 * scores
    for i in range(config.num_transformer_layers):
        stages.append({"name": f"transformer_block_{i}",
                       "cost": per_token * tokens * c + scores_cost,
                       "kept": 40 * tokens * c + scores_kept, "live": 8 * tokens * c + scores_live,
                       "output": tokens * c})
    target = config.target_length * batch
    stages.append({"name": "final_pointwise", "cost": 30 * target * c, "kept": 16 * target * c,
                   "live": 8 * target * c, "output": target * 2 * c})
    return stages


# Resident memory above the tensors: TensorFlow's graphs (the traced Python graph and the runtime's
# optimised copy), the executor, and what the C library's allocator keeps of freed buffers (a
# forward pass, tiny width: 0.3-0.5 GB). A training step's graph grows with the transformer: the
# resident peak minus the allocator's peak of live tensors (TF_CPU_ALLOCATOR_USE_BFC=true), with
# recompute, was 0.43 GB for `tiny` (2 layers) and 1.4 GB for `small` (11 layers), at 65,536 to
# 262,144 bp.
OVERHEAD_BYTES = 400e6
TRAIN_OVERHEAD_BYTES, TRAIN_OVERHEAD_PER_LAYER = 240e6, 105e6
TENSOR_MARGIN = 1.0


def overhead_bytes(config: ModelConfig, mode: str) -> float:
    """The estimate's resident memory above the tensors."""
    if mode == "predict":
        return OVERHEAD_BYTES
    return TRAIN_OVERHEAD_BYTES + TRAIN_OVERHEAD_PER_LAYER * config.num_transformer_layers


def estimate_peak_bytes(config: ModelConfig, mode: str = "train", batch_size: int = 1,
                        precision: str = "fp32", component: str = "model") -> float:
    """Predicted peak memory above the baseline (the measurement's definition), in bytes.

    Weights: float32 (bf16 halves the activations only). Train: weights, gradients and two Adam
    slots (and the clipped gradients at the update); activations kept for the backward pass plus
    the largest block's transient, or under recompute the block outputs plus the largest block's
    whole forward and backward pass.
    """
    per_float = 2 if precision == "bf16" else 4
    if component == "attention":
        return _estimate_attention_bytes(config, mode, batch_size, per_float)
    stages = _stages(config, batch_size)
    params = parameter_count(config)
    if mode == "predict":
        tensors = params * 4 + max(stage["live"] for stage in stages) * per_float
    else:
        # A recomputed (or tiled) block keeps its output for the backward pass and peaks at its
        # whole forward and backward pass; any other keeps its activations.
        recomputed = [config.recompute or stage.get("tiled", False) for stage in stages]
        kept = sum(stage["output"] if again else stage["kept"]
                   for stage, again in zip(stages, recomputed))
        transient = max(stage["cost"] if again else stage["cost"] - stage["kept"]
                        for stage, again in zip(stages, recomputed))
        # The backward pass's peak holds the weights, their gradients and Adam's two slots; the
        # clipped gradients, a fifth copy, exist only at the update, when the activations are gone.
        inputs = config.sequence_length * batch_size * 4
        tensors = max(params * 4 * 4 + (inputs + kept + transient) * per_float,
                      params * 4 * 5 + (inputs + kept) * per_float)
    return TENSOR_MARGIN * tensors + overhead_bytes(config, mode)


# One full attention layer, forward + backward, holds about this many [H, T, T] float32 tensors at
# its peak (content, relative (2T-1 wide), summed and softmaxed logits and their gradients):
# 8.7 measured at 6,144 tokens (DESIGN.md section 4).
FULL_LOGIT_COPIES = 9.0


def _sparse_scores(config: ModelConfig, tokens: int, batch: int) -> float:
    """Floats of one copy of sparse attention's logits alive at once: the global rows, and the
    middle rows, all of them up to SPARSE_UNCHUNKED_TOKENS tokens, past that one chunk of
    SPARSE_CHUNK_TOKENS query tokens (`sparse_attention`'s chunks)."""
    keys = config.window_blocks + 2 * config.num_global_blocks + config.num_random_blocks
    rows = min(tokens, SPARSE_CHUNK_TOKENS) if tokens > SPARSE_UNCHUNKED_TOKENS else tokens
    global_rows = 2 * config.num_global_blocks * config.block_size * tokens
    return config.num_heads * batch * (rows * keys * config.block_size + global_rows)


def _estimate_attention_bytes(config: ModelConfig, mode: str, batch: int, per_float: int) -> float:
    tokens, c, h = config.num_tokens, config.channels, config.num_heads
    passes = 2 if mode == "train" else 1
    projections = batch * tokens * (2 * c + 3 * h * config.key_size + 2 * c) * passes
    weights = (2 * c * h * config.key_size + 2 * c * c + config.relative_position_features * h
               * config.key_size) * 4 * (2 if mode == "train" else 1)
    copies = FULL_LOGIT_COPIES if mode == "train" else 4.0
    if config.attention == "full":
        scores = copies * h * tokens * tokens * batch
    else:
        scores = copies * _sparse_scores(config, tokens, batch)
    return weights + (projections + scores) * per_float + OVERHEAD_BYTES / 2


# ============================================================================= FLOPs
def attention_flops(config: ModelConfig, num_tokens: int, kind: str) -> float:
    """Floating-point operations of one forward pass of one attention layer (multiply-add = 2):
    the q, k, v, r_k and output projections plus the attention matmuls, relative term included,
    counting every computed slot of the sparse pattern (masked ones too)."""
    t, c, h = num_tokens, config.channels, config.num_heads
    k, v, f = config.key_size, config.value_size, config.relative_position_features
    projections = 2 * t * c * h * (k + k + v) + 2 * t * h * v * c  # q, k, v and output
    projections += 2 * (2 * t - 1) * f * h * k  # r_k of every relative distance
    if kind == "full":
        pairs = t * t
        relative = 2 * h * k * t * (2 * t - 1)
    else:
        b, g, w, r = (config.block_size, config.num_global_blocks, config.window_blocks,
                      config.num_random_blocks)
        middle_rows = t // b - 2 * g
        pairs = 2 * g * b * t + middle_rows * b * (w + 2 * g + r) * b
        relative = 2 * h * k * (
            2 * g * b * (t + g * b - 1)  # global rows: one skewed product per end
            + middle_rows * b * ((w + 1) * b - 1)  # window: one shared positional window per row
            + middle_rows * (2 * g + r) * b * (2 * b - 1))  # global and random key blocks
    return projections + 2 * h * k * pairs + 2 * h * v * pairs + relative


# ============================================================================= the child
def _status_bytes(field_name: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _allocator_stats_available(tf) -> bool:
    """TensorFlow's allocator statistics exist on a GPU, and on a CPU with oneDNN's caching
    allocator (on every x86 CPU: senformer_cli/__init__.py turns oneDNN on) or the BFC allocator
    (TF_CPU_ALLOCATOR_USE_BFC=true); with --allocator system the CPU's statistics are those of an
    unused allocator (all zero)."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and all(os.environ.get(k) == v for k, v in SYSTEM_ALLOCATOR_ENV.items()):
        return False
    device = "GPU:0" if gpus else "CPU:0"
    try:
        tf.config.experimental.get_memory_info(device)
        return True
    except ValueError:
        return False


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# Below this many channels^2 x base pairs one eager forward pass on zeros creates the variables
# faster than tracing one (tiny at 131,072 bp: 1.2e9).
EAGER_BUILD_LIMIT = 1e10


def create_variables(tf, model) -> None:
    """Create the model's variables (real initialisers): small models by one eager forward pass on
    zeros, large ones by tracing one without autograph, which the model does not need."""
    config = model.config
    spec = tf.TensorSpec([1, config.sequence_length, 4], tf.float32)
    if config.channels**2 * config.sequence_length < EAGER_BUILD_LIMIT:
        model(tf.zeros(spec.shape), is_training=False)
    else:
        tf.function(lambda x: model(x, is_training=False), autograph=False).get_concrete_function(spec)


def published_model(tf, directory: str, config: ModelConfig):
    """DeepMind's published `enformer.py` (a local copy in `directory`, beside its
    attention_module.py; not part of this project) with `config`'s width, variables created.

    Its `is_training` routing inspects signatures, which current Sonnet hides behind a
    (*args, **kwargs) wrapper, so no Sequential or Residual would get `is_training`; it is
    replaced by the equivalent test on the module's class.
    """
    import sonnet as snt

    sys.path.insert(0, str(Path(directory).resolve()))
    import attention_module  # noqa: F401  (the published package's own module)
    import enformer as published

    expected = ModelConfig.from_preset("enformer", channels=config.channels,
                                       num_transformer_layers=config.num_transformer_layers,
                                       num_heads=config.num_heads, pooling=config.pooling,
                                       sequence_length=config.sequence_length)
    if config.replace(recompute=False, tile_length=0) != expected:
        raise SenformerError("the published model has only channels, num_transformer_layers, "
                             "num_heads and pooling to set; the rest must be the enformer preset's")
    takes = (published.Sequential, published.Residual, snt.BatchNorm,
             snt.distribute.CrossReplicaBatchNorm, snt.Dropout,
             attention_module.MultiheadAttention)
    published.accepts_is_training = lambda module: isinstance(module, takes)
    model = published.Enformer(channels=config.channels,
                               num_transformer_layers=config.num_transformer_layers,
                               num_heads=config.num_heads, pooling_type=config.pooling)
    spec = tf.TensorSpec([1, config.sequence_length, 4], tf.float32)
    tf.function(lambda x: model(x, is_training=False), autograph=False).get_concrete_function(spec)
    return model


def _model_step(tf, spec: dict[str, Any], config: ModelConfig):
    from senformer_cli.model import build_model
    from senformer_cli.training import Adam, clipped_update

    batch, mode = spec["batch_size"], spec["mode"]
    if spec.get("published_dir"):
        model = published_model(tf, spec["published_dir"], config)
    else:
        model = build_model(config)
        create_variables(tf, model)
    dtype = tf.bfloat16 if spec["precision"] == "bf16" else tf.float32
    casting = functools.partial(mixed_precision, spec["precision"])
    bases = tf.random.stateless_uniform([batch, config.sequence_length], (1, 2), maxval=4,
                                        dtype=tf.int32)
    inputs = tf.one_hot(bases, 4, dtype=dtype)
    if mode == "predict":
        @functools.partial(tf.function, autograph=False)
        def step() -> tf.Tensor:
            with casting():
                outputs = model(inputs, is_training=False)
            return tf.add_n([tf.reduce_sum(tf.cast(out, tf.float32)) for out in outputs.values()])
        return step

    head = next(iter(config.heads))
    targets = tf.random.stateless_uniform([batch, config.target_length, config.heads[head]], (3, 4))
    variables = [v for v in model.trainable_variables
                 if "/heads/" not in v.name or f"/head_{head}/" in v.name]
    recipe = TrainConfig()
    optimizer = Adam(variables, recipe.beta1, recipe.beta2, recipe.epsilon)

    @functools.partial(tf.function, autograph=False)
    def step() -> tf.Tensor:
        with casting():
            with tf.GradientTape() as tape:
                predictions = tf.cast(model(inputs, is_training=True)[head], tf.float32)
                loss = tf.reduce_mean(predictions - targets * tf.math.log(predictions + POISSON_EPSILON))
        gradients = tape.gradient(loss, variables)
        clipped_update(optimizer, gradients, variables, loss, CLIP_NORM, LEARNING_RATE, 1)
        return loss
    return step


def published_attention(directory: str, config: ModelConfig):
    """DeepMind's published `attention_module.MultiheadAttention` (a local copy in `directory`;
    not part of this project) with the settings the published Enformer gives it."""
    sys.path.insert(0, str(Path(directory).resolve()))
    import attention_module

    return attention_module.MultiheadAttention(
        value_size=config.value_size, key_size=config.key_size, num_heads=config.num_heads,
        scaling=True, attention_dropout_rate=config.attention_dropout_rate,
        relative_positions=True, relative_position_symmetric=False,
        relative_position_functions=["positional_features_exponential",
                                     "positional_features_central_mask",
                                     "positional_features_gamma"],
        num_relative_position_features=config.relative_position_features,
        positional_dropout_rate=config.positional_dropout_rate, zero_initialize=True)


def _attention_step(tf, spec: dict[str, Any], config: ModelConfig):
    from senformer_cli.model.attention import MultiheadAttention

    tokens, batch = config.num_tokens, spec["batch_size"]
    kwargs = dict(value_size=config.value_size, key_size=config.key_size, num_heads=config.num_heads,
                  num_relative_position_features=config.relative_position_features,
                  attention_dropout_rate=config.attention_dropout_rate,
                  positional_dropout_rate=config.positional_dropout_rate)
    if spec.get("published_dir"):
        layer = published_attention(spec["published_dir"], config)
    elif config.attention == "sparse":
        from senformer_cli.model.sparse_attention import SparseMultiheadAttention

        layer = SparseMultiheadAttention(
            **kwargs, block_size=config.block_size, num_random_blocks=config.num_random_blocks,
            window_blocks=config.window_blocks, num_global_blocks=config.num_global_blocks,
            num_tokens=tokens, seed=(config.random_seed, 0))
    else:
        layer = MultiheadAttention(**kwargs)
    dtype = tf.bfloat16 if spec["precision"] == "bf16" else tf.float32
    inputs = tf.cast(tf.random.stateless_normal([batch, tokens, config.channels], seed=(1, 2)), dtype)
    upstream = tf.cast(tf.random.stateless_normal([batch, tokens, config.channels], seed=(3, 4)), dtype)
    layer(tf.cast(inputs, tf.float32), is_training=False)  # create the (float32) variables
    casting = functools.partial(mixed_precision, spec["precision"])

    if spec["mode"] == "predict":
        @functools.partial(tf.function, autograph=False)
        def step() -> tf.Tensor:
            with casting():
                return tf.reduce_sum(tf.cast(layer(inputs, is_training=False), tf.float32))
        return step

    @functools.partial(tf.function, autograph=False)
    def step() -> tf.Tensor:
        with casting():
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(tf.cast(layer(inputs, is_training=False) * upstream, tf.float32))
        gradients = tape.gradient(loss, [inputs] + list(layer.trainable_variables))
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in gradients])  # uses every one
    return step


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process (the child); returns its measurements.

    `spec`: config (ModelConfig dict), mode, batch_size, steps, warmup, precision, component,
    optional seconds (then the number of timed steps adapts: about `seconds` of timing, between
    3 and `steps` steps).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import senformer_cli.model  # noqa: F401  (imported before the baseline)

    config = ModelConfig.from_dict(spec["config"])
    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU:0" if gpus else "CPU"
    baseline = 0 if gpus else _status_bytes("VmRSS")
    _emit({"event": "baseline", "baseline_bytes": baseline})
    result: dict[str, Any] = {"event": "result", "device": device, "baseline_bytes": baseline}
    try:
        build_start = time.perf_counter()
        make = _attention_step if spec["component"] == "attention" else _model_step
        step = make(tf, spec, config)
        warmup_seconds = []
        for _ in range(max(1, spec["warmup"])):
            start = time.perf_counter()
            step().numpy()
            warmup_seconds.append(time.perf_counter() - start)
        result["build_seconds"] = time.perf_counter() - build_start - sum(warmup_seconds)
        result["warmup_seconds"] = warmup_seconds
        num_steps = spec["steps"]  # 0: memory only, the warm-up steps are the measurement
        if spec.get("seconds") and num_steps:
            num_steps = max(3, min(num_steps, int(spec["seconds"] / max(warmup_seconds[-1], 1e-3))))
        allocator_stats = _allocator_stats_available(tf)
        allocator_device = "GPU:0" if gpus else "CPU:0"
        if allocator_stats and num_steps:
            tf.config.experimental.reset_memory_stats(allocator_device)
        if not gpus:
            result["warmup_peak_bytes"] = _status_bytes("VmHWM") - baseline
            result["peak_reset"] = bool(num_steps) and _reset_peak_rss()
        times = [] if num_steps else list(warmup_seconds)
        for _ in range(num_steps):
            start = time.perf_counter()
            step().numpy()
            times.append(time.perf_counter() - start)
    except tf.errors.ResourceExhaustedError as error:
        result.update(status="out of memory", reason=str(error.message).splitlines()[0][:300])
        return result
    if allocator_stats:
        result["allocator_peak_bytes"] = int(
            tf.config.experimental.get_memory_info(allocator_device)["peak"])
    if gpus:
        result["peak_memory_bytes"] = result["allocator_peak_bytes"]
    else:
        result["peak_memory_bytes"] = _status_bytes("VmHWM") - baseline
    median = statistics.median(times)
    result.update(status="ok", steps=num_steps, seconds_per_step=median, seconds_min=min(times),
                  seconds_max=max(times), spread=(max(times) - min(times)) / median if median else 0.0,
                  step_seconds=times)
    return result


def _child_main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "--child":
        sys.stderr.write("usage: python -m senformer_cli.profiling --child '<json spec>'\n")
        return 2
    _emit(measure(json.loads(argv[1])))
    return 0


# ============================================================================= the parent
@dataclass
class ProfileRequest:
    """What `senformer profile` measures: each attention kind applied to `base`, at each length."""

    base: ModelConfig
    base_name: str
    attention: list[str] = field(default_factory=lambda: ["full", "sparse"])
    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    mode: str = "train"
    batch_size: int = 1
    steps: int = 3
    warmup: int = 2
    component: str = "model"
    precision: str = "fp32"
    max_memory_bytes: int | None = None
    timeout_seconds: float | None = None
    seconds: float | None = None  # adaptive number of timed steps (benchmarks/attention.py)
    allocator: str = "tensorflow"  # ALLOCATORS
    notes: list[str] = field(default_factory=list)


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def make_request(*, preset: str | None = None, config_file: Path | None = None,
                 overrides: dict[str, Any] | None = None, attention: str = "full,sparse",
                 lengths: str | None = None, mode: str = "train", batch_size: int = 1,
                 steps: int = 3, warmup: int = 2, component: str = "model", precision: str = "fp32",
                 max_memory: str | None = None, timeout_seconds: float | None = None,
                 allocator: str = "tensorflow", gpu: bool | None = None) -> ProfileRequest:
    """Validate the options of `senformer profile` into a request (SenformerError on bad input)."""
    overrides = dict(overrides or {})
    kinds = parse_attention_kinds(attention)
    if mode not in MODES:
        raise SenformerError(f"--mode '{mode}': choose train or predict")
    if component not in COMPONENTS:
        raise SenformerError(f"--component '{component}': choose model or attention")
    if precision not in PRECISIONS:
        raise SenformerError(f"--precision '{precision}': choose fp32 or bf16")
    if allocator not in ALLOCATORS:
        raise SenformerError(f"--allocator '{allocator}': choose {' or '.join(ALLOCATORS)}")
    for name, value, least in (("--batch-size", batch_size, 1), ("--steps", steps, 0),
                               ("--warmup", warmup, 1)):
        if value < least:
            raise SenformerError(f"{name} {value}: must be at least {least}")
    notes = []
    if steps == 0:
        notes.append("--steps 0: no timed steps; each row's peak memory and step time are those of "
                     "the warm-up steps, tracing included (for lengths where a step takes minutes)")
    limit = parse_memory(max_memory) if max_memory is not None else None
    if preset is None and config_file is None:
        if gpu if gpu is not None else gpu_available():
            preset = "enformer"
        else:
            preset = CPU_DEFAULT_PRESET
            if lengths is None:
                lengths = ",".join(str(length) for length in CPU_DEFAULT_LENGTHS)
                notes.append(f"no --preset on a CPU: profiling the tiny width (96 channels, 2 layers) "
                             f"at {CPU_DEFAULT_LENGTHS[0]:,}-{CPU_DEFAULT_LENGTHS[-1]:,} bp so it "
                             f"finishes in under 5 minutes; --preset enformer for the published width")
    if config_file is not None:
        base = ModelConfig.load(config_file).replace(**overrides)
        base_name = str(config_file)
    else:
        base = ModelConfig.from_preset(preset, **overrides)
        base_name = preset
    length_list = parse_int_list(lengths, "--lengths") if lengths is not None else list(DEFAULT_LENGTHS)
    check_lengths(base, kinds, length_list)
    if limit is None and not (gpu if gpu is not None else gpu_available()):
        limit = int(0.9 * available_memory_bytes()) or None
        if limit:
            notes.append(f"--max-memory not given: {format_bytes(limit)} (90% of the memory "
                         f"available now)")
    return ProfileRequest(base=base, base_name=base_name, attention=kinds, lengths=length_list,
                          mode=mode, batch_size=batch_size, steps=steps, warmup=warmup,
                          component=component, precision=precision, max_memory_bytes=limit,
                          timeout_seconds=timeout_seconds, allocator=allocator, notes=notes)


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def run_child(spec: dict[str, Any], *, limit_bytes: int | None = None,
              timeout_seconds: float | None = None, poll_seconds: float = 0.05) -> dict[str, Any]:
    """Run `measure(spec)` in a fresh Python process; its result, or a row saying why there is none.

    On a CPU the parent polls the child's resident memory and stops it once it exceeds its
    baseline + `limit_bytes`.
    """
    command = [sys.executable, "-m", "senformer_cli.profiling", "--child", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if spec.get("allocator", "tensorflow") == "system":
        env.update(SYSTEM_ALLOCATOR_ENV)
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        reader = threading.Thread(target=_read_lines, args=(child.stdout, lines), daemon=True)
        reader.start()
        start, baseline, peak_seen, stopped = time.monotonic(), None, 0, None
        while child.poll() is None:
            if baseline is None:
                for line in list(lines):
                    if '"baseline"' in line:
                        baseline = json.loads(line)["baseline_bytes"]
            try:
                rss = _status_bytes("VmRSS", child.pid)
            except (OSError, RuntimeError, ValueError):
                rss = 0
            peak_seen = max(peak_seen, rss - (baseline or 0))
            if limit_bytes is not None and baseline and rss - baseline > limit_bytes:
                stopped = (f"out of memory: went over --max-memory {format_bytes(limit_bytes)} "
                           f"(stopped at {format_bytes(rss - baseline)})")
            elif timeout_seconds and time.monotonic() - start > timeout_seconds:
                stopped = f"timed out after {timeout_seconds:.0f} s"
            if stopped:
                child.send_signal(signal.SIGKILL)
                child.wait()
                break
            time.sleep(poll_seconds)
        reader.join(timeout=5)
        stderr.seek(0)
        error_text = stderr.read()
    if stopped:
        status = "out of memory" if stopped.startswith("out of memory") else "timed out"
        return {"status": status, "reason": stopped}
    results = [json.loads(line) for line in lines if '"event": "result"' in line]
    if child.returncode == 0 and results:
        return results[-1]
    if child.returncode in (-signal.SIGKILL, 137) or "MemoryError" in error_text \
            or "ResourceExhausted" in error_text or "std::bad_alloc" in error_text:
        return {"status": "out of memory",
                "reason": f"killed (exit {child.returncode}) at about {format_bytes(peak_seen)}"}
    tail = (error_text.strip().splitlines() or ["no output"])[-1]
    return {"status": "failed", "reason": f"exit {child.returncode}: {tail[:300]}"}


def model_name(kind: str) -> str:
    return MODEL_NAMES[kind]


def measure_in_child(request: ProfileRequest, config: ModelConfig, **extra: Any) -> dict[str, Any]:
    """One configuration measured as `request` says, in a fresh process (`extra`: more spec keys,
    e.g. `published_dir` for the published code)."""
    spec = {"config": config.to_dict(), "mode": request.mode, "batch_size": request.batch_size,
            "steps": request.steps, "warmup": request.warmup, "precision": request.precision,
            "component": request.component, "seconds": request.seconds,
            "allocator": request.allocator, **extra}
    measured = run_child(spec, limit_bytes=request.max_memory_bytes,
                         timeout_seconds=request.timeout_seconds)
    measured.pop("event", None)
    return measured


def profile(request: ProfileRequest, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Measure every (attention kind, length) of `request`; returns the rows and a summary.

    `progress(done, total, label)` is called before each configuration and once at the end.
    """
    plan = [(length, kind) for length in request.lengths for kind in request.attention]
    rows: list[dict[str, Any]] = []
    for index, (length, kind) in enumerate(plan):
        config = config_for(request.base, kind, length)
        label = f"{model_name(kind)} {length:,} bp"
        if progress:
            progress(index, len(plan), label)
        row: dict[str, Any] = {
            "model": model_name(kind), "attention": kind, "sequence_length_bp": length,
            "num_tokens": config.num_tokens, "mode": request.mode, "batch_size": request.batch_size,
            "component": request.component, "precision": request.precision,
            "recompute": config.recompute, "allocator": request.allocator,
            "estimated_peak_bytes": int(estimate_peak_bytes(config, request.mode, request.batch_size,
                                                            request.precision, request.component))}
        if request.component == "attention":
            row["flops"] = attention_flops(config, config.num_tokens, kind)
        limit = request.max_memory_bytes
        if limit is not None and row["estimated_peak_bytes"] > limit:
            row.update(status="skipped",
                       reason=f"skipped: estimated {format_bytes(row['estimated_peak_bytes'])} > "
                              f"limit {format_bytes(limit)}")
        else:
            row.update(measure_in_child(request, config))
        rows.append(row)
    if progress:
        progress(len(plan), len(plan), "done")
    _add_ratios(rows)
    return {
        "base": request.base_name,
        "base_config": request.base.to_dict(),
        "component": request.component,
        "mode": request.mode,
        "batch_size": request.batch_size,
        "precision": request.precision,
        "allocator": request.allocator,
        "steps": request.steps,
        "warmup": request.warmup,
        "max_memory_bytes": request.max_memory_bytes,
        "machine": machine_description(),
        "notes": list(request.notes),
        "longest_fitting": longest_fitting(rows, request.max_memory_bytes),
        "rows": rows,
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """sparse / full time and memory at each length, on the sparse row."""
    full = {row["sequence_length_bp"]: row for row in rows
            if row["attention"] == "full" and row.get("status") == "ok"}
    for row in rows:
        reference = full.get(row["sequence_length_bp"])
        if row["attention"] == "sparse" and row.get("status") == "ok" and reference:
            row["time_ratio"] = row["seconds_per_step"] / reference["seconds_per_step"]
            if reference["peak_memory_bytes"] > 0:
                row["memory_ratio"] = row["peak_memory_bytes"] / reference["peak_memory_bytes"]


def longest_fitting(rows: list[dict[str, Any]], limit: int | None) -> dict[str, int | None]:
    """Per model, the longest length that ran with its peak under `limit` (None: none did)."""
    result: dict[str, int | None] = {}
    for row in rows:
        result.setdefault(row["model"], None)
        fits = row.get("status") == "ok" and (limit is None or row["peak_memory_bytes"] <= limit)
        if fits and (result[row["model"]] or 0) < row["sequence_length_bp"]:
            result[row["model"]] = row["sequence_length_bp"]
    return result


def machine_description() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "memory_total_bytes": host.memory_total_bytes(),
            "cpu_model": host.cpu_model()}


# ============================================================================= outputs
CSV_COLUMNS = ("model", "attention", "sequence_length_bp", "num_tokens", "mode", "batch_size",
               "component", "precision", "recompute", "status", "seconds_per_step", "seconds_min",
               "seconds_max", "spread", "steps", "peak_memory_bytes", "estimated_peak_bytes",
               "time_ratio", "memory_ratio", "device", "allocator", "reason")


def rows_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in CSV_COLUMNS})
    return buffer.getvalue()


def check_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """SenformerError unless `out_dir` can be written: absent, empty, or `overwrite`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SenformerError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise SenformerError(f"--out {out_dir}: directory is not empty (add --overwrite to replace it)")


def write_outputs(result: dict[str, Any], out_dir: Path, overwrite: bool = False) -> list[Path]:
    """profile.csv, profile.json and profile.png in `out_dir`, the directory replaced atomically.
    A directory holding files is refused unless `overwrite`."""
    from senformer_cli.fileio import atomic_path
    from senformer_cli.plots_profile import plot_profile

    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    names = ["profile.csv", "profile.json", "profile.png"]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "profile.csv").write_text(rows_csv(result["rows"]))
        (tmp / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_profile(result, tmp / "profile.png")
    return [out_dir / name for name in names]


def main() -> None:
    raise SystemExit(_child_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
