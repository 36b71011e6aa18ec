"""`senformer export`: a model as a SavedModel that plain TensorFlow can run, and back.

The SavedModel has, like the published TF-Hub Enformer, a `predict_on_batch` signature and method:
float32 one-hot `[None, sequence_length, 4]` -> `{head: [None, target_length, tracks]}` (inference
mode). The configuration is stored inside twice: as the string variable `config_json` (so
`tf.saved_model.load(DIR).config_json.numpy()` has it without this package) and as
`DIR/assets/config.json` (so `load_model(DIR)` reads it without loading the graph). `load_model(DIR)`
rebuilds the model from that configuration, with any `--set` overrides, and restores the variables
from `DIR/variables/` by object-graph key, so an export can be evaluated at another input length or
fine-tuned like any other model.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.fileio import atomic_path
from senformer_cli.model.enformer import Enformer

FORMAT = "senformer-savedmodel-1"
CONFIG_ASSET = "config.json"
# The exported module keeps the model under this attribute, so its variables are stored under
# `model/...` in DIR/variables/, the same key a run directory's checkpoints use.
MODEL_KEY = "model"


class ExportedModel(tf.Module):
    """What the SavedModel holds: the model, its configuration and the prediction function."""

    def __init__(self, model: Enformer, document: dict[str, Any], asset_path: Path):
        super().__init__(name="senformer_export")
        self.model = model
        text = json.dumps(document, indent=2) + "\n"
        self.config_json = tf.Variable(text, trainable=False, dtype=tf.string, name="config_json")
        self.config_file = tf.saved_model.Asset(str(asset_path))
        spec = tf.TensorSpec([None, model.config.sequence_length, 4], tf.float32, name="inputs")
        self.predict_on_batch = tf.function(self._predict, input_signature=[spec], autograph=False)

    def _predict(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """[B, L, 4] float32 one-hot -> {head: [B, target_length, tracks]}."""
        return self.model(inputs, is_training=False)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SenformerError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SenformerError(f"--out {out}: the folder holds files; choose another or add --overwrite")


def export_model(spec: str, out: Path, overrides: dict[str, Any] | None = None, *,
                 weights: Path | None = None, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Resolve `spec` (see `load_model`) and write it to `out` as a SavedModel, atomically.

    `progress(stage)` is told each stage ('loading', 'tracing and writing'). Returns a summary:
    model description, kind, output folder, lengths, heads, parameters and bytes written.
    """
    from senformer_cli.model.load import load_model

    out = Path(out)
    _check_out(out, overwrite)
    report = progress or (lambda stage: None)
    report("loading the model")
    loaded = load_model(spec, overrides, weights=weights)
    report("tracing and writing the SavedModel")
    write_saved_model(loaded.model, loaded.config, out, description=loaded.description)
    config = loaded.config
    return {
        "model": loaded.description,
        "kind": loaded.kind,
        "out": str(out),
        "signature": "predict_on_batch",
        "input_shape": [None, config.sequence_length, 4],
        "outputs": {head: [None, config.target_length, tracks] for head, tracks in config.heads.items()},
        "attention": config.attention,
        "parameters": int(sum(np.prod(v.shape) for v in loaded.model.trainable_variables)),
        "size_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "config": config.to_dict(),
    }


def write_saved_model(model: Enformer, config: ModelConfig, out: Path, description: str = "") -> None:
    """Write `model` (variables created) to `out` as a SavedModel; `out` is replaced only once
    the new SavedModel is complete."""
    document = {"format": FORMAT, "model": config.to_dict(), "description": description}
    with tempfile.TemporaryDirectory() as scratch, atomic_path(out) as tmp:
        asset = Path(scratch) / CONFIG_ASSET
        asset.write_text(json.dumps(document, indent=2) + "\n")
        exported = ExportedModel(model, document, asset)
        signature = exported.predict_on_batch.get_concrete_function()
        tf.saved_model.save(exported, str(tmp), signatures={"predict_on_batch": signature})


def read_export_config(path: Path) -> tuple[ModelConfig, str]:
    """(configuration, description) stored in an export's `assets/config.json`."""
    asset = path / "assets" / CONFIG_ASSET
    try:
        document = json.loads(asset.read_text())
    except FileNotFoundError:
        raise SenformerError(f"--model '{path}': a SavedModel, but not one written by senformer export "
                             f"(no {asset.relative_to(path)})") from None
    except json.JSONDecodeError as error:
        raise SenformerError(f"{asset}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or \
            not isinstance(document.get("model"), dict):
        raise SenformerError(f"{asset}: not a senformer export configuration (format {FORMAT})")
    config = ModelConfig.from_dict(document["model"], source=f"{asset} 'model'")
    return config, str(document.get("description") or "")


def load_saved_model(path: Path, overrides: dict[str, Any] | None = None):
    """`load_model(DIR)` for an export: rebuild from the stored configuration (+ overrides) and
    restore every variable from `DIR/variables/`."""
    from senformer_cli.model.load import LoadedModel, describe_overrides, build_for_restore, configure
    from senformer_cli.model.pretrained import restore_checkpoint

    overrides = dict(overrides or {})
    saved, description = read_export_config(path)
    config = configure(saved, overrides, source=f"{path / 'assets' / CONFIG_ASSET} with --set")
    model = build_for_restore(config)
    restore_checkpoint(model, path / "variables" / "variables", root=MODEL_KEY,
                       source=f"SavedModel {path}")
    text = f"SavedModel {path}{describe_overrides(overrides)}"
    if description:
        text += f" (exported from {description})"
    return LoadedModel(model, config, text, "savedmodel")
