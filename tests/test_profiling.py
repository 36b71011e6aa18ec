"""`senformer profile` and the library behind it (senformer_cli/profiling.py).

The expensive test runs the CLI once on a narrow tiny model at two lengths (four child processes) and
several tests check that one result against independent arithmetic; everything else runs no model.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_checks import user_error
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli import profiling

runner = CliRunner()
# tiny with blocks of 4 tokens: sparse lengths are multiples of 128 x 4 = 512 bp, so 4,096 bp
# (32 tokens, 8 blocks) is a valid S-Enformer input and a step takes well under a second.
TINY = ["--preset", "tiny", "--set", "block_size=4"]
LENGTHS = (4096, 8192)
# The profiled models: tiny, narrower and with one transformer layer. Each of the four rows is a
# fresh process, whose time goes to importing TensorFlow and tracing the model (in proportion to
# its graph: a sparse transformer layer is about a third of it).
PROFILED = {"block_size": 4, "channels": 48, "num_transformer_layers": 1}
PROFILED_ARGS = ["--preset", "tiny"] + [
    word for key, value in PROFILED.items() for word in ("--set", f"{key}={value}")]


def invoke(*args: str):
    return runner.invoke(app, ["profile", *args])


# ----------------------------------------------------------------------------- option parsing
@pytest.mark.parametrize("text, expected", [
    ("20GB", 20 * 10**9), ("20 GB", 20 * 10**9), ("16GiB", 16 * 2**30), ("512MB", 512 * 10**6),
    ("1.5TB", 1_500 * 10**9), ("2g", 2 * 10**9), ("4096", 4096), ("0.5GiB", 2**29)])
def test_parse_memory_reads_decimal_and_binary_units(text, expected):
    assert profiling.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["twenty", "20XB", "-1GB", "0GB", "", "GB", "1e3GB"])
def test_parse_memory_rejects_what_it_cannot_read(text):
    with pytest.raises(SenformerError, match="--max-memory"):
        profiling.parse_memory(text)


def test_nearest_valid_lengths_are_named():
    base = ModelConfig.from_preset("tiny")  # sparse unit 128 x 16 = 2,048 bp
    with pytest.raises(SenformerError) as error:
        profiling.check_lengths(base, ["full", "sparse"], [100_000])
    assert "98,304 or 100,352" in str(error.value) and "2,048" in str(error.value)
    # Full attention alone only needs whole 128-bp bins.
    profiling.check_lengths(base, ["full"], [100_096])
    with pytest.raises(SenformerError, match="99,968 or 100,096"):
        profiling.check_lengths(base, ["full"], [100_000])
    # Too short for 1 + 1 global blocks and a middle block: the smallest valid length is named.
    with pytest.raises(SenformerError, match="6,144"):
        profiling.check_lengths(base, ["sparse"], [4096])


def test_config_for_keeps_the_output_bins_and_an_even_crop():
    base = ModelConfig.from_preset("enformer")
    long = profiling.config_for(base, "sparse", 1_048_576)
    assert (long.attention, long.num_tokens, long.target_length) == ("sparse", 8192, 896)
    short = profiling.config_for(ModelConfig.from_preset("tiny"), "full", 4096 + 128)
    assert short.num_tokens == 33 and short.target_length == 33  # all of them, crop 0
    shorter = profiling.config_for(ModelConfig.from_preset("tiny", target_length=16), "full", 4224)
    assert (shorter.num_tokens - shorter.target_length) % 2 == 0


# ----------------------------------------------------------------------------- estimates
@pytest.mark.parametrize("overrides", [
    {},  # tiny: sparse, attention pooling
    {"attention": "full", "pooling": "max"},
    {"channels": 192, "conv_tower_divisible_by": 32, "num_heads": 8, "key_size": 8,
     "heads": {"human": 5, "mouse": 3, "dog": 2}},
])
def test_parameter_count_equals_the_built_model(overrides):
    from senformer_cli.model.summary import build_for_counting

    config = ModelConfig.from_preset("tiny", **overrides)
    model = build_for_counting(config)
    assert profiling.parameter_count(config) == sum(
        int(np.prod(v.shape)) for v in model.trainable_variables)


def test_parameter_count_of_the_published_model():
    assert profiling.parameter_count(ModelConfig.from_preset("enformer")) == 251_221_292


def test_estimate_grows_with_length_and_shrinks_with_recompute():
    base = ModelConfig.from_preset("enformer")
    full = [profiling.estimate_peak_bytes(profiling.config_for(base, "full", n)) for n in
            (196_608, 393_216, 786_432)]
    sparse = [profiling.estimate_peak_bytes(profiling.config_for(base, "sparse", n)) for n in
              (196_608, 393_216, 786_432)]
    assert full[0] < full[1] < full[2] and sparse[0] < sparse[1] < sparse[2]
    # Quadratic attention: doubling the length adds more and more to Enformer's peak than to
    # S-Enformer's.
    assert full[2] - full[1] > 1.5 * (sparse[2] - sparse[1])
    recompute = profiling.config_for(base.replace(recompute=True), "sparse", 786_432)
    assert profiling.estimate_peak_bytes(recompute) < 0.6 * sparse[2]


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("profile") / "out"
    # Forward passes (--mode predict) trace in a fraction of a training step's time; the training
    # step is measured by test_recompute.py's memory test.
    result = invoke(*PROFILED_ARGS, "--lengths", ",".join(map(str, LENGTHS)), "--mode", "predict",
                    "--steps", "2", "--warmup", "1", "--max-memory", "4GB", "--out", str(out),
                    "--json")
    assert result.exit_code == 0, result.output
    return {"json": json.loads(result.stdout), "out": out}


def test_profile_rows_cover_both_models_at_both_lengths(tiny_profile):
    rows = tiny_profile["json"]["rows"]
    assert sorted((row["model"], row["sequence_length_bp"]) for row in rows) == sorted(
        (model, length) for model in ("enformer", "s-enformer") for length in LENGTHS)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["num_tokens"] == row["sequence_length_bp"] // 128
        assert row["steps"] == 2 and len(row["step_seconds"]) == 2
        assert row["seconds_per_step"] == pytest.approx(np.median(row["step_seconds"]))
        assert row["seconds_min"] <= row["seconds_per_step"] <= row["seconds_max"]
        # Peak memory above the baseline: more than the float32 weights and the input, below the
        # limit.
        weights = profiling.parameter_count(ModelConfig.from_preset("tiny", **PROFILED)) * 4
        assert weights < row["peak_memory_bytes"] < 4e9
        assert row["device"] == "CPU" and row["peak_reset"] is True and row["mode"] == "predict"


def test_profile_ratios_are_sparse_over_full(tiny_profile):
    rows = {(row["model"], row["sequence_length_bp"]): row for row in tiny_profile["json"]["rows"]}
    for length in LENGTHS:
        full, sparse = rows["enformer", length], rows["s-enformer", length]
        assert sparse["time_ratio"] == pytest.approx(sparse["seconds_per_step"] / full["seconds_per_step"])
        assert sparse["memory_ratio"] == pytest.approx(
            sparse["peak_memory_bytes"] / full["peak_memory_bytes"])
        assert "time_ratio" not in full
    assert tiny_profile["json"]["longest_fitting"] == {"enformer": 8192, "s-enformer": 8192}


def test_profile_csv_and_json_files_agree_with_stdout(tiny_profile):
    out: Path = tiny_profile["out"]
    assert sorted(p.name for p in out.iterdir()) == ["profile.csv", "profile.json", "profile.png"]
    assert json.loads((out / "profile.json").read_text())["rows"] == tiny_profile["json"]["rows"]
    table = list(csv.DictReader(io.StringIO((out / "profile.csv").read_text())))
    assert len(table) == 4
    for line, row in zip(table, tiny_profile["json"]["rows"]):
        assert line["model"] == row["model"]
        assert int(line["sequence_length_bp"]) == row["sequence_length_bp"]
        assert float(line["seconds_per_step"]) == pytest.approx(row["seconds_per_step"])
        assert int(line["peak_memory_bytes"]) == row["peak_memory_bytes"]


def test_profile_png_is_a_real_picture(tiny_profile):
    import matplotlib.image

    path = tiny_profile["out"] / "profile.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_out_directory_with_files_is_refused_without_overwrite(tiny_profile):
    result = invoke(*TINY, "--lengths", "4096", "--max-memory", "1MB", "--out",
                    str(tiny_profile["out"]))
    user_error(result, "--overwrite")
    assert (tiny_profile["out"] / "profile.png").exists()


def test_configuration_over_the_limit_is_a_row_and_is_not_run(tmp_path):
    result = invoke(*TINY, "--lengths", "4096,8192", "--max-memory", "100MB", "--json",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    # Nothing ran, and the files are still written (the plot has no log axis without data).
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "profile.csv", "profile.json", "profile.png"]
    document = json.loads(result.stdout)
    assert len(document["rows"]) == 4
    for row in document["rows"]:
        assert row["status"] == "skipped"
        assert row["estimated_peak_bytes"] > 100e6
        assert row["reason"].startswith("skipped: estimated ") and "> limit 100 MB" in row["reason"]
        assert "peak_memory_bytes" not in row and "device" not in row  # no child ran
    assert document["longest_fitting"] == {"enformer": None, "s-enformer": None}


def test_child_going_over_the_limit_is_stopped_and_reported():
    config = profiling.config_for(ModelConfig.from_preset("tiny", block_size=4), "sparse", 4096)
    spec = {"config": config.to_dict(), "mode": "train", "batch_size": 1, "steps": 1, "warmup": 1,
            "precision": "fp32", "component": "model"}
    row = profiling.run_child(spec, limit_bytes=10_000_000)
    assert row["status"] == "out of memory"
    assert "went over --max-memory 10 MB" in row["reason"]


def test_steps_0_measures_the_warm_up_steps_peak_and_time():
    """Memory only: no timed steps, and the peak is never reset after the warm-up, so it holds
    the first step's allocations (the resident high-water mark, VmHWM, of that step)."""
    config = profiling.config_for(ModelConfig.from_preset("tiny", **PROFILED), "sparse", 4096)
    spec = {"config": config.to_dict(), "mode": "train", "batch_size": 1, "steps": 0, "warmup": 1,
            "precision": "fp32", "component": "model"}
    row = profiling.run_child(spec)
    assert row["status"] == "ok" and row["steps"] == 0 and row["peak_reset"] is False
    assert row["step_seconds"] == row["warmup_seconds"]
    assert row["seconds_per_step"] == row["warmup_seconds"][0] > 0
    assert row["peak_memory_bytes"] >= row["warmup_peak_bytes"] > 10_000_000
    # TensorFlow's own CPU allocator (oneDNN's caching one) keeps statistics of live tensors.
    assert row["allocator_peak_bytes"] > 0
    note = profiling.make_request(preset="tiny", overrides={"block_size": 4}, lengths="4096",
                                  steps=0, max_memory="4GB").notes
    assert any(n.startswith("--steps 0: no timed steps") for n in note)


