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
import contextlib  # noqa: E402  (kept in this section: the file's header is shared)
from typing import Callable, Iterator  # noqa: E402


def _r(value: Any, digits: int = 4) -> str:
    """A correlation for a table: "-" for None and NaN."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _p_value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


@contextlib.contextmanager
def evaluation_progress(enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for `progress(done_sequences, total_sequences)` callbacks, with
    sequences/s and the time left; yields None (no bar) when disabled or stderr is not a
    terminal."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("- seq/s" if speed is None else f"{speed:.2f} seq/s")

    bar = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("sequences"), SpeedColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
    tasks: list = []

    def progress(done: int, total: int) -> None:
        # The bar appears with the first sequence count (after the model is loaded and traced),
        # so its clock and rate measure evaluation only.
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("evaluate", total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        yield progress
    finally:
        if tasks:
            bar.stop()


def _untrained_note(summary: dict[str, Any], who: str | None = None) -> None:
    if summary.get("untrained"):
        console.print(f"[yellow]note:[/] {who + ': ' if who else ''}"
                      f"{summary.get('model_description')}; these "
                      "correlations are a baseline, not a trained model's accuracy",
                      highlight=False)


def evaluation(result, out: Any = None) -> None:
    """Table for `senformer evaluate`: mean and median r per track type, and all tracks."""
    from senformer_cli.data.targets import TRACK_TYPE_LABELS

    summary = result.summary
    pooled = summary.get("metric") == "pooled"
    description = summary.get("model_description")
    model = summary["model"]
    if description and description != model and not summary.get("untrained"):
        model += f" ({description})"  # an untrained model's description is in the note above
    title = (f"{model}\n{summary['data']} ({summary['head']} head), {summary['split']} split, "
             f"{summary['num_sequences']:,} sequences" +
             (f" of {summary['split_sequences']:,}" if summary.get("split_sequences",
                                                              summary["num_sequences"])
              != summary["num_sequences"] else "") +
             f"; input {summary['sequence_length']:,} bp ({summary['extension']})" +
             ("; forward and reverse-complement predictions averaged"
              if summary.get("average_rc") else ""))
    _untrained_note(summary)
    table = Table(title=title, title_justify="left")
    table.add_column("track type", no_wrap=True)
    table.add_column("tracks", justify="right")
    if pooled:
        table.add_column("pooled r", justify="right")
    table.add_column("mean r", justify="right")
    table.add_column("median r", justify="right")
    table.add_column("zero variance", justify="right")
    for kind in result.track_types:
        info = summary[kind]
        row = [TRACK_TYPE_LABELS.get(kind, "all tracks"), _fmt_int(info["tracks"])]
        if pooled:
            row.append(_r(info.get("pooled_r")))
        row += [_r(info["mean_r"]), _r(info["median_r"]),
                _fmt_int(info["excluded_zero_variance"])]
        table.add_row(*row, style="bold" if kind == "all" else None)
    caption = ("mean/median r: of each track's Pearson r over all (sequence, bin) pairs (the "
               "Enformer paper's metric); zero variance: tracks left out")
    if pooled:
        caption = ("pooled r: one Pearson r over all bins x tracks x sequences of a type (the "
                   "S-Enformer report's variant, not the paper's metric); " + caption)
    table.caption = caption
    console.print(table)
    if summary.get("sequences_per_second"):
        console.print(f"{summary['num_sequences']:,} sequences in {summary['seconds']:.1f} s "
                      f"({summary['sequences_per_second']:.2f} sequences/s)", highlight=False)
    if out is not None:
        console.print(f"wrote {out}/: summary.json, tracks.csv, sequences.csv", highlight=False)


def comparison(result, out: Any = None) -> None:
    """Table for `senformer compare`: per track type, A's and B's mean r and how the two models'
    per-sequence values relate."""
    summary = result.summary
    labels = summary.get("labels", {})
    for key, evaluation in result.evaluations.items():
        _untrained_note(evaluation.summary, f"{key.upper()} ({evaluation.summary['model']})")
    lengths = ""
    if summary.get("sequence_length_a") and summary.get("sequence_length_b"):
        lengths = (f"; input {summary['sequence_length_a']:,} / {summary['sequence_length_b']:,} "
                   "bp")
    title = (f"A: {summary['a']}  vs  B: {summary['b']}\n{summary.get('data')}, "
             f"{summary.get('split')} split, {summary.get('num_sequences')} sequences{lengths}")
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in ("track type", "seqs", "mean r A", "mean r B", "B - A", "r(A,B)", "B >= A",
                   "p"):
        table.add_column(column, justify="left" if column == "track type" else "right",
                         no_wrap=True)
    for row in summary["track_types"].items():
        kind, info = row
        difference = info["difference"]
        table.add_row(
            labels.get(kind, kind), _fmt_int(info["sequences"]), _r(info["mean_r_a"]),
            _r(info["mean_r_b"]), "-" if difference is None else f"{difference:+.4f}",
            _r(info["r_between"], 3),
            "-" if info["percent_b_ge_a"] is None else f"{info['percent_b_ge_a']:.1f}%",
            _p_value(info["wilcoxon_p"]), style="bold" if kind == "all" else None)
    table.caption = ("mean r: evaluate's metric. Per-sequence values (each track's r over one "
                     "sequence's bins, mean over the type): r(A,B) is their Pearson r between the "
                     "models, B >= A the % of sequences where B's is at least A's, p the paired "
                     "Wilcoxon signed-rank test (two-sided)")
    console.print(table)
    if out is not None:
        extra = ", a/ and b/ (each model's evaluate output)" if result.evaluations else ""
        console.print(f"wrote {out}/: compare.csv, compare.json, compare.png{extra}",
                      highlight=False)


# ---------------------------------------------------------------- export (issue 7)
@contextlib.contextmanager
def stages(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr naming the current stage of a long operation; yields `progress(stage)`.
    Off (a no-op callable) when disabled or when stderr is not a terminal."""
    if not enabled or not err_console.is_terminal:
        yield lambda stage: None
        return
    with err_console.status("starting") as status:
        yield lambda stage: status.update(f"{stage}...")


