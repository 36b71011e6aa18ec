"""Pearson correlations for evaluation: streaming per track, pooled per track type, per sequence.

The Enformer paper's metric is, for each track, the Pearson r over every (sequence, bin) pair of
a split, then the mean over the tracks of each track type. `PearsonAccumulator` keeps six float64
running sums per track (n, Σx, Σy, Σx², Σy², Σxy), so memory does not grow with the split.
The S-Enformer report pooled all positions × tracks × sequences of a type into one r:
`PooledPearsonAccumulator`. `per_sequence_pearson` gives the per-sequence values that `compare`
pairs between two models.

Arrays are `[B, bins, tracks]` (numpy or TensorFlow tensors); x = predictions, y = targets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from senformer_cli.data.targets import TRACK_TYPES

__all__ = ["PearsonAccumulator", "PooledPearsonAccumulator", "group_means", "pearson_from_sums",
           "per_sequence_pearson"]


def _as_float64(values) -> np.ndarray:
    """numpy float64 view of a numpy array or TensorFlow tensor."""
    if hasattr(values, "numpy"):
        values = values.numpy()
    return np.asarray(values, dtype=np.float64)


def pearson_from_sums(n, sum_x, sum_y, sum_xx, sum_yy, sum_xy, constant=None) -> np.ndarray:
    """Pearson r from running sums (arrays broadcast).

    NaN where x or y has zero variance: where `constant` (bool, optional) says so, or where
    the variance from the sums is not positive, or n < 2.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sum_xy - sum_x * sum_y / n
        var_x = sum_xx - sum_x * sum_x / n
        var_y = sum_yy - sum_y * sum_y / n
        r = cov / np.sqrt(var_x * var_y)
    undefined = (var_x <= 0) | (var_y <= 0) | (n < 2)
    if constant is not None:
        undefined = undefined | constant
    return np.clip(np.where(undefined, np.nan, r), -1.0, 1.0)


class _Range:
    """Running minimum and maximum of x and y per column: exact zero-variance detection."""

    def __init__(self, size: int) -> None:
        self.low = np.full((2, size), np.inf)
        self.high = np.full((2, size), -np.inf)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """x, y [rows, size]."""
        np.minimum(self.low, (x.min(axis=0), y.min(axis=0)), out=self.low)
        np.maximum(self.high, (x.max(axis=0), y.max(axis=0)), out=self.high)

    def constant(self) -> np.ndarray:
        """[size] bool: x or y took a single value (or none)."""
        return (self.high <= self.low).any(axis=0)


class PearsonAccumulator:
    """Per-track Pearson r over all (sequence, bin) pairs seen, from float64 running sums.

    Usage: `acc = PearsonAccumulator(num_tracks)`, `acc.update(pred, target)` per batch
    (`[B, bins, tracks]`), `acc.pearson()` -> `[tracks]` (NaN where a track has zero variance).

    The sums are taken of values shifted by the first batch's per-track means (r does not change
    under a shift); this keeps Σx² - (Σx)²/n free of cancellation when the means are large.
    """

    def __init__(self, num_tracks: int) -> None:
        self.num_tracks = int(num_tracks)
        self.count = 0  # (sequence, bin) pairs per track
        self.shift_x: np.ndarray | None = None
        self.shift_y: np.ndarray | None = None
        zeros = lambda: np.zeros(self.num_tracks, np.float64)  # noqa: E731
        self.sum_x, self.sum_y = zeros(), zeros()
        self.sum_xx, self.sum_yy, self.sum_xy = zeros(), zeros(), zeros()
        self.range = _Range(self.num_tracks)

    def update(self, predictions, targets) -> None:
        """Add a batch: predictions and targets `[B, bins, tracks]`."""
        x = _as_float64(predictions)
        y = _as_float64(targets)
        if x.shape != y.shape or x.ndim != 3 or x.shape[-1] != self.num_tracks:
            raise ValueError(f"predictions {x.shape} and targets {y.shape} must both be "
                             f"[batch, bins, {self.num_tracks}]")
        x = x.reshape(-1, self.num_tracks)
        y = y.reshape(-1, self.num_tracks)
        if not len(x):
            return
        self.range.update(x, y)
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(axis=0), y.mean(axis=0)
        x = x - self.shift_x
        y = y - self.shift_y
        self.count += len(x)
        self.sum_x += x.sum(axis=0)
        self.sum_y += y.sum(axis=0)
        self.sum_xx += np.einsum("ij,ij->j", x, x)
        self.sum_yy += np.einsum("ij,ij->j", y, y)
        self.sum_xy += np.einsum("ij,ij->j", x, y)

    def sums(self) -> tuple[np.ndarray, ...]:
        """(n, Σx, Σy, Σx², Σy², Σxy) per track, of the shifted values."""
        n = np.full(self.num_tracks, float(self.count))
        return n, self.sum_x, self.sum_y, self.sum_xx, self.sum_yy, self.sum_xy

    def pearson(self) -> np.ndarray:
        """Pearson r per track `[tracks]`; NaN for a track with zero variance (or no data)."""
        return pearson_from_sums(*self.sums(), constant=self.range.constant())