_FREED_RSS = """
import senformer_cli  # its environment defaults: oneDNN on, on every x86 CPU
import tensorflow as tf
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
tf.function(lambda: tf.reduce_sum(tf.ones([256 * 1024 * 1024]) * 2.0))().numpy()  # 1 GB, freed
print(rss() - before)
"""


def test_system_allocator_returns_freed_memory_and_the_default_keeps_it():
    """What --allocator rests on, in TensorFlow itself: a 1 GB tensor freed inside a tf.function
    stays resident with the default (oneDNN's cache) and is gone with SYSTEM_ALLOCATOR_ENV."""
    def retained(extra_env: dict) -> int:
        env = {k: v for k, v in os.environ.items() if k not in profiling.SYSTEM_ALLOCATOR_ENV}
        done = subprocess.run([sys.executable, "-c", _FREED_RSS], env={**env, **extra_env},
                              capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])

    assert retained({}) > 0.9e9
    assert retained(profiling.SYSTEM_ALLOCATOR_ENV) < 0.1e9


_ONEDNN = """
import senformer_cli
from tensorflow.python.util import _pywrap_util_port
print(_pywrap_util_port.IsMklEnabled())
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the package sets oneDNN on x86 only")
@pytest.mark.parametrize("setting, enabled", [(None, "True"), ("0", "False")])
def test_onednn_is_on_unless_turned_off(setting, enabled):
    """Importing the package turns oneDNN's kernels (and so its caching allocator) on where
    TensorFlow would not (CPUs without AVX-512 VNNI); TF_ENABLE_ONEDNN_OPTS=0 still turns them
    off."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    done = subprocess.run([sys.executable, "-c", _ONEDNN], env=env, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split()[-1] == enabled


