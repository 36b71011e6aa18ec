"""`senformer receptive-field`: the theoretical field against gradients and hand arithmetic, the
measured effects against a direct per-sequence computation, exact zeros outside the conv tower's
reach (and nonzero at its edges), the sparse pattern's reach, the substitution draws, the local
recompute, and the command's outputs and one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy import stats
from cli_checks import user_error
from typer.testing import CliRunner

from senformer_cli import receptive_field as rf
from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.errors import SenformerError
from senformer_cli.model.enformer import Enformer
from senformer_cli.model.load import load_model

LENGTH = 8192  # 64 tokens of 128 bp; 32 output bins = tokens 16..47 (bp 2,048..6,143)
SMALL = {"sequence_length": LENGTH, "target_length": 32}
runner = CliRunner()


def build(**overrides):
    loaded = load_model("tiny", {**SMALL, **overrides})
    rf.make_untrained_informative(loaded.model, loaded.config.random_seed)
    return loaded


def zero_attention(model) -> None:
    """Attention output layers to zero: each attention block adds nothing, the conv tower alone
    decides what changes (layer norm and MLP are per token)."""
    for variable in model.variables:
        if "/embedding_layer/" in variable.name:
            variable.assign(tf.zeros_like(variable))


@pytest.fixture(scope="module")
def full_model():
    return build(attention="full")


@pytest.fixture(scope="module")
def conv_only():
    loaded = build(attention="full", num_transformer_layers=1)
    zero_attention(loaded.model)
    return loaded


def spec(loaded, name="m") -> rf.ModelSpec:
    return rf.ModelSpec(name, loaded.model, loaded.config, loaded.description)


def one_hot(codes: np.ndarray) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[codes]


# ----------------------------------------------------------------------------- theoretical field
def test_conv_tower_span_of_the_published_model_is_259_bp_each_side():
    """Stem conv 15 (7 each side at 1 bp) + six conv-5 blocks (2 each side at 2, 4, ..., 64 bp):
    7 + 2 * (2 + 4 + 8 + 16 + 32 + 64) = 259 bp beyond the bin's own 128 bp."""
    calculator = rf.FieldCalculator(Enformer(ModelConfig.from_preset("enformer")))
    expected = 7 + 2 * sum(2 ** k for k in range(1, 7))
    assert calculator.token_span_bp() == {"bin_bp": 128, "left_bp": expected, "right_bp": expected,
                                          "width_bp": 128 + 2 * expected}
    assert calculator.window_bp == (320 * 128, (320 + 896) * 128)
    assert "after 1 attention layer" in calculator.statement()


def test_bin_span_equals_the_gradients_nonzero_inputs(conv_only):
    """Which input bases a conv-tower token reads, from TensorFlow's gradient (not our intervals)."""
    model = conv_only.model
    stem, tower = model.trunk.layers[:2]
    span = rf.FieldCalculator(model).token_span_bp()
    x = tf.constant(one_hot(np.random.default_rng(3).integers(0, 4, (1, LENGTH))))
    for token in (0, 1, 20, 40, 63):
        with tf.GradientTape() as tape:
            tape.watch(x)
            tokens = tower(stem(x, is_training=False), is_training=False)
            total = tf.reduce_sum(tokens[:, token, :] * tf.linspace(1.0, 2.0, tokens.shape[-1]))
        reads = np.flatnonzero(np.abs(tape.gradient(total, x).numpy()[0]).sum(axis=-1))
        first = max(token * 128 - span["left_bp"], 0)
        last = min(token * 128 + 127 + span["right_bp"], LENGTH - 1)
        assert (reads[0], reads[-1], len(reads)) == (first, last, last - first + 1), token