class PooledPearsonAccumulator:
    """The S-Enformer report's pooled variant: one Pearson r per track group over every
    (sequence, bin, track) value of the group's tracks.

    `track_groups` maps a group name to its track (column) indices, e.g. from
    `senformer_cli.data.targets.track_type_indices`. `pearson()` -> {group: r}.
    """

    def __init__(self, track_groups: dict[str, list[int]]) -> None:
        self.track_groups = {name: np.asarray(list(indices), dtype=np.int64)
                             for name, indices in track_groups.items()}
        self.count = {name: 0 for name in self.track_groups}
        self.sums = {name: np.zeros(5, np.float64) for name in self.track_groups}
        self.shift: dict[str, tuple[float, float] | None] = {name: None for name in self.track_groups}
        self.range = {name: _Range(1) for name in self.track_groups}

    def update(self, predictions, targets) -> None:
        """Add a batch: predictions and targets `[B, bins, tracks]`."""
        x_all = _as_float64(predictions)
        y_all = _as_float64(targets)
        if x_all.shape != y_all.shape or x_all.ndim != 3:
            raise ValueError(f"predictions {x_all.shape} and targets {y_all.shape} must both be "
                             "[batch, bins, tracks]")
        for name, indices in self.track_groups.items():
            x = x_all[..., indices].ravel()
            y = y_all[..., indices].ravel()
            if not x.size:
                continue
            self.range[name].update(x[:, None], y[:, None])
            if self.shift[name] is None:  # same shift trick as PearsonAccumulator
                self.shift[name] = (float(x.mean()), float(y.mean()))
            x = x - self.shift[name][0]
            y = y - self.shift[name][1]
            self.count[name] += x.size
            self.sums[name] += (x.sum(), y.sum(), x @ x, y @ y, x @ y)

    def pearson(self) -> dict[str, float]:
        """{group: pooled Pearson r} (NaN where the group's values have zero variance)."""
        return {name: float(pearson_from_sums(self.count[name], *self.sums[name],
                                              constant=self.range[name].constant()[0]))
                for name in self.track_groups}


def per_sequence_pearson(predictions, targets) -> np.ndarray:
    """Pearson r over the bins of each sequence, per track: `[B, bins, tracks]` -> `[B, tracks]`.

    NaN where a track's predictions or targets are constant over the sequence's bins.
    """
    x = _as_float64(predictions)
    y = _as_float64(targets)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"predictions {x.shape} and targets {y.shape} must both be "
                         "[batch, bins, tracks]")
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)  # [B, tracks]
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    cov = np.einsum("bij,bij->bj", x, y)
    var_x = np.einsum("bij,bij->bj", x, x)
    var_y = np.einsum("bij,bij->bj", y, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    r = np.where(constant | (var_x <= 0) | (var_y <= 0), np.nan, r)
    return np.clip(r, -1.0, 1.0)


def group_means(values: np.ndarray, track_types: Sequence[str]) -> dict[str, float]:
    """NaN-skipping mean of per-track `values` within each track type, plus "all".

    Keys in `TRACK_TYPES` order, then "all"; a type without tracks (or with only NaN values)
    maps to NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    types = np.asarray(list(track_types))
    if values.shape != types.shape:
        raise ValueError(f"{values.shape[0]} values but {types.shape[0]} track types")
    means = {}
    for kind in TRACK_TYPES:
        means[kind] = _nanmean(values[types == kind])
    means["all"] = _nanmean(values)
    return means


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
