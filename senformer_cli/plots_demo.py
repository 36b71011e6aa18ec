"""training_curves.png of `senformer demo`: both models' training loss and validation r."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def training_curves(training: pd.DataFrame, path: Path | str) -> Path:
    """Two panels against the step: the training loss (Poisson, mean over each logging window) and
    the validation mean Pearson r, one line per model.

    training: long table with columns model, step, metric, value (metrics `loss` and
    `valid_mean_r` are drawn).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    panels = (("loss", "training loss (Poisson)"), ("valid_mean_r", "validation mean r"))
    for axis, (metric, title) in zip(axes, panels):
        data = training[training["metric"] == metric]
        for model, rows in data.groupby("model", sort=False):
            rows = rows.sort_values("step")
            axis.plot(rows["step"], rows["value"], marker="o" if len(rows) < 12 else None,
                      markersize=3, linewidth=1.3, label=str(model))
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step", fontsize=9)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        if not data.empty:
            axis.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
