"""Restore weights: by variable name (the reference npz) or from object-graph checkpoints (the
published Sonnet checkpoint, `senformer train` run directories)."""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from senformer_cli.errors import SenformerError


def variables_by_name(variables: Sequence[tf.Variable]) -> dict[str, list[tf.Variable]]:
    """name -> variables of that name in `module.variables` order.

    Names repeat only for a batch norm's two moving averages: the mean comes first, then the variance.
    """
    named: dict[str, list[tf.Variable]] = defaultdict(list)
    for variable in variables:
        named[variable.name].append(variable)
    return dict(named)


def assign_by_name(variables: Sequence[tf.Variable], values: Mapping[str, Sequence[np.ndarray]],
                   source: str, allow_missing: Sequence[str] = ()) -> int:
    """Assign `values[name][k]` to the k-th variable called `name`; return how many were assigned.

    Every variable must get a value of its shape, except those whose name contains one of
    `allow_missing` (e.g. the sparse attention's random block table, absent from Enformer weights).
    """
    assigned = 0
    for name, group in variables_by_name(variables).items():
        arrays = values.get(name)
        if arrays is None or len(arrays) < len(group):
            if any(part in name for part in allow_missing):
                continue
            raise SenformerError(f"{source}: no weights for variable '{name}'")
        for variable, array in zip(group, arrays):
            if tuple(variable.shape) != tuple(np.shape(array)):
                raise SenformerError(f"{source}: variable '{name}' has shape {tuple(variable.shape)}, "
                                     f"the weights have {tuple(np.shape(array))}")
            variable.assign(np.asarray(array, dtype=variable.dtype.as_numpy_dtype))
            assigned += 1
    return assigned


def read_npz_weights(path: Path | str) -> dict[str, list[np.ndarray]]:
    """Weights stored as `w::<variable name>#<k>` arrays (the reference format) -> name -> [arrays]."""
    path = Path(path)
    values: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    try:  # a damaged archive fails in np.load or only when an array is read
        with np.load(path) as archive:
            for key in archive.files:
                if not key.startswith("w::"):
                    continue
                name, _, index = key[3:].rpartition("#")
                values[name][int(index)] = archive[key]
    except Exception as error:  # OSError, ValueError, zipfile.BadZipFile, tokenize.TokenError, ...
        raise SenformerError(f"{path}: cannot read weights ({type(error).__name__}: {error})") from None
    return {name: [arrays[k] for k in sorted(arrays)] for name, arrays in values.items()}


# ----------------------------------------------------------------------------- object-graph checkpoints
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Variables a checkpoint may lack: the sparse attention's random-block table is absent from
# Enformer weights (full attention has none) and keeps its seeded values.
RANDOM_BLOCK_TABLE = "random_blocks"


def checkpoint_keys(module: tf.Module, root: str) -> list[tuple[tf.Variable, list[str]]]:
    """Every variable of `module` with the keys it has in `tf.train.Checkpoint(<root>=module)`.

    The keys are the object-graph paths TensorFlow writes (`module/_trunk/_layers/0/.../w` +
    `/.ATTRIBUTES/VARIABLE_VALUE`), found by the same breadth-first walk over tracked attributes;
    a variable reachable along several paths lists all of them (shortest first). Variables come
    in `module.variables` order.
    """
    paths: dict[int, list[str]] = defaultdict(list)
    queue: deque[tuple[str, object]] = deque([(root, module)])
    seen: set[int] = set()
    while queue:
        path, node = queue.popleft()
        if isinstance(node, tf.Variable):
            paths[id(node)].append(path + VARIABLE_SUFFIX)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        for name, child in node._trackable_children(save_type="checkpoint").items():
            queue.append((f"{path}/{name}", child))
    return [(variable, paths.get(id(variable), [])) for variable in module.variables]


@dataclass
class RestoreResult:
    """What `restore_checkpoint` did: variables restored and those left at their own values."""

    restored: int
    kept: list[str]


def open_checkpoint(prefix: Path | str, source: str) -> tf.train.CheckpointReader:
    """A reader of the checkpoint `prefix`; SenformerError when it cannot be read. Open it before
    building a large model, so a damaged checkpoint fails at once."""
    try:
        return tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SenformerError(f"{source}: cannot read checkpoint {prefix} ({message})") from None


def restore_checkpoint(module: tf.Module, prefix: Path | str, root: str, source: str,
                       allow_missing: Sequence[str] = (),
                       reader: tf.train.CheckpointReader | None = None) -> RestoreResult:
    """Restore `module` from the object-graph checkpoint `prefix`, where it was saved as `root`.

    Every variable must be in the checkpoint with its shape (except those whose name contains one
    of `allow_missing`, which keep their values), and the checkpoint must hold no model variable
    that the module lacks. Nothing is assigned unless all fit; a misfit raises SenformerError
    naming the first variable that differs, with both shapes.
    """
    reader = reader or open_checkpoint(prefix, source)
    shapes = reader.get_variable_to_shape_map()
    plan: list[tuple[tf.Variable, str]] = []
    kept: list[str] = []
    used: set[str] = set()
    for variable, keys in checkpoint_keys(module, root):
        key = next((k for k in keys if k in shapes), None)
        if key is None:
            if any(part in variable.name for part in allow_missing):
                kept.append(variable.name)
                continue
            raise SenformerError(f"{source}: the checkpoint has no value for the model's variable "
                                 f"'{variable.name}' {tuple(variable.shape)} "
                                 f"(looked for {keys[0] if keys else 'an object-graph key'})")
        if tuple(shapes[key]) != tuple(variable.shape):
            raise SenformerError(f"{source}: variable '{variable.name}' has shape "
                                 f"{tuple(variable.shape)} in the model, {tuple(shapes[key])} in "
                                 "the checkpoint")
        plan.append((variable, key))
        used.update(keys)
    extra = sorted(key for key in shapes if key.startswith(root + "/") and key.endswith(VARIABLE_SUFFIX)
                   and "/.OPTIMIZER_SLOT/" not in key and key not in used)
    if extra:
        raise SenformerError(f"{source}: the checkpoint's variable {extra[0][:-len(VARIABLE_SUFFIX)]} "
                             f"{tuple(shapes[extra[0]])} has no counterpart in the model "
                             f"({len(extra)} such variables)")
    for variable, key in plan:
        variable.assign(reader.get_tensor(key).astype(variable.dtype.as_numpy_dtype))
    return RestoreResult(restored=len(plan), kept=kept)
