"""THE `--model` resolver: every subcommand that takes `--model SPEC` calls `load_model`.

A spec is one of
- a preset name (`enformer`, `s-enformer`, `small`, `tiny`): seeded random weights;
- a run directory of `senformer train` (`config.json` + `checkpoints/`): the best checkpoint by
  validation (`checkpoints/best/`) where there is one, else the latest;
- a checkpoint of a run, `RUN/checkpoints/ckpt-N` or `RUN/checkpoints/best/ckpt-N`;
- a SavedModel directory written by `senformer export`;
- `enformer-pretrained`: DeepMind's released Sonnet checkpoint, looked for in `weights`, then
  `$SENFORMER_ENFORMER_WEIGHTS`, then `cache_dir()/enformer-pretrained/`.

`overrides` (from `config.parse_overrides`) change the configuration before the model is built, for
every kind; where they change the architecture, the weights no longer fit and loading fails with
one line naming the first variable that differs. Restored models are built with zero-filled
variables (fast) and every variable is then assigned from the weights; nothing stays zero except
what the message says.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import tensorflow as tf

from senformer_cli.config import PRESETS, ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.model.enformer import Enformer
from senformer_cli.model.pretrained import RANDOM_BLOCK_TABLE, open_checkpoint, restore_checkpoint
from senformer_cli.model.summary import EAGER_COST_LIMIT, build_for_counting
from senformer_cli.paths import cache_dir

KINDS = ("preset", "run", "checkpoint", "savedmodel", "pretrained")

PRETRAINED = "enformer-pretrained"
PRETRAINED_PREFIX = "enformer-fine-tuned-human-1"
PRETRAINED_FILES = ("checkpoint", f"{PRETRAINED_PREFIX}.index",
                    f"{PRETRAINED_PREFIX}.data-00000-of-00001")
PRETRAINED_ENV = "SENFORMER_ENFORMER_WEIGHTS"
PRETRAINED_URL = "gs://dm-enformer/models/enformer/sonnet_weights/*"

CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")


class LoadedModel(NamedTuple):
    """A built model with its weights, the configuration it was built from, one human line saying
    what it is, and which kind of spec it came from (one of `KINDS`)."""

    model: Enformer
    config: ModelConfig
    description: str
    kind: str


def load_model(spec: str, overrides: dict[str, Any] | None = None, *,
               weights: Path | None = None) -> LoadedModel:
    """Resolve `spec` (see the module docstring) to a built model with its weights.

    `weights` is a folder holding the published checkpoint (only for `enformer-pretrained`).
    Unknown spec, missing files or weights that do not fit the configuration raise SenformerError.
    """
    overrides = dict(overrides or {})
    spec = str(spec)
    if weights is not None and spec != PRETRAINED:
        raise SenformerError(f"--weights {weights}: only used with --model {PRETRAINED}")
    if spec == PRETRAINED:
        return _load_pretrained(overrides, weights)
    if spec in PRESETS:
        return _load_preset(spec, overrides)
    path = Path(spec)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        from senformer_cli.model.export import load_saved_model

        return load_saved_model(path, overrides)
    if path.is_dir() and (path / "config.json").is_file():
        return _load_run(path, overrides)
    if CHECKPOINT_NAME.match(path.name) and (path.parent.name in ("checkpoints", "best")):
        return _load_run_checkpoint(path, overrides)
    if path.is_dir():
        what = f"the folder {path} holds no config.json (run directory) or saved_model.pb (SavedModel)"
    elif path.exists():
        what = f"{path} is a file, not a run directory, checkpoint (RUN/checkpoints/ckpt-N) or SavedModel"
    else:
        what = f"no file or folder {path}"
    raise SenformerError(f"--model '{spec}': not a preset ({', '.join(PRESETS)}), not {PRETRAINED}, "
                         f"and {what}")


# ----------------------------------------------------------------------------- configuration
def configure(base: ModelConfig | dict[str, Any], overrides: dict[str, Any], source: str) -> ModelConfig:
    """`base` with `overrides` applied (validated; errors name `source`)."""
    data = base.to_dict() if isinstance(base, ModelConfig) else dict(base)
    data.update(overrides)
    return ModelConfig.from_dict(data, source=source)


def describe_overrides(overrides: dict[str, Any]) -> str:
    if not overrides:
        return ""
    return " with " + ", ".join(f"{key}={json.dumps(value)}" for key, value in overrides.items())


# ----------------------------------------------------------------------------- building
def build_initialised(config: ModelConfig) -> Enformer:
    """The model of `config` with every variable created and initialised, seeded by
    `config.random_seed` (TensorFlow's global seed is set to it: Sonnet's initialisers take their
    seeds from there). Small models run one forward pass eagerly on zeros; larger ones trace it."""
    tf.random.set_seed(config.random_seed)
    model = Enformer(config)
    spec = tf.TensorSpec([1, config.sequence_length, 4], tf.float32)

    def forward(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(inputs, is_training=False)

    if config.channels**2 * config.sequence_length < EAGER_COST_LIMIT:
        forward(tf.zeros(spec.shape, spec.dtype))
    else:
        tf.function(forward, autograph=False).get_concrete_function(spec)
    return model


def build_for_restore(config: ModelConfig) -> Enformer:
    """The model of `config` with every variable created, zero-filled, ready to be restored
    (the sparse attention's random-block tables, made in the constructor, hold their seeded
    values)."""
    return build_for_counting(config)


# ----------------------------------------------------------------------------- presets
def _load_preset(name: str, overrides: dict[str, Any]) -> LoadedModel:
    config = configure(ModelConfig.from_preset(name), overrides, source=f"preset {name}")
    model = build_initialised(config)
    description = (f"{name} preset{describe_overrides(overrides)}: untrained, seeded random weights "
                   f"(seed {config.random_seed})")
    return LoadedModel(model, config, description, "preset")


# ----------------------------------------------------------------------------- run directories
def read_run_config(run_dir: Path) -> tuple[ModelConfig, str | None]:
    """`RUN/config.json` -> (model configuration, preset name or None)."""
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SenformerError(f"{path}: no such file (not a run directory of senformer train)") from None
    except json.JSONDecodeError as error:
        raise SenformerError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise SenformerError(f"{path}: expected a JSON object with the model configuration under 'model'")
    config = ModelConfig.from_dict(data["model"], source=f"{path} 'model'")
    preset = data.get("preset")
    return config, preset if isinstance(preset, str) else None


def _checkpoint_step(prefix: str) -> int | None:
    """The `step` saved beside the model in a run checkpoint, if any."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError, TypeError):
        return None


