"""`senformer export`: the SavedModel runs in plain TensorFlow and reads back into this tool with
the model's predictions; bad inputs are one line, exit 2, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from cli_checks import user_error
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.model.load import load_model

runner = CliRunner()
# One transformer layer: exporting traces the model, in proportion to its graph.
SMALL = {"sequence_length": 8192, "target_length": 32, "num_transformer_layers": 1}
SET_SMALL = ["--set", "sequence_length=8192", "--set", "target_length=32",
             "--set", "num_transformer_layers=1"]


def one_hot_batch(batch: int, length: int, seed: int) -> np.ndarray:
    """Random one-hot DNA with some N (all-zero) positions, float32 [batch, length, 4]."""
    index = np.random.default_rng(seed).integers(0, 5, size=(batch, length))
    return np.eye(5, 4, dtype=np.float32)[index]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The sparse tiny preset (seeded) exported through the CLI, and what it printed."""
    out = tmp_path_factory.mktemp("export") / "tiny-savedmodel"
    result = runner.invoke(app, ["export", "--model", "tiny", *SET_SMALL, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def original():
    """The model that was exported, loaded again from its (seeded) preset."""
    return load_model("tiny", SMALL)


def test_export_summary(exported, original):
    out, summary = exported
    assert summary["out"] == str(out) and summary["kind"] == "preset"
    assert summary["input_shape"] == [None, 8192, 4]
    assert summary["outputs"] == {"human": [None, 32, 16], "mouse": [None, 32, 8]}
    assert summary["parameters"] == sum(int(np.prod(v.shape)) for v in original.model.trainable_variables)
    assert summary["size_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert json.loads((out / "assets" / "config.json").read_text())["model"] == original.config.to_dict()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_round_trip_gives_the_model_predictions(exported, original):
    out, _ = exported
    loaded = load_model(str(out))
    assert loaded.kind == "savedmodel" and loaded.config == original.config
    assert str(out) in loaded.description and "tiny preset" in loaded.description
    inputs = tf.constant(one_hot_batch(3, 8192, seed=1))
    expected = original.model(inputs, is_training=False)
    actual = loaded.model(inputs, is_training=False)
    assert set(actual) == {"human", "mouse"}
    for head in expected:
        np.testing.assert_allclose(actual[head].numpy(), expected[head].numpy(), rtol=0, atol=1e-6)


PLAIN_TENSORFLOW = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
inputs = tf.constant(np.load(sys.argv[2])["inputs"])
signature = model.signatures["predict_on_batch"]
by_signature = signature(inputs=inputs)
by_method = model.predict_on_batch(inputs)
np.savez(sys.argv[3], **{f"signature_{k}": v.numpy() for k, v in by_signature.items()},
         **{f"method_{k}": v.numpy() for k, v in by_method.items()})
print(json.dumps({
    "senformer_imported": any(name.startswith("senformer_cli") for name in sys.modules),
    "input_shape": signature.structured_input_signature[1]["inputs"].shape.as_list(),
    "outputs": {k: v.shape.as_list() for k, v in signature.structured_outputs.items()},
    "config": json.loads(model.config_json.numpy().decode()),
}))
"""


def test_plain_tensorflow_runs_the_export(exported, original, tmp_path: Path):
    out, _ = exported
    inputs = one_hot_batch(2, 8192, seed=2)
    np.savez(tmp_path / "inputs.npz", inputs=inputs)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_TENSORFLOW)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "inputs.npz"),
                             str(tmp_path / "outputs.npz")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["senformer_imported"] is False
    assert info["input_shape"] == [None, 8192, 4]
    assert info["outputs"] == {"human": [None, 32, 16], "mouse": [None, 32, 8]}
    assert info["config"]["model"] == original.config.to_dict()
    outputs = np.load(tmp_path / "outputs.npz")
    expected = original.model(tf.constant(inputs), is_training=False)
    for head in ("human", "mouse"):
        for way in ("signature", "method"):
            np.testing.assert_allclose(outputs[f"{way}_{head}"], expected[head].numpy(), rtol=0, atol=1e-6)


def test_overrides_apply_to_an_export_where_the_architecture_allows(exported, original):
    out, _ = exported
    loaded = load_model(str(out), {"dropout_rate": 0.2, "heads": {"human": 16, "mouse": 8}})
    assert loaded.config.dropout_rate == 0.2
    for a, b in zip(loaded.model.variables, original.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # The sparse model's random-block table is sized by the length: another length does not fit.
    with pytest.raises(SenformerError, match=r"random_blocks:0' has shape \(4, 6, 2\) in the model, "
                                             r"\(4, 2, 2\)") as error:
        load_model(str(out), {"sequence_length": 16384})
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_full_attention_export_runs_at_another_length(tmp_path: Path):
    from senformer_cli.model.export import write_saved_model

    model = load_model("tiny", {**SMALL, "attention": "full"})
    write_saved_model(model.model, model.config, tmp_path / "full")
    longer = load_model(str(tmp_path / "full"), {"sequence_length": 16384})
    assert longer.config.sequence_length == 16384
    for a, b in zip(longer.model.variables, model.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    # The centre 8,192 bp of a 16,384-bp input of N flanks: the conv tower sees the same bases,
    # only the attention sees more (empty) tokens, so the outputs stay close but need not match.
    outputs = longer.model(tf.zeros([1, 16384, 4]), is_training=False)
    assert outputs["human"].shape == (1, 32, 16)


# ----------------------------------------------------------------------------- bad input
def test_out_with_files_is_refused(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", "--model", "tiny", *SET_SMALL, "--out", str(out)])
    user_error(result, "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("args, needle", [
    (["--model", "no-such-model"], "not a preset"),
    (["--model", "tiny", "--set", "channels=98"], "channels"),
    (["--model", "tiny", "--set", "colour=red"], "colour"),
    (["--model", "enformer-pretrained", "--weights", "{tmp}"], "gsutil -m cp"),
])
def test_bad_export_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, args, needle):
    monkeypatch.setenv("SENFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SENFORMER_ENFORMER_WEIGHTS", raising=False)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = runner.invoke(app, ["export", *args, "--out", str(tmp_path / "out")])
    user_error(result, needle)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_write_leaves_the_previous_export(exported, tmp_path: Path, monkeypatch):
    import shutil

    from senformer_cli.model import export

    out = tmp_path / "out"
    shutil.copytree(exported[0], out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    def broken_save(*args, **kwargs):
        Path(args[1]).mkdir()
        Path(args[1], "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.tf.saved_model, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        export.export_model("tiny", out, SMALL, overwrite=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_savedmodel_not_from_senformer(tmp_path: Path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "other"))
    with pytest.raises(SenformerError, match="not one written by senformer export"):
        load_model(str(tmp_path / "other"))


def test_export_help_names_the_options():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--out", "--set", "--weights", "--overwrite", "--json"):
        assert option in result.stdout
