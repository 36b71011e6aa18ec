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
@app.command("train")
@user_errors
def train_command(
    data: Optional[List[str]] = typer.Option(
        None, "--data", "-d", metavar="[HEAD=]DIR",
        help="A Basenji data directory to train on (its name is the head, e.g. data/human; or "
        "HEAD=DIR). Repeat for several organisms: their batches alternate. Default: the built-in "
        "synthetic data set (made on first use) and the tiny model."),
    genome: Optional[List[str]] = typer.Option(
        None, "--genome", "-g", metavar="HEAD=FASTA",
        help="The genome FASTA of a head's records: their flanks are taken from it when the model's "
        "input is longer than the records (else N padding). Repeatable."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run directory. Default: runs/<preset>, or "
        "runs/<preset>-<attention> when --set attention= differs from the preset's."),
    preset: Optional[str] = typer.Option(
        None, "--preset", "-p", help="Model preset: enformer, s-enformer, small or tiny. Default: "
        "s-enformer with --data, tiny without."),
    config_file: Optional[Path] = CONFIG_OPTION,
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", "-s", metavar="KEY=VALUE",
        help="Override a model field (--set attention=full) or a training field "
        "(--set train.max_shift=0). Repeatable."),
    init_from: Optional[str] = typer.Option(
        None, "--init-from", metavar="SPEC",
        help="Start from these weights: a preset, a run directory, a checkpoint, a SavedModel or "
        "enformer-pretrained. Heads whose track count differs from the data's are created fresh."),
    trainable: Optional[str] = typer.Option(
        None, "--trainable", help="all (default), attention (each transformer block's attention "
        "and the LayerNorm before it: the S-Enformer recipe) or heads. Frozen parts run in "
        "inference mode."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (tiny: 600; paper: "
                                        "150,000)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b",
                                             help="Global batch (split across replicas)."),
    accumulate: Optional[int] = typer.Option(
        None, "--accumulate", help="Sum the gradients of K batches per step (a K-times larger "
        "effective batch on one device; batch norm still sees batches of --batch-size)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr",
                                                  help="Adam learning rate after warm-up."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps",
                                               help="Linear warm-up steps."),
    clip_norm: Optional[float] = typer.Option(None, "--clip-norm",
                                              help="Clip gradients to this global norm."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every",
                                             help="Validate every N steps."),
    eval_sequences: Optional[int] = typer.Option(
        None, "--eval-sequences", help="Validate on up to N sequences per head (default: the "
        "whole valid split; tiny: 32)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every",
                                                   help="Save a checkpoint every N steps."),
    keep: Optional[int] = typer.Option(None, "--keep", help="Checkpoints kept (plus the best)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the data order, the "
                                       "augmentation and dropout."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 or bf16 (bfloat16 "
                                            "compute, float32 variables)."),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help="auto, one-device, mirrored (all local GPUs), multi-worker "
        "(TF_CONFIG) or tpu."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its "
                                "latest checkpoint, exactly as if it had not stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train Enformer / S-Enformer with the paper's recipe (Poisson loss, Adam with warm-up,
    global-norm clipping, alternating organisms, reverse-complement and shift augmentation),
    validating and checkpointing as it goes. `senformer train` alone trains the tiny model on the
    synthetic data in a few CPU minutes."""
    from senformer_cli import report
    from senformer_cli.config import parse_overrides, parse_train_overrides, split_overrides
    from senformer_cli.training import TrainRequest, train

    model_sets, train_sets = split_overrides(overrides or [])
    train_overrides = parse_train_overrides(train_sets)
    options = {"init_from": init_from, "trainable": trainable, "steps": steps,
               "batch_size": batch_size, "accumulate": accumulate, "learning_rate": learning_rate,
               "warmup_steps": warmup_steps, "clip_norm": clip_norm, "eval_every": eval_every,
               "eval_sequences": eval_sequences, "checkpoint_every": checkpoint_every,
               "keep": keep, "seed": seed, "precision": precision, "strategy": strategy}
    train_overrides.update({k: v for k, v in options.items() if v is not None})
    request = TrainRequest(data=data or [], genomes=genome or [], out=out, preset=preset,
                           config_file=config_file, model_overrides=parse_overrides(model_sets),
                           train_overrides=train_overrides, resume=resume, overwrite=overwrite)
    with report.TrainProgress(enabled=not as_json) as progress:
        result = train(request, progress=progress.update, notify=report.notice)
    report.print_json(result.to_dict()) if as_json else report.train_result(result.to_dict())
    if result.status == "non-finite":
        report.error(result.message)
        raise typer.Exit(code=1)
    if result.status == "interrupted":
        raise typer.Exit(code=130 if result.message.startswith("SIGINT") else 143)


# ---------------------------------------------------------------- profile (issue 9)
# (commands of this section go here)


# ---------------------------------------------------------------- receptive-field (issue 10)
# (commands of this section go here)


# ---------------------------------------------------------------- demo (issue 11)
# (commands of this section go here)


def main() -> None:
    app(prog_name="senformer")


if __name__ == "__main__":
    main()