def export_summary(summary: dict[str, Any]) -> None:
    """What `senformer export` wrote."""
    table = Table(title=f"SavedModel written to {summary['out']}", title_justify="left",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("model", summary["model"])
    table.add_row("signature", f"{summary['signature']}: float32 {_shape(summary['input_shape'])} -> "
                  + ", ".join(f"{head} {_shape(shape)}" for head, shape in summary["outputs"].items()))
    table.add_row("attention", summary["attention"])
    table.add_row("parameters", _fmt_int(summary["parameters"]))
    table.add_row("size", f"{summary['size_bytes'] / 1e6:,.1f} MB")
    table.caption = (f"plain TensorFlow: tf.saved_model.load('{summary['out']}')"
                     f".predict_on_batch(x); this tool: --model {summary['out']}")
    console.print(table)


def _shape(shape: list) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


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
                          _r(best["heads"].get(head, {}).get(kind), 3),
                          _r(final["heads"][head].get(kind), 3),
                          style="bold" if kind == "all" else None)
        console.print(table)
    checkpoint = result.get("best_checkpoint")
    if checkpoint:
        console.print(f"best checkpoint: {checkpoint} (mean r {best['valid_mean_r']:.3f}); "
                      f"metrics: {result['run_dir']}/metrics.csv", highlight=False)


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
             + (", recompute" if config.get("recompute") else "")
             + (", system allocator" if result.get("allocator") == "system" else ""))
    table = Table(title=title, title_justify="left")
    for column in ("model", "length (bp)", "tokens", "mode", "s/step", "spread", "peak GB",
                   "est. GB", "time sparse/full", "memory sparse/full", "status"):
        table.add_column(column, justify="left" if column in ("model", "mode", "status") else "right")
    for row in result["rows"]:
        ok = row.get("status") == "ok"
        ratio = (lambda key: f"{row[key]:.2f}" if key in row else "-")
        table.add_row(row["model"], _fmt_int(row["sequence_length_bp"]), _fmt_int(row["num_tokens"]),
                      row["mode"], f"{row['seconds_per_step']:.3f}" if ok else "-",
                      f"{row['spread']:.0%}" if ok else "-",
                      _gb(row.get("peak_memory_bytes")) if ok else "-",
                      _gb(row.get("estimated_peak_bytes")), ratio("time_ratio"),
                      ratio("memory_ratio"),
                      "ok" if ok else f"[yellow]{row.get('reason') or row.get('status')}[/]")
    limit = result.get("max_memory_bytes")
    fits = ", ".join(f"{model} {length:,} bp" if length else f"{model} none"
                     for model, length in result["longest_fitting"].items())
    peak = "allocator peak on GPU:0" if any(row.get("device", "").startswith("GPU")
                                           for row in result["rows"]) else \
        "peak resident memory above the baseline after importing TensorFlow"
    table.caption = (f"median of {result['steps']} steps after {result['warmup']} warm-up steps, "
                     f"each configuration in a fresh process; peak: {peak}; est.: the estimate "
                     "made before running")
    console.print(table)
    console.print((f"longest under {limit / 1e9:.1f} GB: " if limit else "longest that ran: ")
                  + fits, highlight=False)


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

    from senformer_cli.receptive_field import FLOOR_ULPS

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
        console.print(f"noise floor (float32 round-off: the same sequence at another batch row; "
                      f"at least {FLOOR_ULPS} ulps of the largest output) "
                      f"{model['noise_floor']:.3g}; a bin counts as reached above it; "
                      f"{model['sequences_per_second']:.1f} sequences/s"
                      + (f" (conv tower identical to {model['conv_tower_shared_with']}'s: "
                         "its activations reused)"
                         if model.get("conv_tower_shared_with") else ""), highlight=False)
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
_DEMO_STATUS = {"made": "green", "reused": "cyan", "resumed": "yellow", "skipped": "magenta",
                "interrupted": "red", "failed": "red"}