def test_a_base_changes_exactly_the_tokens_of_its_conv_reach(conv_only):
    """Token level, both sides: every token in the computed reach changes, none outside (reference
    and mutant in separate, equally shaped batches: identical arithmetic where inputs agree)."""
    model = conv_only.model
    stem, tower = model.trunk.layers[:2]
    ops = rf.spatial_ops(model)
    rng = np.random.default_rng(0)
    positions = [0, 1, 7, 8, 127, 128, 129, 255, 256, 4095, 4096, 8183, 8184, 8190, 8191]
    positions += rng.integers(0, LENGTH, 6).tolist()
    reference = rng.integers(0, 4, (3, LENGTH))
    tokens_ref = tower(stem(tf.constant(one_hot(reference)), is_training=False), is_training=False)
    for position in positions:
        mutant = reference.copy()
        mutant[:, position] = (mutant[:, position] + np.arange(1, 4)) % 4  # all three other bases
        tokens_mut = tower(stem(tf.constant(one_hot(mutant)), is_training=False), is_training=False)
        changed = np.flatnonzero((tokens_ref.numpy() != tokens_mut.numpy()).any(axis=(0, 2)))
        first, last = rf.forward_reach(ops, LENGTH, position, position)
        assert changed.tolist() == list(range(first, last + 1)), position


def test_conv_tower_alone_gives_exactly_zero_outside_its_reach_and_nonzero_at_its_edges(conv_only):
    positions = [0, 1500, 1800, 2047, 2048, 2300, 4095, 4096, 6143, 6144, 6400, 8191]
    for local, xla in ((False, False), (True, False), (True, True)):
        result = rf.measure([spec(conv_only)], positions=positions, repeats=2, seed=1, batch_size=4,
                            local=local, xla=xla)
        measured = result.models[0]
        for item in measured.positions:
            field = item.field
            inside = np.zeros(32, bool)
            if field.conv_bins is not None:
                lo, hi = field.conv_bins
                inside[lo:hi + 1] = True
                assert item.effect[lo] > measured.noise_floor and item.effect[hi] > measured.noise_floor
                assert (item.effect[inside] > 0).all()
            assert (item.effect[~inside] == 0.0).all(), (local, xla, item.position_bp)
            summary = measured.position_summary(item)
            assert summary["reached_bins"] == inside.sum()
    # The positions beyond 259 bp of the output window reach no bin at all; those within do.
    reached = {item.position_bp: item.field.conv_bins for item in measured.positions}
    assert reached[1500] is None and reached[1800] == (0, 0) and reached[6400] == (31, 31)


