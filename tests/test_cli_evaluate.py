"""`senformer evaluate` and `senformer compare` end to end through the CLI on the synthetic tiny
data: the printed JSON and the written files against a direct computation with the resolved
model and scipy, the compare statistics against numpy, and every bad input as one line and exit
code 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from cli_checks import user_error
from eval_fixtures import TEST_RECORDS, eval_synthetic, write_evaluation_folder
from senformer_cli.cli import app
from senformer_cli.data.targets import TRACK_TYPES

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield eval_synthetic(tmp_path_factory)


@pytest.fixture(scope="module")
def evaluated(data, tmp_path_factory):
    """`evaluate --model tiny` at its 32,768-bp input (FASTA flanks), batches of 2 (the last one
    partial), --json and --out."""
    out = tmp_path_factory.mktemp("eval") / "out"
    result = invoke("evaluate", "--model", "tiny", "--data", data / "human", "--genome",
                    data / "human.fa", "--batch-size", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


# ---------------------------------------------------------------- evaluate
def test_evaluate_json_and_files_equal_a_direct_scipy_computation(data, evaluated):
    from senformer_cli.config import ModelConfig
    from senformer_cli.data import load_dataset
    from senformer_cli.model.load import load_model

    summary, out = evaluated
    assert summary["num_sequences"] == TEST_RECORDS and summary["split"] == "test"
    assert summary["model"] == "tiny" and summary["untrained"] is True
    assert summary["model_kind"] == "preset" and "untrained" in summary["model_description"]
    assert summary["sequence_length"] == 32_768 and summary["record_length"] == 24_576
    assert summary["extension"] == f"flanks from {data / 'human.fa'}"
    assert json.loads((out / "summary.json").read_text()) == summary

    # The same model, resolved again, run eagerly one record at a time, scored with scipy.
    config = ModelConfig.from_preset("tiny")
    model = load_model("tiny").model
    x, y = [], []
    loaded = load_dataset(data / "human", "test", config, batch_size=1,
                          genomes={"human": data / "human.fa"})
    for sequence, target in loaded["human"]:
        x.append(model(sequence, is_training=False)["human"].numpy().astype(np.float64))
        y.append(target.numpy().astype(np.float64))
    x, y = np.concatenate(x), np.concatenate(y)

    def r(a: np.ndarray, b: np.ndarray) -> float:
        return np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else stats.pearsonr(a, b).statistic

    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns) == ["index", "identifier", "description", "track_type", "pearson_r"]
    sheet = pd.read_csv(data / "human" / "targets.txt", sep="\t")
    assert list(tracks["identifier"]) == list(sheet["identifier"])
    expected = np.array([r(x[..., t].ravel(), y[..., t].ravel()) for t in range(len(sheet))])
    np.testing.assert_allclose(tracks["pearson_r"], expected, atol=1e-6, equal_nan=True)
    for kind in (*TRACK_TYPES, "all"):
        part = expected if kind == "all" else expected[tracks["track_type"] == kind]
        assert summary[kind]["tracks"] == len(part)
        assert summary[kind]["excluded_zero_variance"] == np.isnan(part).sum()
        assert summary[kind]["mean_r"] == pytest.approx(np.nanmean(part), abs=1e-6)

    sequences = pd.read_csv(out / "sequences.csv")
    assert list(sequences.columns) == ["sequence", "track_type", "pearson_r"]
    assert len(sequences) == TEST_RECORDS * 5
    per_track = np.array([[r(x[s, :, t], y[s, :, t]) for t in range(len(sheet))]
                          for s in range(TEST_RECORDS)])
    for row in sequences.itertuples():
        columns = (slice(None) if row.track_type == "all"
                   else (tracks["track_type"] == row.track_type).to_numpy())
        values = per_track[row.sequence, columns]
        expected_mean = np.nanmean(values) if np.isfinite(values).any() else np.nan
        np.testing.assert_allclose(row.pearson_r, expected_mean, atol=1e-6, equal_nan=True)


def test_evaluate_table_names_model_data_split_and_says_untrained(data):
    result = invoke("evaluate", "--model", "tiny", "--data", data / "human", "--max-sequences",
                    "2", "--set", "sequence_length=16384", "--metric", "pooled")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # rich wraps lines at the terminal width
    assert text.startswith("note: tiny preset with sequence_length=16384: untrained")
    assert "test split, 2 sequences of 5" in text and str(data / "human") in text
    assert "centre crop of the 24,576-bp records" in text
    for label in ("DNase/ATAC", "ChIP histone", "ChIP TF", "CAGE", "all tracks", "pooled r"):
        assert label in text
    assert "S-Enformer report's variant" in text  # the pooled metric is labelled
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_out_refuses_a_non_empty_folder_before_loading_the_model(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("evaluate", "--model", "tiny", "--data", data / "human", "--out", out)
    user_error(result, f"--out {out}: directory is not empty (add --overwrite to replace it)")
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_missing_data_says_what_to_get(data):
    result = invoke("evaluate", "--model", "tiny")
    assert result.exit_code == 2 and result.stdout == ""
    text = result.stderr
    assert text.startswith("error: --data DIR is required")
    assert "gs://basenji_barnyard/data" in text and "requester pays" in text
    assert "1,937" in text and "hg38.ml.fa" in text and "mm10.ml.fa" in text
    assert 2 <= len(text.strip().splitlines()) <= 6


@pytest.fixture
def broken(data, tmp_path):
    """A private copy of the human data directory (to break) and its path."""
    copy = tmp_path / "human"
    shutil.copytree(data / "human", copy)
    return copy


def remove_test_records(folder: Path) -> None:
    for path in (folder / "tfrecords").glob("test-*.tfr"):
        path.unlink()


def empty_test_split(folder: Path) -> None:
    from senformer_cli.data.basenji import write_records

    remove_test_records(folder)
    write_records(folder / "tfrecords" / "test-0.tfr", [])
    statistics = json.loads((folder / "statistics.json").read_text())
    statistics["test_seqs"] = 0
    (folder / "statistics.json").write_text(json.dumps(statistics))


@pytest.mark.parametrize("args, breakage, needle", [
    (["--set", "heads.human=12"], None, "num_targets = 16 but the model's 'human' head has 12"),
    (["--head", "chicken"], None, "--head chicken: the model has no such head (human, mouse)"),
    (["--set", 'heads={"mouse": 8}'], None, "is not a head of the model (mouse)"),
    ([], remove_test_records, "no 'test' records (test-<k>.tfr)"),
    ([], empty_test_split, "the 'test' split is empty (test_seqs = 0)"),
    (["--metric", "spearman"], None, "--metric 'spearman': choose one of per-track, pooled"),
])
def test_bad_data_or_options_are_one_line_and_exit_2(broken, args, breakage, needle):
    if breakage:
        breakage(broken)
    result = invoke("evaluate", "--model", "tiny", "--set", "sequence_length=16384",
                    "--data", broken, *args)
    user_error(result, needle)


def test_an_unknown_model_spec_is_one_line_and_exit_2(data, tmp_path):
    result = invoke("evaluate", "--model", tmp_path / "no-such-model", "--data", data / "human")
    user_error(result, "no-such-model")


# ---------------------------------------------------------------- compare
def test_compare_two_models_writes_table_json_csv_and_png(data, tmp_path):
    import matplotlib.image

    out = tmp_path / "cmp"
    # One transformer layer: each model's prediction is traced once, in proportion to its graph.
    result = invoke("compare", "tiny", "tiny", "--data", data / "human", "--max-sequences", "3",
                    "--set", "sequence_length=16384", "--set", "num_transformer_layers=1",
                    "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["a"] == summary["b"] == "tiny" and summary["num_sequences"] == 3
    assert set(summary["track_types"]) == {*TRACK_TYPES, "all"}
    for info in summary["track_types"].values():  # the same seeded model twice
        assert info["difference"] == 0.0 and info["percent_b_ge_a"] == 100.0
        assert info["wilcoxon_p"] == 1.0 and info["r_between"] == pytest.approx(1.0)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "compare.csv", "compare.json",
                                                     "compare.png"]
    assert json.loads((out / "compare.json").read_text()) == summary
    table = pd.read_csv(out / "compare.csv")
    assert list(table.columns) == ["track_type", "sequences", "mean_r_a", "mean_r_b", "difference",
                                   "sequence_mean_r_a", "sequence_mean_r_b", "r_between",
                                   "percent_b_ge_a", "wilcoxon_p"]
    assert list(table["track_type"]) == [*TRACK_TYPES, "all"]
    png = out / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).shape[2] in (3, 4)
    # Each model's evaluate folder is kept and compares again without running a model.
    again = invoke("compare", "--results", out / "a", out / "b", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["track_types"] == summary["track_types"]


def test_compare_results_statistics_equal_numpy_and_scipy(tmp_path):
    rng = np.random.default_rng(21)
    kinds = ("dnase_atac", "chip_tf", "all")
    a = {k: rng.uniform(0.3, 0.7, 25) for k in kinds}
    b = {k: a[k] + rng.normal(0.02, 0.05, 25) for k in kinds}
    means_a = {"dnase_atac": 0.61, "chip_tf": 0.52, "all": 0.56}
    means_b = {"dnase_atac": 0.58, "chip_tf": 0.55, "all": 0.565}
    folder_a = write_evaluation_folder(tmp_path / "enformer", a, mean_r=means_a, model="runs/e")
    folder_b = write_evaluation_folder(tmp_path / "senformer", b, mean_r=means_b, model="runs/s")
    result = invoke("compare", "--results", folder_a, folder_b, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["a"], summary["b"]) == ("runs/e", "runs/s")
    for kind in kinds:
        info = summary["track_types"][kind]
        assert info["difference"] == pytest.approx(means_b[kind] - means_a[kind], abs=1e-12)
        assert info["r_between"] == pytest.approx(np.corrcoef(a[kind], b[kind])[0, 1], abs=1e-12)
        assert info["percent_b_ge_a"] == pytest.approx(100 * np.mean(b[kind] >= a[kind]))
        assert info["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b[kind] - a[kind]).pvalue,
                                                   rel=1e-12)
    table = invoke("compare", "--results", folder_a, folder_b)
    assert table.exit_code == 0 and "A: runs/e  vs  B: runs/s" in table.stdout
    assert "ChIP TF" in table.stdout and "DNase/ATAC" in table.stdout


@pytest.mark.parametrize("args, needle", [
    (["tiny"], "compare needs two models"),
    (["--results", "NOPE_A", "NOPE_B"], "NOPE_A: no such evaluate --out folder"),
    (["--results", "A", "B", "--out", "full"], "--out full: directory is not empty"),
])
def test_compare_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {"cage": np.linspace(0, 1, 6), "all": np.linspace(0, 1, 6)}
    for name in ("A", "B"):
        write_evaluation_folder(tmp_path / name, values, mean_r={"cage": 0.5, "all": 0.5})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    user_error(invoke("compare", *args), needle)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_compare_results_with_different_bins_is_one_line_and_exit_2(tmp_path):
    values = {"cage": np.linspace(0, 1, 6), "all": np.linspace(0, 1, 6)}
    means = {"cage": 0.5, "all": 0.5}
    folder_a = write_evaluation_folder(tmp_path / "a", values, mean_r=means, target_length=896)
    folder_b = write_evaluation_folder(tmp_path / "b", values, mean_r=means, target_length=128)
    user_error(invoke("compare", "--results", folder_a, folder_b), "predicts 896 bins")
