"""Restore weights by variable name (the published Enformer checkpoint's names)."""
from __future__ import annotations

from collections import defaultdict
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
    try:
        archive = np.load(path)
    except (OSError, ValueError) as error:
        raise SenformerError(f"{path}: cannot read weights ({error})") from None
    values: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for key in archive.files:
        if not key.startswith("w::"):
            continue
        name, _, index = key[3:].rpartition("#")
        values[name][int(index)] = archive[key]
    return {name: [arrays[k] for k in sorted(arrays)] for name, arrays in values.items()}
