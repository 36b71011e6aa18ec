"""The evaluate/compare library: evaluate_model against predictions made record by record and
scored with scipy/pandas; compare's statistics against numpy and an exact enumeration of the
Wilcoxon signed-rank distribution; the files it writes."""
from __future__ import annotations

import itertools
import json
import shutil
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval_fixtures import TEST_RECORDS, eval_synthetic, stand_in_model, write_evaluation_folder
from senformer_cli import evaluation
from senformer_cli.config import ModelConfig
from senformer_cli.data.targets import TRACK_TYPES
from senformer_cli.errors import SenformerError
from senformer_cli.evaluation import (compare_results, evaluate_model, read_evaluation,
                                      write_comparison, write_evaluation)

LoadedModel = namedtuple("LoadedModel", "model config description kind")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return eval_synthetic(tmp_path_factory)


@pytest.fixture(scope="module")
def config():
    # 16,384 bp: the 24,576-bp records are centre-cropped, no FASTA needed.
    return ModelConfig.from_preset("tiny", sequence_length=16_384)


@pytest.fixture(scope="module")
def model(config):
    return stand_in_model(config, seed=3)


def reference_arrays(model, config, data_dir, count: int, average_rc: bool):
    """Predictions and targets of the first `count` test records, one record per eager call;
    the reverse complement made in numpy (both axes reversed) and its prediction un-reversed."""
    from senformer_cli.data import load_dataset

    predictions, targets = [], []
    for sequence, target in load_dataset(data_dir, "test", config, batch_size=1)["human"]:
        x = sequence.numpy()
        p = model(x, is_training=False)["human"].numpy()
        if average_rc:  # float32, as the model's outputs
            rc = np.ascontiguousarray(x[:, ::-1, ::-1])
            p = (p + model(rc, is_training=False)["human"].numpy()[:, ::-1]) / np.float32(2)
        predictions.append(p.astype(np.float64))
        targets.append(target.numpy().astype(np.float64))
    return np.concatenate(predictions)[:count], np.concatenate(targets)[:count]


def scipy_r(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x.ravel(), y.ravel()).statistic)


@pytest.mark.parametrize("batch_size, max_sequences, average_rc, metric", [
    (2, None, False, "per-track"),  # batches of 2, 2, 1 across files of 2 records
    (3, 4, True, "pooled"),         # a batch cut short by --max-sequences, both strands
])
def test_evaluate_model_equals_record_by_record_scipy_and_pandas(
        data, config, model, batch_size, max_sequences, average_rc, metric):
    result = evaluate_model(model, config, data / "human", batch_size=batch_size,
                            max_sequences=max_sequences, average_rc=average_rc, metric=metric)
    count = max_sequences or TEST_RECORDS
    x, y = reference_arrays(model, config, data / "human", count, average_rc)
    sheet = pd.read_csv(data / "human" / "targets.txt", sep="\t")
    num_tracks = len(sheet)
    assert result.summary["num_sequences"] == count

    # tracks.csv: Pearson over all (sequence, bin) pairs of each track.
    expected_r = np.array([scipy_r(x[..., t], y[..., t]) for t in range(num_tracks)])
    tracks = result.tracks
    assert list(tracks.columns) == ["index", "identifier", "description", "track_type", "pearson_r"]
    assert list(tracks["identifier"]) == list(sheet["identifier"])
    np.testing.assert_allclose(tracks["pearson_r"], expected_r, atol=1e-9, equal_nan=True)
    assert np.isnan(expected_r[1]) and np.isfinite(np.delete(expected_r, 1)).all()

    # summary: mean and median per track type (pandas skips NaN), zero-variance tracks counted.
    frame = pd.DataFrame({"type": tracks["track_type"], "r": expected_r})
    for kind in (*TRACK_TYPES, "all"):
        part = frame if kind == "all" else frame[frame["type"] == kind]
        info = result.summary[kind]
        assert info["tracks"] == len(part)
        assert info["excluded_zero_variance"] == int(part["r"].isna().sum())
        assert info["mean_r"] == pytest.approx(part["r"].mean(), abs=1e-9)
        assert info["median_r"] == pytest.approx(part["r"].median(), abs=1e-9)
        if metric == "pooled":
            columns = list(part.index)
            pooled = np.corrcoef(x[..., columns].ravel(), y[..., columns].ravel())[0, 1]
            assert info["pooled_r"] == pytest.approx(pooled, abs=1e-9)
        else:
            assert "pooled_r" not in info

    # sequences.csv: per sequence, per-track r over its bins, mean over the type's tracks.
    rows = [{"sequence": s, "track": t, "r": scipy_r(x[s, :, t], y[s, :, t])}
            for s in range(count) for t in range(num_tracks)]
    per_sequence = pd.DataFrame(rows)
    per_sequence["track_type"] = tracks["track_type"].to_numpy()[per_sequence["track"]]
    expected = pd.concat([
        per_sequence.groupby(["sequence", "track_type"])["r"].mean().reset_index(),
        per_sequence.groupby("sequence")["r"].mean().reset_index().assign(track_type="all"),
    ])
    got = result.sequences.merge(expected, on=["sequence", "track_type"], how="outer")
    assert len(got) == count * 5 == len(result.sequences)
    np.testing.assert_allclose(got["pearson_r"], got["r"], atol=1e-9, equal_nan=True)


