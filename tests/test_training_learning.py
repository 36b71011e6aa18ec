"""The tiny recipe learns: 350 steps of the tiny S-Enformer on the built-in synthetic data lift
the validation Pearson r of the track types every run had learnt by then (DNase/ATAC, ChIP
histone, CAGE) from the plateau's |r| < 0.05 (every run's first 50 steps) above a calibrated
threshold.

Calibration (`python benchmarks/learning.py`: the tiny S-Enformer and Enformer, seeds 0-2, this
same data set and recipe, 2026-11-28): the mean r over these three types at step 350 was
0.56-0.67 for seeds 0 and 2 (0.559 for this test's S-Enformer seed 0) and 0.09-0.17 for seed 1,
whose runs learnt the ChIP TF tracks first; at step 50 |r| <= 0.03 in every run. The threshold,
0.3, fails a recipe that is still on the first plateau at step 350. The ChIP TF tracks are left
out: in seed 0 their motif is learnt late (README, "Learning on the synthetic data"). About 3-8
minutes on two CPU cores, by the machine (it writes the data set first): slow (`make
test-slow`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import session_synthetic

pytestmark = pytest.mark.slow

TYPES = ("dnase_atac", "chip_histone", "cage")
THRESHOLD = 0.3
STEPS = 350


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in synthetic set's arguments (seed 0, the tiny preset's splits and files): the
    calibration's data."""
    from senformer_cli.data.synthetic import SYNTH_PRESETS

    preset = SYNTH_PRESETS["tiny"]
    return session_synthetic(tmp_path_factory, "synth-tiny-builtin", seed=0,
                             splits=dict(preset.splits), records_per_file=preset.records_per_file)


def test_tiny_recipe_lifts_validation_r_above_the_calibrated_threshold(data: Path, tmp_path: Path):
    from senformer_cli.training import TrainRequest, train

    result = train(TrainRequest(
        data=[str(data / "human")], genomes=[f"human={data / 'human.fa'}"], out=tmp_path / "run",
        preset="tiny", train_overrides={"steps": STEPS, "eval_every": STEPS, "seed": 0,
                                        "checkpoint_every": STEPS}))
    assert result.status == "completed"
    values = result.final["heads"]["human"]
    assert float(np.mean([values[t] for t in TYPES])) > THRESHOLD, values