class DemoProgress:
    """`senformer demo` on stderr: one line per finished step (made, reused, resumed, skipped:
    always printed) and a progress bar within the running step (only on a terminal, not with
    --json)."""

    def __init__(self, enabled: bool = True):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.bar = enabled and err_console.is_terminal
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                                  transient=True, disable=not self.bar)
        self._task = None

    def __enter__(self) -> "DemoProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def event(self, event: dict[str, Any]) -> None:
        where = f"[{event['index']}/{event['total']}]"
        if event["event"] == "start":
            if self.bar:
                if self._task is not None:
                    self._progress.remove_task(self._task)
                self._task = self._progress.add_task(f"{where} {event['label']}", total=None)
            return
        colour = _DEMO_STATUS.get(event["status"], "white")
        line = (f"{where} {event['label']}: [{colour}]{event['status']}[/]"
                f" in {event['seconds']:.0f} s - {event['detail']}")
        (self._progress.console if self.bar else err_console).print(line, highlight=False,
                                                                    soft_wrap=True)

    def update(self, step: str, done: float, total: float | None) -> None:
        if self.bar and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)


def _demo_bytes(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


_console = console


def demo_summary(summary: dict[str, Any]) -> None:
    """The end of `senformer demo`: accuracy and comparison, memory/time with the longest input
    each model fits, the receptive field's reach, and where the report is."""
    from rich import box

    from senformer_cli.data.targets import TRACK_TYPE_LABELS

    # Never squeeze the tables: at least 100 columns, also when stdout is a pipe (80).
    console = _console if _console.width >= 100 else Console(width=100, highlight=False)
    if summary["status"] != "completed":
        console.print(f"[bold]demo {summary['status']}[/] after {summary['seconds']:.0f} s; "
                      f"finished steps are kept in {summary['out']}", highlight=False)
        return
    counts: dict[str, int] = {}
    for step in summary["steps"]:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    plan = summary["plan"]
    console.print(f"[bold]{summary['title']}[/]{' (--quick)' if plan['quick'] else ''}, seed "
                  f"{plan['seed']}: {summary['seconds']:.0f} s; steps "
                  + ", ".join(f"{n} {status}" for status, n in counts.items()), highlight=False)
    first = next(iter(summary["models"].values()))
    table = Table(title=f"training: the tiny width at {first['sequence_length']:,} bp, "
                  f"{' and '.join(first['organisms'])}, batch {first['batch_size']}, learning rate "
                  f"{first['learning_rate']:g}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("model", "attention", "steps", "steps/s", "final loss",
                   "best valid mean r (step)"):
        table.add_column(column, justify="left" if column in ("model", "attention") else "right")
    for name, model in summary["models"].items():
        best = model.get("best_valid_mean_r")
        table.add_row(name, model["attention"], _fmt_int(model["steps"]),
                      "-" if model.get("steps_per_s") is None else f"{model['steps_per_s']:.2f}",
                      "-" if model.get("final_loss") is None else f"{model['final_loss']:.4f}",
                      "-" if best is None else f"{best:.3f} ({model['best_step']:,})")
    console.print(table)

    comparison = summary["comparison"]
    table = Table(title=f"test split, {comparison['num_sequences']} sequences: mean Pearson r "
                  f"per track type, and {comparison['b']} vs {comparison['a']} per sequence",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("track type", comparison["a"], comparison["b"], "B - A", "r(A,B)", "B >= A",
                   "p"):
        table.add_column(column, justify="left" if column == "track type" else "right")
    for row in comparison["rows"]:
        difference = row["difference"]
        table.add_row(TRACK_TYPE_LABELS.get(row["track_type"], "all tracks"),
                      _r(row["mean_r_a"], 3), _r(row["mean_r_b"], 3),
                      "-" if difference is None else f"{difference:+.3f}",
                      _r(row["r_between"], 3),
                      "-" if row["percent_b_ge_a"] is None else f"{row['percent_b_ge_a']:.0f}%",
                      _p_value(row["wilcoxon_p"]),
                      style="bold" if row["track_type"] == "all" else None)
    table.caption = ("A, B: mean over tracks of each track's r over all (sequence, bin) pairs; "
                     "r(A,B): Pearson r of the two models' per-sequence r; B >= A: % of sequences "
                     "where B's is at least A's; p: paired Wilcoxon")
    console.print(table)

    profile = summary["profile"]
    if profile.get("available"):
        what = ("one attention layer (forward + backward)" if profile.get("component") ==
                "attention" else f"one {profile.get('mode', 'train')} step of the model")
        table = Table(title=f"memory and time: {what}, batch 1, a fresh process per row",
                      title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("model", "input bp", "s/step", "peak memory", "time ratio",
                       "memory ratio", "status"):
            table.add_column(column, justify="left" if column in ("model", "status") else "right")
        for row in profile["rows"]:
            table.add_row(row["model"], _fmt_int(row["sequence_length_bp"]),
                          "-" if row["seconds_per_step"] is None else f"{row['seconds_per_step']:.3f}",
                          _demo_bytes(row["peak_memory_bytes"]),
                          "-" if row["time_ratio"] is None else f"{row['time_ratio']:.2f}",
                          "-" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}",
                          row["status"] or "-")
        limit = profile.get("max_memory_bytes")
        table.caption = ("longest input that fits" + (f" in {_demo_bytes(limit)}" if limit else "")
                         + ": " + "; ".join(
                             f"{model} {_fmt_int(length)} bp" if length else f"{model} none"
                             for model, length in (profile.get("longest_fitting") or {}).items()))
        console.print(table)
    else:
        console.print(f"memory and time: not measured ({profile.get('note')})", highlight=False)

    rf = summary["receptive_field"]
    table = Table(title=f"receptive field: one base changed at {len(rf['settings']['positions'])} "
                  f"positions x {rf['settings']['repeats']} sequences", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("model", "farthest reach", "bins reached", "beyond conv tower", "noise floor"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in rf["models"]:
        far = model["farthest_reached_bp"]
        table.add_row(model["name"] if "name" in model else model["model"],
                      "-" if far is None else f"{far:,.0f} bp",
                      f"{model['mean_reached_bins']:.1f} / {model['target_length']}",
                      f"{model['mean_reached_bins_outside_conv_reach']:.1f}",
                      f"{model['noise_floor']:.1g}")
    table.caption = ("farthest reach: bp from the changed base to the farthest bin above the "
                     "noise floor; bins reached, beyond conv tower: mean over positions")
    console.print(table)
    files = summary["files"]
    console.print(f"report: {summary['out']}/{files['report_html']} (open in a browser), "
                  f"{summary['out']}/{files['report_md']}; tables in {summary['out']}/tables/, "
                  f"plots in {summary['out']}/figures/", highlight=False)
