"""`senformer model summary` and the library behind it: parameter counts per part against the
published variable list and independently built models; the sparse pattern against the sparse
module's own dense pattern mask."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_checks import user_error
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.model.summary import attention_pattern, summarize

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


# ----------------------------------------------------------------------------- the command
def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "model" in result.stdout and "data" in result.stdout
    result = invoke("model", "--help")
    assert result.exit_code == 0 and "summary" in result.stdout
    result = invoke("data", "--help")
    assert result.exit_code == 0 and "synth" in result.stdout and "inspect" in result.stdout


@pytest.fixture(scope="module")
def tiny_summary() -> dict:
    result = invoke("model", "summary", "--preset", "tiny", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tiny_counts() -> dict[str, int]:
    """Parameters of the tiny model built the ordinary way, with its real initialisers."""
    from senformer_cli.model import build_model

    config = ModelConfig.from_preset("tiny")
    model = build_model(config)
    model(np.zeros([1, config.sequence_length, 4], np.float32), is_training=False)
    return {"parameters": sum(int(np.prod(v.shape)) for v in model.trainable_variables),
            "non_trainable": sum(int(np.prod(v.shape)) for v in model.variables
                                 if not v.trainable),
            "variables": len(model.variables)}


def test_json_summary_total_equals_an_independently_built_model(tiny_summary, tiny_counts):
    parts = {part["part"]: part for part in tiny_summary["parts"]}
    assert {key: parts["total"][key] for key in tiny_counts} == tiny_counts
    assert list(parts) == ["stem", "conv tower", "transformer", "final pointwise", "head human",
                           "head mouse", "total"]
    # The heads are Linear(2C -> tracks) with bias at C = 96.
    assert parts["head human"]["parameters"] == (2 * 96 + 1) * 16
    assert parts["head mouse"]["parameters"] == (2 * 96 + 1) * 8
    assert tiny_summary["config"] == ModelConfig.from_preset("tiny").to_dict()


# The tiny pattern counted by hand: 256 tokens in 16 blocks of 16; window 3, 2 random blocks,
# 1 global block at each end. The 2 global rows see all 16 blocks (32 block pairs); middle rows
# 2..13 see 3 window + 2 global + 2 random = 7 blocks (84); rows 1 and 14 have a window slot on a
# global block, counted once: 6 blocks each (12). 128 block pairs x 16 x 16 = 32,768 token pairs.
TINY_PATTERN = {"num_tokens": 256, "num_blocks": 16, "block_size": 16, "window_blocks": 3,
                "num_random_blocks": 2, "num_global_blocks": 1,
                "keys_per_middle_query": 7 * 16, "attended_pairs": 32_768,
                "mean_keys_per_query": 32_768 / 256, "fraction_of_full": 32_768 / 256**2}


def test_json_summary_of_a_sparse_model_has_the_pattern(tiny_summary):
    assert tiny_summary["attention_pattern"] == pytest.approx(TINY_PATTERN, rel=1e-12)


def test_table_summary_prints_the_independent_counts_and_pattern(tiny_counts):
    result = invoke("model", "summary", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert rows["total"] == [f"{tiny_counts['parameters']:,}", f"{tiny_counts['non_trainable']:,}",
                             f"{tiny_counts['variables']:,}"]
    assert rows["keys per middle query"] == ["112"]
    assert rows["keys per query (mean)"] == ["128.0"]
    assert rows["attended fraction of the full T x T matrix"] == ["0.5000"]


def test_full_attention_summary_has_no_pattern_and_config_file_is_read(tmp_path: Path):
    path = tmp_path / "config.json"
    ModelConfig.from_preset("tiny", attention="full", num_transformer_layers=1).save(path)
    result = invoke("model", "summary", "--config", str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert "attention_pattern" not in summary
    assert summary["config"]["num_transformer_layers"] == 1


def test_set_applies_on_top_of_a_config_file(tmp_path: Path):
    path = tmp_path / "config.json"
    ModelConfig.from_preset("tiny", attention="full", num_transformer_layers=1).save(path)
    result = invoke("model", "summary", "--config", str(path), "--set", "num_transformer_layers=2",
                    "--set", "heads.human=5", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert (config["num_transformer_layers"], config["heads"], config["attention"]) == \
        (2, {"human": 5}, "full")  # --set wins; the file's other fields stay


@pytest.mark.parametrize("args, needle", [
    (["--preset", "huge"], "huge"),
    (["--preset", "tiny", "--set", "channels"], "channels"),
    (["--preset", "tiny", "--set", "channels=wide"], "channels"),
    (["--preset", "tiny", "--set", "colour=red"], "colour"),
    (["--preset", "tiny", "--set", "channels=98"], "channels"),  # not divisible by 4 heads
    (["--config", "/nonexistent/config.json"], "config.json"),
    (["--config", "CONFIG", "--set", "channels=98"], "'channels' = 98"),
    (["--config", "CONFIG", "--set", "colour=red"], "colour"),
    (["--config", "NOT_AN_OBJECT"], "expected a JSON object"),
])
def test_user_errors_are_one_line_and_exit_2(args, needle, tmp_path: Path):
    config, not_an_object = tmp_path / "config.json", tmp_path / "list.json"
    ModelConfig.from_preset("tiny", attention="full", num_transformer_layers=1).save(config)
    not_an_object.write_text("[96, 2]")
    args = [{"CONFIG": str(config), "NOT_AN_OBJECT": str(not_an_object)}.get(a, a) for a in args]
    user_error(invoke("model", "summary", *args), needle)


# ----------------------------------------------------------------------------- the published model
@pytest.mark.slow  # builds the full-width model; the variables are also checked in test_model_enformer
def test_enformer_summary_parts_match_published_variables(reference_dir: Path):
    """Per part, from the published variable list by name prefix (not from our modules)."""
    prefixes = {"stem": "enformer/trunk/stem/", "conv tower": "enformer/trunk/conv_tower/",
                "transformer": "enformer/trunk/transformer/",
                "final pointwise": "enformer/trunk/final_pointwise/",
                "head human": "enformer/heads/head_human/", "head mouse": "enformer/heads/head_mouse/",
                "total": "enformer/"}
    expected = {part: {"parameters": 0, "non_trainable": 0, "variables": 0} for part in prefixes}
    with open(reference_dir / "enformer_variables.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            size = int(np.prod([int(d) for d in row["shape"].split("x") if d]))
            for part, prefix in prefixes.items():
                if row["name"].startswith(prefix):
                    expected[part]["variables"] += 1
                    expected[part]["parameters" if row["trainable"] == "True" else "non_trainable"] += size
    summary = summarize(ModelConfig.from_preset("enformer"))
    actual = {part.pop("part"): part for part in summary["parts"]}
    assert actual == expected
    assert actual["total"]["parameters"] == 251_221_292 and actual["total"]["variables"] == 329
    # DESIGN.md §3: trunk + human head.
    assert actual["total"]["parameters"] - actual["head mouse"]["parameters"] == 246_172_353
    assert "attention_pattern" not in summary


# ----------------------------------------------------------------------------- the sparse pattern
PATTERNS = [  # num_blocks, block_size, window, globals, random
    (24, 4, 3, 1, 3),  # s-enformer's pattern at a smaller block size
    (16, 2, 3, 1, 2),  # tiny's
    (6, 2, 3, 1, 3),  # too few blocks for 3 random blocks next to the ends
    (3, 2, 3, 1, 3),  # one middle block: the pattern covers everything
    (12, 2, 5, 2, 1),
    (10, 3, 1, 1, 4),
    (9, 2, 7, 1, 0),
]


@pytest.mark.parametrize("num_blocks, block_size, window, num_global, num_random", PATTERNS)
def test_pattern_counts_agree_with_the_sparse_modules_mask(num_blocks, block_size, window,
                                                           num_global, num_random):
    from senformer_cli.model.sparse_attention import SparseMultiheadAttention

    num_tokens = num_blocks * block_size
    config = ModelConfig.from_preset(
        "tiny", block_size=block_size, sequence_length=num_tokens * 128, target_length=num_tokens,
        window_blocks=window, num_global_blocks=num_global, num_random_blocks=num_random)
    layer = SparseMultiheadAttention(
        value_size=8, key_size=4, num_heads=3, num_relative_position_features=6,
        block_size=block_size, num_random_blocks=num_random, window_blocks=window,
        num_global_blocks=num_global, num_tokens=num_tokens, seed=(5, 0))
    mask = layer.pattern_mask()  # [H, T, T]
    pattern = attention_pattern(config)
    for head in range(mask.shape[0]):
        assert mask[head].sum() == pattern["attended_pairs"], f"head {head}"
    assert pattern["fraction_of_full"] == pytest.approx(mask[0].mean())
    assert pattern["mean_keys_per_query"] == pytest.approx(mask[0].sum(axis=1).mean())
    # A query in the middle of a long sequence sees the nominal number of keys.
    if num_blocks >= 2 * num_global + window + 2 * num_random + 2:
        middle_query = (num_blocks // 2) * block_size
        assert mask[0, middle_query].sum() == pattern["keys_per_middle_query"]
    # Global rows see all keys.
    assert mask[:, :num_global * block_size].all() and mask[:, -num_global * block_size:].all()


def test_s_enformer_pattern_figures():
    pattern = attention_pattern(ModelConfig.from_preset("s-enformer"))
    # DESIGN.md §4: a middle query attends to (3 + 2 + 3) x 64 = 512 keys instead of 1,536.
    assert pattern["keys_per_middle_query"] == 512
    assert (pattern["num_tokens"], pattern["num_blocks"]) == (1536, 24)
    # 2 global rows of 24 blocks; 22 middle rows of 8 blocks, except the two next to the global
    # blocks, whose window holds only 2 middle blocks (the third is the global block, counted once).
    assert pattern["attended_pairs"] == 64 * 64 * (2 * 24 + 20 * 8 + 2 * 7)