def _restore_run(run_dir: Path, prefix: str, overrides: dict[str, Any], kind: str,
                 label: str) -> LoadedModel:
    saved_config, _ = read_run_config(run_dir)
    config = configure(saved_config, overrides, source=f"{run_dir / 'config.json'} with --set")
    reader = open_checkpoint(prefix, f"checkpoint {prefix}")
    model = build_for_restore(config)
    restore_checkpoint(model, prefix, root="model", source=f"checkpoint {prefix}", reader=reader)
    step = _checkpoint_step(prefix)
    details = [label] + ([f"step {step}"] if step is not None else [])
    description = (f"run {run_dir}{describe_overrides(overrides)}, checkpoint {Path(prefix).name} "
                   f"({', '.join(details)})")
    return LoadedModel(model, config, description, kind)


def _load_run(run_dir: Path, overrides: dict[str, Any]) -> LoadedModel:
    read_run_config(run_dir)  # a broken config.json is named before the checkpoints are looked at
    checkpoints = run_dir / "checkpoints"
    best = tf.train.latest_checkpoint(str(checkpoints / "best")) if (checkpoints / "best").is_dir() else None
    if best is not None:
        return _restore_run(run_dir, best, overrides, "run", "best by validation")
    latest = tf.train.latest_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if latest is None:
        raise SenformerError(f"run {run_dir}: no checkpoint in {checkpoints} (has training saved one yet?)")
    return _restore_run(run_dir, latest, overrides, "run", "latest, no best-by-validation checkpoint")


def _load_run_checkpoint(path: Path, overrides: dict[str, Any]) -> LoadedModel:
    """`RUN/checkpoints/ckpt-N` or `RUN/checkpoints/best/ckpt-N`."""
    folder = path.parent
    if not Path(f"{path}.index").is_file():
        present = sorted((p.name[:-len(".index")] for p in folder.glob("ckpt-*.index")),
                         key=lambda name: int(CHECKPOINT_NAME.match(name).group(1))
                         if CHECKPOINT_NAME.match(name) else -1)
        raise SenformerError(f"--model '{path}': no checkpoint {path.name} in {folder} "
                             f"(there: {', '.join(present) if present else 'none'})")
    run_dir = folder.parent if folder.name == "checkpoints" else folder.parent.parent
    if not (run_dir / "config.json").is_file():
        raise SenformerError(f"--model '{path}': no config.json in its run directory {run_dir}")
    label = "best by validation" if folder.name == "best" else "chosen"
    return _restore_run(run_dir, str(path), overrides, "checkpoint", label)


# ----------------------------------------------------------------------------- published weights
def pretrained_locations(weights: Path | None) -> list[tuple[str, Path | None]]:
    """Where the published weights are looked for, in order: (label, folder or None if unset)."""
    env = os.environ.get(PRETRAINED_ENV)
    return [("--weights", Path(weights) if weights is not None else None),
            (f"${PRETRAINED_ENV}", Path(env) if env else None),
            ("the cache", cache_dir() / PRETRAINED)]


def find_pretrained(weights: Path | None = None) -> Path:
    """The checkpoint prefix of the published weights (`DIR/enformer-fine-tuned-human-1`)."""
    looked = []
    for label, folder in pretrained_locations(weights):
        if folder is None:
            if label != "--weights":
                looked.append(f"{label} (unset)")
            continue
        if all((folder / name).is_file() for name in PRETRAINED_FILES[1:]):
            return folder / PRETRAINED_PREFIX
        looked.append(str(folder))
    target = cache_dir() / PRETRAINED
    raise SenformerError(f"{PRETRAINED}: the published weights ({', '.join(PRETRAINED_FILES)}) are not "
                         f"in {', '.join(looked)}; get them (about 1 GB) with: "
                         f"gsutil -m cp '{PRETRAINED_URL}' {target}")


def _load_pretrained(overrides: dict[str, Any], weights: Path | None) -> LoadedModel:
    prefix = find_pretrained(weights)
    config = configure(ModelConfig.from_preset("enformer"), overrides, source=PRETRAINED)
    source = f"{PRETRAINED} ({prefix})"
    reader = open_checkpoint(prefix, source)
    model = build_for_restore(config)
    kept = (RANDOM_BLOCK_TABLE,) if config.attention == "sparse" else ()
    result = restore_checkpoint(model, prefix, root="module", source=source, allow_missing=kept,
                                reader=reader)
    description = (f"{PRETRAINED}{describe_overrides(overrides)}: DeepMind's published Enformer "
                   f"weights ({prefix.parent})")
    if result.kept:
        description += "; sparse attention's random-block tables seeded, not from the checkpoint"
    return LoadedModel(model, config, description, "pretrained")
