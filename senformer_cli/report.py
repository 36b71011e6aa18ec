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
# (renderers of this section go here)


# ---------------------------------------------------------------- profile (issue 9)
# (renderers of this section go here)


# ---------------------------------------------------------------- receptive-field (issue 10)
import contextlib as _contextlib  # noqa: E402  (kept in this section: shared file)


@_contextlib.contextmanager
def receptive_field_progress(enabled: bool):
    """A progress bar on stderr over models x positions x repeats (with ETA) whose label says what
    runs (loading, tracing, measuring a model); silent when `enabled` is False or stderr is not a
    terminal."""
    if not enabled or not err_console.is_terminal:
        yield (lambda done, total: None), (lambda message: None)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("repeats"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("loading", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def status(message: str) -> None:
            progress.update(task, description=message)

        yield update, status


def _fmt_effect(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def receptive_field(summary: dict[str, Any]) -> None:
    """Tables for `senformer receptive-field`: one per model, one row per mutated position."""
    from rich import box

    settings = summary["settings"]
    for note in summary["notes"]:
        console.print(f"[yellow]{note}[/]", highlight=False)
    console.print(f"{settings['repeats']} repeats per position, {settings['tracks_label']} tracks of "
                  f"head {settings['head']}, seed {settings['seed']}, batches of "
                  f"{settings['batch_size']} ({settings['layout']}"
                  f"{', local recompute' if settings['local'] else ''}"
                  f"{', the same sequences at every position' if settings['shared_sequences'] else ''}"
                  f"); effect = "
                  f"{settings['effect']}", highlight=False)
    for model in summary["models"]:
        start, end = model["output_window_bp"]
        console.print()
        console.print(f"[bold]{model['name']}[/]: {model['description']}", highlight=False)
        console.print(f"theoretical field: {model['theoretical_receptive_field']}", highlight=False)
        console.print(f"noise floor (float32 round-off: the same sequence at another batch row) "
                      f"{model['noise_floor']:.3g}; a bin counts as reached above it; "
                      f"{model['sequences_per_second']:.1f} sequences/s", highlight=False)
        table = Table(title=f"{model['sequence_length']:,} bp -> {model['target_length']} bins of "
                      f"{model['bin_size']} bp, output window {start:,}..{end - 1:,} bp",
                      title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      padding=(0, 1))
        for column in ("position", "where", "peak", "bin", "conv bins", "mean in", "mean out",
                       "reached", "farthest"):
            table.add_column(column, justify="left" if column == "where" else "right", no_wrap=True)
        for row in model["positions"]:
            reach = row["conv_reach_bins"]
            farthest = row["farthest_reached_bp"]
            table.add_row(_fmt_int(row["position_bp"]), row["where"], _fmt_effect(row["peak_effect"]),
                          str(row["peak_bin"]), f"{reach[0]}-{reach[1]}" if reach else "-",
                          _fmt_effect(row["mean_inside_conv_reach"]),
                          _fmt_effect(row["mean_outside_conv_reach"]),
                          f"{row['reached_bins']}/{model['target_length']}",
                          "-" if farthest is None else f"{farthest:,.0f}")
        table.caption = ("position: the mutated base (0-based bp); peak: largest effect, at bin; "
                         "conv bins: the bins the conv tower alone can change; mean in / out: mean "
                         "effect inside / outside them; reached: bins above the noise floor; "
                         "farthest: bp from the mutated base to the farthest reached bin's centre")
        table.caption_justify = "left"
        # Never squeeze the numbers: at least 96 columns, also when stdout is a pipe (80).
        wide = console if console.width >= 96 else Console(width=96, highlight=False)
        wide.print(table)
    if summary.get("out"):
        console.print(f"wrote receptive_field.csv, summary.json and receptive_field.png to "
                      f"{summary['out']}", highlight=False)


# ---------------------------------------------------------------- demo (issue 11)
# (renderers of this section go here)