def test_one_sparse_layer_changes_exactly_the_bins_its_pattern_reaches():
    """Reference: the layer's random-block table and the BigBird rules, by hand in numpy."""
    loaded = build(attention="sparse", num_transformer_layers=1, block_size=4, random_seed=5)
    model, config = loaded.model, loaded.config
    layer = model.attention_layers()[0]
    table = layer._random_blocks.numpy()  # [heads, middle rows, random]
    n, g, half = config.num_blocks, config.num_global_blocks, config.window_blocks // 2
    position = 3000  # token 23, block 5; its conv reach is tokens 21..25 = blocks 5 and 6
    first, last = rf.forward_reach(rf.spatial_ops(model), LENGTH, position, position)
    changed_blocks = set(range(first // 4, last // 4 + 1))
    reached_blocks = set(changed_blocks)
    for row in range(n):
        if row < g or row >= n - g:
            reached_blocks.add(row)  # global rows read everything
            continue
        keys = set(range(row - half, row + half + 1)) | set(range(g)) | set(range(n - g, n))
        keys |= {int(b) for b in table[:, row - g].ravel() if b >= 0}
        if keys & changed_blocks:
            reached_blocks.add(row)
    tokens = np.zeros(config.num_tokens, bool)
    for block in reached_blocks:
        tokens[block * 4:(block + 1) * 4] = True
    tokens[first:last + 1] = True
    expected = tokens[16:48]
    field = rf.FieldCalculator(model).field(position)
    assert (field.bins == expected).all()
    assert 0 < expected.sum() < 32  # one sparse layer does not reach everything
    measured = rf.measure([spec(loaded)], positions=[position], repeats=2, seed=0,
                          batch_size=2).models[0].positions[0]
    assert (measured.effect[~expected] == 0.0).all()
    assert (measured.effect[expected] > 0).all()


# ----------------------------------------------------------------------------- the measurement
@pytest.mark.parametrize("shared, local, xla", [(False, False, False), (True, True, False),
                                                (False, True, True)])
def test_effects_equal_a_direct_per_sequence_computation(full_model, shared, local, xla):
    """Sequences drawn as documented (default: one repeat at a time, int8 codes, then 1..3 added
    mod 4; shared: the R sequences first, then a [positions, R] table of 1..3), each predicted
    alone and eagerly; effect = mean over repeats of the mean over tracks of |mut - ref|. The
    measurement's paths (whole passes, local recompute, XLA) must all give it."""
    positions, repeats, tracks = [100, 4000], 3, [0, 3, 5, 6, 7]
    rng = np.random.default_rng(11)
    if shared:
        sequences = [rng.integers(0, 4, size=LENGTH, dtype=np.int8) for _ in range(repeats)]
        shifts = rng.integers(1, 4, size=(len(positions), repeats))
    expected = np.zeros((2, 32))
    for k, position in enumerate(positions):
        for r in range(repeats):
            if shared:
                codes, shift = sequences[r], shifts[k, r]
            else:
                codes = rng.integers(0, 4, size=LENGTH, dtype=np.int8)
                shift = rng.integers(1, 4)
            mutant = codes.copy()
            mutant[position] = (codes[position] + shift) % 4
            predictions = [full_model.model(tf.constant(one_hot(c)[None]), is_training=False)["human"]
                           .numpy()[0][:, tracks] for c in (codes, mutant)]
            expected[k] += np.abs(predictions[1] - predictions[0]).mean(axis=-1) / repeats
    result = rf.measure([spec(full_model)], positions=positions, repeats=repeats, seed=11,
                        batch_size=2, tracks="0,3,5-7", shared=shared, local=local, xla=xla)
    measured = np.array([item.effect for item in result.models[0].positions])
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-6)
    assert result.settings["tracks_label"] == "tracks 0,3,5-7"


def test_models_with_identical_conv_towers_share_them_and_get_the_same_numbers(full_model):
    """The tiny presets with full and sparse attention have the same stem and conv tower (same
    seed), so measured together the second reuses the first's activations; a changed tower
    weight changes the digest. Each model's effects and floor must be exactly what it gets
    measured alone (activations shared from another batch or position would change them)."""
    sparse = build(attention="sparse")
    digest = rf.tower_fingerprint(sparse.model)
    assert rf.tower_fingerprint(full_model.model) == digest
    variable = sparse.model.trunk.layers[1].variables[-1]  # one conv-tower variable changed
    saved = variable.numpy()
    variable.assign(saved + 1e-3)
    assert rf.tower_fingerprint(sparse.model) != digest
    variable.assign(saved)
    items = [spec(full_model, "full"), spec(sparse, "sparse")]
    # Shared sequences: the second position's batches keep the references and change the mutants.
    settings = dict(positions=[100, 4000], repeats=3, seed=6, batch_size=2, local=True, shared=True)
    together = rf.measure(items, **settings).models
    assert [m.shares_tower_with for m in together] == [None, "full"]
    for item, joint in zip(items, together):
        alone = rf.measure([item], **settings).models[0]
        assert alone.shares_tower_with is None
        assert joint.noise_floor == alone.noise_floor
        for a, b in zip(joint.positions, alone.positions):
            assert np.array_equal(a.effect, b.effect)


def test_local_recompute_equals_the_full_forward_pass(full_model):
    positions = [0, 2048, 4100, 8191]
    runs = {local: rf.measure([spec(full_model)], positions=positions, repeats=2, seed=2,
                              batch_size=4, local=local).models[0] for local in (False, True)}
    full = np.array([item.effect for item in runs[False].positions])
    local = np.array([item.effect for item in runs[True].positions])
    assert np.abs(local - full).max() <= max(runs[False].noise_floor, 1e-7)
    assert (full > 0).all()  # attention reaches every bin


def test_same_batch_round_off_stays_under_the_noise_floor(conv_only):
    """Reference and mutant in one batch: bins the change cannot reach differ by round-off only,
    and by less than the measured floor; the paired layout keeps them exactly equal."""
    positions = [1000, 4096, 7000]
    results = {layout: rf.measure([spec(conv_only)], positions=positions, repeats=4, seed=3,
                                  batch_size=4, layout=layout).models[0]
               for layout in ("same-batch", "paired")}
    for layout, measured in results.items():
        for item in measured.positions:
            inside = np.zeros(32, bool)
            if item.field.conv_bins is not None:
                inside[item.field.conv_bins[0]:item.field.conv_bins[1] + 1] = True
            outside = item.effect[~inside]
            if layout == "paired":
                assert (outside == 0).all()
            else:
                assert outside.max() <= measured.noise_floor
    assert results["same-batch"].noise_floor < 1e-4


def test_substitutions_are_uniform_over_the_three_other_bases():
    rng = np.random.default_rng(0)
    counts = np.zeros((4, 4))
    for _ in range(12_000):
        codes, new_base = rf.draw_repeat(rng, 8, 3)
        counts[codes[3], new_base] += 1
    assert np.trace(counts) == 0  # never the same base
    observed = counts[~np.eye(4, dtype=bool)]
    assert stats.chisquare(observed).pvalue > 1e-3  # 12 pairs equally likely
    assert (observed > 800).all()


def test_same_seed_same_numbers_for_any_batch_size(full_model):
    def draws(per_batch: int):
        batches = list(rf.mutation_batches(4, LENGTH, [5, 6000], 5, per_batch))
        return (np.concatenate([b[1] for b in batches]), np.concatenate([b[2] for b in batches]))

    one, three = draws(1), draws(3)
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])
    # Shared sequences: every position mutates the same references, each at its own position.
    batches = list(rf.mutation_batches(4, LENGTH, [5, 6000], 5, 2, shared=True))
    assert [(b[0], len(b[1]), b[3]) for b in batches] == [(0, 2, True), (1, 2, False)] * 2 + [
        (0, 1, True), (1, 1, False)]
    for index, references, mutants, _ in batches:
        differs = np.flatnonzero((references != mutants).any(axis=0))
        assert differs.tolist() == [[5, 6000][index]]
    first, second, other = (rf.measure([spec(full_model)], positions=[6000], repeats=2, seed=seed,
                                       batch_size=2).models[0] for seed in (4, 4, 5))
    for a, b, c in zip(first.positions, second.positions, other.positions):
        assert np.array_equal(a.effect, b.effect)
        assert not np.allclose(a.effect, c.effect)