def test_average_rc_changes_the_predictions(data, config, model):
    """The stand-in model is strand-asymmetric, so the averaged predictions must differ (guards
    against an --average-rc that silently does nothing)."""
    forward = evaluate_model(model, config, data / "human", max_sequences=2)
    averaged = evaluate_model(model, config, data / "human", max_sequences=2, average_rc=True)
    assert not np.allclose(forward.tracks["pearson_r"], averaged.tracks["pearson_r"],
                           equal_nan=True)


def test_the_partial_last_batch_does_not_retrace(data, config):
    model = stand_in_model(config, seed=5)
    calls = []
    evaluate_model(model, config, data / "human", batch_size=2,
                   progress=lambda done, total: calls.append((done, total)))
    evaluate_model(model, config, data / "human", batch_size=4)  # batches of 4 and 1
    predict = evaluation._predictor(model, config, "human", False)
    assert predict.experimental_get_tracing_count() == 1
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_explicit_head_reads_a_directory_with_any_name(data, config, model, tmp_path):
    renamed = tmp_path / "organism-a"
    shutil.copytree(data / "human", renamed)
    result = evaluate_model(model, config, renamed, head="human", max_sequences=2)
    direct = evaluate_model(model, config, data / "human", max_sequences=2)
    np.testing.assert_array_equal(result.tracks["pearson_r"], direct.tracks["pearson_r"])


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, options, message", [
    ({"heads": {"human": 12, "mouse": 8}}, {}, "num_targets = 16 but the model's 'human' head has 12"),
    ({}, {"head": "chicken"}, "--head chicken: the model has no such head (human, mouse)"),
    ({"heads": {"mouse": 8}}, {}, "directory name is not a head of the model (mouse)"),
    ({}, {"split": "holdout"}, "unknown split 'holdout'"),
    ({}, {"metric": "spearman"}, "--metric 'spearman'"),
])
def test_bad_input_is_one_user_error(data, config, change, options, message):
    bad_config = config.replace(**change)
    with pytest.raises(SenformerError) as error:
        evaluate_model(stand_in_model(bad_config), bad_config, data / "human", **options)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_split_is_a_user_error(data, config, model, tmp_path):
    copy = tmp_path / "human"
    shutil.copytree(data / "human", copy)
    for path in (copy / "tfrecords").glob("test-*.tfr"):
        path.unlink()
    with pytest.raises(SenformerError, match=r"no 'test' records \(test-<k>\.tfr\)"):
        evaluate_model(model, config, copy)


def test_an_empty_split_is_a_user_error(data, config, model, tmp_path):
    from senformer_cli.data.basenji import write_records

    copy = tmp_path / "human"
    shutil.copytree(data / "human", copy)
    for path in (copy / "tfrecords").glob("test-*.tfr"):
        path.unlink()
    write_records(copy / "tfrecords" / "test-0.tfr", [])
    statistics = json.loads((copy / "statistics.json").read_text())
    statistics["test_seqs"] = 0
    (copy / "statistics.json").write_text(json.dumps(statistics))
    with pytest.raises(SenformerError, match=r"the 'test' split is empty \(test_seqs = 0\)"):
        evaluate_model(model, config, copy)


