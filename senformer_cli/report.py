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
def note(message: str) -> None:
    """One dim informational line on stderr (stdout stays clean for --json)."""
    err_console.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)


def profile_progress(enabled: bool):
    """A context manager yielding `progress(done, total, label)` for `senformer profile`: a rich
    progress bar over configurations on stderr, or a no-op when disabled."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextlib.contextmanager
    def bar():
        if not enabled:
            yield lambda done, total, label: None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task("profiling", total=None)

            def update(done: int, total: int, label: str) -> None:
                progress.update(task, completed=done, total=total, description=f"profiling {label}")

            yield update

    return bar()


def _gb(value: Any) -> str:
    return "-" if value is None or value == "" else f"{value / 1e9:.2f}"


def profile(result: dict[str, Any]) -> None:
    """Table for `senformer profile`: one row per model x length."""
    config = result["base_config"]
    what = ("one attention layer" if result["component"] == "attention" else
            "training step" if result["mode"] == "train" else "forward pass")
    title = (f"{what}, {result['base']} width: {config['channels']} channels, "
             f"{config['num_transformer_layers']} layers, {config['num_heads']} heads; batch "
             f"{result['batch_size']}, {result['precision']}"
             + (", recompute" if config.get("recompute") else ""))
    table = Table(title=title, title_justify="left")
    for column in ("model", "length (bp)", "tokens", "mode", "s/step", "spread", "peak GB",
                   "estimated GB", "sparse/full time", "sparse/full memory"):
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for row in result["rows"]:
        ok = row.get("status") == "ok"
        ratio = (lambda key: f"{row[key]:.2f}" if key in row else "-")
        table.add_row(row["model"], _fmt_int(row["sequence_length_bp"]), _fmt_int(row["num_tokens"]),
                      row["mode"], f"{row['seconds_per_step']:.3f}" if ok else
                      f"[yellow]{row.get('reason') or row.get('status')}[/]",
                      f"{row['spread']:.0%}" if ok else "-",
                      _gb(row.get("peak_memory_bytes")) if ok else "-",
                      _gb(row.get("estimated_peak_bytes")), ratio("time_ratio"),
                      ratio("memory_ratio"))
    limit = result.get("max_memory_bytes")
    fits = ", ".join(f"{model} {length:,} bp" if length else f"{model} none"
                     for model, length in result["longest_fitting"].items())
    peak = "allocator peak on GPU:0" if any(row.get("device", "").startswith("GPU")
                                           for row in result["rows"]) else \
        "peak resident memory above the baseline after importing TensorFlow"
    table.caption = (f"median of {result['steps']} steps after {result['warmup']} warm-up steps, "
                     f"each configuration in a fresh process; peak: {peak}"
                     + (f"; longest under {limit / 1e9:.1f} GB: {fits}" if limit else
                        f"; longest that ran: {fits}"))
    console.print(table)


# ---------------------------------------------------------------- receptive-field (issue 10)
# (renderers of this section go here)


# ---------------------------------------------------------------- demo (issue 11)
# (renderers of this section go here)
