"""`senformer demo --quick` end to end through the CLI (the CI test of the whole study), its
resumability, and the bare commands that tell the same story (`compare` with no models,
`evaluate --model enformer-pretrained` with nothing downloaded).

The report's numbers are checked against independent computations from the steps' own outputs
(pandas group-bys over evaluate's tracks.csv, numpy correlations over its sequences.csv, the
receptive field's per-bin table, the runs' metrics.csv), not against the code that wrote them.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_checks import user_error
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.data.targets import TRACK_TYPES

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = {"Enformer": "enformer", "S-Enformer": "s-enformer"}
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def step_lines(stderr: str) -> dict[str, str]:
    """{step label prefix: status} from the demo's per-step lines on stderr."""
    found = {}
    for line in stderr.splitlines():
        match = re.match(r"\[(\d)/8\] (.+?): (made|reused|resumed|skipped) in", line)
        if match:
            found[int(match.group(1))] = match.group(3)
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha1) of every file under `folder`."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def strict_json(path: Path):
    """json.loads that fails on NaN / Infinity (not JSON, but Python's json writes them)."""
    def refuse(constant: str):
        raise AssertionError(f"{path}: {constant} in JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def json_numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_numbers(item)


# ---------------------------------------------------------------- the quick demo, run once
# The end-to-end run (two models trained, evaluated and probed, three profiling processes) takes
# about 2 minutes; it runs once per session and is part of the default suite (CI), as the demo
# issue asks. The tests after it check the demo's own logic (plans, reuse, refusals, the bare
# commands) without running a model.
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENFORMER_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def quick(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def test_quick_demo_runs_every_step_and_prints_the_summary(quick):
    out, result = quick
    statuses = step_lines(result.stderr)
    assert sorted(statuses) == list(range(1, 9)), result.stderr
    assert all(statuses[i] == "made" for i in range(1, 9)), statuses
    assert statuses[7] == "made"
    for needle in ("Enformer", "S-Enformer", "r(A,B)", "receptive field", "report.html"):
        assert needle in result.stdout
    for name in ("tiny-full", "tiny"):
        assert (out / "runs" / name / "checkpoints" / "checkpoint").is_file()


def test_report_tables_parse_and_every_number_is_finite(quick):
    out, _ = quick
    names = {p.stem for p in (out / "tables").glob("*.csv")}
    assert names == {"accuracy", "comparison", "profile", "receptive_field", "training", "steps"}
    for name in names:
        frame = pd.read_csv(out / "tables" / f"{name}.csv", keep_default_na=False, dtype=str)
        assert len(frame), name
        for column in frame.columns:
            for cell in frame[column]:
                try:
                    number = float(cell)
                except ValueError:
                    continue  # text, or an empty cell (undefined)
                assert math.isfinite(number), (name, column, cell)
        records = strict_json(out / "tables" / f"{name}.json")
        assert all(math.isfinite(x) for x in json_numbers(records)), name
        as_csv = pd.read_csv(out / "tables" / f"{name}.csv")
        assert list(as_csv.columns) == list(records[0]), name
        assert len(as_csv) == len(records), name
        for column in as_csv.columns:
            from_json = pd.Series([r[column] for r in records], dtype=object)
            if pd.api.types.is_numeric_dtype(as_csv[column]):
                np.testing.assert_allclose(as_csv[column].to_numpy(float),
                                           pd.to_numeric(from_json).to_numpy(float),
                                           rtol=1e-12, equal_nan=True, err_msg=f"{name}.{column}")
    summary = strict_json(out / "summary.json")
    assert all(math.isfinite(x) for x in json_numbers(summary))


def test_accuracy_table_equals_a_group_by_of_each_models_tracks(quick):
    out, _ = quick
    accuracy = pd.read_csv(out / "tables" / "accuracy.csv")
    for name, key in MODELS.items():
        tracks = pd.read_csv(out / "steps" / f"evaluate-{key}" / "tracks.csv")
        expected = tracks.groupby("track_type")["pearson_r"].mean()
        expected["all"] = tracks["pearson_r"].mean()
        mine = accuracy[accuracy["model"] == name].set_index("track_type")
        assert set(mine.index) == set(TRACK_TYPES) | {"all"}
        for kind, value in expected.items():
            np.testing.assert_allclose(mine.loc[kind, "mean_r"], value, rtol=1e-9, atol=1e-12)
        counts = tracks.groupby("track_type").size()
        assert all(mine.loc[kind, "tracks"] == counts[kind] for kind in counts.index)
        assert not mine["mean_r"].isna().any()


def test_comparison_table_equals_numpy_over_the_per_sequence_values(quick):
    out, _ = quick
    comparison = pd.read_csv(out / "tables" / "comparison.csv").set_index("track_type")
    a = pd.read_csv(out / "steps" / "evaluate-enformer" / "sequences.csv")
    b = pd.read_csv(out / "steps" / "evaluate-s-enformer" / "sequences.csv")
    pairs = a.merge(b, on=["sequence", "track_type"], suffixes=("_a", "_b")).dropna()
    for kind, group in pairs.groupby("track_type"):
        x, y = group["pearson_r_a"].to_numpy(), group["pearson_r_b"].to_numpy()
        row = comparison.loc[kind]
        assert row["sequences"] == len(x)
        np.testing.assert_allclose(row["r_between"], np.corrcoef(x, y)[0, 1], rtol=1e-9)
        np.testing.assert_allclose(row["percent_b_ge_a"], 100 * np.mean(y >= x), rtol=1e-12)
        np.testing.assert_allclose(row["sequence_mean_r_b"] - row["sequence_mean_r_a"],
                                   y.mean() - x.mean(), atol=1e-12)
    summary = strict_json(out / "summary.json")
    assert (summary["comparison"]["a"], summary["comparison"]["b"]) == ("Enformer", "S-Enformer")


def test_receptive_field_reach_equals_the_per_bin_effects(quick):
    out, _ = quick
    table = pd.read_csv(out / "tables" / "receptive_field.csv")
    effects = pd.read_csv(out / "steps" / "receptive-field" / "receptive_field.csv")
    measured = strict_json(out / "steps" / "receptive-field" / "summary.json")
    summary = strict_json(out / "summary.json")
    for model in measured["models"]:
        start, _ = model["output_window_bp"]
        centres = start + (np.arange(model["target_length"]) + 0.5) * model["bin_size"]
        farthest_over_positions = 0.0
        for position in sorted(effects.loc[effects["model"] == model["name"], "position"].unique()):
            effect = effects[(effects["model"] == model["name"]) & (effects["position"] == position)
                             ].sort_values("bin")["effect"].to_numpy()
            row = table[(table["model"] == model["name"]) & (table["position_bp"] == position)]
            assert len(row) == 1
            np.testing.assert_allclose(row["peak_effect"].iloc[0], effect.max(), rtol=1e-12)
            reached = effect > model["noise_floor"]
            assert row["reached_bins"].iloc[0] == reached.sum()
            farthest = np.abs(centres[reached] - position).max()
            np.testing.assert_allclose(row["farthest_reached_bp"].iloc[0], farthest)
            farthest_over_positions = max(farthest_over_positions, farthest)
        reach = next(m for m in summary["receptive_field"]["models"] if m["model"] == model["name"])
        np.testing.assert_allclose(reach["farthest_reached_bp"], farthest_over_positions)


def test_training_table_holds_each_runs_logged_loss(quick):
    out, _ = quick
    training = pd.read_csv(out / "tables" / "training.csv")
    for name, run in (("Enformer", "tiny-full"), ("S-Enformer", "tiny")):
        metrics = pd.read_csv(out / "runs" / run / "metrics.csv").dropna(subset=["loss"])
        mine = training[(training["model"] == name) & (training["metric"] == "loss")]
        assert list(mine["step"]) == list(metrics["step"])
        np.testing.assert_allclose(mine["value"].to_numpy(), metrics["loss"].to_numpy())


def test_plots_are_valid_pngs_embedded_in_report_html(quick):
    import matplotlib.image

    out, _ = quick
    figures = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in figures}
    assert names == {"training_curves", "compare", "profile", "receptive_field"}
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    for path in figures:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path
        assert base64.b64encode(data).decode("ascii") in html, f"{path.name} not inline"
        assert f"](figures/{path.name})" in markdown
    # Self-contained: no external script, stylesheet or image.
    assert not re.search(r'\b(src|href)="(https?:)?//', html)
    assert "<script" not in html and "<link" not in html
    assert html.count("data:image/png;base64,") == len(figures)


# ---------------------------------------------------------------- resumability
def test_rerun_reuses_every_step_and_does_not_retrain(quick):
    out, first = quick
    runs_before = snapshot(out / "runs")
    evaluations_before = snapshot(out / "steps")
    result = invoke("demo", "--quick", "--out", out)
    assert result.exit_code == 0, result.output
    statuses = step_lines(result.stderr)
    assert all(statuses[i] == "reused" for i in range(1, 9)), result.stderr
    assert snapshot(out / "runs") == runs_before  # no checkpoint rewritten
    assert snapshot(out / "steps") == evaluations_before
    assert "already trained (8 steps)" in result.stderr


def test_rerun_redoes_a_deleted_step_and_what_depends_on_it_only(quick, tmp_path):
    out, _ = quick
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    comparison_before = pd.read_csv(copy / "tables" / "comparison.csv")
    runs_before = snapshot(copy / "runs")
    shutil.rmtree(copy / "steps" / "evaluate-s-enformer")
    result = invoke("demo", "--quick", "--out", copy)
    assert result.exit_code == 0, result.output
    statuses = step_lines(result.stderr)
    assert [statuses[i] for i in range(1, 9)] == [
        "reused", "reused", "reused", "reused", "made", "made", "reused", "reused"], result.stderr
    assert snapshot(copy / "runs") == runs_before
    # Evaluation is deterministic: the redone comparison has the same numbers.
    pd.testing.assert_frame_equal(pd.read_csv(copy / "tables" / "comparison.csv"),
                                  comparison_before, rtol=1e-6)


def test_a_redone_step_makes_only_what_depends_on_it_stale(tmp_path):
    """The reuse rule of a rerun, on the state file alone: a step is reused while its output is
    there and the steps it depends on still have the fingerprints it was computed from."""
    from senformer_cli.demo import STEPS, _State, plan_for

    plan = plan_for(quick=True)
    out = tmp_path / "out"
    out.mkdir()
    outputs = {name: out / name for name in STEPS}
    state = _State(out, plan)
    for name in STEPS:
        outputs[name].mkdir()
        state.done(name, f"{name}-1", 1.0, str(outputs[name]))
    again = _State(out, plan)  # read back from demo.json
    assert all(again.reusable(name, outputs[name]) for name in STEPS)
    # Deleted output: that step only is redone (with a new fingerprint) ...
    outputs["evaluate-s-enformer"].rmdir()
    assert not again.reusable("evaluate-s-enformer", outputs["evaluate-s-enformer"])
    again.forget("evaluate-s-enformer")
    outputs["evaluate-s-enformer"].mkdir()
    again.done("evaluate-s-enformer", "evaluate-s-enformer-2", 1.0,
               str(outputs["evaluate-s-enformer"]))
    # ... which makes the comparison (its only dependant) stale, and nothing else.
    stale = [name for name in STEPS if not _State(out, plan).reusable(name, outputs[name])]
    assert stale == ["compare"]
    # A retrained model makes its evaluation and the receptive field stale.
    again.done("train-enformer", "train-enformer-2", 1.0, str(outputs["train-enformer"]))
    stale = [name for name in STEPS if not _State(out, plan).reusable(name, outputs[name])]
    assert stale == ["evaluate-enformer", "compare", "receptive-field"]


def test_train_action_reuses_resumes_or_trains():
    from senformer_cli.demo import train_action

    wanted = {"model": {"attention": "full"}, "train": {"steps": 8}}
    assert train_action(None, wanted, None, 8) == "train"
    assert train_action(wanted, wanted, None, 8) == "train"  # no checkpoint yet
    assert train_action(wanted, wanted, 4, 8) == "resume"
    assert train_action(wanted, wanted, 8, 8) == "reuse"
    other = {"model": {"attention": "sparse"}, "train": {"steps": 8}}
    assert train_action(other, wanted, 8, 8) == "train"  # another model in that directory
    assert train_action({**wanted, "preset": "tiny"}, wanted, 8, 8) == "reuse"


def test_latest_checkpoint_step_reads_the_checkpoint_state_file(tmp_path):
    from senformer_cli.demo import latest_checkpoint_step

    assert latest_checkpoint_step(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-120"\nall_model_checkpoint_paths: "ckpt-60"\n'
        'all_model_checkpoint_paths: "ckpt-120"\n')
    assert latest_checkpoint_step(tmp_path) == 120


def test_demo_refuses_a_foreign_folder_and_another_plan(tmp_path):
    from senformer_cli.demo import _State, plan_for

    out = tmp_path / "out"  # what a `demo --quick` leaves: its state file names its plan
    out.mkdir()
    _State(out, plan_for(quick=True)).save()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for args, needle in (((foreign,), "not a demo's"), ((out,), "--quick")):
        user_error(invoke("demo", "--out", *args), needle)
    assert (foreign / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- bare commands
def test_bare_compare_compares_the_runs_pair_without_training(quick, monkeypatch):
    out, _ = quick
    monkeypatch.chdir(out)  # OUT/runs/tiny-full and OUT/runs/tiny are `senformer train`'s pair
    runs_before = snapshot(out / "runs")
    result = invoke("compare", "--max-sequences", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["a"], summary["b"]) == ("runs/tiny-full", "runs/tiny")
    assert summary["num_sequences"] == 2
    notice = " ".join(result.stderr.split())
    assert "no models given: comparing runs/tiny-full (Enformer) with runs/tiny (S-Enformer)" \
        in notice and "training" not in notice
    assert snapshot(out / "runs") == runs_before


def test_bare_compare_trains_only_the_missing_run(cache, tmp_path, monkeypatch):
    import senformer_cli.training as training
    from senformer_cli.defaults import default_pair

    (tmp_path / "runs" / "tiny" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "runs" / "tiny" / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\n')
    requests = []

    def fake_train(request, **kwargs):
        requests.append(request)
        config = training.plan_run(request).model_config  # also checks the request
        return SimpleNamespace(status="completed", message="", run_dir=training.default_run_dir(
            request.preset, config, request.runs_root))

    monkeypatch.setattr(training, "train", fake_train)
    lines = []
    pair = default_pair(root=tmp_path / "runs", notify=lines.append)
    assert len(requests) == 1
    assert requests[0].preset == "tiny" and requests[0].model_overrides == {"attention": "full"}
    runs = tmp_path / "runs"
    assert (pair.a, pair.b) == (str(runs / "tiny-full"), str(runs / "tiny"))
    assert pair.trained == [str(tmp_path / "runs" / "tiny-full")]
    assert pair.data == cache / "synthetic-tiny-seed0" / "human"
    assert len(lines) == 1 and "training" in lines[0] and "--set attention=full" in lines[0]


def test_evaluate_pretrained_with_nothing_downloaded_says_what_to_get(cache):
    result = invoke("evaluate", "--model", "enformer-pretrained")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    text = result.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert 3 <= len(lines) <= 8, text
    assert lines[0].startswith("error:")
    flat = " ".join(text.split())
    for needle in (str(cache / "enformer-pretrained"),  # where it looked
                   "gsutil -m cp 'gs://dm-enformer/models/enformer/sonnet_weights/*'",
                   "gs://basenji_barnyard/data", "requester pays", "320 GB", "human/",
                   "1,937", "--genome hg38.ml.fa", "mm10.ml.fa"):
        assert needle in flat, needle


def test_evaluate_pretrained_with_data_but_no_weights_names_only_the_weights(cache, tmp_path):
    result = invoke("evaluate", "--model", "enformer-pretrained", "--data", tmp_path,
                    "--genome", tmp_path / "hg38.ml.fa")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error:")
    flat = " ".join(result.stderr.split())
    assert "needs the published weights:" in flat and "basenji_barnyard" not in flat


# ---------------------------------------------------------------- examples
def test_example_configs_hold_the_reports_recipes():
    from senformer_cli.config import ModelConfig, TrainConfig

    finetune = json.loads((REPO / "examples" / "s-enformer-finetune.json").read_text())
    model = ModelConfig.from_dict(finetune["model"])
    train = TrainConfig.from_dict(finetune["train"])
    assert model == ModelConfig.from_preset("s-enformer")
    assert (train.init_from, train.trainable, train.learning_rate, train.batch_size,
            train.steps) == ("enformer-pretrained", "attention", 1e-4, 5, 25_000)
    scratch = json.loads((REPO / "examples" / "enformer-from-scratch.json").read_text())
    model = ModelConfig.from_dict(scratch["model"])
    train = TrainConfig.from_dict(scratch["train"])
    assert model.attention == "full" and model.channels == 1536
    # The Enformer paper's recipe (DESIGN.md §7).
    assert (train.steps, train.batch_size, train.learning_rate, train.warmup_steps,
            train.clip_norm, train.init_from, train.trainable) == (
        150_000, 64, 5e-4, 5_000, 0.2, None, "all")
    assert set(train.data) == {"human", "mouse"}


def test_gpu_script_is_valid_bash_using_existing_options():
    script = REPO / "examples" / "reproduce_report_gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text().replace("\\\n", " ")
    commands = re.findall(r"^\s*(?:\[.*?\]\s*\|\|\s*)?senformer ([a-z-]+(?: [a-z]+)?)(.*)$",
                          text, re.M)
    assert {c[0].split()[0] for c in commands} >= {"data", "evaluate", "train", "compare",
                                                   "profile", "receptive-field"}
    for command, rest in commands:
        words = command.split()[:2] if command.startswith("data") else command.split()[:1]
        result = invoke(*words, "--help")
        assert result.exit_code == 0, (words, result.output)
        help_text = result.stdout
        for option in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert option in help_text, (command, option)
