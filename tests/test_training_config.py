"""TrainConfig (JSON round trip, validation, `--set train.key=value`), the run-directory naming
rule, the warm-up schedule and ensure_synthetic: no TensorFlow work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from senformer_cli.config import (ModelConfig, TrainConfig, parse_overrides, parse_train_overrides,
                                  split_overrides)
from senformer_cli.errors import SenformerError
from senformer_cli.training import default_run_dir, learning_rate_at


def test_train_config_defaults_are_the_paper_recipe():
    config = TrainConfig()
    assert (config.learning_rate, config.warmup_steps, config.clip_norm, config.batch_size,
            config.steps) == (5e-4, 5000, 0.2, 64, 150_000)
    assert (config.reverse_complement, config.max_shift) == (True, 3)
    assert (config.trainable, config.precision, config.strategy) == ("all", "fp32", "auto")


def test_train_config_json_round_trip(tmp_path: Path):
    config = TrainConfig.for_preset("tiny", data={"human": "d/human"}, genomes={"human": "h.fa"},
                                    eval_sequences=None, init_from="runs/x", accumulate=3)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config.to_dict()))
    again = TrainConfig.from_dict(json.loads(path.read_text()))
    assert again == config
    assert again.data == {"human": "d/human"} and again.eval_sequences is None


@pytest.mark.parametrize("field, value, why", [
    ("steps", 0, "positive integer"),
    ("batch_size", 2.5, "positive integer"),
    ("warmup_steps", -1, "non-negative"),
    ("learning_rate", 0, "positive number"),
    ("clip_norm", "big", "positive number"),
    ("beta2", 1.0, r"\[0, 1\)"),
    ("eval_sequences", 0, "positive integer or null"),
    ("precision", "fp16", "fp32, bf16"),
    ("strategy", "horovod", "one-device"),
    ("trainable", "mlp", "attention"),
    ("head_init", "zeros", "model, mean"),
    ("reverse_complement", 1, "true or false"),
    ("data", {"human": 3}, "head names to paths"),
])
def test_train_config_names_the_bad_field(field, value, why):
    with pytest.raises(SenformerError, match=rf"train field '{field}' = .*{why}"):
        TrainConfig(**{field: value})


def test_unknown_train_field_is_named():
    with pytest.raises(SenformerError, match="unknown train field 'stepz'"):
        TrainConfig.for_preset("tiny", stepz=3)
    with pytest.raises(SenformerError, match=r"run/config.json: unknown train field 'lr'"):
        TrainConfig.from_dict({"lr": 1e-3}, source="run/config.json")


def test_tiny_recipe_differs_from_the_paper_only_where_stated():
    tiny, paper = TrainConfig.for_preset("tiny").to_dict(), TrainConfig().to_dict()
    changed = {k for k in paper if tiny[k] != paper[k]}
    assert changed == {"steps", "batch_size", "learning_rate", "warmup_steps", "clip_norm", "beta2",
                       "eval_every", "eval_sequences", "checkpoint_every", "head_init"}
    assert TrainConfig.for_preset("s-enformer") == TrainConfig()


def test_set_splits_model_and_train_fields():
    model, train = split_overrides(["attention=full", "train.steps=40", "heads.human=3",
                                    "train.data.human=/d/human", "train.init_from=runs/tiny"])
    assert model == ["attention=full", "heads.human=3"]
    assert parse_overrides(model) == {"attention": "full", "heads": {"human": 3}}
    assert parse_train_overrides(train) == {"steps": 40, "data": {"human": "/d/human"},
                                            "init_from": "runs/tiny"}


@pytest.mark.parametrize("item, message", [
    ("train.stepz=3", "unknown train field 'stepz'"),
    ("train.steps", "expected train.key=value"),
    ("train.steps.x=3", "only 'data' and 'genomes' take a sub-key"),
])
def test_bad_train_set_is_named(item, message):
    _, train = split_overrides([item])
    with pytest.raises(SenformerError, match=message):
        parse_train_overrides(train)


def test_model_set_still_rejects_train_keys_given_to_it_directly():
    """ModelConfig's own parser is unchanged: a `train.` key reaching it is an unknown field."""
    with pytest.raises(SenformerError, match="unknown config field 'train'"):
        parse_overrides(["train.steps=3"])


def test_default_run_dir_names_the_attention_when_it_differs_from_the_preset():
    tiny = ModelConfig.from_preset("tiny")
    assert default_run_dir("tiny", tiny) == Path("runs/tiny")
    assert default_run_dir("tiny", tiny.replace(attention="full")) == Path("runs/tiny-full")
    assert default_run_dir("tiny", tiny.replace(channels=48), Path("/r")) == Path("/r/tiny")
    enformer = ModelConfig.from_preset("enformer")
    assert default_run_dir("enformer", enformer) == Path("runs/enformer")
    assert default_run_dir("enformer", enformer.replace(attention="sparse")) == \
        Path("runs/enformer-sparse")
    assert default_run_dir("my-config", tiny) == Path("runs/my-config")


def test_learning_rate_warms_up_linearly_then_stays_constant():
    config = TrainConfig(learning_rate=2e-3, warmup_steps=4)
    rates = np.array([learning_rate_at(step, config) for step in range(8)])
    # step s (0-based) uses lr * (s + 1) / W during warm-up: the paper's linear ramp, no zero step
    np.testing.assert_allclose(rates, [5e-4, 1e-3, 1.5e-3, 2e-3, 2e-3, 2e-3, 2e-3, 2e-3])
    assert learning_rate_at(0, TrainConfig(learning_rate=1e-4, warmup_steps=0)) == 1e-4


def test_ensure_synthetic_writes_once_into_the_cache(tmp_path: Path, monkeypatch):
    from senformer_cli.data import synthetic

    calls = []

    def fake_write(out, preset, seed, *args, **kwargs):
        calls.append((Path(out), preset, seed))
        Path(out).mkdir(parents=True)
        for name in ("human", "mouse"):
            (Path(out) / name).mkdir()
        (Path(out) / "ground_truth.json").write_text("{}")

    monkeypatch.setenv("SENFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "write_synthetic", fake_write)
    first = synthetic.ensure_synthetic(3)
    second = synthetic.ensure_synthetic(3)
    assert first == second == tmp_path / "cache" / "synthetic-tiny-seed3"
    assert calls == [(first, "tiny", 3)]
