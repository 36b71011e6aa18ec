"""profile.png: peak memory and step time against input length, one line per model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"enformer": "#1f77b4", "s-enformer": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_profile(result: dict[str, Any], path: Path | str) -> Path:
    """Two panels (peak memory, step time) against input length in bp, log-log axes.

    Measured points are filled; configurations that did not run are drawn at their estimated peak
    (open markers) with the reason's first word; the --max-memory limit is a horizontal line and
    each model's longest length that fits is marked by a dotted vertical line.
    """
    plt = _pyplot()
    rows = result["rows"]
    models = list(dict.fromkeys(row["model"] for row in rows))
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in models:
        colour = COLOURS.get(model)
        own = sorted((row for row in rows if row["model"] == model),
                     key=lambda row: row["sequence_length_bp"])
        ok = [row for row in own if row.get("status") == "ok"]
        lengths = [row["sequence_length_bp"] for row in ok]
        memory_axis.plot(lengths, [row["peak_memory_bytes"] / 1e9 for row in ok], "o-",
                         color=colour, label=model)
        time_axis.plot(lengths, [row["seconds_per_step"] for row in ok], "o-", color=colour,
                       label=model)
        failed = [row for row in own if row.get("status") != "ok"]
        if failed:
            memory_axis.plot([row["sequence_length_bp"] for row in failed],
                             [row["estimated_peak_bytes"] / 1e9 for row in failed], "x",
                             color=colour, markersize=9,
                             label=f"{model}: did not fit (estimated peak)")
        longest = result.get("longest_fitting", {}).get(model)
        if longest:
            for axis in (memory_axis, time_axis):
                axis.axvline(longest, color=colour, linestyle=":", linewidth=1)
            memory_axis.annotate(f"{model}: longest that fits\n{longest:,} bp", (longest, 1),
                                 xycoords=("data", "axes fraction"), xytext=(-4, -4),
                                 textcoords="offset points", ha="right", va="top", fontsize=7,
                                 color=colour)
    limit = result.get("max_memory_bytes")
    if limit:
        memory_axis.axhline(limit / 1e9, color="grey", linestyle="--", linewidth=1,
                            label=f"limit {limit / 1e9:.1f} GB")
    unit = "forward pass" if result["mode"] == "predict" else "training step"
    what = "one attention layer" if result["component"] == "attention" else result["base"]
    for axis, label in ((memory_axis, "peak memory (GB)"), (time_axis, f"seconds per {unit}")):
        axis.set_xscale("log", base=2)
        if any(line.get_ydata().size for line in axis.get_lines()):
            axis.set_yscale("log")
        else:  # nothing ran (every configuration over the limit or failed): no log axis to draw
            axis.text(0.5, 0.5, "no configuration ran", transform=axis.transAxes, ha="center",
                      va="center", fontsize=9, color="grey")
        axis.set_xlabel("input length (bp)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        lengths = sorted({row["sequence_length_bp"] for row in rows})
        axis.set_xticks(lengths)
        axis.set_xticklabels([f"{length // 1024:,}k" for length in lengths], rotation=45,
                             fontsize=7)
        axis.minorticks_off()
    memory_axis.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"{what}: {unit}, batch {result['batch_size']}, {result['precision']}",
                    fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
