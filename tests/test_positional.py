"""Relative positional features against an independent numpy/scipy construction of DESIGN.md §3."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from senformer_cli.model.positional import relative_distance_table, relative_position_features


def reference_features(seq_length: int, feature_size: int) -> np.ndarray:
    """[2T-1, feature_size] in float64: row d + T - 1 for d = -(T-1)..(T-1).

    Exponential, central mask and gamma basis functions of |d| (feature_size / 6 each), then the
    same multiplied by sign(d).
    """
    n = feature_size // 6
    d = np.arange(-(seq_length - 1), seq_length, dtype=np.float64)
    a = np.abs(d)[:, None]
    half_lives = 2.0 ** np.linspace(3, np.log2(seq_length), n)
    exponential = np.exp(-np.log(2.0) * a / half_lives)
    central = (2.0 ** np.arange(1, n + 1) - 1 > a).astype(np.float64)
    mean = np.linspace(seq_length / n, seq_length, n)
    stddev = seq_length / (2 * n)
    shape, scale = (mean / stddev) ** 2, stddev**2 / mean
    gamma = stats.gamma.pdf(a, shape, scale=scale) + 1e-8
    gamma = gamma / gamma.max(axis=0, keepdims=True)
    symmetric = np.concatenate([exponential, central, gamma], axis=1)
    return np.concatenate([symmetric, np.sign(d)[:, None] * symmetric], axis=1)


@pytest.mark.parametrize("seq_length, feature_size", [(1536, 192), (256, 24), (64, 12), (96, 6)])
def test_distance_table_matches_numpy_reference(seq_length, feature_size):
    ours = relative_distance_table(seq_length, feature_size).numpy()
    expected = reference_features(seq_length, feature_size)
    assert ours.shape == (2 * seq_length - 1, feature_size)
    n = feature_size // 6
    # Exponential and central mask: float32 rounding only. Gamma: the published float32 formula
    # subtracts lgamma of concentrations up to (2n)^2 ~ 4096 (about 3e4) from a similar log term,
    # which costs up to ~3e-3 of the unit maximum at T = 1,536; a wrong mean, stddev or
    # normalisation moves it by far more.
    tolerances = {"exponential": 1e-6, "central mask": 0.0, "gamma": 4e-3}
    for k, (name, atol) in enumerate(tolerances.items()):
        for signed in (0, 1):
            columns = slice((3 * signed + k) * n, (3 * signed + k + 1) * n)
            np.testing.assert_allclose(ours[:, columns], expected[:, columns], rtol=0, atol=atol,
                                       err_msg=f"{name}, {'signed' if signed else 'symmetric'}")
    # Every gamma basis function peaks where the reference's does (the top is flat: +-1 token).
    gamma = slice(2 * n, 3 * n)
    peaks, expected_peaks = np.argmax(ours[:, gamma], 0), np.argmax(expected[:, gamma], 0)
    assert np.abs(np.abs(peaks - seq_length + 1) - np.abs(expected_peaks - seq_length + 1)).max() <= 1


def test_features_have_the_documented_structure():
    t, n = 1536, 32
    table = relative_distance_table(t, 6 * n).numpy()
    centre = t - 1  # d = 0
    exponential, central, gamma = table[:, :n], table[:, n:2 * n], table[:, 2 * n:3 * n]
    # Exponential: 1 at d = 0, one half at the half life 2^3 = 8 for the first basis function.
    np.testing.assert_allclose(exponential[centre], 1.0, rtol=1e-6)
    np.testing.assert_allclose(exponential[centre + 8, 0], 0.5, rtol=1e-5)
    # Central mask k = 1: only |d| < 1; k = 3: |d| < 7.
    assert central[:, 0].sum() == 1 and central[:, 2].sum() == 13
    # Gamma: every basis function peaks at 1 (normalised over all distances).
    np.testing.assert_allclose(gamma.max(axis=0), 1.0, rtol=1e-5)
    # Symmetric half is even in d, the signed half odd; sign(0) = 0.
    np.testing.assert_array_equal(table[:, :3 * n], table[::-1, :3 * n])
    np.testing.assert_array_equal(table[:, 3 * n:], -table[::-1, 3 * n:])
    assert not table[centre, 3 * n:].any()


def test_features_of_arbitrary_positions_match_the_reference():
    t, size = 128, 12
    # Gamma normalises over the positions given, so pass the whole range (in another order).
    positions = np.random.default_rng(0).permutation(np.arange(-(t - 1), t))
    features = relative_position_features(positions, size, t).numpy()
    np.testing.assert_allclose(features, reference_features(t, size)[positions + t - 1],
                               rtol=0, atol=1e-5)


def test_feature_size_must_split_into_six_parts():
    with pytest.raises(ValueError, match="divisible by 6"):
        relative_distance_table(64, 10)
