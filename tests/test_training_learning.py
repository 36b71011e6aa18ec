"""The tiny recipe learns every track type: 250 steps of the tiny S-Enformer on the built-in
synthetic data lift the validation Pearson r of each of the four track types (DNase/ATAC, ChIP
histone, ChIP TF, CAGE) from the first plateau's |r| < 0.2 (every run's first 50 steps) above a
calibrated threshold.

Calibration (`python benchmarks/learning.py --seeds 0 1 2 3 4 5 --steps 600`: the tiny S-Enformer
and Enformer, this same data set and recipe with `beta2` 0.99, 2026-12-08): at step 250 the
lowest of the four types' r was 0.44 in S-Enformer seed 0 (this test's model and seed) and
0.30-0.60 over the six S-Enformer runs (0.03-0.44 over the Enformer runs, whose seed 3 learnt
the promoters only at step ~350); at step 50 every type's |r| was below 0.2. The threshold, 0.3,
fails a recipe that has learnt only some motifs by step 250: with the published pooling
initialisation (`pooling_init_scale=2`) this test's run ends with ChIP TF r 0.03 (0.04 with
`beta2` 0.999; README, "Learning on the synthetic data"). About a minute and a half on two CPU
cores (it writes the data set first), in the default suite: the issue asks CI to train."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import session_synthetic

TYPES = ("dnase_atac", "chip_histone", "chip_tf", "cage")
THRESHOLD = 0.3
STEPS = 250


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in synthetic set's arguments (seed 0, the tiny preset's splits and files): the
    calibration's data."""
    from senformer_cli.data.synthetic import SYNTH_PRESETS

    preset = SYNTH_PRESETS["tiny"]
    return session_synthetic(tmp_path_factory, "synth-tiny-builtin", seed=0,
                             splits=dict(preset.splits), records_per_file=preset.records_per_file)


def test_tiny_recipe_lifts_every_track_type_above_the_calibrated_threshold(data: Path,
                                                                           tmp_path: Path):
    from senformer_cli.training import TrainRequest, train

    result = train(TrainRequest(
        data=[str(data / "human")], genomes=[f"human={data / 'human.fa'}"], out=tmp_path / "run",
        preset="tiny", train_overrides={"steps": STEPS, "eval_every": STEPS, "seed": 0,
                                        "checkpoint_every": STEPS}))
    assert result.status == "completed"
    values = result.final["heads"]["human"]
    assert min(values[t] for t in TYPES) > THRESHOLD, values