def test_positions_are_evenly_spaced_with_both_ends():
    positions = rf.evenly_spaced_positions(32_768, 9)
    assert positions[0] == 0 and positions[-1] == 32_767 and len(positions) == 9
    assert set(np.diff(positions)) <= {4095, 4096}
    assert rf.evenly_spaced_positions(32_768, 1) == [16_384]
    with pytest.raises(SenformerError, match="--position 32768"):
        rf.check_positions([0, 32_768], 32_768)


def test_track_selection():
    types = ["dnase_atac"] * 4 + ["chip_histone"] * 4 + ["chip_tf"] * 4 + ["cage"] * 4
    assert rf.parse_tracks("all", 16, None, "human") == (list(range(16)), "all")
    assert rf.parse_tracks("0,3,5-7", 16, None, "human")[0] == [0, 3, 5, 6, 7]
    assert rf.parse_tracks("cage", 16, types, "human") == ([12, 13, 14, 15], "CAGE")
    assert rf.parse_tracks("ChIP TF", 16, types, "human")[0] == [8, 9, 10, 11]
    for bad, needle in (("cage", "no targets sheet"), ("fish", "track type"), ("15-16", "outside"),
                        ("3-1", "outside")):
        with pytest.raises(SenformerError, match=needle):
            rf.parse_tracks(bad, 16, None, "human")


def test_default_models_are_the_trained_runs_only_when_both_exist(tmp_path):
    models, note = rf.default_models(tmp_path)
    assert [m[1:] for m in models] == [("tiny", {"attention": "full"}), ("tiny", {"attention": "sparse"})]
    assert "untrained" in note
    for run in ("tiny-full", "tiny"):
        (tmp_path / "runs" / run / "checkpoints").mkdir(parents=True)
        (tmp_path / "runs" / run / "config.json").write_text("{}")
    assert rf.default_models(tmp_path)[1] is not None  # no checkpoint yet
    for run in ("tiny-full", "tiny"):
        (tmp_path / "runs" / run / "checkpoints" / "ckpt-3.index").write_text("")
    models, note = rf.default_models(tmp_path)
    assert note is None
    assert [m[0] for m in models] == ["Enformer", "S-Enformer"]
    assert [m[1] for m in models] == [str(tmp_path / "runs/tiny-full"), str(tmp_path / "runs/tiny")]


