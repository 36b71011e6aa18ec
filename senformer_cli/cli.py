"""The `senformer` command line: parse options, call one library function, render with report.py.

TensorFlow is imported inside the commands, so `senformer --help` answers at once.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from senformer_cli.errors import SenformerError

app = typer.Typer(
    help="S-Enformer: Enformer with BigBird block-sparse attention. Train, evaluate, compare "
    "and profile genomic track models from one tool.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
model_app = typer.Typer(help="Inspect model presets and configurations.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect Basenji/Enformer data; write the synthetic data set.",
                       no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with stderr (fd 2) sent to /dev/null: its C++
    start-up lines (absl notices, CUDA probing on machines without a GPU) are not ours to print."""
    if "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def user_errors(func: Callable) -> Callable:
    """Run a command: TensorFlow imported quietly; SenformerError becomes one red line on stderr
    and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        _import_tensorflow_quietly()
        try:
            return func(*args, **kwargs)
        except SenformerError as error:
            from senformer_cli import report

            report.error(str(error))
            raise typer.Exit(code=2) from None

    return wrapper


def _model_config(preset: str, config_file: Optional[Path], overrides: List[str]):
    from senformer_cli.config import ModelConfig, parse_overrides

    values = parse_overrides(overrides or [])
    if config_file is not None:
        return ModelConfig.load(config_file).replace(**values)
    return ModelConfig.from_preset(preset, **values)


PRESET_OPTION = typer.Option("s-enformer", "--preset", "-p",
                             help="Model preset: enformer, s-enformer, small or tiny.")
SET_OPTION = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                          help="Override a config field, e.g. --set channels=384 --set heads.human=64. "
                          "Repeatable.")
CONFIG_OPTION = typer.Option(None, "--config", "-c", exists=False,
                             help="A config.json to start from instead of a preset.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout instead of tables.")


@model_app.command("summary")
@user_errors
def model_summary(
    preset: str = PRESET_OPTION,
    overrides: Optional[List[str]] = SET_OPTION,
    config_file: Optional[Path] = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Parameters per part (stem, conv tower, transformer, final pointwise, heads) and, for sparse
    models, the attention pattern."""
    config = _model_config(preset, config_file, overrides)
    from senformer_cli import report
    from senformer_cli.model.summary import summarize

    summary = summarize(config)
    if as_json:
        report.print_json(summary)
    else:
        report.model_summary(summary)


# ---------------------------------------------------------------- data (issue #3)
@data_app.command("synth")
@user_errors
def data_synth(
    out: Path = typer.Argument(..., help="Output directory (replaced only once complete)."),
    preset: str = typer.Option("tiny", "--preset", "-p",
                               help="tiny (demo, 24,576-bp records, 16/8 tracks), small or full "
                               "(real shapes: 131,072 bp, 896 bins, 5,313/1,643 tracks)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the output is deterministic for it."),
    train: Optional[int] = typer.Option(None, "--train", help="Training records per organism."),
    valid: Optional[int] = typer.Option(None, "--valid", help="Validation records per organism."),
    test: Optional[int] = typer.Option(None, "--test", help="Test records per organism."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write the synthetic data set: genome FASTAs, human and mouse Basenji data directories and
    the ground truth of the planted rules."""
    from senformer_cli import report
    from senformer_cli.data.synthetic import write_synthetic

    summary = write_synthetic(out, preset, seed, {"train": train, "valid": valid, "test": test})
    report.print_json(summary) if as_json else report.data_synth(summary)


@data_app.command("inspect")
@user_errors
def data_inspect(
    data_dir: Path = typer.Argument(..., help="A Basenji data directory (statistics.json, "
                                    "tfrecords/, sequences.bed, targets sheet)."),
    max_records: int = typer.Option(32, "--max-records",
                                    help="Records per split decoded for value ranges."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Splits and record counts, shapes, tracks per type, target value ranges, and whether the
    files agree with statistics.json (exit code 1 when they do not, 2 for unreadable input)."""
    from senformer_cli import report
    from senformer_cli.data.basenji import inspect_data

    summary = inspect_data(data_dir, max_records=max_records)
    report.print_json(summary) if as_json else report.data_inspect(summary)
    if not summary["agrees"]:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------- evaluate, compare (issue 7)
# (commands of this section go here)


# ---------------------------------------------------------------- export (issue 7)
# (commands of this section go here)


# ---------------------------------------------------------------- train (issue 8)
# (commands of this section go here)


# ---------------------------------------------------------------- profile (issue 9)
@app.command("profile")
@user_errors
def profile_command(
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", help="Base model: enformer, s-enformer, small or tiny. Each "
        "--attention kind is applied to it (--preset enformer --attention full,sparse is the "
        "enformer / s-enformer pair). Default: enformer on a GPU; on a CPU the tiny width at "
        "short lengths, so the run finishes in minutes."),
    config_file: Optional[Path] = CONFIG_OPTION,
    overrides: Optional[List[str]] = SET_OPTION,
    attention: str = typer.Option("full,sparse", "--attention",
                                  help="Attention kinds to compare, comma-separated."),
    lengths: Optional[str] = typer.Option(
        None, "--lengths", help="Input lengths in bp, comma-separated "
        "(default 131072,196608,393216,786432,1048576)."),
    mode: str = typer.Option("train", "--mode", help="train (forward, loss, backward, Adam "
                             "update) or predict (forward pass)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Sequences per step."),
    steps: int = typer.Option(3, "--steps", help="Timed steps per configuration (median)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed steps first (tracing, allocations)."),
    component: str = typer.Option("model", "--component", help="model (the whole model) or "
                                  "attention (one attention layer alone at length / 128 tokens)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 (bfloat16 compute, "
                                  "float32 weights)."),
    max_memory: Optional[str] = typer.Option(
        None, "--max-memory", help="Memory limit, e.g. 20GB: configurations estimated above it are "
        "skipped, and runs going over it are stopped (CPU); both are reported as rows. Default on "
        "a CPU: 90% of the memory available."),
    timeout: float = typer.Option(0, "--timeout", help="Seconds per configuration (0: none)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write profile.csv, profile.json "
                                       "and profile.png to this directory."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Peak memory and step time of full vs sparse attention as the input grows, each model x
    length in a fresh process."""
    from senformer_cli import profiling, report
    from senformer_cli.config import parse_overrides

    request = profiling.make_request(
        preset=preset, config_file=config_file, overrides=parse_overrides(overrides or []),
        attention=attention, lengths=lengths, mode=mode, batch_size=batch_size, steps=steps,
        warmup=warmup, component=component, precision=precision, max_memory=max_memory,
        timeout_seconds=timeout or None)
    if out is not None:
        profiling.check_out_dir(out, overwrite)
    for line in request.notes:
        report.note(line)
    with report.profile_progress(enabled=sys.stderr.isatty() and not as_json) as progress:
        result = profiling.profile(request, progress=progress)
    if out is not None:
        profiling.write_outputs(result, out, overwrite=overwrite)
    if as_json:
        report.print_json(result)
    else:
        report.profile(result)
        if out is not None:
            report.note(f"wrote profile.csv, profile.json and profile.png to {out}")


# ---------------------------------------------------------------- receptive-field (issue 10)
# (commands of this section go here)


# ---------------------------------------------------------------- demo (issue 11)
# (commands of this section go here)


def main() -> None:
    app(prog_name="senformer")


if __name__ == "__main__":
    main()
