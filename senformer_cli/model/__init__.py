"""The model factory: every subcommand builds its model here."""
from __future__ import annotations

import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model.enformer import Enformer


def build_model(config: ModelConfig, create_variables: bool = False) -> Enformer:
    """Enformer (`attention='full'`) or S-Enformer (`attention='sparse'`) for `config`.

    Call it as `model(x, is_training=...)` on one-hot `[B, sequence_length, 4]` float32 to get
    `{head: [B, target_length, tracks]}`. Sonnet creates variables on the first call; with
    `create_variables=True` they are created now by tracing one call (cheap: nothing is computed).
    """
    model = Enformer(config)
    if create_variables:
        build_variables(model)
    return model


def build_variables(model: Enformer) -> None:
    """Create every variable of `model` by tracing (not running) one forward pass."""
    spec = tf.TensorSpec([1, model.config.sequence_length, 4], tf.float32)
    tf.function(lambda x: model(x, is_training=False)).get_concrete_function(spec)


__all__ = ["Enformer", "ModelConfig", "build_model", "build_variables"]
