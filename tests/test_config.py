"""ModelConfig: presets hold the published values, validation names the bad field, JSON round trip,
`--set` parsing."""
from __future__ import annotations

import json
import re

import pytest

from senformer_cli.config import PRESETS, ModelConfig, parse_overrides
from senformer_cli.errors import SenformerError


def test_enformer_preset_is_the_published_model():
    config = ModelConfig.from_preset("enformer")
    assert (config.channels, config.num_transformer_layers, config.num_heads, config.key_size) == \
        (1536, 11, 8, 64)
    assert (config.pooling, config.attention) == ("attention", "full")
    assert (config.sequence_length, config.target_length) == (196_608, 896)
    assert config.heads == {"human": 5313, "mouse": 1643}
    assert (config.dropout_rate, config.attention_dropout_rate, config.positional_dropout_rate,
            config.final_dropout_rate) == (0.4, 0.05, 0.01, 0.05)
    # 2^7 = 128 bp per token, 1,536 tokens, value size C/8 = 192 = relative-position features.
    assert config.bin_size == 128 and config.num_tokens == 1536
    assert config.value_size == 192 and config.relative_position_features == 192


def test_conv_tower_filters_are_the_published_ones():
    assert ModelConfig.from_preset("enformer").conv_tower_filters == [768, 896, 1024, 1152, 1280, 1536]
    # The published notebook's width: exponential_linspace_int(192, 384, 6, 128).
    assert ModelConfig.from_preset("small").conv_tower_filters == [256, 256, 256, 256, 384, 384]


def test_s_enformer_preset_is_enformer_with_bigbird_attention():
    config = ModelConfig.from_preset("s-enformer")
    assert config.attention == "sparse"
    assert (config.block_size, config.num_random_blocks, config.window_blocks,
            config.num_global_blocks) == (64, 3, 3, 1)
    assert config.num_blocks == 24
    assert config.replace(attention="full") == ModelConfig.from_preset("enformer").replace(
        block_size=64, num_random_blocks=3, window_blocks=3, num_global_blocks=1)


# Worked out by hand: 7 halvings (stem + 6 conv tower blocks) make 128 bp per token.
LENGTHS = {  # preset: (tokens, blocks of block_size, crop per side in tokens)
    "enformer": (1536, 24, 320),  # 196,608 / 128; 1,536 / 64; (1,536 - 896) / 2
    "s-enformer": (1536, 24, 320),
    "small": (1024, 16, 64),  # 131,072 / 128
    "tiny": (256, 16, 64),  # 32,768 / 128; 256 / 16; (256 - 128) / 2
}


@pytest.mark.parametrize("preset", sorted(LENGTHS))
def test_derived_lengths_of_each_preset(preset):
    config = ModelConfig.from_preset(preset)
    tokens, blocks, crop = LENGTHS[preset]
    assert (config.bin_size, config.num_tokens, config.num_blocks) == (128, tokens, blocks)
    assert (config.num_tokens - config.target_length) // 2 == crop
    assert set(PRESETS) == set(LENGTHS)


def test_tiny_preset_runs_and_predicts_its_bins_and_tracks():
    import numpy as np

    from senformer_cli.model import build_model

    config = ModelConfig.from_preset("tiny")
    outputs = build_model(config)(np.zeros([1, 32_768, 4], np.float32), is_training=False)
    assert {head: tuple(out.shape) for head, out in outputs.items()} == {
        "human": (1, 128, 16), "mouse": (1, 128, 8)}
    assert all(float(out.numpy().min()) > 0 for out in outputs.values())  # softplus


def test_from_preset_applies_overrides():
    config = ModelConfig.from_preset("enformer", channels=384, heads={"human": 64})
    assert config.channels == 384 and config.heads == {"human": 64}
    assert config.num_transformer_layers == 11


def test_unknown_preset_names_the_choices():
    with pytest.raises(SenformerError, match=r"unknown preset 'huge'.*enformer"):
        ModelConfig.from_preset("huge")


def test_unknown_override_field_is_named():
    with pytest.raises(SenformerError, match="'chanels'"):
        ModelConfig.from_preset("enformer", chanels=3)