# ----------------------------------------------------------------------------- the command
SMALL_ARGS = ["--model", "tiny", "--set", f"sequence_length={LENGTH}", "--set", "target_length=32"]


def write_sheet(folder) -> None:
    from senformer_cli.data.targets import write_targets

    kinds = ["DNASE", "CHIP:H3K27ac", "CHIP:CTCF", "CAGE"]
    rows = [{"index": i, "genome": 0, "identifier": f"T{i}", "file": "x", "clip": 32, "scale": 2,
             "sum_stat": "mean", "description": f"{kinds[i // 4]}:sample {i}"} for i in range(16)]
    folder.mkdir(parents=True, exist_ok=True)
    write_targets(folder / "targets.txt", pd.DataFrame(rows))


def test_command_writes_csv_summary_and_figure(tmp_path):
    write_sheet(tmp_path / "data" / "human")
    out = tmp_path / "out"
    result = runner.invoke(app, ["receptive-field", *SMALL_ARGS, "--positions", "3", "--repeats", "2",
                                 "--batch-size", "2", "--tracks", "cage", "--data",
                                 str(tmp_path / "data"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["settings"]["positions"] == [0, 4096, 8191]
    assert summary["settings"]["tracks_label"] == "CAGE"
    table = pd.read_csv(out / "receptive_field.csv")
    assert list(table.columns) == ["model", "position", "bin", "effect"]
    assert len(table) == 3 * 32
    model = summary["models"][0]
    for row in model["positions"]:
        effect = table[table.position == row["position_bp"]].sort_values("bin")["effect"].to_numpy()
        np.testing.assert_allclose(effect, row["effect"], rtol=1e-12)
        assert row["peak_bin"] == int(np.argmax(effect))
    assert [p["where"] for p in model["positions"]] == ["left flank", "inside", "right flank"]
    assert json.loads((out / "summary.json").read_text())["models"][0]["noise_floor"] == model["noise_floor"]
    assert (out / "receptive_field.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run into the same folder is refused without --overwrite, and nothing changes.
    before = (out / "summary.json").read_text()
    again = runner.invoke(app, ["receptive-field", *SMALL_ARGS, "--repeats", "1", "--out", str(out)])
    user_error(again, "--overwrite")
    assert (out / "summary.json").read_text() == before


@pytest.mark.parametrize("args, needle", [
    (["--position", "8192"], "--position 8192"),
    (["--repeats", "0"], "--repeats 0"),
    (["--head", "fish"], "--head fish"),
    (["--tracks", "enhancers"], "--tracks enhancers"),
    (["--tracks", "cage"], "no targets sheet"),
    (["--model", "/nonexistent/run"], "/nonexistent/run"),
    (["--batch-size", "1"], "--batch-size 1"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needle):
    base = SMALL_ARGS if "--model" not in args else ["--set", f"sequence_length={LENGTH}"]
    out = tmp_path / "out"
    result = runner.invoke(app, ["receptive-field", *base, *args, "--repeats" if "--repeats" not in args
                                 else "--seed", "1", "--positions", "2", "--out", str(out)])
    user_error(result, needle)
    assert not out.exists()


def test_track_types_come_from_the_runs_training_data(tmp_path, monkeypatch):
    """A run's config.json names its data per head (train.data); its targets sheet gives the types."""
    write_sheet(tmp_path / "data" / "human")
    run = tmp_path / "runs" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {}, "train": {"data": {"human": "data/human"}}}))
    monkeypatch.chdir(tmp_path)
    types = rf.targets_sheet_types(None, str(run / "checkpoints" / "ckpt-2"), "human", 16)
    assert types == ["dnase_atac"] * 4 + ["chip_histone"] * 4 + ["chip_tf"] * 4 + ["cage"] * 4
    assert rf.targets_sheet_types(None, str(run), "mouse", 8) is None
    assert rf.targets_sheet_types(None, "tiny", "human", 16) is None
