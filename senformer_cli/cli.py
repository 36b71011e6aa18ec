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
MODEL_SPEC_HELP = ("a preset (enformer, s-enformer, small, tiny: untrained), a run directory of "
                   "`senformer train`, RUN/checkpoints/ckpt-N, a SavedModel directory of "
                   "`senformer export`, or enformer-pretrained")
DATA_OPTION = typer.Option(None, "--data", "-d", metavar="DIR",
                           help="One organism's Basenji data directory (statistics.json, "
                           "tfrecords/, sequences.bed, targets sheet), e.g. data/human.")
GENOME_OPTION = typer.Option(None, "--genome", metavar="FASTA",
                             help="The genome the records were cut from (hg38.ml.fa / mm10.ml.fa): "
                             "records are extended to the model's input with its flanks. "
                             "Default: N padding.")
HEAD_OPTION = typer.Option(None, "--head", help="The model head to score (default: the data "
                           "directory's name, e.g. human).")
SPLIT_OPTION = typer.Option("test", "--split", help="train, valid or test.")
MAX_SEQUENCES_OPTION = typer.Option(None, "--max-sequences", "-n", min=1,
                                    help="Evaluate the first N records of the split only.")
BATCH_SIZE_OPTION = typer.Option(1, "--batch-size", "-b", min=1, help="Sequences per forward pass.")
METRIC_OPTION = typer.Option("per-track", "--metric",
                             help="per-track: Pearson r per track over all (sequence, bin) pairs, "
                             "mean per track type (the Enformer paper's); pooled: one r over all "
                             "bins x tracks x sequences of a type (the S-Enformer report's).")
AVERAGE_RC_OPTION = typer.Option(False, "--average-rc",
                                 help="Average the forward and reverse-complement predictions.")
WEIGHTS_OPTION = typer.Option(None, "--weights", metavar="DIR",
                              help="Folder of the published weights (enformer-pretrained).")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory.")