def test_system_allocator_is_the_childs_allocator():
    """--allocator system reaches the measured process's environment; its TensorFlow's CPU
    allocator statistics are then left out (those of the unused cache, all zero)."""
    config = profiling.config_for(ModelConfig.from_preset("tiny", **PROFILED), "sparse", 4096)
    request = profiling.make_request(preset="tiny", overrides=PROFILED, lengths="4096", steps=0,
                                     max_memory="4GB", allocator="system")
    row = profiling.measure_in_child(request, config)
    assert row["status"] == "ok" and row["peak_memory_bytes"] > 10_000_000
    assert "allocator_peak_bytes" not in row


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, needle", [
    (TINY + ["--lengths", "5000"], "4,608 or 5,120"),
    (["--preset", "tiny", "--lengths", "100000"], "98,304 or 100,352"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (TINY + ["--attention", "full,dense"], "--attention 'dense'"),
    (TINY + ["--max-memory", "lots"], "--max-memory 'lots'"),
    (TINY + ["--lengths", "4k"], "--lengths '4k'"),
    (TINY + ["--mode", "fit"], "--mode 'fit'"),
    (TINY + ["--component", "stem"], "--component 'stem'"),
    (TINY + ["--set", "recompute=maybe"], "recompute"),
    (TINY + ["--steps", "-1"], "--steps -1: must be at least 0"),
    (TINY + ["--allocator", "jemalloc"], "--allocator 'jemalloc': choose tensorflow or system"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    user_error(invoke(*args), needle)