# ---------------------------------------------------------------- files
def test_written_folder_reads_back_with_the_documented_columns(data, config, model, tmp_path):
    result = evaluate_model(model, config, data / "human", max_sequences=3)
    out = write_evaluation(result, tmp_path / "eval")
    assert sorted(p.name for p in out.iterdir()) == ["sequences.csv", "summary.json", "tracks.csv"]
    tracks = pd.read_csv(out / "tracks.csv")
    sequences = pd.read_csv(out / "sequences.csv")
    assert list(tracks.columns) == ["index", "identifier", "description", "track_type", "pearson_r"]
    assert list(sequences.columns) == ["sequence", "track_type", "pearson_r"]
    assert json.loads((out / "summary.json").read_text()) == result.summary
    back = read_evaluation(out)
    np.testing.assert_allclose(back.tracks["pearson_r"], result.tracks["pearson_r"], rtol=1e-15,
                               equal_nan=True)
    np.testing.assert_allclose(back.sequences["pearson_r"], result.sequences["pearson_r"],
                               rtol=1e-15, equal_nan=True)

    # Not empty: refused unless overwrite, which replaces the whole folder.
    (out / "stale.txt").write_text("x")
    with pytest.raises(SenformerError, match="not empty .* --overwrite"):
        write_evaluation(result, out)
    write_evaluation(result, out, overwrite=True)
    assert not (out / "stale.txt").exists()


