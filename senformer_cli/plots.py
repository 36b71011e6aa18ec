"""Figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def compare_scatter(pairs: pd.DataFrame, summary: dict[str, Any], path: Path | str) -> Path:
    """compare.png: one panel per track type of A's vs B's per-sequence r, the diagonal, and the
    Pearson r between the two models' values in each title.

    pairs: columns sequence, track_type, r_a, r_b. summary: `ComparisonResult.summary`
    (names `a`, `b`, per-type statistics under `track_types`, labels under `labels`).
    """
    plt = _pyplot()
    kinds = [k for k in summary["track_types"] if k != "all"] or list(summary["track_types"])
    columns = min(len(kinds), 2) or 1
    rows = max(1, int(np.ceil(len(kinds) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.0 * rows), squeeze=False)
    for axis in axes.ravel()[len(kinds):]:
        axis.set_visible(False)
    for axis, kind in zip(axes.ravel(), kinds):
        data = pairs[pairs["track_type"] == kind]
        x, y = data["r_a"].to_numpy(), data["r_b"].to_numpy()
        stats = summary["track_types"][kind]
        label = summary.get("labels", {}).get(kind, kind)
        r = stats.get("r_between")
        r_text = f"r = {r:.3f}" if r is not None else "r undefined"
        ge = stats.get("percent_b_ge_a")
        ge_text = f", B ≥ A {ge:.0f}%" if ge is not None else ""
        axis.set_title(f"{label}: {r_text} (n = {len(x)}{ge_text})", fontsize=10)
        limits = _square_limits(np.concatenate([x, y]))
        axis.plot(limits, limits, color="0.5", linewidth=1, linestyle="--", zorder=1)
        axis.scatter(x, y, s=10, alpha=0.6, color="tab:blue", edgecolors="none", zorder=2)
        axis.set_xlim(limits)
        axis.set_ylim(limits)
        axis.set_aspect("equal")
        axis.set_xlabel(f"A: {summary['a']}  (per-sequence r)", fontsize=9)
        axis.set_ylabel(f"B: {summary['b']}  (per-sequence r)", fontsize=9)
    figure.suptitle(f"{summary['a']} vs {summary['b']}: {summary.get('split')} split, "
                    f"{summary.get('num_sequences')} sequences", fontsize=11)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _square_limits(values: np.ndarray, min_span: float = 0.1) -> tuple[float, float]:
    """Axis limits holding every value with a 5% margin, at least `min_span` wide."""
    if not values.size:
        return (0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    centre, span = (low + high) / 2, max(high - low, min_span)
    return (centre - 0.55 * span, centre + 0.55 * span)
