"""`senformer model summary`: parameters per part of a configured model, and its attention pattern.

Parameter counts come from the variables the actual modules create, not from a formula. Creating
the published model's 251M parameters the usual way (`build_model(config, create_variables=True)`,
about 35 s here) spends most of its time in autograph and in the random initialisers and their
lifting out of the trace. Here the model is traced without autograph and each variable is created
eagerly, outside the trace, zero-filled, with the name, shape, dtype and trainability the module
asks for (about 13 s). Small models (the tiny preset) are instead run once eagerly on zeros, which
is faster than tracing them. Only the initial values differ; the model is thrown away after counting.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model.enformer import Enformer

# Parts of `Enformer.trunk.layers`, in order; the crop (index 3) has no variables.
TRUNK_PARTS = {"stem": 0, "conv tower": 1, "transformer": 2, "final pointwise": 4}


def _zeros_creator(next_creator, **kwargs):
    """Create a variable eagerly, filled with zeros instead of its (slow) initial value.

    Only variables created while tracing come here; every module that builds its variables in its
    constructor (the sparse attention's random-block table) keeps its real values.
    """
    initial_value = kwargs.get("initial_value")
    shape = tf.TensorShape(kwargs.get("shape") or getattr(initial_value, "shape", None))
    dtype = tf.as_dtype(kwargs.get("dtype") or initial_value.dtype)
    if not shape.is_fully_defined():
        raise AssertionError(f"variable {kwargs.get('name')} has no static shape")
    with tf.init_scope():
        kwargs["initial_value"] = tf.zeros(shape, dtype)
        return next_creator(**kwargs)


# Below this many channels^2 x base pairs, running one forward pass eagerly on zeros is faster
# than tracing it (the tiny preset: 3e8, 0.5 s eager against 6 s traced; `small`: 2e10).
EAGER_COST_LIMIT = 1e9


def build_for_counting(config: ModelConfig) -> Enformer:
    """The model of `config` with every variable created (zero-filled).

    Traces one forward pass on `[1, sequence_length, 4]` without computing it, or, for small
    models, runs it on zeros.
    """
    model = Enformer(config)
    spec = tf.TensorSpec([1, config.sequence_length, 4], tf.float32)

    def forward(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.variable_creator_scope(_zeros_creator):
            return model(inputs, is_training=False)

    if config.channels**2 * config.sequence_length < EAGER_COST_LIMIT:
        forward(tf.zeros(spec.shape, spec.dtype))
    else:
        tf.function(forward, autograph=False).get_concrete_function(spec)
    return model


def count_variables(variables: Iterable[tf.Variable]) -> dict[str, int]:
    """{'parameters': trainable elements, 'non_trainable': other elements, 'variables': count}."""
    trainable = non_trainable = count = 0
    for variable in variables:
        size = int(variable.shape.num_elements())
        count += 1
        if variable.trainable:
            trainable += size
        else:
            non_trainable += size
    return {"parameters": trainable, "non_trainable": non_trainable, "variables": count}


def attention_pattern(config: ModelConfig) -> dict[str, Any]:
    """What one head of one sparse attention layer attends to, from the configuration alone.

    Follows `SparseMultiheadAttention`'s pattern without building it: the first and last
    `num_global_blocks` blocks attend to all n blocks; a middle block i attends to its window
    clipped to the middle blocks (a window slot on a global block is the global slot, counted once),
    the 2g global blocks, and min(r, eligible) random middle blocks outside its window.
    """
    n, b, g = config.num_blocks, config.block_size, config.num_global_blocks
    half, r = config.window_blocks // 2, config.num_random_blocks
    num_tokens = config.num_tokens
    middle = np.arange(g, n - g)
    window = np.minimum(middle + half, n - g - 1) - np.maximum(middle - half, g) + 1
    eligible = (n - 2 * g) - window
    blocks_per_middle_row = window + 2 * g + np.minimum(r, eligible)  # [n - 2g]
    attended_blocks = 2 * g * n + int(blocks_per_middle_row.sum())
    attended_pairs = attended_blocks * b * b
    return {
        "num_tokens": num_tokens,
        "num_blocks": n,
        "block_size": b,
        "window_blocks": config.window_blocks,
        "num_random_blocks": r,
        "num_global_blocks": g,
        "keys_per_middle_query": (config.window_blocks + 2 * g + r) * b,
        "mean_keys_per_query": attended_pairs / num_tokens,
        "fraction_of_full": attended_pairs / num_tokens**2,
        "attended_pairs": attended_pairs,
    }


def describe(config: ModelConfig) -> str:
    """A short name for the configuration: the preset it equals, else what it resembles."""
    from senformer_cli.config import PRESETS

    for name in PRESETS:
        if ModelConfig.from_preset(name) == config:
            return {"enformer": "Enformer (published)",
                    "s-enformer": "S-Enformer (Enformer + BigBird sparse attention)",
                    "small": "Enformer, small (published training notebook)",
                    "tiny": "tiny S-Enformer (CPU tests and demo)"}.get(name, name)
    kind = "S-Enformer" if config.attention == "sparse" else "Enformer"
    return f"custom {kind}"


def summarize(config: ModelConfig) -> dict[str, Any]:
    """Parameters per part (stem, conv tower, transformer, final pointwise, heads, total) and,
    for sparse attention, the attention pattern. Plain JSON-able data."""
    model = build_for_counting(config)
    parts: list[dict[str, Any]] = []
    for part, index in TRUNK_PARTS.items():
        parts.append({"part": part, **count_variables(model.trunk.layers[index].variables)})
    for head, module in model.heads.items():
        parts.append({"part": f"head {head}", **count_variables(module.variables)})
    total = count_variables(model.variables)
    _check_parts_cover(parts, total)
    parts.append({"part": "total", **total})
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "preset_description": describe(config),
        "parts": parts,
    }
    if config.attention == "sparse":
        summary["attention_pattern"] = attention_pattern(config)
    return summary


def _check_parts_cover(parts: Sequence[dict[str, Any]], total: dict[str, int]) -> None:
    for key in ("parameters", "non_trainable", "variables"):
        if sum(part[key] for part in parts) != total[key]:
            raise AssertionError(f"parts do not add up to the model's {key}: a part is missing")
