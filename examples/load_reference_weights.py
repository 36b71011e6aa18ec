"""Restore Enformer weights by variable name and run the model: the same path as the published
checkpoint, shown on the reference weights in ../shared/reference (a 384-channel, 2-layer model).

    .venv/bin/python examples/load_reference_weights.py [../shared/reference/enformer_c384_l2.npz]
"""
import sys
from pathlib import Path

import numpy as np

from senformer_cli.config import ModelConfig
from senformer_cli.model import build_model
from senformer_cli.model.pretrained import assign_by_name, read_npz_weights

path = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/enformer_c384_l2.npz")
config = ModelConfig.from_preset("enformer", channels=384, num_transformer_layers=2,
                                 sequence_length=131_072, heads={"human": 64, "mouse": 16})
model = build_model(config, create_variables=True)
print(f"assigned {assign_by_name(model.variables, read_npz_weights(path), str(path))} variables")

reference = np.load(path)
one_hot = np.concatenate([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])
outputs = model(one_hot[reference["sequence_index"]][None], is_training=False)
for head in ("human", "mouse"):
    error = np.abs(outputs[head].numpy()[0] - reference[head]).max() / np.abs(reference[head]).max()
    print(f"{head}: {outputs[head].shape}, max relative error vs published outputs {error:.1e}")