@app.command("evaluate")
@user_errors
def evaluate_command(
    model: str = typer.Option(..., "--model", "-m", metavar="SPEC", help=f"The model: {MODEL_SPEC_HELP}."),
    data: Optional[Path] = DATA_OPTION,
    genome: Optional[Path] = GENOME_OPTION,
    head: Optional[str] = HEAD_OPTION,
    split: str = SPLIT_OPTION,
    max_sequences: Optional[int] = MAX_SEQUENCES_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    metric: str = METRIC_OPTION,
    average_rc: bool = AVERAGE_RC_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    overrides: Optional[List[str]] = SET_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                       help="Write summary.json, tracks.csv and sequences.csv "
                                       "here (refused if it holds files, unless --overwrite)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Mean Pearson r per track type (DNase/ATAC, ChIP histone, ChIP TF, CAGE) of a model on one
    organism's test split: the Enformer paper's metric."""
    from senformer_cli import report
    from senformer_cli.config import parse_overrides
    from senformer_cli.defaults import pretrained_inputs_missing
    from senformer_cli.evaluation import evaluate

    values = parse_overrides(overrides or [])
    missing = pretrained_inputs_missing(model, data, genome, weights)
    if missing:
        raise SenformerError(missing)
    with report.evaluation_progress(enabled=not as_json) as progress:
        result = evaluate(model, data, overrides=values, weights=weights, out=out,
                          overwrite=overwrite, split=split, head=head, genome=genome,
                          max_sequences=max_sequences, batch_size=batch_size, metric=metric,
                          average_rc=average_rc, progress=progress)
    report.print_json(result.summary) if as_json else report.evaluation(result, out)


@app.command("compare")
@user_errors
def compare_command(
    a: Optional[str] = typer.Argument(None, metavar="A", help="Model A (as for evaluate --model), "
                                      "or with --results an `evaluate --out` folder."),
    b: Optional[str] = typer.Argument(None, metavar="B", help="Model B, or an `evaluate --out` "
                                      "folder with --results."),
    results: bool = typer.Option(False, "--results",
                                 help="A and B are `evaluate --out` folders: compare them without "
                                 "running a model."),
    data: Optional[Path] = DATA_OPTION,
    genome: Optional[Path] = GENOME_OPTION,
    head: Optional[str] = HEAD_OPTION,
    split: str = SPLIT_OPTION,
    max_sequences: Optional[int] = MAX_SEQUENCES_OPTION,
    batch_size: int = BATCH_SIZE_OPTION,
    metric: str = METRIC_OPTION,
    average_rc: bool = AVERAGE_RC_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    overrides: Optional[List[str]] = SET_OPTION,
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                       help="Write compare.csv, compare.json and compare.png here "
                                       "(refused if it holds files, unless --overwrite)."),
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """How two models' per-sequence accuracies relate, per track type: mean r of A and B, B - A,
    the correlation between their per-sequence values, % of sequences where B >= A and a paired
    Wilcoxon test. Each model reads the records at its own input length. With no models:
    runs/tiny-full (Enformer) vs runs/tiny (S-Enformer) on the synthetic data, training whichever
    is missing first."""
    from senformer_cli import report
    from senformer_cli.config import parse_overrides
    from senformer_cli.evaluation import compare

    values = parse_overrides(overrides or [])
    if a is None and b is None and not results:
        from senformer_cli.defaults import default_pair

        with report.TrainProgress(enabled=not as_json) as train_progress:
            pair = default_pair(data, genome, notify=report.notice, progress=train_progress.update)
        a, b, data, genome = pair.a, pair.b, pair.data, pair.genome
    with report.evaluation_progress(enabled=not as_json and not results) as progress:
        result = compare(a, b, data, results=results, overrides=values, weights=weights, out=out,
                         overwrite=overwrite, progress=progress, split=split, head=head,
                         genome=genome, max_sequences=max_sequences, batch_size=batch_size,
                         metric=metric, average_rc=average_rc)
    report.print_json(result.summary) if as_json else report.comparison(result, out)


# ---------------------------------------------------------------- export (issue 7)
@app.command("export")
@user_errors
def export(
    model: str = typer.Option(..., "--model", "-m", metavar="SPEC", help=f"The model: {MODEL_SPEC_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the SavedModel (written atomically)."),
    overrides: Optional[List[str]] = SET_OPTION,
    weights: Optional[Path] = WEIGHTS_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a model as a TensorFlow SavedModel with a predict_on_batch signature ([None, L, 4]
    one-hot -> {head: [None, bins, tracks]}) and its configuration inside; plain
    tf.saved_model.load runs it, and --model DIR reads it back."""
    from senformer_cli import report
    from senformer_cli.config import parse_overrides
    from senformer_cli.model.export import export_model

    values = parse_overrides(overrides or [])
    with report.stages(enabled=not as_json) as progress:
        summary = export_model(model, out, values, weights=weights, overwrite=overwrite,
                               progress=progress)
    report.print_json(summary) if as_json else report.export_summary(summary)


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
    steps: int = typer.Option(3, "--steps", help="Timed steps per configuration (median); 0: "
                              "the warm-up steps are the measurement (peak memory for lengths "
                              "where a step takes minutes; times include tracing)."),
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
    allocator: str = typer.Option(
        "tensorflow", "--allocator", help="CPU memory allocator of the measured process: "
        "tensorflow (its default: a caching allocator that keeps freed memory, so at long inputs "
        "the peak includes its fragmentation, which varies from run to run) or system "
        "(TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1: freed memory goes back to the system; a peak closer to "
        "what the step holds at once, slower steps)."),
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
        timeout_seconds=timeout or None, allocator=allocator)
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
@app.command("receptive-field")
@user_errors
def receptive_field_command(
    models: Optional[List[str]] = typer.Option(
        None, "--model", "-m", metavar="SPEC",
        help="A model: preset, run directory, RUN/checkpoints/ckpt-N, SavedModel or "
        "enformer-pretrained. Repeatable; every model sees the same sequences and mutations. "
        "Default: runs/tiny-full (Enformer) and runs/tiny (S-Enformer) when both exist, else the "
        "untrained tiny preset with full and with sparse attention."),
    num_positions: int = typer.Option(9, "--positions", "-P",
                                      help="Mutation positions, evenly spaced over the whole "
                                      "input, both ends included."),
    positions: Optional[List[int]] = typer.Option(
        None, "--position", metavar="BP",
        help="A mutation position (0-based bp in the model's input) instead of --positions. "
        "Repeatable."),
    repeats: int = typer.Option(100, "--repeats", "-r",
                                help="Random sequences (and substitutions) per position."),
    head: str = typer.Option("human", "--head", help="Output head to measure."),
    tracks: str = typer.Option("all", "--tracks",
                               help="all, a track type (dnase_atac, chip_histone, chip_tf, cage; "
                               "needs a targets sheet: a run's data or --data) or indexes like "
                               "0,3,5-7."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random sequences and substitutions; "
                             "the same seed gives the same numbers."),
    batch_size: int = typer.Option(4, "--batch-size", "-b",
                                   help="Sequences per forward pass (small batches are faster per "
                                   "sequence on a CPU)."),
    overrides: Optional[List[str]] = SET_OPTION,
    data: Optional[Path] = typer.Option(None, "--data",
                                        help="A data directory (or a folder holding <head>/) "
                                        "whose targets sheet gives the track types for --tracks."),
    layout: str = typer.Option("paired", "--layout",
                               help="paired: references in one batch, their mutants in the same "
                               "rows of the next (bins a change cannot reach stay exactly equal); "
                               "same-batch: each reference next to its mutant in one batch."),
    local: bool = typer.Option(True, "--local/--no-local",
                               help="Recompute only what a base change can change: the mutants' "
                               "conv tower runs on a window around the mutated base (agrees with "
                               "the whole pass within the noise floor; --no-local runs it all)."),
    xla: bool = typer.Option(True, "--xla/--no-xla",
                             help="Compile the passes with XLA (jit_compile): about a quarter more "
                             "sequences per second on a CPU, after a compile of a few seconds per "
                             "model."),
    shared: bool = typer.Option(False, "--shared-sequences",
                                help="Mutate the same R random sequences at every position (each "
                                "position its own substitutions): a reference is predicted once "
                                "for all positions. Default: fresh sequences per position."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Write receptive_field.csv, summary.json and "
                                       "receptive_field.png here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace those files in a --out "
                                   "directory that already holds files."),
    as_json: bool = JSON_OPTION,
) -> None:
    """How far one base change moves the predictions, per output bin, against the theoretical
    receptive field (conv widths, pooling, crop, attention) and the float32 noise floor."""
    from senformer_cli import report
    from senformer_cli.config import parse_overrides
    from senformer_cli.receptive_field import LAYOUTS, receptive_field

    if layout not in LAYOUTS:
        raise SenformerError(f"--layout {layout}: choose one of {', '.join(LAYOUTS)}")
    values = parse_overrides(overrides or [])
    with report.receptive_field_progress(not as_json) as (progress, status):
        result = receptive_field(models, overrides=values, num_positions=num_positions,
                                 positions=positions, repeats=repeats, head=head, tracks=tracks,
                                 seed=seed, batch_size=batch_size, layout=layout, local=local,
                                 shared=shared, xla=xla,
                                 data=data, out=out, overwrite=overwrite, progress=progress,
                                 status=status)
    summary = result.summary(with_effects=as_json)
    report.print_json(summary) if as_json else report.receptive_field(summary)


