"""The Enformer trunk and heads, read top-down: stem, conv tower, transformer, crop, final pointwise.

With `config.attention == 'sparse'` the transformer's attention is BigBird block-sparse attention
with the same parameters (S-Enformer); everything else is the published model.
"""
from __future__ import annotations

import sonnet as snt
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.model.attention import MultiheadAttention
from senformer_cli.model.layers import (Conv1D, Dropout, Residual, Sequential, TargetLengthCrop1D,
                                        conv_block, gelu, pooling_module)
from senformer_cli.model.recompute import recompute_call
from senformer_cli.model.tiling import tiled_call


class Enformer(snt.Module):
    """One-hot DNA [B, L, 4] -> {head: [B, target_length, tracks]} (softplus outputs)."""

    def __init__(self, config: ModelConfig, name: str = "enformer"):
        super().__init__(name=name)
        self.config = config
        self._called = False  # recompute and tiling start once the variables exist
        channels = config.channels

        def site(layer: int, slot: int) -> int:
            """Each dropout's number: a call's `seed` gives every site its own masks."""
            return 8 * layer + slot

        def attention_layer(index: int) -> MultiheadAttention:
            kwargs = dict(value_size=config.value_size, key_size=config.key_size,
                          num_heads=config.num_heads,
                          num_relative_position_features=config.relative_position_features,
                          attention_dropout_rate=config.attention_dropout_rate,
                          positional_dropout_rate=config.positional_dropout_rate,
                          dropout_site=site(index, 4), name=f"attention_{index}")
            if config.attention == "sparse":
                from senformer_cli.model.sparse_attention import SparseMultiheadAttention

                return SparseMultiheadAttention(
                    **kwargs, block_size=config.block_size, num_random_blocks=config.num_random_blocks,
                    window_blocks=config.window_blocks, num_global_blocks=config.num_global_blocks,
                    num_tokens=config.num_tokens, seed=(config.random_seed, index))
            return MultiheadAttention(**kwargs)

        with tf.name_scope("trunk"):
            stem = Sequential(lambda: [
                Conv1D(channels // 2, 15),
                Residual(conv_block(channels // 2, 1, name="pointwise_conv_block")),
                pooling_module(config.pooling, 2, config.pooling_init_scale),
            ], name="stem")

            conv_tower = Sequential(lambda: [
                Sequential(lambda: [
                    conv_block(filters, 5),
                    Residual(conv_block(filters, 1, name="pointwise_conv_block")),
                    pooling_module(config.pooling, 2, config.pooling_init_scale),
                ], name=f"conv_tower_block_{i}")
                for i, filters in enumerate(config.conv_tower_filters)], name="conv_tower")

            def transformer_mlp(i: int) -> Sequential:
                return Sequential(lambda: [
                    snt.LayerNorm(axis=-1, create_scale=True, create_offset=True),
                    snt.Linear(channels * 2),
                    Dropout(config.dropout_rate, site(i, 2)),
                    tf.nn.relu,
                    snt.Linear(channels),
                    Dropout(config.dropout_rate, site(i, 3))], name="mlp")

            transformer = Sequential(lambda: [
                Sequential(lambda: [
                    Residual(Sequential(lambda: [
                        snt.LayerNorm(axis=-1, create_scale=True, create_offset=True,
                                      scale_init=snt.initializers.Ones()),
                        attention_layer(i),
                        Dropout(config.dropout_rate, site(i, 1))], name="mha")),
                    Residual(transformer_mlp(i))], name=f"transformer_block_{i}")
                for i in range(config.num_transformer_layers)], name="transformer")

            crop_final = TargetLengthCrop1D(config.target_length, name="target_input")

            final_pointwise = Sequential(lambda: [
                conv_block(channels * 2, 1),
                Dropout(config.final_dropout_rate, site(config.num_transformer_layers, 0)),
                gelu], name="final_pointwise")

            self._trunk = Sequential([stem, conv_tower, transformer, crop_final, final_pointwise],
                                     name="trunk")

        with tf.name_scope("heads"):
            self._heads = {
                head: Sequential(lambda: [snt.Linear(tracks), tf.nn.softplus], name=f"head_{head}")
                for head, tracks in config.heads.items()
            }

    @property
    def trunk(self) -> Sequential:
        return self._trunk

    @property
    def heads(self) -> dict[str, Sequential]:
        return self._heads

    def attention_layers(self) -> list[MultiheadAttention]:
        """The transformer's attention modules, in layer order."""
        transformer = self._trunk.layers[2]
        return [block.layers[0]._module.layers[1] for block in transformer.layers]

    def _blockwise_trunk(self, inputs: tf.Tensor, is_training: bool, train_only_transformer: bool,
                         **kwargs) -> tf.Tensor:
        """The trunk block by block. With `config.recompute` (gradient checkpointing) the stem,
        each conv tower block, each transformer block and the final pointwise block keep only
        their input for the backward pass and are recomputed there, so it holds one block's
        activations at a time; with `config.tile_length` the stem and conv tower blocks longer
        than it run (and are recomputed) tile by tile. `train_only_transformer`: the other
        blocks run in inference mode (fine-tuning the attention only)."""
        config = self.config
        stem, conv_tower, transformer, crop_final, final_pointwise = self._trunk.layers
        others_training = is_training and not train_only_transformer

        def call(block, outputs: tf.Tensor, training: bool, tile: bool = False) -> tf.Tensor:
            if tile and config.tile_length and outputs.shape[1] > config.tile_length:
                return tiled_call(block, outputs, is_training=training,
                                  tile_length=config.tile_length)
            if config.recompute:
                return recompute_call(block, outputs, is_training=training, **kwargs)
            return block(outputs, is_training=training, **kwargs)

        outputs = inputs
        for block in [stem, *conv_tower.layers]:
            outputs = call(block, outputs, others_training, tile=True)
        for block in transformer.layers:
            outputs = call(block, outputs, is_training)
        return call(final_pointwise, crop_final(outputs), others_training)

    def padding_mask(self, inputs: tf.Tensor) -> tf.Tensor:
        """[B, L, 4] one-hot -> [B, tokens] bool: False where all of a token's bases are N."""
        config = self.config
        has_base = tf.reduce_max(inputs, axis=-1) > 0  # [B, L]
        return tf.reduce_any(tf.reshape(has_base, [-1, config.num_tokens, config.bin_size]), axis=-1)

    def embedding(self, inputs: tf.Tensor, is_training: bool, seed: tf.Tensor | None = None,
                  train_only_transformer: bool = False) -> tf.Tensor:
        """inputs [B, L, 4] -> the trunk's embedding [B, target_length, 2 * channels], through
        recompute and tiling when the config asks for them (the heads' common input).

        seed: [2] int, draw every dropout mask statelessly from it (training replays exactly).
        train_only_transformer: only the transformer in training mode (needs the variables).
        """
        kwargs = {"key_mask": self.padding_mask(inputs)} if self.config.mask_padding else {}
        if self.config.recompute and is_training and seed is None:
            # Recomputed blocks must draw the same dropout masks again: make them stateless.
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        if seed is not None:
            kwargs["seed"] = seed
        blockwise = self.config.recompute or self.config.tile_length or train_only_transformer
        if blockwise and self._called:
            embedding = self._blockwise_trunk(inputs, is_training, train_only_transformer, **kwargs)
        elif train_only_transformer:
            raise ValueError("train_only_transformer needs the model's variables: call it once")
        else:  # the first call creates the variables the blockwise trunk differentiates
            embedding = self._trunk(inputs, is_training=is_training, **kwargs)
        self._called = True
        return embedding

    def __call__(self, inputs: tf.Tensor, is_training: bool,
                 seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """inputs [B, L, 4] float one-hot -> {head: [B, target_length, tracks]}.

        seed: [2] int, draw every dropout mask statelessly from it (training replays exactly).
        """
        trunk_embedding = self.embedding(inputs, is_training, seed)
        return {head: module(trunk_embedding, is_training=is_training)
                for head, module in self._heads.items()}
