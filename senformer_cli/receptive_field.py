"""How far one base change reaches: the S-Enformer report's mutation experiment, done exactly.

For P positions evenly spaced over the input (ends included) and R repeats each, a random DNA
sequence of the model's input length is drawn, the base at the position is changed to one of the
three other bases (uniformly), and the reference and the mutant are predicted in the same batch.
The effect at an output bin is the mean over repeats and tracks of |mutant - reference|.

Beside the measurement, the *theoretical* receptive field is computed from the architecture itself
(the convolution widths and pooling sizes read off the built model, the crop, and the attention
pattern of every transformer layer), and the float32 noise floor is measured: the largest change
that round-off alone gives when the same sequence is predicted at another position of the batch,
and at least 4 float32 ulps of the largest output. An effect counts as "reached" only above it.

All randomness comes from one `numpy.random.Generator` seeded with `seed`, drawn one repeat at a
time (sequence, then the substitution), so the numbers do not depend on the batch size, and every
model sees the same sequences and mutations.
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from senformer_cli.errors import SenformerError

DEFAULT_RUNS = (("Enformer", Path("runs/tiny-full"), "full"), ("S-Enformer", Path("runs/tiny"), "sparse"))
WHERE = ("left flank", "inside", "right flank")
# Batches per model whose sequences are predicted a second time, rolled by one place in the batch,
# to measure the round-off floor (spread over the positions; ~1% of the batches by default).
NOISE_BATCHES = 2
# The floor is never below this many float32 ulps of the largest output: matmul kernels may round
# a batch's last rows differently, which a one-row roll of a few batches need not meet.
FLOOR_ULPS = 4
ProgressFn = Callable[[int, int], None]


# ============================================================================ theoretical field
@dataclass(frozen=True)
class SpatialOp:
    """One operation of the stem or conv tower along the sequence: a stride-1 convolution of
    `width` (SAME padding, `left` positions padded before) or a pooling by `size`."""

    kind: str  # "conv" | "pool"
    width: int = 1
    left: int = 0
    size: int = 1


def spatial_ops(model) -> list[SpatialOp]:
    """The stem and conv tower of `model` as a list of convolutions and poolings, read from the
    modules themselves (their kernel widths, padding and pool sizes), in order.

    A Residual adds its input back, so its reach is that of its inner convolutions (which contain
    the identity's). Point-wise layers (batch norm, GELU, width-1 convolutions) are left out.
    """
    import sonnet as snt

    from senformer_cli.model.layers import MaxPooling1D, Residual, Sequential, SoftmaxPooling1D

    ops: list[SpatialOp] = []

    def walk(layer, inside_residual: bool) -> None:
        if isinstance(layer, Sequential):
            for child in layer.layers:
                walk(child, inside_residual)
        elif isinstance(layer, Residual):
            walk(layer._module, True)
        elif isinstance(layer, snt.Conv1D):
            width = layer.kernel_shape
            width = int(width[0] if isinstance(width, (tuple, list)) else width)
            stride = layer.stride[0] if isinstance(layer.stride, (tuple, list)) else layer.stride
            rate = layer.rate[0] if isinstance(layer.rate, (tuple, list)) else layer.rate
            if stride != 1 or rate != 1 or layer.conv_padding != "SAME":
                raise ValueError(f"{layer.name}: only stride-1, undilated SAME convolutions are "
                                 "supported by the receptive-field calculation")
            if width > 1:
                ops.append(SpatialOp("conv", width=width, left=(width - 1) // 2))
        elif isinstance(layer, (SoftmaxPooling1D, MaxPooling1D)):
            if inside_residual:
                raise ValueError("pooling inside a residual block")
            ops.append(SpatialOp("pool", size=int(layer._pool_size)))
        elif isinstance(layer, (snt.BatchNorm, snt.distribute.CrossReplicaBatchNorm, snt.Dropout)) \
                or callable(layer) and not isinstance(layer, snt.Module):
            return  # point-wise along the sequence
        else:
            raise ValueError(f"receptive field: unknown layer {layer!r} in the conv tower")

    stem, conv_tower = model.trunk.layers[0], model.trunk.layers[1]
    walk(stem, False)
    walk(conv_tower, False)
    return ops


def forward_reach(ops: Sequence[SpatialOp], length: int, first: int, last: int
                  ) -> tuple[int, int]:
    """Positions [first, last] of the input (length `length`) -> the output positions of `ops` whose
    value can change when those inputs change (inclusive interval)."""
    for op in ops:
        if op.kind == "conv":
            # Output i reads inputs i - left .. i - left + width - 1 (zero padding beyond the ends).
            right = op.width - 1 - op.left
            first, last = max(first - right, 0), min(last + op.left, length - 1)
        else:
            length //= op.size
            first, last = first // op.size, min(last // op.size, length - 1)
    return first, last


def backward_span(ops: Sequence[SpatialOp], length: int, first: int, last: int
                  ) -> tuple[int, int]:
    """Output positions [first, last] of `ops` -> the input positions they read (ignoring the
    sequence ends), the receptive field of those outputs in input coordinates."""
    for op in reversed(ops):
        if op.kind == "conv":
            first, last = first - op.left, last + (op.width - 1 - op.left)
        else:
            first, last = first * op.size, last * op.size + op.size - 1
    return first, last


def attention_reach(model) -> list[np.ndarray]:
    """Per transformer layer, which query tokens read which key tokens: bool [T, T] (any head).

    Full attention reads every token; sparse attention its block pattern (window, global and the
    layer's random blocks, read from the model's own random-block table)."""
    from senformer_cli.model.sparse_attention import SparseMultiheadAttention

    config = model.config
    reach = []
    for layer in model.attention_layers():
        if isinstance(layer, SparseMultiheadAttention):
            reach.append(layer.pattern_mask().any(axis=0))
        else:
            reach.append(np.ones((config.num_tokens, config.num_tokens), bool))
    return reach


@dataclass
class TheoreticalField:
    """What the architecture allows, per mutated position."""

    conv_tokens: tuple[int, int]  # tokens the conv tower can change (inclusive)
    conv_bins: tuple[int, int] | None  # the same in output bins (None: all in the cropped flanks)
    bins: np.ndarray  # bool [target_length]: bins the whole model can change


class FieldCalculator:
    """The theoretical receptive field of one model, from its modules."""

    def __init__(self, model):
        config = model.config
        self.config = config
        self.ops = spatial_ops(model)
        self.attention = attention_reach(model)
        self.crop_tokens = (config.num_tokens - config.target_length) // 2
        downsampling = math.prod(op.size for op in self.ops if op.kind == "pool")
        if downsampling != config.bin_size:
            raise ValueError(f"the conv tower pools by {downsampling}, the config says bins of "
                             f"{config.bin_size} bp")

    @property
    def window_bp(self) -> tuple[int, int]:
        """The output window [start, end) in input bp."""
        bin_size = self.config.bin_size
        return (self.crop_tokens * bin_size,
                (self.crop_tokens + self.config.target_length) * bin_size)

    def where(self, position_bp: int) -> str:
        start, end = self.window_bp
        return WHERE[0] if position_bp < start else WHERE[1] if position_bp < end else WHERE[2]

    def bin_centres_bp(self) -> np.ndarray:
        """Centre of each output bin in input coordinates (bp, float)."""
        bin_size = self.config.bin_size
        return (self.crop_tokens + np.arange(self.config.target_length)) * bin_size + bin_size / 2

    def token_span_bp(self) -> dict[str, int]:
        """The input one conv-tower token (away from the sequence ends) reads: its own bin plus
        `left_bp` before and `right_bp` after it."""
        token = self.config.num_tokens // 2
        first, last = backward_span(self.ops, self.config.sequence_length, token, token)
        bin_size = self.config.bin_size
        return {"bin_bp": bin_size, "left_bp": token * bin_size - first,
                "right_bp": last - (token * bin_size + bin_size - 1), "width_bp": last - first + 1}

    def field(self, position_bp: int) -> TheoreticalField:
        config = self.config
        first, last = forward_reach(self.ops, config.sequence_length, position_bp, position_bp)
        tokens = np.zeros(config.num_tokens, bool)
        tokens[first:last + 1] = True
        for reach in self.attention:  # layer norm and MLP are point-wise; attention spreads
            tokens = tokens | reach[:, tokens].any(axis=1)
        bins = tokens[self.crop_tokens:self.crop_tokens + config.target_length]
        lo, hi = first - self.crop_tokens, last - self.crop_tokens
        conv_bins = None
        if hi >= 0 and lo < config.target_length:
            conv_bins = (max(lo, 0), min(hi, config.target_length - 1))
        return TheoreticalField((first, last), conv_bins, bins)

    def statement(self) -> str:
        """One line: the conv tower's field of a bin, and how far attention carries a change."""
        span = self.token_span_bp()
        attention = self.attention_statement()
        return (f"conv tower: each output bin reads its {span['bin_bp']} bp plus {span['left_bp']:,} bp "
                f"to the left and {span['right_bp']:,} bp to the right ({span['width_bp']:,} bp); "
                f"{attention}")

    def attention_statement(self) -> str:
        num_tokens = self.config.num_tokens
        reads = np.eye(num_tokens, dtype=bool)  # [i, j]: token i depends on input token j
        for depth, reach in enumerate(self.attention, start=1):
            if reach.all():
                reads[:] = True
            else:  # float32 products of 0/1 counts are exact far beyond these sizes (BLAS: fast)
                reads |= reach.astype(np.float32) @ reads.astype(np.float32) > 0
            if reads.all():
                layers = "1 attention layer" if depth == 1 else f"{depth} attention layers"
                return (f"attention: every token reads the whole {self.config.sequence_length:,}-bp "
                        f"input after {layers}, so every output bin can change")
        return (f"attention: after {len(self.attention)} layer(s) a token reads "
                f"{reads.sum(axis=1).min()}..{reads.sum(axis=1).max()} of the {num_tokens} tokens")


# ============================================================================ positions, tracks
def evenly_spaced_positions(sequence_length: int, count: int) -> list[int]:
    """`count` positions over [0, sequence_length), both ends included (one: the centre)."""
    if count < 1:
        raise SenformerError(f"--positions {count}: need at least one position")
    if count == 1:
        return [sequence_length // 2]
    if count > sequence_length:
        raise SenformerError(f"--positions {count}: more than the {sequence_length:,} bases of the input")
    return [int(p) for p in np.round(np.linspace(0, sequence_length - 1, count)).astype(np.int64)]


def check_positions(positions: Sequence[int], sequence_length: int) -> list[int]:
    for p in positions:
        if not 0 <= p < sequence_length:
            raise SenformerError(f"--position {p}: outside the {sequence_length:,}-bp input "
                                 f"(0..{sequence_length - 1:,})")
    return list(dict.fromkeys(int(p) for p in positions))  # each once, in the order given


def parse_tracks(tracks: str, num_tracks: int, track_types: Sequence[str] | None,
                 head: str) -> tuple[list[int], str]:
    """`all`, a track type (needs the targets sheet's types) or indexes `0,3,5-7` -> (sorted
    indexes, label)."""
    from senformer_cli.data.targets import TRACK_TYPE_LABELS, TRACK_TYPES

    text = tracks.strip()
    if text.lower() == "all":
        return list(range(num_tracks)), "all"
    aliases = {name: name for name in TRACK_TYPES} | {
        label.lower(): name for name, label in TRACK_TYPE_LABELS.items()}
    kind = aliases.get(text.lower())
    if kind is not None:
        if track_types is None:
            raise SenformerError(f"--tracks {tracks}: no targets sheet gives head '{head}' track "
                                 "types (give --data DIR with a targets sheet, or use all / indexes)")
        chosen = [i for i, t in enumerate(track_types) if t == kind]
        if not chosen:
            raise SenformerError(f"--tracks {tracks}: head '{head}' has no {TRACK_TYPE_LABELS[kind]} tracks")
        return chosen, TRACK_TYPE_LABELS[kind]
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            names = ", ".join(TRACK_TYPES)
            raise SenformerError(f"--tracks {tracks}: not 'all', a track type ({names}) or track "
                                 "indexes like 0,3,5-7") from None
        if first > last or first < 0 or last >= num_tracks:
            raise SenformerError(f"--tracks {tracks}: '{part}' is outside head '{head}''s tracks "
                                 f"0..{num_tracks - 1}")
        chosen.update(range(first, last + 1))
    return sorted(chosen), f"tracks {text}"


def targets_sheet_types(data: Path | None, spec: str | None, head: str,
                        num_tracks: int) -> list[str] | None:
    """Track types of `head` from a targets sheet: `data` (a Basenji data directory, or a folder
    holding `<head>/`), else a run directory's training data (RUN/config.json 'train'); None where
    there is no sheet."""
    from senformer_cli.data.basenji import find_targets_sheet
    from senformer_cli.data.targets import read_targets

    candidates: list[Path] = []
    if data is not None:
        data = Path(data)
        if not data.is_dir():
            raise SenformerError(f"--data {data}: no such directory")
        candidates += [data / head, data]
    elif spec is not None:
        candidates += _run_data_dirs(Path(spec), head)
    for folder in candidates:
        try:
            sheet_path = find_targets_sheet(folder)
        except SenformerError:
            continue
        sheet = read_targets(sheet_path)
        if len(sheet) != num_tracks:
            if data is not None:
                raise SenformerError(f"{sheet_path}: {len(sheet)} tracks, head '{head}' has {num_tracks}")
            continue
        return list(sheet["track_type"])
    if data is not None:
        raise SenformerError(f"--data {data}: no targets sheet (targets.txt) for head '{head}' "
                             f"in {data / head} or {data}")
    return None


def _run_data_dirs(spec: Path, head: str) -> list[Path]:
    """The data directory of `head` that a run was trained on (RUN/config.json 'train' 'data':
    {head: directory}), as given (relative to the working directory) and relative to the run;
    `spec` may be the run or one of its checkpoints."""
    run = spec
    while not (run / "config.json").is_file():
        if run == run.parent or not (run.name in ("checkpoints", "best") or run.name.startswith("ckpt-")):
            return []
        run = run.parent
    try:
        data = json.loads((run / "config.json").read_text())["train"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    folder = data.get(head) if isinstance(data, dict) else None
    if not isinstance(folder, str) or not folder:
        return []
    return [Path(folder), run / folder]


# ============================================================================ untrained models
def make_untrained_informative(model, seed: int, num_sequences: int = 2) -> str:
    """Make an untrained (seeded, randomly initialised) model show its architecture's reach.

    At initialisation every attention layer's output projection is zero (each block starts as the
    identity), so an untrained model's attention moves nothing; and its batch norms hold their
    initial statistics (mean 0, variance 1), so activations grow through the conv tower by many
    orders of magnitude. Here the output projections get seeded random weights (Sonnet's Linear
    default, truncated normal with stddev 1/sqrt(fan_in)) and each batch norm's moving statistics
    are set to those of one training-mode pass over `num_sequences` random sequences (Sonnet's
    moving averages are debiased: one update gives exactly the batch statistics).
    Returns the sentence saying so.
    """
    import sonnet as snt
    import tensorflow as tf

    rng = np.random.default_rng([seed, 0x7F])
    for variable in model.trainable_variables:
        if "/embedding_layer/w" in variable.name:
            fan_in = variable.shape[0]
            values = rng.standard_normal(variable.shape) / math.sqrt(fan_in)
            values = np.clip(values, -2 / math.sqrt(fan_in), 2 / math.sqrt(fan_in))
            variable.assign(values.astype(np.float32))
    for module in model.submodules:
        if isinstance(module, (snt.BatchNorm, snt.distribute.CrossReplicaBatchNorm)):
            for average in (module.moving_mean, module.moving_variance):
                if average.average is not None:
                    average.reset()
    codes = rng.integers(0, 4, size=(num_sequences, model.config.sequence_length))
    model(tf.constant(np.eye(4, dtype=np.float32)[codes]), is_training=True)
    return ("attention output layers drawn at random (zero at initialisation) and batch-norm "
            f"statistics set from {num_sequences} random sequences, so that attention acts")


# ============================================================================ the measurement
@dataclass
class ModelSpec:
    """A model to measure: a display name and a built model with its configuration."""

    name: str
    model: Any
    config: Any
    description: str
    kind: str = "preset"
    spec: str | None = None


@dataclass
class PositionEffect:
    position_bp: int
    effect: np.ndarray  # float64 [target_length]: mean over repeats and tracks of |mut - ref|
    field: TheoreticalField


@dataclass
class ModelMeasurement:
    name: str
    description: str
    kind: str
    spec: str | None
    config: Any
    field_statement: str
    token_span_bp: dict[str, int]
    window_bp: tuple[int, int]
    bin_centres_bp: np.ndarray
    noise_floor: float
    positions: list[PositionEffect]
    seconds: float
    sequences: int
    where: Callable[[int], str]
    shares_tower_with: str | None = None  # the model whose conv-tower activations it reused

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds if self.seconds > 0 else float("nan")

    def position_summary(self, item: PositionEffect) -> dict[str, Any]:
        effect, field_ = item.effect, item.field
        bins = np.arange(len(effect))
        inside = np.zeros(len(effect), bool)
        if field_.conv_bins is not None:
            inside[field_.conv_bins[0]:field_.conv_bins[1] + 1] = True
        reached = effect > self.noise_floor
        distance = np.abs(self.bin_centres_bp - item.position_bp)
        peak = int(np.argmax(effect))
        farthest = int(bins[reached][np.argmax(distance[reached])]) if reached.any() else None
        outside_theory = effect[~field_.bins]
        return {
            "position_bp": item.position_bp,
            "where": self.where(item.position_bp),
            "peak_effect": float(effect[peak]),
            "peak_bin": peak,
            "mean_inside_conv_reach": float(effect[inside].mean()) if inside.any() else None,
            "mean_outside_conv_reach": float(effect[~inside].mean()) if (~inside).any() else None,
            "conv_reach_bins": list(field_.conv_bins) if field_.conv_bins is not None else None,
            "reached_bins": int(reached.sum()),
            "reached_bins_outside_conv_reach": int((reached & ~inside).sum()),
            "farthest_reached_bin": farthest,
            "farthest_reached_bp": float(distance[farthest]) if farthest is not None else None,
            "theoretical_bins": int(field_.bins.sum()),
            "max_effect_outside_theoretical_field": (float(outside_theory.max())
                                                     if len(outside_theory) else 0.0),
        }

    def summary(self, with_effects: bool = True) -> dict[str, Any]:
        config = self.config
        positions = []
        for item in self.positions:
            entry = self.position_summary(item)
            if with_effects:
                entry["effect"] = [float(v) for v in item.effect]
            positions.append(entry)
        return {
            "name": self.name, "spec": self.spec, "kind": self.kind, "description": self.description,
            "attention": config.attention, "sequence_length": config.sequence_length,
            "bin_size": config.bin_size, "target_length": config.target_length,
            "output_window_bp": list(self.window_bp),
            "theoretical_receptive_field": self.field_statement,
            "conv_tower_span_bp": self.token_span_bp,
            "noise_floor": self.noise_floor,
            "seconds": self.seconds, "sequences": self.sequences,
            "conv_tower_shared_with": self.shares_tower_with,
            "sequences_per_second": self.sequences_per_second,
            "positions": positions,
        }


@dataclass
class ReceptiveFieldResult:
    settings: dict[str, Any]
    models: list[ModelMeasurement]
    notes: list[str] = field(default_factory=list)
    out: str | None = None

    def summary(self, with_effects: bool = True) -> dict[str, Any]:
        return {"settings": self.settings, "notes": self.notes, "out": self.out,
                "models": [m.summary(with_effects) for m in self.models]}

    def long_table(self):
        """model, position, bin, effect: one row per model, position and output bin."""
        import pandas as pd

        frames = []
        for m in self.models:
            for item in m.positions:
                frames.append(pd.DataFrame({"model": m.name, "position": item.position_bp,
                                            "bin": np.arange(len(item.effect)),
                                            "effect": item.effect}))
        return pd.concat(frames, ignore_index=True)


def draw_repeat(rng: np.random.Generator, sequence_length: int, position: int
                ) -> tuple[np.ndarray, int]:
    """One repeat: a uniform random sequence (base codes 0..3 = A, C, G, T) and the substituted
    base at `position`, uniform over the three other bases."""
    codes = rng.integers(0, 4, size=sequence_length, dtype=np.int8)
    new_base = (int(codes[position]) + int(rng.integers(1, 4))) % 4
    return codes, new_base


def mutation_batches(seed: int, sequence_length: int, positions: Sequence[int], repeats: int,
                     repeats_per_batch: int, shared: bool = False):
    """Yield (position index, reference codes int8 [n, L], mutant codes int8 [n, L], fresh), n
    repeats at a time; the draws do not depend on the batch size.

    Default: for each position, each repeat draws its own sequence, then its substitution.
    `shared=True`: the R sequences are drawn first and every position mutates the same R
    sequences (each with its own substitution draws); batches then go repeat batch by repeat batch,
    every position in turn, and `fresh` is False where the references equal the previous batch's.
    """
    rng = np.random.default_rng(seed)
    if not shared:
        for index, position in enumerate(positions):
            done = 0
            while done < repeats:
                n = min(repeats_per_batch, repeats - done)
                references = np.empty((n, sequence_length), np.int8)
                mutants = np.empty((n, sequence_length), np.int8)
                for r in range(n):
                    references[r], new_base = draw_repeat(rng, sequence_length, position)
                    mutants[r] = references[r]
                    mutants[r, position] = new_base
                done += n
                yield index, references, mutants, True
        return
    sequences = np.stack([rng.integers(0, 4, size=sequence_length, dtype=np.int8)
                          for _ in range(repeats)])
    shifts = rng.integers(1, 4, size=(len(positions), repeats))
    for done in range(0, repeats, repeats_per_batch):
        references = sequences[done:done + repeats_per_batch]
        for index, position in enumerate(positions):
            mutants = references.copy()
            mutants[:, position] = (references[:, position] + shifts[index, done:done + len(references)]) % 4
            yield index, references, mutants, index == 0


_ONE_HOT = np.eye(4, dtype=np.float32)
LAYOUTS = ("paired", "same-batch")


def _interleave(a, b):
    """Rows a_0, b_0, a_1, b_1, ... (numpy or tf)."""
    import tensorflow as tf

    stacked = tf.stack([a, b], axis=1)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))


class Predictor:
    """Predictions of reference and mutant batches for one model, head and track selection.

    layout `paired`: the references form one batch and the mutants another of the same shape, each
    mutant in its reference's row, so every computation that sees identical inputs gives identical
    bits (TensorFlow's CPU kernels round differently at different rows of a batch). layout
    `same-batch`: reference and mutant interleaved in one batch (rows 2i, 2i + 1).

    `local=True` recomputes only what a base change can change: the references run the whole
    model, the mutants run the stem and conv tower on a window around the mutation only (long
    enough for every token the mutation can reach, aligned to the bins) whose tokens replace the
    reference's there, then the transformer and heads on every token. The references' conv tower
    runs one sequence per call (a batch's full-length activations overflow the CPU caches: on this
    project's CPU a sequence alone is 16% faster at the tiny width).

    `xla=True` compiles every pass with XLA (`jit_compile`): on this project's CPU a quarter more
    sequences per second, for a compile of about a second per pass and batch shape.
    """

    def __init__(self, model, head: str, tracks: Sequence[int] | None, *, layout: str = "paired",
                 local: bool = False, xla: bool = False):
        import tensorflow as tf

        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}")
        self.model, self.config, self.layout, self.local = model, model.config, layout, local
        config = self.config
        index = None if tracks is None else tf.constant(list(tracks), tf.int32)
        stem, tower, transformer, crop, final = model.trunk.layers
        head_module = model.heads[head]

        def select(output):
            return output if index is None else tf.gather(output, index, axis=-1)

        def full(x):
            return select(model(x, is_training=False)[head])

        def conv(x):
            return tower(stem(x, is_training=False), is_training=False)

        def rest(tokens):
            kwargs = {}
            if config.mask_padding:  # random DNA has no N: every key is kept
                kwargs["key_mask"] = tf.ones(tf.shape(tokens)[:2], tf.bool)
            trunk = final(crop(transformer(tokens, is_training=False, **kwargs)), is_training=False)
            return select(head_module(trunk, is_training=False))

        compiled = functools.partial(tf.function, autograph=False, jit_compile=xla)
        sequence = tf.TensorSpec([None, config.sequence_length, 4], tf.float32)
        self.full = compiled(full, input_signature=[sequence])
        self.window_bp = 0
        if local:
            self.calculator = FieldCalculator(model)
            self.window_bp = self._window_length()
            if self.window_bp >= config.sequence_length:
                self.local = False
            else:
                window = tf.TensorSpec([None, self.window_bp, 4], tf.float32)
                self.conv = compiled(conv, input_signature=[sequence])
                self.conv_window = compiled(conv, input_signature=[window])
                self.rest = compiled(rest)

    # ------------------------------------------------------------------ windows
    def _span(self, position: int) -> tuple[int, int, int, int]:
        """(first token, last token) the conv tower can change, and the input [start, end) they
        read, aligned to bins (before fitting into the sequence)."""
        ops, config = self.calculator.ops, self.config
        first, last = forward_reach(ops, config.sequence_length, position, position)
        lo, hi = backward_span(ops, config.sequence_length, first, last)
        bin_size = config.bin_size
        return first, last, (lo // bin_size) * bin_size, -(-(hi + 1) // bin_size) * bin_size

    def _window_length(self) -> int:
        """The longest aligned input window any single position needs (bp)."""
        middle = self.config.sequence_length // 2
        return max(end - start for start, end in
                   (self._span(p)[2:] for p in range(middle, middle + self.config.bin_size)))

    def window(self, position: int) -> tuple[int, int, int]:
        """(window start bp, first token, last token) for a mutation at `position`."""
        first, last, start, _ = self._span(position)
        start = min(max(start, 0), self.config.sequence_length - self.window_bp)
        return start, first, last

    # ------------------------------------------------------------------ predictions
    def reference_state(self, x: np.ndarray, tokens: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, conv-tower tokens or None) of a batch of references; `tokens`: their
        conv-tower activations if already computed (local only)."""
        if self.local:
            if tokens is None:
                tokens = self.reference_tokens(x)
            return self.rest(tokens).numpy(), tokens
        return self.full(x).numpy(), None

    def reference_tokens(self, x: np.ndarray) -> np.ndarray:
        """Conv-tower activations of whole sequences, one sequence per call (local only)."""
        return np.concatenate([self.conv(x[i:i + 1]).numpy() for i in range(len(x))])

    def mutant_outputs(self, state: tuple[np.ndarray, np.ndarray | None], mutants: np.ndarray,
                       position: int, tokens: np.ndarray | None = None) -> np.ndarray:
        """Predictions of the mutants of the references in `state` (paired layout); `tokens`:
        their conv-tower activations if already computed (local only)."""
        if not self.local:
            return self.full(mutants).numpy()
        if tokens is None:
            tokens = self.mutant_tokens(state[1], mutants, position)
        return self.rest(tokens).numpy()

    def mutant_tokens(self, reference_tokens: np.ndarray, mutants: np.ndarray, position: int
                      ) -> np.ndarray:
        """The mutants' conv-tower activations: the references' with the tokens the mutation can
        reach recomputed from a window around it (local only)."""
        start, first, last = self.window(position)
        window_tokens = self.conv_window(mutants[:, start:start + self.window_bp]).numpy()
        mutant_tokens = reference_tokens.copy()
        offset = start // self.config.bin_size
        mutant_tokens[:, first:last + 1] = window_tokens[:, first - offset:last - offset + 1]
        return mutant_tokens

    def pair(self, references: np.ndarray, mutants: np.ndarray, position: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """One-hot references and mutants [n, L, 4] -> their predictions [n, bins, tracks]."""
        if self.layout == "paired":
            state = self.reference_state(references)
            return state[0], self.mutant_outputs(state, mutants, position)
        if not self.local:
            both = self.full(_interleave(references, mutants)).numpy()
        else:
            reference_tokens = self.reference_tokens(references)
            mutant_tokens = self.mutant_tokens(reference_tokens, mutants, position)
            both = self.rest(_interleave(reference_tokens, mutant_tokens)).numpy()
        return both[0::2], both[1::2]


_PREDICTORS: "weakref.WeakKeyDictionary[Any, dict[tuple, Predictor]]" = weakref.WeakKeyDictionary()


def predictor_for(model, head: str, tracks: Sequence[int] | None, *, layout: str = "paired",
                  local: bool = False, xla: bool = False) -> Predictor:
    """A Predictor, reused while `model` lives (its traced functions are the expensive part)."""
    key = (head, None if tracks is None else tuple(tracks), layout, local, xla)
    cache = _PREDICTORS.setdefault(model, {})
    if key not in cache:
        cache[key] = Predictor(model, head, tracks, layout=layout, local=local, xla=xla)
    return cache[key]


# Config fields besides the variables that decide what the stem and conv tower compute.
TOWER_FIELDS = ("channels", "pooling", "num_conv_tower_blocks", "conv_tower_divisible_by",
                "sequence_length", "tile_length")


def tower_fingerprint(model) -> str:
    """A digest of everything that decides the stem's and conv tower's output: their variables
    (names, shapes, values, batch-norm statistics included) and the config fields that shape them.
    Models with equal digests give bit-identical conv-tower activations for the same input (the
    S-Enformer recipe fine-tunes only attention, so its tower is the published Enformer's)."""
    import hashlib

    digest = hashlib.sha256()
    config = model.config
    digest.update(repr([(name, getattr(config, name)) for name in TOWER_FIELDS]).encode())
    stem, tower = model.trunk.layers[:2]
    for variable in stem.variables + tower.variables:
        value = variable.numpy()
        digest.update(f"{variable.name}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


class _ModelRun:
    """One model's side of the measurement loop: its predictor, running sums, noise floor and
    clock. `tower_key` is set when the references' conv-tower activations are computed apart
    from the rest (paired layout, local recompute) and so can be shared with an identical tower."""

    def __init__(self, item: ModelSpec, *, positions: Sequence[int], head: str,
                 tracks: Sequence[int] | None, layout: str, local: bool, xla: bool):
        self.item, self.positions, self.layout = item, positions, layout
        self.calculator = FieldCalculator(item.model)
        self.predictor = predictor_for(item.model, head, tracks, layout=layout, local=local,
                                       xla=xla)
        self.tower_key = (tower_fingerprint(item.model)
                          if layout == "paired" and self.predictor.local else None)
        self.shares_tower_with: str | None = None
        self._clear()

    def _clear(self) -> None:
        """No batch measured yet: zero sums, floor and clock, no references held."""
        self.sums = np.zeros((len(self.positions), self.item.config.target_length), np.float64)
        self.noise_floor = self.largest = self.seconds = 0.0
        self.sequences = 0
        self.state: tuple[np.ndarray, np.ndarray | None] | None = None

    def warm(self, repeats_per_batch: int, towers: dict[tuple[str, str], np.ndarray]) -> None:
        """Trace (and with XLA compile) every path and batch shape of the loop: one batch of it
        (noise floor included), whose results are then dropped."""
        warm = np.zeros([repeats_per_batch, self.item.config.sequence_length, 4], np.float32)
        warm[..., 0] = 1
        self.batch(0, warm, warm, True, True, towers)
        self._clear()

    def _tokens(self, towers: dict[tuple[str, str], np.ndarray], name: str,
                compute: Callable[[], np.ndarray]) -> np.ndarray | None:
        """This batch's conv-tower activations `name` as an identical tower computed them, or
        computed here and kept for the next; None where the tower is not computed apart."""
        if self.tower_key is None:
            return None
        key = (self.tower_key, name)
        if key not in towers:
            towers[key] = compute()
        return towers[key]

    def batch(self, index: int, x_ref: np.ndarray, x_mut: np.ndarray, fresh: bool,
              noise: bool, towers: dict[tuple[str, str], np.ndarray]) -> None:
        """One batch of repeats at position `index`. `towers`: this batch's conv-tower
        activations of the references and mutants by (`tower_key`, name), filled by the first
        model of each key; `noise`: also measure the round-off floor on these references."""
        start = time.perf_counter()
        predictor, position = self.predictor, self.positions[index]
        if self.layout == "paired":
            if fresh or self.state is None:
                tokens = self._tokens(towers, "references",
                                      lambda: predictor.reference_tokens(x_ref))
                self.state = predictor.reference_state(x_ref, tokens)
                self.sequences += len(x_ref)
            out_ref = self.state[0]
            tokens = self._tokens(towers, "mutants",
                                  lambda: predictor.mutant_tokens(self.state[1], x_mut, position))
            out_mut = predictor.mutant_outputs(self.state, x_mut, position, tokens)
            self.sequences += len(x_mut)
        else:
            out_ref, out_mut = predictor.pair(x_ref, x_mut, position)
            self.sequences += 2 * len(x_ref)
        difference = np.abs(out_mut - out_ref)  # [n, bins, tracks]
        self.largest = max(self.largest, float(np.abs(out_ref).max()))
        self.sums[index] += difference.mean(axis=-1, dtype=np.float64).sum(axis=0)
        if noise:
            # The same references again, each one row further down the batch (the references'
            # conv tower runs a sequence at a time, so their tokens move with them exactly).
            again = x_ref if len(x_ref) > 1 else np.concatenate([x_ref, x_ref])
            tokens = self.state[1] if self.layout == "paired" else None
            if tokens is not None and len(x_ref) == 1:
                tokens = np.concatenate([tokens, tokens])
            first = out_ref if len(x_ref) > 1 else predictor.reference_state(again, tokens)[0]
            second = predictor.reference_state(
                np.roll(again, 1, axis=0), None if tokens is None else np.roll(tokens, 1, axis=0))[0]
            self.sequences += len(again) * (2 if len(x_ref) == 1 else 1)
            self.noise_floor = max(self.noise_floor,
                                   float(np.abs(np.roll(first, 1, axis=0) - second).max()))
        self.seconds += time.perf_counter() - start

    def result(self, repeats: int) -> ModelMeasurement:
        item, calculator = self.item, self.calculator
        noise_floor = max(self.noise_floor,
                          FLOOR_ULPS * float(np.finfo(np.float32).eps) * self.largest)
        effects = self.sums / repeats
        return ModelMeasurement(
            name=item.name, description=item.description, kind=item.kind, spec=item.spec,
            config=item.config, field_statement=calculator.statement(),
            token_span_bp=calculator.token_span_bp(), window_bp=calculator.window_bp,
            bin_centres_bp=calculator.bin_centres_bp(), noise_floor=noise_floor,
            positions=[PositionEffect(p, effects[i], calculator.field(p))
                       for i, p in enumerate(self.positions)],
            seconds=self.seconds, sequences=self.sequences, where=calculator.where,
            shares_tower_with=self.shares_tower_with)


def measure_models(models: Sequence[ModelSpec], selections: Sequence[Sequence[int] | None], *,
                   positions: Sequence[int], repeats: int, head: str, seed: int, batch_size: int,
                   layout: str = "paired", local: bool = False, shared: bool = False,
                   xla: bool = False, noise_batches: int = NOISE_BATCHES,
                   progress: Callable[[int], None] | None = None,
                   status: Callable[[str], None] | None = None) -> list[ModelMeasurement]:
    """Run the experiment on every model in step, batch by batch; `progress(repeats_done)` after
    every model's batch.

    `batch_size` is the number of sequences per forward pass: `paired` runs `batch_size` repeats
    per pair of passes, `same-batch` `batch_size // 2` per pass. With `shared` sequences (see
    `mutation_batches`) and the paired layout a batch of references is predicted once for all
    positions. Models whose stems and conv towers are identical (`tower_fingerprint`) compute a
    batch's conv-tower activations of the references and of the mutants once (paired layout,
    local recompute) and never trace their own tower: the same bits each would compute, since the
    same input meets the same weights in the same computation. Each model's clock counts only its
    own calls."""
    runs = [_ModelRun(item, positions=positions, head=head, tracks=selection, layout=layout,
                      local=local, xla=xla) for item, selection in zip(models, selections)]
    for k, run in enumerate(runs):
        run.shares_tower_with = next((other.item.name for other in runs[:k]
                                      if run.tower_key and other.tower_key == run.tower_key), None)
    repeats_per_batch = batch_size if layout == "paired" else max(1, batch_size // 2)
    reference_batches = math.ceil(repeats / repeats_per_batch) * (1 if shared else len(positions))
    noise_at = set()
    if noise_batches:
        spread = np.linspace(0, reference_batches - 1, min(noise_batches, reference_batches))
        noise_at = {int(k) for k in spread.round()}
    towers: dict[tuple[str, str], np.ndarray] = {}
    for run in runs:
        if status is not None:
            status(f"{run.item.name}: tracing")
        run.warm(min(repeats_per_batch, repeats), towers)
    towers.clear()
    if status is not None:
        status("measuring")
    fresh_number = -1
    for index, references, mutants, fresh in mutation_batches(
            seed, models[0].config.sequence_length, positions, repeats, repeats_per_batch,
            shared=shared):
        x_ref, x_mut = _ONE_HOT[references], _ONE_HOT[mutants]
        fresh_number += fresh
        for key in [key for key in towers if fresh or key[1] == "mutants"]:
            del towers[key]
        noise = fresh and fresh_number in noise_at
        for run in runs:
            run.batch(index, x_ref, x_mut, fresh, noise, towers)
            if progress is not None:
                progress(len(x_ref))
    return [run.result(repeats) for run in runs]


def validate(models: Sequence[ModelSpec], *, positions: int | Sequence[int], repeats: int,
             head: str, tracks: str, batch_size: int,
             track_types: dict[str, list[str] | None] | None = None
             ) -> tuple[list[int], list[tuple[list[int] | None, str]]]:
    """Check a request against the models: (positions in bp, per model (track indexes or None for
    all, label)). Raises SenformerError naming the option."""
    if not models:
        raise SenformerError("no model to measure")
    if repeats < 1:
        raise SenformerError(f"--repeats {repeats}: need at least one repeat")
    if batch_size < 2:
        raise SenformerError(f"--batch-size {batch_size}: need at least 2 sequences per batch")
    lengths = {m.config.sequence_length for m in models}
    if len(lengths) > 1:
        listed = ", ".join(f"{m.name} {m.config.sequence_length:,} bp" for m in models)
        raise SenformerError(f"the models take different input lengths ({listed}); they are "
                             "measured on the same random sequences, so the lengths must agree "
                             "(--set sequence_length=...)")
    sequence_length = lengths.pop()
    if isinstance(positions, int):
        chosen = evenly_spaced_positions(sequence_length, positions)
    else:
        chosen = check_positions(positions, sequence_length)
    selections: list[tuple[list[int] | None, str]] = []
    for m in models:
        if head not in m.config.heads:
            raise SenformerError(f"--head {head}: model {m.name} has head(s) "
                                 f"{', '.join(m.config.heads)}")
        num_tracks = m.config.heads[head]
        types = (track_types or {}).get(m.name)
        indexes, label = parse_tracks(tracks, num_tracks, types, head)
        selections.append((None if len(indexes) == num_tracks else indexes, label))
    return chosen, selections


def measure(models: Sequence[ModelSpec], *, positions: int | Sequence[int] = 9, repeats: int = 100,
            head: str = "human", tracks: str = "all", seed: int = 0, batch_size: int = 4,
            track_types: dict[str, list[str] | None] | None = None, layout: str = "paired",
            local: bool = False, shared: bool = False, xla: bool = False,
            noise_batches: int = NOISE_BATCHES, progress: ProgressFn | None = None,
            status: Callable[[str], None] | None = None) -> ReceptiveFieldResult:
    """Measure every model on the same sequences and mutations (see the module docstring).

    `positions` is a count (evenly spaced, ends included) or explicit 0-based bp positions;
    `track_types` maps a model name to its head's track types (for `tracks` = a type).
    `progress(done, total)` counts repeats over all models and positions. `layout`, `local` and
    `xla`: see `Predictor`; `shared`: see `mutation_batches`.
    """
    chosen, selections = validate(models, positions=positions, repeats=repeats, head=head,
                                  tracks=tracks, batch_size=batch_size, track_types=track_types)
    total = len(models) * len(chosen) * repeats
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    measurements = measure_models(models, [selection for selection, _ in selections],
                                  positions=chosen, repeats=repeats, head=head, seed=seed,
                                  batch_size=batch_size, layout=layout, local=local, shared=shared,
                                  xla=xla, noise_batches=noise_batches, progress=step,
                                  status=status)
    settings = {"positions": chosen, "repeats": repeats, "head": head, "tracks": tracks,
                "tracks_label": selections[0][1], "seed": seed, "batch_size": batch_size,
                "layout": layout, "local": local, "shared_sequences": shared, "xla": xla,
                "sequence_length": models[0].config.sequence_length,
                "effect": "mean over repeats and tracks of |mutant - reference| per output bin",
                "noise_floor": "largest |difference| between two predictions of the same sequence "
                               f"at different batch positions, at least {FLOOR_ULPS} float32 ulps "
                               "of the largest output"}
    return ReceptiveFieldResult(settings, measurements)


# ============================================================================ outputs
def check_out_dir(out: Path | None, overwrite: bool) -> None:
    """Refuse an output directory that holds files, unless `overwrite`."""
    if out is None:
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SenformerError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SenformerError(f"--out {out}: the directory holds files; give --overwrite to replace "
                             "its receptive_field.csv, summary.json and receptive_field.png")


OUTPUT_FILES = ("receptive_field.csv", "summary.json", "receptive_field.png")


def write_outputs(result: ReceptiveFieldResult, out: Path, overwrite: bool = False) -> None:
    """receptive_field.csv, summary.json and receptive_field.png in `out`: all written to a
    temporary folder first and moved in only once every file is complete."""
    from senformer_cli.fileio import atomic_path
    from senformer_cli.plots_rf import plot_receptive_field

    out = Path(out)
    check_out_dir(out, overwrite)
    result.out = str(out)

    def write_all(folder: Path) -> None:
        result.long_table().to_csv(folder / "receptive_field.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2,
                                                        default=_json_default) + "\n")
        plot_receptive_field(result, folder / "receptive_field.png")

    if not out.exists():
        with atomic_path(out) as tmp:
            tmp.mkdir()
            write_all(tmp)
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_all(tmp)
        for name in OUTPUT_FILES:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# ============================================================================ the command
def default_models(root: Path = Path(".")) -> tuple[list[tuple[str, str, dict[str, Any]]], str | None]:
    """(name, spec, extra overrides) of the default pair, and the note to show when untrained.

    The runs `senformer train` writes (runs/tiny-full: Enformer, runs/tiny: S-Enformer) when both
    have a checkpoint, else the untrained `tiny` preset with full and with sparse attention."""
    runs = [(name, root / path) for name, path, _ in DEFAULT_RUNS]
    if all((path / "config.json").is_file() and any((path / "checkpoints").rglob("ckpt-*.index"))
           for _, path in runs):
        return [(name, str(path), {}) for name, path in runs], None
    note = ("no --model given and runs/tiny-full, runs/tiny (senformer train) not both found: "
            "measuring the untrained tiny preset with full attention (Enformer) and with sparse "
            "attention (S-Enformer), seeded")
    return [(name, "tiny", {"attention": attention}) for name, _, attention in DEFAULT_RUNS], note


def receptive_field(model_specs: Sequence[str] | None = None, *, overrides: dict[str, Any] | None = None,
                    num_positions: int = 9, positions: Sequence[int] | None = None,
                    repeats: int = 100, head: str = "human", tracks: str = "all", seed: int = 0,
                    batch_size: int = 4, layout: str = "paired", local: bool = True,
                    shared: bool = False, xla: bool = True,
                    data: Path | None = None, out: Path | None = None,
                    overwrite: bool = False, progress: ProgressFn | None = None,
                    status: Callable[[str], None] | None = None) -> ReceptiveFieldResult:
    """`senformer receptive-field`: resolve the models (`load_model`), measure, write `out`.

    Every user mistake raises SenformerError before anything is written.
    """
    from senformer_cli.model.load import load_model

    check_out_dir(out, overwrite)
    if repeats < 1:
        raise SenformerError(f"--repeats {repeats}: need at least one repeat")
    if positions is None and num_positions < 1:
        raise SenformerError(f"--positions {num_positions}: need at least one position")
    if batch_size < 2:
        raise SenformerError(f"--batch-size {batch_size}: need at least 2 sequences per batch")
    overrides = dict(overrides or {})
    notes: list[str] = []
    if model_specs:
        names = _display_names(list(model_specs))
        wanted = [(name, spec, {}) for name, spec in zip(names, model_specs)]
    else:
        wanted, note = default_models()
        if note:
            notes.append(note)
    models: list[ModelSpec] = []
    for name, spec, extra in wanted:
        if status is not None:
            status(f"loading {name} ({spec})")
        loaded = load_model(spec, {**overrides, **extra})
        models.append(ModelSpec(name, loaded.model, loaded.config, loaded.description, loaded.kind,
                                spec))
    track_types = {}
    if tracks.strip().lower() != "all":
        for m, (_, spec, _) in zip(models, wanted):
            if head in m.config.heads:
                track_types[m.name] = targets_sheet_types(data, spec, head, m.config.heads[head])
    validate(models, positions=positions if positions else num_positions, repeats=repeats,
             head=head, tracks=tracks, batch_size=batch_size, track_types=track_types)
    for m in models:
        if m.kind == "preset":
            if status is not None:
                status(f"preparing the untrained {m.name}")
            m.description += "; " + make_untrained_informative(m.model, m.config.random_seed)
    result = measure(models, positions=positions if positions else num_positions, repeats=repeats,
                     head=head, tracks=tracks, seed=seed, batch_size=batch_size,
                     track_types=track_types, layout=layout, local=local, shared=shared,
                     xla=xla, progress=progress, status=status)
    result.notes = notes
    if out is not None:
        write_outputs(result, out, overwrite)
    return result


def _display_names(specs: list[str]) -> list[str]:
    names = []
    for i, spec in enumerate(specs):
        name = spec.rstrip("/")
        names.append(name if specs.count(spec) == 1 else f"{name} #{specs[:i + 1].count(spec)}")
    return names
