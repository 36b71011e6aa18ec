"""receptive_field.png: the S-Enformer report's figure, one panel per mutated position."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def plot_receptive_field(result, path: Path) -> None:
    """One line plot per position: effect per output bin (log scale) against the bin's centre in
    input bp, every model overlaid, the output window shaded, the mutated base as a dashed line and
    each model's noise floor dotted. Bins with zero effect are left out (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result.models
    positions = result.settings["positions"]
    columns = min(3, len(positions))
    rows = math.ceil(len(positions) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.0 * rows), squeeze=False,
                                sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    sequence_length = result.settings["sequence_length"]
    positive = [item.effect[item.effect > 0] for m in models for item in m.positions]
    positive = np.concatenate(positive) if positive else np.array([])
    for k, position in enumerate(positions):
        axis = axes[k // columns][k % columns]
        start, end = models[0].window_bp
        axis.axvspan(start / 1000, end / 1000, color="0.93", zorder=0,
                     label="output window" if k == 0 else None)
        axis.axvline(position / 1000, color="0.3", linestyle="--", linewidth=0.8,
                     label="mutated base" if k == 0 else None)
        for j, m in enumerate(models):
            item = m.positions[k]
            effect = np.where(item.effect > 0, item.effect, np.nan)
            colour = colours[j % len(colours)]
            axis.plot(m.bin_centres_bp / 1000, effect, color=colour, linewidth=1.0,
                      label=m.name if k == 0 else None)
            if m.noise_floor > 0:
                axis.axhline(m.noise_floor, color=colour, linestyle=":", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlim(0, sequence_length / 1000)
        axis.set_title(f"mutation at {position:,} bp ({models[0].where(position)})", fontsize=9)
        if k % columns == 0:
            axis.set_ylabel("mean |mutant - reference|", fontsize=8)
        if k // columns == rows - 1:
            axis.set_xlabel("input position (kb)", fontsize=8)
        axis.tick_params(labelsize=7)
    floors = [m.noise_floor for m in models if m.noise_floor > 0]
    if positive.size:
        low = min([positive.min()] + floors)
        axes[0][0].set_ylim(low / 2, positive.max() * 2)
    for k in range(len(positions), rows * columns):
        axes[k // columns][k % columns].axis("off")
    settings = result.settings
    figure.suptitle(f"effect of one base change per output bin: {settings['repeats']} repeats, "
                    f"{settings['tracks_label']} tracks of head {settings['head']}, seed "
                    f"{settings['seed']} (dotted: noise floor)", fontsize=10)
    figure.legend(loc="lower center", ncol=len(models) + 2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
