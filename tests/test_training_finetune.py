"""Fine-tuning: --init-from a run, --trainable heads|attention, a fresh head for data with another
track count, frozen parts (batch norm included) left exactly as they were."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_fixtures import SMALL, checkpoint_weights, data_args, train_synthetic

from senformer_cli.config import ModelConfig

SETTINGS = {"steps": 2, "batch_size": 2, "learning_rate": 0.01, "warmup_steps": 0,
            "eval_every": 2, "eval_sequences": 2, "checkpoint_every": 2, "log_every": 1, "seed": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_synthetic(tmp_path_factory)


@pytest.fixture(scope="module")
def initial(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run of the small tiny Enformer (full attention) on human and mouse: the weights to
    start from."""
    from senformer_cli.training import TrainRequest, train

    run = tmp_path_factory.mktemp("initial") / "run"
    dirs, genomes = data_args(data)
    train(TrainRequest(data=dirs, genomes=genomes, out=run, preset="tiny",
                       model_overrides={**SMALL, "attention": "full"},
                       train_overrides={**SETTINGS, "steps": 2}))
    return run


def weights_of_spec(spec: str) -> dict[str, np.ndarray]:
    from senformer_cli.model.load import load_model
    from senformer_cli.training import variables_by_path

    return {p: v.numpy() for p, v in variables_by_path(load_model(spec).model).items()}


def test_new_head_for_other_tracks_trains_only_heads_and_keeps_the_trunk(initial: Path,
                                                                        data: Path,
                                                                        tmp_path: Path):
    """--init-from RUN --trainable heads with data of 8 tracks for the 16-track 'human' head: a
    fresh 8-track head is trained; every trunk variable (batch-norm averages included: frozen
    parts run in inference mode) and the mouse head equal the initial run's best checkpoint."""
    from senformer_cli.training import TrainRequest, train

    notices: list[str] = []
    run = tmp_path / "heads"
    result = train(TrainRequest(
        data=[f"human={data / 'mouse'}"], genomes=[f"human={data / 'mouse.fa'}"], out=run,
        train_overrides={**SETTINGS, "init_from": str(initial), "trainable": "heads"}),
        notify=notices.append)
    assert result.status == "completed"
    assert any(n.startswith(f"new 'human' head with 8 tracks for {data / 'mouse'} (the model's "
                            "'human' head has 16); the trunk's weights are kept") for n in notices)
    assert any(n.startswith("initial weights: ") for n in notices)
    config = ModelConfig.from_preset("tiny", **SMALL, attention="full",
                                     heads={"human": 8, "mouse": 8})
    assert result.model_config == config.to_dict()
    before = weights_of_spec(str(initial))
    after = checkpoint_weights(run / "checkpoints" / "ckpt-2", config)
    trunk = [p for p in after if p.startswith("_trunk/")]
    assert len(trunk) > 100
    for path in trunk + [p for p in after if p.startswith("_heads/mouse/")]:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert after["_heads/human/_layers/0/w"].shape == (96, 8)


def test_trainable_attention_changes_only_the_attention_and_its_layer_norm(initial: Path,
                                                                          data: Path,
                                                                          tmp_path: Path):
    """The S-Enformer recipe: Enformer weights, sparse attention swapped in (--set
    attention=sparse), --trainable attention: exactly the q/k/v/r_k/output projections, r_w_bias,
    r_r_bias and the LayerNorm before each attention move; everything else stays as loaded."""
    import tensorflow as tf

    from senformer_cli.model import build_model
    from senformer_cli.training import TrainRequest, create_variables, train, variables_by_path

    run = tmp_path / "attention"
    dirs, genomes = data_args(data, ("human",))
    result = train(TrainRequest(
        data=dirs, genomes=genomes, out=run, model_overrides={"attention": "sparse"},
        train_overrides={**SETTINGS, "init_from": str(initial), "trainable": "attention"}))
    assert result.status == "completed"
    config = ModelConfig.from_preset("tiny", **SMALL)
    before = weights_of_spec(str(initial))
    model = build_model(config)
    create_variables(model)
    tf.train.Checkpoint(model=model).restore(str(run / "checkpoints" / "ckpt-2")).expect_partial()
    changed, expected = set(), set()
    for path, variable in variables_by_path(model).items():
        name = variable.name
        if path in before and not np.array_equal(variable.numpy(), before[path]):
            changed.add(name)
        if variable.trainable and "/mha/" in name:
            expected.add(name)
    # per layer: LayerNorm scale, offset, q, k, v, r_k, output projection w and b, r_w_bias,
    # r_r_bias
    assert len(expected) == config.num_transformer_layers * 10
    assert changed == expected
