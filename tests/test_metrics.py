"""The evaluation metrics against independent references: scipy.stats.pearsonr, numpy.corrcoef
and a direct pandas group-by."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from senformer_cli.data.targets import TRACK_TYPES
from senformer_cli.metrics import (PearsonAccumulator, PooledPearsonAccumulator, group_means,
                                   per_sequence_pearson)

UNEVEN_BATCHES = (1, 5, 13, 2, 9, 1, 6)  # 37 sequences


def random_split(seed: int, sequences: int = 37, bins: int = 50, tracks: int = 7
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Targets with very different scales and offsets (one around 1e4: cancellation in Σx² − (Σx)²/n
    would show), and predictions correlated with them to different degrees."""
    rng = np.random.default_rng(seed)
    scale = np.array([1.0, 0.01, 100.0, 3.0, 1.0, 5.0, 0.5])[:tracks]
    offset = np.array([0.0, 2.0, 1e4, -7.0, 0.0, 50.0, 1.0])[:tracks]
    targets = rng.gamma(2.0, 1.0, size=(sequences, bins, tracks)) * scale + offset
    noise = rng.normal(size=targets.shape) * scale * np.linspace(0.2, 5.0, tracks)
    predictions = (targets + noise).astype(np.float32)
    return predictions, targets.astype(np.float32)


def pearsonr64(x: np.ndarray, y: np.ndarray) -> float:
    """scipy's Pearson r in float64 (scipy computes float32 input in float32)."""
    return stats.pearsonr(x.astype(np.float64).ravel(), y.astype(np.float64).ravel()).statistic


def in_batches(*arrays: np.ndarray, sizes=UNEVEN_BATCHES):
    start = 0
    for size in sizes:
        yield tuple(a[start:start + size] for a in arrays)
        start += size
    assert start == len(arrays[0])


def test_streaming_pearson_over_uneven_batches_equals_scipy():
    predictions, targets = random_split(0)  # float32, as the model gives them
    accumulator = PearsonAccumulator(predictions.shape[-1])
    for x, y in in_batches(predictions, targets):
        accumulator.update(x, y)
    r = accumulator.pearson()
    expected = [pearsonr64(predictions[..., t], targets[..., t])
                for t in range(predictions.shape[-1])]
    np.testing.assert_allclose(r, expected, rtol=0, atol=1e-9)
    assert accumulator.count == predictions.shape[0] * predictions.shape[1]


def test_streaming_pearson_accepts_tensorflow_tensors():
    tf = pytest.importorskip("tensorflow")
    predictions, targets = random_split(1, sequences=6, tracks=3)
    accumulator = PearsonAccumulator(3)
    for x, y in in_batches(predictions, targets, sizes=(4, 2)):
        accumulator.update(tf.constant(x), tf.constant(y))
    expected = [pearsonr64(predictions[..., t], targets[..., t]) for t in range(3)]
    np.testing.assert_allclose(accumulator.pearson(), expected, atol=1e-9)


def test_zero_variance_tracks_are_nan_and_the_others_unaffected():
    predictions, targets = random_split(2)
    targets[..., 1] = 3.25          # constant target
    predictions[..., 4] = 0.1       # constant prediction (0.1 is not exact in binary)
    targets[..., 6] = 0.0           # an all-zero track, common in real data
    accumulator = PearsonAccumulator(7)
    for x, y in in_batches(predictions, targets):
        accumulator.update(x, y)
    r = accumulator.pearson()
    assert np.isnan(r[[1, 4, 6]]).all()
    for t in (0, 2, 3, 5):
        assert r[t] == pytest.approx(pearsonr64(predictions[..., t], targets[..., t]), abs=1e-9)


def test_per_sequence_pearson_equals_scipy_per_sequence_and_track():
    predictions, targets = random_split(3, sequences=5)
    targets[2, :, 3] = 1.5  # constant within one sequence only
    r = per_sequence_pearson(predictions, targets)
    assert r.shape == (5, 7)
    for b in range(5):
        for t in range(7):
            if (b, t) == (2, 3):
                assert np.isnan(r[b, t])
            else:
                expected = pearsonr64(predictions[b, :, t], targets[b, :, t])
                assert r[b, t] == pytest.approx(expected, abs=1e-9)


def test_group_means_equal_a_pandas_groupby():
    rng = np.random.default_rng(4)
    types = rng.choice(["dnase_atac", "chip_histone", "chip_tf"], size=40)  # no CAGE tracks
    values = rng.uniform(-1, 1, size=40)
    values[[0, 7, 21]] = np.nan  # zero-variance tracks
    means = group_means(values, types)
    frame = pd.DataFrame({"r": values, "type": types})
    expected = frame.groupby("type")["r"].mean()  # pandas skips NaN
    assert list(means) == [*TRACK_TYPES, "all"]
    for kind in ("dnase_atac", "chip_histone", "chip_tf"):
        assert means[kind] == pytest.approx(expected[kind], abs=1e-12)
    assert np.isnan(means["cage"])
    assert means["all"] == pytest.approx(frame["r"].mean(), abs=1e-12)


def test_pooled_pearson_equals_numpy_corrcoef_over_the_groups_values():
    predictions, targets = random_split(5)
    groups = {"a": [0, 2, 5], "b": [1], "c": [3, 4, 6]}
    pooled = PooledPearsonAccumulator(groups)
    for x, y in in_batches(predictions, targets):
        pooled.update(x, y)
    r = pooled.pearson()
    for name, columns in groups.items():
        x = predictions[..., columns].astype(np.float64).ravel()
        y = targets[..., columns].astype(np.float64).ravel()
        assert r[name] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)


def test_pooled_pearson_of_a_constant_group_is_nan():
    predictions, targets = random_split(6, tracks=3)
    targets[..., 1] = 2.0
    pooled = PooledPearsonAccumulator({"flat": [1], "all": [0, 1, 2]})
    pooled.update(predictions, targets)
    r = pooled.pearson()
    assert np.isnan(r["flat"]) and np.isfinite(r["all"])


def test_accumulator_rejects_mismatched_shapes():
    accumulator = PearsonAccumulator(3)
    with pytest.raises(ValueError):
        accumulator.update(np.zeros((1, 4, 3)), np.zeros((1, 4, 2)))


def test_large_offsets_do_not_lose_precision():
    """Σx² − (Σx)²/n cancels catastrophically when the mean dwarfs the spread; the accumulator's
    shift by the first batch's mean keeps r exact."""
    rng = np.random.default_rng(7)
    targets = 1e6 + rng.normal(size=(20, 64, 2))
    predictions = 3e5 + targets + rng.normal(size=targets.shape)
    accumulator = PearsonAccumulator(2)
    for x, y in in_batches(predictions, targets, sizes=(3, 10, 7)):
        accumulator.update(x, y)
    expected = [pearsonr64(predictions[..., t], targets[..., t]) for t in range(2)]
    np.testing.assert_allclose(accumulator.pearson(), expected, atol=1e-9)
