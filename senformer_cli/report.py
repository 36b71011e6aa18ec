"""Rendering: rich tables on stdout, JSON documents, one-line errors on stderr."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def error(message: str) -> None:
    """One red line on stderr (the CLI then exits with code 2)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def pattern_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    return summary.get("attention_pattern")


def model_summary(summary: dict[str, Any]) -> None:
    """Tables for `senformer model summary`."""
    config = summary["config"]
    title = (f"{summary['preset_description']}: {config['channels']} channels, "
             f"{config['num_transformer_layers']} layers, {config['num_heads']} heads, "
             f"{config['attention']} attention, {config['sequence_length']:,} bp -> "
             f"{config['target_length']} bins")
    table = Table(title=title, title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("non-trainable", justify="right")
    table.add_column("variables", justify="right")
    for part in summary["parts"]:
        style = "bold" if part["part"] == "total" else None
        table.add_row(part["part"], _fmt_int(part["parameters"]),
                      _fmt_int(part.get("non_trainable", 0)), _fmt_int(part["variables"]),
                      style=style)
    table.caption = ("parameters: trainable; non-trainable: batch-norm moving averages"
                     + (" and the random-block tables" if pattern_of(summary) else ""))
    console.print(table)
    pattern = summary.get("attention_pattern")
    if pattern:
        ptable = Table(title="sparse attention pattern (per head, per layer)", title_justify="left")
        ptable.add_column("quantity")
        ptable.add_column("value", justify="right")
        rows = [
            ("tokens", _fmt_int(pattern["num_tokens"])),
            ("blocks x block size", f"{pattern['num_blocks']} x {pattern['block_size']}"),
            ("window / random / global blocks",
             f"{pattern['window_blocks']} / {pattern['num_random_blocks']} / "
             f"{pattern['num_global_blocks']} at each end"),
            ("keys per middle query", _fmt_int(pattern["keys_per_middle_query"])),
            ("keys per query (mean)", f"{pattern['mean_keys_per_query']:,.1f}"),
            ("attended fraction of the full T x T matrix", f"{pattern['fraction_of_full']:.4f}"),
        ]
        for row in rows:
            ptable.add_row(*row)
        console.print(ptable)


# ---------------------------------------------------------------- data (issue #3)
def data_synth(summary: dict[str, Any]) -> None:
    """Table for `senformer data synth`."""
    table = Table(title=f"synthetic data ({summary['preset']}, seed {summary['seed']}) in "
                  f"{summary['out']}", title_justify="left")
    for column in ("organism", "data directory", "genome", "tracks", "train / valid / test",
                   "promoters", "driven by an enhancer"):
        table.add_column(column, justify="right" if column in ("tracks", "promoters") else "left")
    splits = summary["splits"]
    for organism, info in summary["organisms"].items():
        table.add_row(organism, info["data_dir"], info["genome"], _fmt_int(info["num_targets"]),
                      f"{splits['train']} / {splits['valid']} / {splits['test']}",
                      _fmt_int(info["promoters"]), f"{info['driven']:,}")
    console.print(table)
    console.print(f"ground truth of the planted rules: {summary['ground_truth']}; give each "
                  "organism's FASTA (<organism>.fa) as its genome so records are extended from it",
                  highlight=False)


def data_inspect(summary: dict[str, Any]) -> None:
    """Tables for `senformer data inspect`."""
    stats = summary["statistics"]
    shapes = summary["shapes"]
    console.print(
        f"[bold]{summary['data_dir']}[/]: sequence {shapes['sequence_dtype']} "
        f"{' x '.join(f'{n:,}' for n in shapes['sequence'])}, target {shapes['target_dtype']} "
        f"{' x '.join(f'{n:,}' for n in shapes['target'])}; {stats['pool_width']}-bp bins, "
        f"crop {stats['crop_bp']:,} bp; targets sheet {summary['targets_sheet']}", highlight=False)
    splits = Table(title="splits", title_justify="left")
    for column in ("split", "files", "records", "statistics.json", "agrees"):
        splits.add_column(column, justify="left" if column in ("split", "agrees") else "right")
    for row in summary["splits"]:
        splits.add_row(row["split"], _fmt_int(row["files"]), _fmt_int(row["records"]),
                       _fmt_int(row["expected"]), "[green]yes[/]" if row["agrees"] else "[red]NO[/]")
    console.print(splits)
    ranges = {r["track_type"]: r for r in summary["value_ranges"]}
    tracks = Table(title=f"tracks per type; target values over the first "
                   f"{summary['sampled_records']} records", title_justify="left")
    for column in ("track type", "tracks", "min", "mean", "max"):
        tracks.add_column(column, justify="left" if column == "track type" else "right")
    from senformer_cli.data.targets import TRACK_TYPE_LABELS

    for kind, count in summary["tracks_per_type"].items():
        r = ranges.get(kind)
        values = [f"{r[k]:.3g}" for k in ("min", "mean", "max")] if r else ["-", "-", "-"]
        tracks.add_row(TRACK_TYPE_LABELS[kind], _fmt_int(count), *values)
    console.print(tracks)
    if summary["n_fraction"] is not None:
        console.print(f"N (all-zero) positions in the sampled sequences: "
                      f"{summary['n_fraction']:.2%}", highlight=False)
    if summary["agrees"]:
        console.print("[green]files agree with statistics.json[/]")
    for problem in summary["problems"]:
        console.print(f"[red]disagrees:[/] {problem}", highlight=False)


# ---------------------------------------------------------------- evaluate, compare (issue 7)
# (renderers of this section go here)


# ---------------------------------------------------------------- export (issue 7)
# (renderers of this section go here)


# ---------------------------------------------------------------- train (issue 8)
def notice(line: str) -> None:
    """One informational line on stderr (not part of the command's output)."""
    err_console.print(f"[cyan]note:[/] {line}", highlight=False, soft_wrap=True)


class TrainProgress:
    """A rich progress bar on stderr for `senformer train`: step, loss, steps/s and ETA (the rate
    leaves out each head's first, compiling step). Off when stderr is not a terminal."""

    def __init__(self, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.enabled = enabled and err_console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"), console=err_console, transient=True,
            disable=not self.enabled)
        self._task = None

    def __enter__(self) -> "TrainProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def update(self, state: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._task is None:
            self._task = self._progress.add_task("training", total=state["steps"],
                                                 completed=state.get("start", 0), loss="-",
                                                 rate="compiling", eta="-")
        if state["phase"] == "validate":
            self._progress.update(self._task, description="validating")
            return
        rate = state.get("steps_per_s")
        eta = "-"
        if rate:
            seconds = int((state["steps"] - state["step"]) / rate)
            eta = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        self._progress.update(self._task, description="training", completed=state["step"],
                              loss=f"{state['loss']:.4f}",
                              rate=f"{rate:.2f} steps/s" if rate else "compiling", eta=eta)


def _r(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def train_result(result: dict[str, Any]) -> None:
    """The best and the final validation of a training run, per head and track type."""
    from senformer_cli.data.targets import TRACK_TYPE_LABELS, TRACK_TYPES

    best, final = result.get("best"), result.get("final")
    rate = result.get("steps_per_s")
    console.print(f"[bold]{result['run_dir']}[/]: {result['status']} at step {result['step']:,} "
                  f"of {result['train_config']['steps']:,}"
                  + (f", {rate:.2f} steps/s after warm-up" if rate else ""), highlight=False)
    if result.get("message"):
        console.print(result["message"], highlight=False)
    if best is None:
        console.print("no validation yet")
        return
    for head in final["heads"]:
        table = Table(title=f"validation mean Pearson r, {head}", title_justify="left")
        table.add_column("track type")
        table.add_column(f"best (step {best['step']:,})", justify="right")
        table.add_column(f"final (step {final['step']:,})", justify="right")
        for kind in (*TRACK_TYPES, "all"):
            if kind not in final["heads"][head] and kind not in best["heads"].get(head, {}):
                continue
            table.add_row(TRACK_TYPE_LABELS.get(kind, kind),
                          _r(best["heads"].get(head, {}).get(kind)),
                          _r(final["heads"][head].get(kind)),
                          style="bold" if kind == "all" else None)
        console.print(table)
    checkpoint = result.get("best_checkpoint")
    if checkpoint:
        console.print(f"best checkpoint: {checkpoint} (mean r {best['valid_mean_r']:.3f}); "
                      f"metrics: {result['run_dir']}/metrics.csv", highlight=False)


# ---------------------------------------------------------------- profile (issue 9)
# (renderers of this section go here)


# ---------------------------------------------------------------- receptive-field (issue 10)
# (renderers of this section go here)


# ---------------------------------------------------------------- demo (issue 11)
# (renderers of this section go here)
