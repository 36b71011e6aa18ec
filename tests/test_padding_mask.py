"""`mask_padding`: attention ignores tokens whose bases are all N (N-padded flanks)."""
import numpy as np
import pytest
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model


def _one_hot(rng: np.random.Generator, length: int, n_flank_bp: int) -> np.ndarray:
    x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=length)]
    if n_flank_bp:
        x[:n_flank_bp] = 0
        x[-n_flank_bp:] = 0
    return x[None]


def _twin_models(attention: str):
    base = ModelConfig.from_preset("tiny", attention=attention)
    masked = build_model(base.replace(mask_padding=True))
    plain = build_model(base)
    rng = np.random.default_rng(0)
    x = tf.constant(_one_hot(rng, base.sequence_length, 0))
    plain(x, is_training=False)  # creates the variables
    # A training-mode pass creates the variables and sets the batch-norm moving averages (fresh
    # ones have variance 0, which saturates every softmax).
    masked(x, is_training=True)
    for variable in masked.trainable_variables:
        if "embedding_layer" in variable.name:  # zero-initialised: give attention a say
            variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
    for source, target in zip(masked.variables, plain.variables):
        target.assign(source)
    return masked, plain


def test_padding_mask_marks_tokens_whose_bases_are_all_n():
    config = ModelConfig.from_preset("tiny", mask_padding=True)
    model = build_model(config)
    x = _one_hot(np.random.default_rng(1), config.sequence_length, 0)
    x[0, 128 * 3 + 5] = 0  # one N inside token 3: still a real token
    x[0, 128 * 7:128 * 8] = 0  # token 7 entirely N
    x[0, :128 * 2] = 0  # tokens 0, 1
    expected = np.ones(config.num_tokens, bool)
    expected[[0, 1, 7]] = False
    np.testing.assert_array_equal(model.padding_mask(tf.constant(x)).numpy()[0], expected)


@pytest.fixture(scope="module", params=["sparse", "full"])
def twins(request):
    """(attention, masked model, plain model with the same weights), built once per attention."""
    return (request.param, *_twin_models(request.param))


def test_masking_changes_predictions_only_when_there_is_padding(twins):
    attention, masked, plain = twins
    length = masked.config.sequence_length
    rng = np.random.default_rng(2)
    unpadded = tf.constant(_one_hot(rng, length, 0))
    np.testing.assert_allclose(masked(unpadded, is_training=False)["human"].numpy(),
                               plain(unpadded, is_training=False)["human"].numpy(), rtol=1e-6)
    padded = tf.constant(_one_hot(rng, length, 4096))
    difference = np.abs(masked(padded, is_training=False)["human"].numpy()
                        - plain(padded, is_training=False)["human"].numpy()).max()
    assert difference > 1e-4, attention


class _AddAtPadding:
    """Wraps the conv tower: adds `noise` ([1, tokens, C], zero at real tokens) to its output, so
    the transformer sees other inputs at the padded tokens only."""

    TRAINING_AWARE = True

    def __init__(self, module, noise: tf.Tensor):
        self.module, self.noise = module, noise

    def __call__(self, inputs: tf.Tensor, is_training: bool, **kwargs) -> tf.Tensor:
        return self.module(inputs, is_training=is_training, **kwargs) + self.noise


def test_padded_tokens_reach_no_output_through_any_attention_layer(twins):
    """With 4,096 bp of N at each end (tokens 0-31 and 224-255, all inside the crop), whatever the
    transformer's input is at the padded tokens, the masked model's outputs (bins 64-191) do not
    move: every layer's attention ignores those keys. The plain twin's outputs do move."""
    attention, masked, plain = twins
    config = masked.config
    x = tf.constant(_one_hot(np.random.default_rng(3), config.sequence_length, 4096))
    padded = ~masked.padding_mask(x).numpy()[0]
    assert padded.sum() == 64 and padded[:32].all() and padded[-32:].all()
    noise = np.random.default_rng(4).normal(0, 3, (1, config.num_tokens, config.channels))
    noise = tf.constant((noise * padded[None, :, None]).astype(np.float32))
    for model, should_move in ((masked, False), (plain, True)):
        before = model(x, is_training=False)["human"].numpy()
        conv_tower = model.trunk.layers[1]
        model.trunk.layers[1] = _AddAtPadding(conv_tower, noise)
        try:
            after = model(x, is_training=False)["human"].numpy()
        finally:
            model.trunk.layers[1] = conv_tower
        change = np.abs(after - before).max() / np.abs(before).max()
        if should_move:
            assert change > 1e-3, (attention, change)
        else:
            assert change < 1e-6, (attention, change)