@pytest.mark.parametrize("preset, changes, field, reason", [
    ("enformer", {"channels": 1540}, "channels", "divisible by num_heads = 8"),
    ("enformer", {"channels": 0}, "channels", "positive integer"),
    ("enformer", {"channels": True}, "channels", "positive integer"),
    ("enformer", {"channels": 99, "num_heads": 3}, "channels", "must be even"),
    ("enformer", {"num_heads": -1}, "num_heads", "positive integer"),
    ("enformer", {"pooling": "mean"}, "pooling", "one of attention, max"),
    ("enformer", {"pooling_init_scale": "big"}, "pooling_init_scale", "finite number"),
    ("enformer", {"pooling_init_scale": float("nan")}, "pooling_init_scale", "finite number"),
    ("enformer", {"attention": "linear"}, "attention", "one of full, sparse"),
    ("enformer", {"dropout_rate": 1.0}, "dropout_rate", r"in \[0, 1\)"),
    ("enformer", {"mask_padding": 1}, "mask_padding", "true or false"),
    ("enformer", {"recompute": "yes"}, "recompute", "true or false"),
    ("enformer", {"random_seed": -1}, "random_seed", "non-negative integer"),
    ("enformer", {"heads": ["human"]}, "heads", "map head names"),
    ("enformer", {"sequence_length": 196_600}, "sequence_length", "multiple of the bin size 128"),
    ("enformer", {"target_length": 2000}, "target_length", "at most 1536 tokens"),
    ("enformer", {"target_length": 895}, "target_length", "even crop"),
    ("enformer", {"heads": {}}, "heads", "map head names"),
    ("enformer", {"heads": {"human": 0}}, "heads", "head 'human' needs a positive integer"),
    ("enformer", {"num_relative_position_features": 100}, "num_relative_position_features",
     "resolves to 100; must be a positive multiple of 6"),
    ("enformer", {"num_random_blocks": -1}, "num_random_blocks", "non-negative integer"),
    # 48 / 1024 rounds to 0 filters in the first conv tower block.
    ("tiny", {"conv_tower_divisible_by": 1024}, "conv_tower_divisible_by",
     r"rounds the conv tower filters to \[0, "),
    # 120 channels: the last conv tower block rounds 120 to 128 filters (multiples of 16), which
    # the transformer's residual sum with 120-channel attention outputs cannot take.
    ("tiny", {"channels": 120}, "channels", "last block rounds to 128 filters"),
    # 24 blocks of 64 tokens: 12 global blocks at each end leave none in the middle.
    ("s-enformer", {"num_global_blocks": 12}, "num_global_blocks",
     "leaves no middle block among the 24 blocks of 64 tokens"),
    ("s-enformer", {"window_blocks": 2}, "window_blocks", "must be odd"),
    ("s-enformer", {"num_global_blocks": 0}, "num_global_blocks", "at least 1"),
])
def test_validation_names_the_bad_field_and_why(preset, changes, field, reason):
    with pytest.raises(SenformerError, match=f"^config field '{field}' = .*{reason}"):
        ModelConfig.from_preset(preset, **changes)


def test_sparse_length_must_be_a_multiple_of_128_times_block_size():
    # 196,608 bp = 1,536 tokens = 24 blocks of 64; 1,500 tokens are not whole blocks.
    with pytest.raises(SenformerError, match=r"'sequence_length'.*128 x 64 = 8192"):
        ModelConfig.from_preset("s-enformer", sequence_length=1500 * 128, target_length=896)
    # The same length is fine for full attention.
    ModelConfig.from_preset("enformer", sequence_length=1500 * 128, target_length=896)


def test_json_round_trip(tmp_path):
    config = ModelConfig.from_preset("tiny", heads={"human": 3, "dog": 5}, random_seed=11)
    path = tmp_path / "run" / "config.json"
    config.save(path)
    data = json.loads(path.read_text())
    assert data["heads"] == {"human": 3, "dog": 5} and data["random_seed"] == 11
    assert ModelConfig.load(path) == config


def test_load_reports_bad_files_by_name(tmp_path):
    with pytest.raises(SenformerError, match="no such config file"):
        ModelConfig.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(SenformerError, match=re.escape(str(broken))):
        ModelConfig.load(broken)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"channels": 384, "colour": "red"}))
    with pytest.raises(SenformerError, match="'colour'"):
        ModelConfig.load(unknown)
    array = tmp_path / "array.json"
    array.write_text("[384, 11]")
    with pytest.raises(SenformerError, match=r"array.json: expected a JSON object of config"):
        ModelConfig.load(array)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"channels": 100}))
    with pytest.raises(SenformerError, match=r"invalid.json.*'channels'"):
        ModelConfig.load(invalid)


def test_parse_overrides_json_values_strings_and_head_entries():
    overrides = parse_overrides(["channels=384", "dropout_rate=0.1", "attention=full",
                                 "heads.human=64", "heads.mouse=16", 'heads={"a": 1}'])
    assert overrides["channels"] == 384 and isinstance(overrides["channels"], int)
    assert overrides["dropout_rate"] == 0.1
    assert overrides["attention"] == "full"  # not JSON: kept as a string
    # A later whole-dict assignment replaces the entries set before it.
    assert overrides["heads"] == {"a": 1}
    assert parse_overrides(["heads.human=64", "heads.mouse=16"]) == \
        {"heads": {"human": 64, "mouse": 16}}
    config = ModelConfig.from_preset("enformer", **parse_overrides(["heads.human=64"]))
    assert config.heads == {"human": 64}


@pytest.mark.parametrize("item, message", [
    ("channels", "expected key=value"),
    ("=3", "expected key=value"),
    ("colour=red", "unknown config field 'colour'"),
    ("channels.x=1", "only 'heads' takes a sub-key"),
])
def test_parse_overrides_rejects_bad_syntax(item, message):
    with pytest.raises(SenformerError, match=re.escape(message)):
        parse_overrides([item])


def test_override_with_wrong_type_is_caught_by_validation():
    with pytest.raises(SenformerError, match="'channels'"):
        ModelConfig.from_preset("enformer", **parse_overrides(["channels=wide"]))