# ---------------------------------------------------------------- demo (issue 11)
@app.command("demo")
@user_errors
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", metavar="DIR",
                             help="Where the runs, each step's output and the report go. Running "
                             "again with the same DIR reuses the finished steps."),
    quick: bool = typer.Option(False, "--quick",
                               help="A smoke run of every step (8 training steps, 8 test "
                               "sequences, 2 profile lengths, 3 mutation positions): the numbers "
                               "mean little."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data set, both models' weights, "
                             "training and the receptive-field sequences."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Delete DIR and start over (needed when DIR holds other "
                                   "files or a demo made with other options)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The whole S-Enformer study on the built-in synthetic data, end to end: make the data, train
    the tiny Enformer (full attention) and S-Enformer (sparse) with the same seed and budget,
    evaluate both on the test split, compare them, profile memory and time over input lengths,
    and measure the receptive field; then print a summary and write DIR/report.html (one
    self-contained page), DIR/report.md, tables (CSV, JSON) and plots (PNG). About 10 minutes on
    2 CPU cores; --quick a few."""
    from senformer_cli import report
    from senformer_cli.demo import run_demo

    try:
        with report.DemoProgress(enabled=not as_json) as progress:
            result = run_demo(out, quick=quick, seed=seed, overwrite=overwrite,
                              events=progress.event, progress=progress.update)
    except KeyboardInterrupt:
        report.error(f"interrupted; run the same command again to continue from the finished "
                     f"steps ({out}/demo.json)")
        raise typer.Exit(code=130) from None
    summary = result.to_dict()
    report.print_json(summary) if as_json else report.demo_summary(summary)
    if result.status != "completed":
        report.error(result.message)
        raise typer.Exit(code=130 if result.status == "interrupted" else 1)


def main() -> None:
    app(prog_name="senformer")


if __name__ == "__main__":
    main()
