"""Model configuration: one dataclass carries every hyper-parameter; presets are configurations.

Every constant of the published architecture that would block a small model is a field whose
default is the published value, so `ModelConfig()` is the published Enformer.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senformer_cli.errors import SenformerError
from senformer_cli.fileio import write_json

POOLING_TYPES = ("attention", "max")
ATTENTION_TYPES = ("full", "sparse")


@dataclass
class ModelConfig:
    """Hyper-parameters of Enformer (`attention='full'`) and S-Enformer (`attention='sparse'`)."""

    # Trunk width and transformer.
    channels: int = 1536
    num_transformer_layers: int = 11
    num_heads: int = 8
    key_size: int = 64
    pooling: str = "attention"
    # Attention pooling's logit weights start at this times the identity: 2.0 (published) starts
    # close to max pooling, 0.0 as average pooling, whose gradient reaches both positions of
    # every pair (the `tiny` preset's: README, "Learning on the synthetic data").
    pooling_init_scale: float = 2.0
    attention: str = "full"
    # Published constants, exposed so that small models can be built.
    num_conv_tower_blocks: int = 6
    conv_tower_divisible_by: int = 128
    # Relative-position features per token pair; None means channels // num_heads (published).
    num_relative_position_features: int | None = None
    # Sparse (BigBird) attention.
    block_size: int = 64
    num_random_blocks: int = 3
    window_blocks: int = 3
    # Global blocks at each end of the sequence: 1 means the first and the last block.
    num_global_blocks: int = 1
    random_seed: int = 0
    # Attention ignores tokens whose bases are all N (records padded with N instead of genome
    # flanks). Off in the published model.
    mask_padding: bool = False
    # Lengths.
    sequence_length: int = 196_608
    target_length: int = 896
    heads: dict[str, int] = field(default_factory=lambda: {"human": 5313, "mouse": 1643})
    # Dropout.
    dropout_rate: float = 0.4
    attention_dropout_rate: float = 0.05
    positional_dropout_rate: float = 0.01
    final_dropout_rate: float = 0.05
    # Gradient checkpointing: the stem, each conv tower block, each transformer block and the
    # final pointwise block are recomputed in the backward pass instead of keeping their
    # activations (same results, less memory, about one more forward pass of time).
    recompute: bool = False
    # Exact tiling of the stem and the conv tower (0 = off): a block whose input is longer than
    # this many positions runs over 2, 4, 8, ... equal tiles at most this long, each with a halo
    # as wide as its convolution, and recomputes them in the backward pass (the same results; the
    # memory of one tile instead of the whole sequence).
    tile_length: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- derived quantities
    @property
    def bin_size(self) -> int:
        """Base pairs per output bin: the stem and every conv tower block halve the length."""
        return 2 ** (self.num_conv_tower_blocks + 1)

    @property
    def num_tokens(self) -> int:
        """Length of the sequence the transformer sees."""
        return self.sequence_length // self.bin_size

    @property
    def num_blocks(self) -> int:
        return self.num_tokens // self.block_size

    @property
    def value_size(self) -> int:
        return self.channels // self.num_heads

    @property
    def relative_position_features(self) -> int:
        if self.num_relative_position_features is None:
            return self.channels // self.num_heads
        return self.num_relative_position_features

    @property
    def conv_tower_filters(self) -> list[int]:
        """exponential_linspace_int(C/2, C, blocks, divisible_by) of the published code."""
        start, end, num = self.channels // 2, self.channels, self.num_conv_tower_blocks
        if num == 1:
            return [end]
        base = (end / start) ** (1.0 / (num - 1))
        div = self.conv_tower_divisible_by
        return [int(round(start * base**i / div) * div) for i in range(num)]

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise SenformerError naming the first field that makes the model impossible."""

        def bad(name: str, why: str) -> None:
            raise SenformerError(f"config field '{name}' = {getattr(self, name)!r}: {why}")

        for name in ("channels", "num_transformer_layers", "num_heads", "key_size",
                     "num_conv_tower_blocks", "conv_tower_divisible_by", "block_size",
                     "window_blocks", "sequence_length", "target_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "must be a positive integer")
        for name in ("num_random_blocks", "num_global_blocks", "random_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad(name, "must be a non-negative integer")
        for name in ("dropout_rate", "attention_dropout_rate", "positional_dropout_rate",
                     "final_dropout_rate"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                bad(name, "must be a number in [0, 1)")
        if not isinstance(self.mask_padding, bool):
            bad("mask_padding", "must be true or false")
        if not isinstance(self.recompute, bool):
            bad("recompute", "must be true or false")
        if (not isinstance(self.tile_length, int) or isinstance(self.tile_length, bool)
                or self.tile_length < 0 or self.tile_length % 2):
            bad("tile_length", "must be 0 (off) or a positive even number of positions")
        if self.pooling not in POOLING_TYPES:
            bad("pooling", f"must be one of {', '.join(POOLING_TYPES)}")
        if (not isinstance(self.pooling_init_scale, (int, float))
                or isinstance(self.pooling_init_scale, bool)
                or not math.isfinite(self.pooling_init_scale)):
            bad("pooling_init_scale", "must be a finite number")
        if self.attention not in ATTENTION_TYPES:
            bad("attention", f"must be one of {', '.join(ATTENTION_TYPES)}")
        if self.channels % self.num_heads:
            bad("channels", f"must be divisible by num_heads = {self.num_heads}")
        if self.channels % 2:
            bad("channels", "must be even (the stem has channels / 2 filters)")
        if min(self.conv_tower_filters) < 1:
            bad("conv_tower_divisible_by", f"rounds the conv tower filters to {self.conv_tower_filters}")
        if self.conv_tower_filters[-1] != self.channels:
            bad("channels", f"the conv tower's last block rounds to {self.conv_tower_filters[-1]} "
                f"filters (multiples of conv_tower_divisible_by = {self.conv_tower_divisible_by}); "
                "channels must equal it")
        rel = self.relative_position_features
        if not isinstance(rel, int) or rel < 6 or rel % 6:
            bad("num_relative_position_features",
                f"resolves to {rel}; must be a positive multiple of 6 "
                "(3 basis functions x symmetric and signed)")
        if self.sequence_length % self.bin_size:
            bad("sequence_length", f"must be a multiple of the bin size {self.bin_size} bp")
        if self.target_length > self.num_tokens or (self.num_tokens - self.target_length) % 2:
            bad("target_length", f"must be at most {self.num_tokens} tokens and leave an even crop")
        if not isinstance(self.heads, dict) or not self.heads:
            bad("heads", "must map head names to track counts")
        for head, tracks in self.heads.items():
            if not isinstance(tracks, int) or isinstance(tracks, bool) or tracks < 1:
                bad("heads", f"head '{head}' needs a positive integer number of tracks")
        if self.tile_length:
            for block in range(self.num_conv_tower_blocks + 1):
                positions = self.sequence_length >> block  # the stem's, then each block's input
                tiles = num_tiles(positions, self.tile_length)
                if positions % (2 * tiles):
                    bad("tile_length", f"{positions:,} positions (conv block {block}'s input) do "
                        f"not split into {tiles} equal tiles of an even length")
        if self.attention == "sparse":
            unit = self.bin_size * self.block_size
            if self.sequence_length % unit:
                bad("sequence_length",
                    f"must be a multiple of bin size x block_size = {self.bin_size} x "
                    f"{self.block_size} = {unit} bp for sparse attention")
            if self.window_blocks % 2 == 0:
                bad("window_blocks", "must be odd (a centred window of blocks)")
            if self.num_global_blocks < 1:
                bad("num_global_blocks", "must be at least 1 for sparse attention")
            if self.num_blocks < 2 * self.num_global_blocks + 1:
                bad("num_global_blocks", f"leaves no middle block among the {self.num_blocks} "
                    f"blocks of {self.block_size} tokens")

    # ---------------------------------------------------------------- presets and I/O
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A preset configuration with some fields replaced."""
        if name not in PRESETS:
            raise SenformerError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
        values = dict(PRESETS[name])
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SenformerError(f"unknown config field '{sorted(unknown)[0]}'")
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SenformerError(f"{source}: unknown config field '{sorted(unknown)[0]}'")
        try:
            return cls(**data)
        except SenformerError as error:
            raise SenformerError(f"{source}: {error}") from None

    def save(self, path: Path | str) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path | str) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SenformerError(f"{path}: no such config file") from None
        except json.JSONDecodeError as error:
            raise SenformerError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(data, dict):
            raise SenformerError(f"{path}: expected a JSON object of config fields")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


# Sparse attention runs all its middle query blocks at once up to this many tokens; past it, one
# chunk of SPARSE_CHUNK_TOKENS query tokens at a time (`model/sparse_attention.py`).
SPARSE_UNCHUNKED_TOKENS, SPARSE_CHUNK_TOKENS = 2048, 256


def num_tiles(positions: int, tile_length: int) -> int:
    """Tiles a conv block of `positions` input positions runs over with `tile_length`: the
    smallest power of two that makes them at most `tile_length` long (1: not tiled)."""
    tiles = 1
    while tile_length and positions > tiles * tile_length:
        tiles *= 2
    return tiles


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """Parse `--set key=value` strings; values are JSON where they parse, else strings.

    `heads.human=64` sets one entry of a dict field.
    """
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    overrides: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SenformerError(f"--set '{item}': expected key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        name, _, sub = key.partition(".")
        if name not in fields:
            raise SenformerError(f"--set '{item}': unknown config field '{name}'")
        if sub:
            if name != "heads":
                raise SenformerError(f"--set '{item}': only 'heads' takes a sub-key")
            heads = dict(overrides.get("heads", {}))
            heads[sub] = value
            overrides["heads"] = heads
        else:
            overrides[name] = value
    return overrides


_ENFORMER: dict[str, Any] = {}
PRESETS: dict[str, dict[str, Any]] = {
    # The published model (Avsec et al. 2021).
    "enformer": _ENFORMER,
    # The same model with BigBird block-sparse attention (S-Enformer).
    "s-enformer": {"attention": "sparse", "block_size": 64, "num_random_blocks": 3,
                   "window_blocks": 3, "num_global_blocks": 1},
    # The published training notebook's model: a quarter of the width, max pooling, 131,072 bp.
    "small": {"channels": 384, "pooling": "max", "sequence_length": 131_072},
    # Fast enough for CPU tests and the demo; 128-bp bins like the real data.
    "tiny": {"channels": 96, "num_transformer_layers": 2, "num_heads": 4, "key_size": 16,
             "conv_tower_divisible_by": 16, "sequence_length": 32_768, "target_length": 128,
             "pooling_init_scale": 0.0, "attention": "sparse", "block_size": 16,
             "num_random_blocks": 2,
             "heads": {"human": 16, "mouse": 8}},
}


# ==================================================================== training
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker", "tpu")
TRAINABLE = ("all", "attention", "heads")
HEAD_INITS = ("model", "mean")


@dataclass
class TrainConfig:
    """Settings of `senformer train`. The defaults are the Enformer paper's recipe (DESIGN.md §7).

    Saved in a run's config.json beside the model config; `--set train.<field>=value` overrides one.
    """

    steps: int = 150_000
    batch_size: int = 64  # global batch, split across replicas
    accumulate: int = 1  # micro-batches of `batch_size` whose gradients make one step
    learning_rate: float = 5e-4
    warmup_steps: int = 5_000  # linear warm-up from 0, then constant
    clip_norm: float = 0.2  # on the global norm of all gradients
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    # Data: {head: data directory} and {head: genome FASTA}; heads alternate step by step.
    data: dict[str, str] = field(default_factory=dict)
    genomes: dict[str, str] = field(default_factory=dict)
    reverse_complement: bool = True
    max_shift: int = 3  # bp
    shuffle_buffer: int = 64
    # Validation, checkpoints, logs.
    eval_every: int = 1_000
    eval_sequences: int | None = None  # per head; None = the whole valid split
    eval_batch_size: int = 4
    checkpoint_every: int = 1_000
    keep: int = 3
    log_every: int = 10
    seed: int = 0
    # Fine-tuning and hardware.
    init_from: str | None = None
    trainable: str = "all"
    # Heads trained from scratch: "model" keeps the model's random initialisation (the published
    # code's); "mean" starts each at the best constant prediction (weights 0, bias the inverse
    # softplus of each track's mean over the first training records), which skips the long
    # plateau of a small model (README, "Learning").
    head_init: str = "model"
    precision: str = "fp32"
    strategy: str = "auto"
    jit_compile: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SenformerError naming the first bad field."""

        def bad(name: str, why: str) -> None:
            raise SenformerError(f"train field '{name}' = {getattr(self, name)!r}: {why}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("steps", "batch_size", "accumulate", "eval_every", "eval_batch_size",
                     "checkpoint_every", "keep", "log_every", "shuffle_buffer"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        for name in ("warmup_steps", "max_shift", "seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "must be a non-negative integer")
        if self.eval_sequences is not None and (not is_int(self.eval_sequences)
                                                or self.eval_sequences < 1):
            bad("eval_sequences", "must be a positive integer or null (the whole split)")
        for name in ("learning_rate", "clip_norm", "epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                bad(name, "must be a positive number")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                bad(name, "must be a number in [0, 1)")
        for name in ("reverse_complement", "jit_compile"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        for name in ("data", "genomes"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                bad(name, "must map head names to paths")
        if self.init_from is not None and not isinstance(self.init_from, str):
            bad("init_from", "must be a model spec (a string) or null")
        for name, choices in (("trainable", TRAINABLE), ("precision", PRECISIONS),
                              ("strategy", STRATEGIES), ("head_init", HEAD_INITS)):
            if getattr(self, name) not in choices:
                bad(name, f"must be one of {', '.join(choices)}")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.accumulate

    @classmethod
    def for_preset(cls, preset: str | None, **overrides: Any) -> "TrainConfig":
        """The recipe for a model preset (`tiny` has its own, quick one), some fields replaced."""
        values = dict(TRAIN_PRESETS.get(preset or "", {}))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SenformerError(f"unknown train field '{sorted(unknown)[0]}'")
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> "TrainConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SenformerError(f"{source}: unknown train field '{sorted(unknown)[0]}'")
        try:
            return cls(**data)
        except SenformerError as error:
            raise SenformerError(f"{source}: {error}") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise SenformerError(f"unknown train field '{sorted(unknown)[0]}'")
        return dataclasses.replace(self, **changes)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # A few CPU minutes on the synthetic data (`senformer train` with no --data).
    # beta2 0.99: Adam's second moment follows the last ~100 steps instead of the whole run
    # (~1,000). An empirical choice: over 6 seeds of each tiny model the slowest run to a
    # validation mean r of 0.5 took 350 steps, against more than 400 for two runs with 0.999
    # (README, "Learning on the synthetic data").
    "tiny": {"steps": 600, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 50,
             "clip_norm": 1.0, "beta2": 0.99, "eval_every": 50, "eval_sequences": 32,
             "checkpoint_every": 50, "log_every": 10, "head_init": "mean"},
}


def split_overrides(assignments: list[str]) -> tuple[list[str], list[str]]:
    """Split `--set` strings into model ones (`key=value`) and training ones (`train.key=value`,
    returned without the `train.` prefix)."""
    model, train = [], []
    for item in assignments:
        if item.strip().startswith("train."):
            train.append(item.strip()[len("train."):])
        else:
            model.append(item)
    return model, train


def parse_train_overrides(assignments: list[str]) -> dict[str, Any]:
    """Parse `train.key=value` strings (prefix already removed, as `split_overrides` returns them).

    Values are JSON where they parse, else strings; `data.human=DIR` / `genomes.human=FASTA` set
    one entry of those mappings.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SenformerError(f"--set 'train.{item}': expected train.key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        name, _, sub = key.partition(".")
        if name not in fields:
            raise SenformerError(f"--set 'train.{item}': unknown train field '{name}'")
        if sub:
            if name not in ("data", "genomes"):
                raise SenformerError(f"--set 'train.{item}': only 'data' and 'genomes' take a "
                                     "sub-key")
            entries = dict(overrides.get(name, {}))
            entries[sub] = str(value)
            overrides[name] = entries
        else:
            overrides[name] = value
    return overrides
