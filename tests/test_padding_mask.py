"""`mask_padding`: attention ignores tokens whose bases are all N (N-padded flanks)."""
import numpy as np
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


def test_masking_changes_predictions_only_when_there_is_padding():
    for attention in ("sparse", "full"):
        masked, plain = _twin_models(attention)
        length = masked.config.sequence_length
        rng = np.random.default_rng(2)
        unpadded = tf.constant(_one_hot(rng, length, 0))
        np.testing.assert_allclose(masked(unpadded, is_training=False)["human"].numpy(),
                                   plain(unpadded, is_training=False)["human"].numpy(), rtol=1e-6)
        padded = tf.constant(_one_hot(rng, length, 4096))
        difference = np.abs(masked(padded, is_training=False)["human"].numpy()
                            - plain(padded, is_training=False)["human"].numpy()).max()
        assert difference > 1e-4, attention