# ---------------------------------------------------------------- compare
def exact_wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided p of the signed-rank statistic by enumerating all 2^n sign patterns
    (no zeros or ties)."""
    ranks = stats.rankdata(np.abs(differences))
    w_plus = ranks[differences > 0].sum()
    observed = min(w_plus, ranks.sum() - w_plus)
    null = np.array([np.dot(signs, ranks)
                     for signs in itertools.product((0, 1), repeat=len(ranks))])
    return min(1.0, 2.0 * np.mean(null <= observed))


@pytest.fixture
def two_folders(tmp_path):
    rng = np.random.default_rng(12)
    a = {kind: rng.uniform(0.2, 0.8, size=13) for kind in ("dnase_atac", "cage", "all")}
    b = {kind: np.clip(a[kind] + rng.normal(0.03, 0.08, size=13), -1, 1) for kind in a}
    a["cage"][4] = np.nan  # an undefined per-sequence value in A: that pair is left out
    mean_a = {"dnase_atac": 0.5, "cage": 0.4, "all": 0.45}
    mean_b = {"dnase_atac": 0.55, "cage": 0.35, "all": 0.45}
    folder_a = write_evaluation_folder(tmp_path / "A", a, mean_r=mean_a, model="enformer-ish")
    folder_b = write_evaluation_folder(tmp_path / "B", b, mean_r=mean_b, model="s-enformer-ish")
    return folder_a, folder_b, a, b, mean_a, mean_b


def test_compare_statistics_equal_numpy_and_the_exact_wilcoxon_distribution(two_folders):
    folder_a, folder_b, a, b, mean_a, mean_b = two_folders
    result = compare_results(read_evaluation(folder_a), read_evaluation(folder_b))
    table = result.table.set_index("track_type")
    assert list(table.index) == ["dnase_atac", "cage", "all"]
    for kind in table.index:
        keep = ~np.isnan(a[kind]) & ~np.isnan(b[kind])
        x, y = a[kind][keep], b[kind][keep]
        row = table.loc[kind]
        assert row["sequences"] == keep.sum() == (12 if kind == "cage" else 13)
        assert row["mean_r_a"] == mean_a[kind] and row["mean_r_b"] == mean_b[kind]
        assert row["difference"] == pytest.approx(mean_b[kind] - mean_a[kind], abs=1e-12)
        assert row["sequence_mean_r_a"] == pytest.approx(x.mean(), abs=1e-12)
        assert row["sequence_mean_r_b"] == pytest.approx(y.mean(), abs=1e-12)
        assert row["r_between"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
        assert row["percent_b_ge_a"] == pytest.approx(100.0 * np.count_nonzero(y >= x) / len(x))
        assert row["wilcoxon_p"] == pytest.approx(exact_wilcoxon_p(y - x), rel=1e-9)
    assert result.summary["a"] == "enformer-ish" and result.summary["b"] == "s-enformer-ish"


def test_identical_models_compare_as_equal_without_a_wilcoxon_error(two_folders):
    folder_a = two_folders[0]
    result = compare_results(read_evaluation(folder_a), read_evaluation(folder_a))
    for row in result.table.to_dict("records"):
        assert row["difference"] == 0 and row["percent_b_ge_a"] == 100.0
        assert row["wilcoxon_p"] == 1.0 and row["r_between"] == pytest.approx(1.0)


@pytest.mark.parametrize("change, message", [
    ({"target_length": 128}, "predicts 896 bins, B (.*) 128"),
    ({"split": "valid"}, "'test' split, B (.*) on 'valid'"),
    ({"identifiers": ["T0", "OTHER"]}, "different tracks: row 1 is T1 in A, OTHER in B"),
    ({"sequences": 10}, "covers 13 sequences, B (.*) 10"),
])
def test_incomparable_results_are_a_user_error(tmp_path, change, message):
    values = {kind: np.linspace(0.1, 0.9, 13) for kind in ("dnase_atac", "cage", "all")}
    means = {kind: 0.5 for kind in values}
    folder_a = write_evaluation_folder(tmp_path / "A", values, mean_r=means)
    n = change.pop("sequences", 13)
    values_b = {kind: v[:n] for kind, v in values.items()}
    folder_b = write_evaluation_folder(tmp_path / "B", values_b, mean_r=means, **change)
    with pytest.raises(SenformerError, match=message):
        compare_results(read_evaluation(folder_a), read_evaluation(folder_b))


def test_compare_runs_each_model_at_its_own_input_length(data, monkeypatch, tmp_path):
    """A at 16,384 bp (records cropped), B at 32,768 bp (records extended with FASTA flanks)."""
    short = ModelConfig.from_preset("tiny", sequence_length=16_384)
    long = ModelConfig.from_preset("tiny")
    models = {"A": LoadedModel(stand_in_model(short, 1), short, "A model", "run"),
              "B": LoadedModel(stand_in_model(long, 1), long, "B model", "run")}
    monkeypatch.setattr(evaluation, "_load", lambda spec, overrides, weights: models[spec])
    result = evaluation.compare("A", "B", data / "human", genome=data / "human.fa",
                                max_sequences=3, out=tmp_path / "cmp")
    assert result.summary["sequence_length_a"] == 16_384
    assert result.summary["sequence_length_b"] == 32_768
    assert result.evaluations["b"].summary["extension"].startswith("flanks from")
    # The stand-in sees only each bin's bases, and the scored bins are the same record bases at
    # both lengths, so the two models (same weights) agree exactly on every sequence.
    assert (result.table["r_between"].dropna() > 1 - 1e-9).all()
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == [
        "a", "b", "compare.csv", "compare.json", "compare.png"]


def test_compare_refuses_models_with_different_bins_before_running(data, monkeypatch):
    a = ModelConfig.from_preset("tiny", sequence_length=16_384)
    b = ModelConfig.from_preset("tiny", sequence_length=16_384, target_length=64)
    models = {"A": LoadedModel(None, a, "A", "run"), "B": LoadedModel(None, b, "B", "run")}
    monkeypatch.setattr(evaluation, "_load", lambda spec, overrides, weights: models[spec])
    with pytest.raises(SenformerError, match="A .A. predicts 128 bins, B .B. 64"):
        evaluation.compare("A", "B", data / "human")


def test_compare_png_is_a_valid_image_with_one_panel_per_track_type(two_folders, tmp_path):
    import matplotlib.image

    folder_a, folder_b = two_folders[:2]
    result = compare_results(read_evaluation(folder_a), read_evaluation(folder_b))
    out = write_comparison(result, tmp_path / "cmp")
    png = out / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    table = pd.read_csv(out / "compare.csv")
    assert list(table.columns) == list(evaluation.COMPARE_COLUMNS)
    document = json.loads((out / "compare.json").read_text())
    assert set(document["track_types"]) == {"dnase_atac", "cage", "all"}
