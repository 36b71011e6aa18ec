"""`senformer evaluate` and `senformer compare`: the Enformer metric per track type, and how two
models' per-sequence accuracies relate.

- `evaluate_model(model, config, data_dir, ...)` runs a built model over one organism's split and
  returns an `EvaluationResult`: `.summary` (mean and median per-track Pearson r per track type
  and over all tracks), `.tracks` (r per track) and `.sequences` (per sequence and track type,
  the per-track r over that sequence's bins averaged over the type). Training's validation
  calls it on the in-memory model.
- `evaluate(spec, data_dir, ...)` resolves `--model SPEC` first and can write `--out DIR`.
- `compare_results(a, b)` pairs two evaluations' per-sequence values per track type: the mean r
  of A and B, B − A, the Pearson r between the two models' per-sequence values, the % of
  sequences where B ≥ A and a paired Wilcoxon signed-rank p. `compare(...)` runs two models or
  reads two `evaluate --out` folders first.
"""
from __future__ import annotations

import json
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from senformer_cli.errors import SenformerError

__all__ = ["ComparisonResult", "EvaluationResult", "compare", "compare_results", "evaluate",
           "evaluate_model", "read_evaluation", "write_comparison", "write_evaluation"]

METRICS = ("per-track", "pooled")
METRIC_LABELS = {
    "per-track": "per-track Pearson r over all (sequence, bin) pairs, mean over the tracks of a type "
                 "(the Enformer paper's metric)",
    "pooled": "pooled Pearson r: one r over all bins x tracks x sequences of a type "
              "(the S-Enformer report's variant)",
}
ALL = "all"
TRACK_COLUMNS = ("index", "identifier", "description", "track_type", "pearson_r")
SEQUENCE_COLUMNS = ("sequence", "track_type", "pearson_r")
COMPARE_COLUMNS = ("track_type", "sequences", "mean_r_a", "mean_r_b", "difference",
                   "sequence_mean_r_a", "sequence_mean_r_b", "r_between", "percent_b_ge_a",
                   "wilcoxon_p")

MISSING_DATA = "\n".join([
    "--data DIR is required: one organism's Basenji data directory (statistics.json, "
    "tfrecords/, sequences.bed, targets sheet).",
    "  The Enformer data: gsutil -u PROJECT -m cp -r gs://basenji_barnyard/data/human DIR "
    "(requester pays, ~320 GB for all of gs://basenji_barnyard/data; human/ is enough, and its "
    "test split alone is 1,937 records).",
    "  Give the genome the records were cut from with --genome hg38.ml.fa (mouse: mm10.ml.fa) "
    "to extend the 131,072-bp records to the model's input with real flanks; without it they "
    "are padded with N.",
    "  No data at hand: `senformer data synth synth/` writes a small synthetic set "
    "(--data synth/human --genome synth/human.fa --model tiny).",
])

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- results
@dataclass
class EvaluationResult:
    """What `evaluate` returns and writes (summary.json, tracks.csv, sequences.csv)."""

    summary: dict[str, Any]
    tracks: pd.DataFrame  # index, identifier, description, track_type, pearson_r
    sequences: pd.DataFrame  # sequence, track_type, pearson_r

    @property
    def track_types(self) -> list[str]:
        """Track types with at least one track, in TRACK_TYPES order, then "all"."""
        from senformer_cli.data.targets import TRACK_TYPES

        return [k for k in (*TRACK_TYPES, ALL) if self.summary.get(k, {}).get("tracks")]


@dataclass
class ComparisonResult:
    """What `compare` returns and writes (compare.csv, compare.json, compare.png)."""

    summary: dict[str, Any]
    table: pd.DataFrame  # one row per track type, COMPARE_COLUMNS
    pairs: pd.DataFrame  # sequence, track_type, r_a, r_b (both finite)
    evaluations: dict[str, EvaluationResult] = field(default_factory=dict)  # "a", "b" when run


# ---------------------------------------------------------------- evaluate
def evaluate_model(model, config, data_dir: Path | str, *, split: str = "test",
                   head: str | None = None, genome: Path | str | None = None,
                   max_sequences: int | None = None, batch_size: int = 1,
                   metric: str = "per-track", average_rc: bool = False,
                   progress: Progress | None = None, model_name: str | None = None
                   ) -> EvaluationResult:
    """Evaluate `model` (built for `config`) on one organism's `split` of `data_dir`.

    head: the model head to score (default: the directory's name, e.g. `data/human`).
    genome: FASTA the records were cut from; records are extended to the model's input length
        with its flanks (else with N).
    max_sequences: the first N records of the split only.
    metric: "per-track" (the paper's) or "pooled" (the S-Enformer report's; added to the summary
        as `pooled_r` per type; the per-track values are always computed).
    average_rc: average the forward and the reverse-complement predictions (the latter reversed
        along bins), as Basenji's evaluation does.
    progress: called as progress(done_sequences, total_sequences) after each batch.
    Raises SenformerError for data that do not fit the model (num_targets, head, bins), a missing
    or empty split, or unreadable records.
    """
    from senformer_cli.data import load_dataset
    from senformer_cli.data.targets import TRACK_TYPES, track_type_indices
    from senformer_cli.metrics import (PearsonAccumulator, PooledPearsonAccumulator,
                                       per_sequence_pearson)

    _check_options(metric=metric, batch_size=batch_size, max_sequences=max_sequences)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SenformerError(f"{data_dir}: no such data directory")
    heads = ", ".join(config.heads)
    if head is None:
        if data_dir.name not in config.heads:
            raise SenformerError(f"{data_dir}: the directory name is not a head of the model "
                                 f"({heads}); name the organism with --head")
        head = data_dir.name
    elif head not in config.heads:
        raise SenformerError(f"--head {head}: the model has no such head ({heads})")
    genomes = {head: genome} if genome is not None else None
    loaded = load_dataset({head: data_dir}, split, config, batch_size=batch_size, shuffle=False,
                          genomes=genomes)
    organism = loaded[head]
    available = organism.num_records
    if available == 0:
        raise SenformerError(f"{data_dir / 'statistics.json'}: the '{split}' split is empty "
                             f"({split}_seqs = 0)")
    total = available if max_sequences is None else min(available, max_sequences)

    sheet = organism.targets
    num_tracks = len(sheet)
    types = sheet["track_type"].to_numpy()
    groups = track_type_indices(sheet)
    groups_all = {**groups, ALL: list(range(num_tracks))}
    predict = _predictor(model, config, head, average_rc)

    per_track = PearsonAccumulator(num_tracks)
    pooled = PooledPearsonAccumulator(groups_all) if metric == "pooled" else None
    sequence_rows: list[np.ndarray] = []  # [b, groups] per batch
    predict.get_concrete_function()  # trace now, so the clock and the progress rate exclude it
    done = 0
    started = time.perf_counter()
    if progress:
        progress(0, total)
    for sequence, target in organism:
        if done + int(sequence.shape[0]) > total:
            sequence, target = sequence[:total - done], target[:total - done]
        prediction = predict(sequence).numpy()
        target = target.numpy()
        per_track.update(prediction, target)
        if pooled is not None:
            pooled.update(prediction, target)
        sequence_rows.append(_group_rows(per_sequence_pearson(prediction, target), groups_all))
        done += len(prediction)
        if progress:
            progress(done, total)
        if done >= total:
            break
    seconds = time.perf_counter() - started
    if done == 0:
        raise SenformerError(f"{data_dir}: no '{split}' records were read "
                             f"(tfrecords/{split}-*.tfr are empty)")

    r = per_track.pearson()
    tracks = pd.DataFrame({
        "index": sheet["index"].to_numpy(),
        "identifier": sheet["identifier"].to_numpy(),
        "description": sheet["description"].to_numpy(),
        "track_type": types,
        "pearson_r": r,
    })
    names = list(groups_all)
    values = np.concatenate(sequence_rows)  # [sequences, groups]
    sequences = pd.DataFrame({
        "sequence": np.repeat(np.arange(len(values)), len(names)),
        "track_type": np.tile(names, len(values)),
        "pearson_r": values.ravel(),
    })
    pooled_r = pooled.pearson() if pooled is not None else {}
    summary: dict[str, Any] = {
        "model": model_name or _describe_config(config),
        "data": str(data_dir),
        "head": head,
        "split": split,
        "num_sequences": int(done),
        "split_sequences": int(available),
        "metric": metric,
        "metric_description": METRIC_LABELS[metric],
        "average_rc": bool(average_rc),
        "sequence_length": int(config.sequence_length),
        "record_length": int(organism.statistics.seq_length),
        "extension": _extension(config.sequence_length, organism.statistics.seq_length, genome),
        "target_length": int(config.target_length),
        "num_tracks": int(num_tracks),
        "batch_size": int(batch_size),
        "seconds": round(seconds, 3),
        "sequences_per_second": round(done / seconds, 4) if seconds > 0 else None,
    }
    for kind in (*TRACK_TYPES, ALL):
        mask = np.ones(num_tracks, bool) if kind == ALL else types == kind
        summary[kind] = _type_summary(r[mask], pooled_r.get(kind) if kind in groups_all else None,
                                      metric == "pooled")
    return EvaluationResult(summary, tracks, sequences)


# Traced prediction functions per model, so repeated evaluations of one model (training's
# validation rounds) trace once.
_PREDICTORS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _check_options(*, metric: str = "per-track", batch_size: int = 1,
                   max_sequences: int | None = None, **_: Any) -> None:
    """The options that need no model or data: checked before anything is loaded."""
    if metric not in METRICS:
        raise SenformerError(f"--metric '{metric}': choose one of {', '.join(METRICS)}")
    if batch_size < 1:
        raise SenformerError(f"--batch-size {batch_size}: must be at least 1")
    if max_sequences is not None and max_sequences < 1:
        raise SenformerError(f"--max-sequences {max_sequences}: must be at least 1")


def _predictor(model, config, head: str, average_rc: bool):
    """tf.function [None, L, 4] -> [None, bins, tracks] of `head`, traced once for every batch
    size (the last, partial batch does not retrace) and kept for the model's lifetime."""
    key = (head, bool(average_rc), int(config.sequence_length))
    cache = _PREDICTORS.setdefault(model, {}) if _weak_referenceable(model) else {}
    if key not in cache:
        cache[key] = _trace_predictor(model, config, head, average_rc)
    return cache[key]


def _weak_referenceable(value: Any) -> bool:
    try:
        weakref.ref(value)
    except TypeError:
        return False
    return True


def _trace_predictor(model, config, head: str, average_rc: bool):
    import tensorflow as tf

    spec = tf.TensorSpec([None, config.sequence_length, 4], tf.float32)
    # A weak reference: the cached function must not keep the model (the cache's key) alive.
    # Once traced, the function holds the model's variables, not the module.
    model_ref = weakref.ref(model) if _weak_referenceable(model) else (lambda: model)

    @tf.function(input_signature=[spec])
    def predict(sequence: tf.Tensor) -> tf.Tensor:
        model = model_ref()
        forward = model(sequence, is_training=False)[head]
        if not average_rc:
            return forward
        # One strand after the other (not both in one batch): the peak memory stays that of a
        # single forward pass. Reversing both axes of a one-hot array is its reverse complement.
        with tf.control_dependencies([forward]):
            reverse = model(tf.reverse(sequence, axis=[1, 2]), is_training=False)[head]
        return (forward + tf.reverse(reverse, axis=[1])) / 2

    return predict


def _group_rows(per_sequence: np.ndarray, groups: Mapping[str, list[int]]) -> np.ndarray:
    """[b, tracks] per-sequence r -> [b, groups]: NaN-skipping mean over each group's tracks."""
    columns = []
    for indices in groups.values():
        values = per_sequence[:, indices]
        finite = ~np.isnan(values)
        count = finite.sum(axis=1)
        total = np.where(finite, values, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            columns.append(np.where(count > 0, total / count, np.nan))
    return np.stack(columns, axis=1)


def _type_summary(r: np.ndarray, pooled_r: float | None, with_pooled: bool) -> dict[str, Any]:
    finite = r[~np.isnan(r)]
    summary = {
        "tracks": int(r.size),
        "mean_r": _number(finite.mean()) if finite.size else None,
        "median_r": _number(np.median(finite)) if finite.size else None,
        "excluded_zero_variance": int(r.size - finite.size),
    }
    if with_pooled:
        summary["pooled_r"] = _number(pooled_r) if pooled_r is not None else None
    return summary


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _describe_config(config) -> str:
    return (f"{config.attention} attention, {config.channels} channels, "
            f"{config.num_transformer_layers} layers, {config.sequence_length:,} bp")


def _extension(model_length: int, record_length: int, genome: Path | str | None) -> str:
    if model_length == record_length:
        return "none (records are the model's input length)"
    if model_length < record_length:
        return f"centre crop of the {record_length:,}-bp records"
    if genome is not None:
        return f"flanks from {genome}"
    return "N padding"


def evaluate(spec: str, data_dir: Path | str | None, *, overrides: dict | None = None,
             weights: Path | None = None, out: Path | None = None, overwrite: bool = False,
             **options: Any) -> EvaluationResult:
    """`senformer evaluate`: resolve `--model SPEC`, evaluate it (options of evaluate_model) and
    write `out` when given. `out` is checked before the model runs and written atomically."""
    if data_dir is None:
        raise SenformerError(MISSING_DATA)
    _check_options(**options)
    if out is not None:
        check_out_dir(out, overwrite)
    loaded = _load(spec, overrides, weights)
    result = evaluate_model(loaded.model, loaded.config, data_dir, model_name=spec, **options)
    _describe_loaded(result, loaded, overrides)
    if out is not None:
        write_evaluation(result, out, overwrite=overwrite)
    return result


def _load(spec: str, overrides: dict | None, weights: Path | None):
    from senformer_cli.model.load import load_model

    return load_model(spec, overrides or None, weights=weights)


def _describe_loaded(result: EvaluationResult, loaded, overrides: dict | None = None) -> None:
    result.summary["overrides"] = dict(overrides or {})
    result.summary["model_description"] = loaded.description
    result.summary["model_kind"] = loaded.kind
    result.summary["untrained"] = loaded.kind == "preset"


# ---------------------------------------------------------------- files
def check_out_dir(out: Path | str, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a directory holding files (unless overwrite)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SenformerError(f"--out {out}: is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SenformerError(f"--out {out}: directory is not empty (add --overwrite to replace it)")


def write_evaluation(result: EvaluationResult, out: Path | str, *, overwrite: bool = False) -> Path:
    """Write summary.json, tracks.csv and sequences.csv into `out`, all at once (atomically)."""
    from senformer_cli.fileio import atomic_path

    out = Path(out)
    check_out_dir(out, overwrite)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        _write_evaluation_files(result, tmp)
    return out


def _write_evaluation_files(result: EvaluationResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    result.tracks.loc[:, list(TRACK_COLUMNS)].to_csv(folder / "tracks.csv", index=False)
    result.sequences.loc[:, list(SEQUENCE_COLUMNS)].to_csv(folder / "sequences.csv", index=False)


def read_evaluation(folder: Path | str) -> EvaluationResult:
    """Read an `evaluate --out` folder back (summary.json, tracks.csv, sequences.csv)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SenformerError(f"{folder}: no such evaluate --out folder")
    path = folder / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise SenformerError(f"{path}: missing (not an `evaluate --out` folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SenformerError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict) or "split" not in summary:
        raise SenformerError(f"{path}: not an evaluate summary (no 'split')")
    tracks = _read_csv(folder / "tracks.csv", TRACK_COLUMNS, {"identifier": str, "description": str,
                                                               "track_type": str})
    sequences = _read_csv(folder / "sequences.csv", SEQUENCE_COLUMNS, {"track_type": str})
    for name, frame in (("tracks.csv", tracks), ("sequences.csv", sequences)):
        bad = pd.to_numeric(frame["pearson_r"], errors="coerce").isna() & frame["pearson_r"].notna()
        if bad.any():
            raise SenformerError(f"{folder / name}: row {int(np.flatnonzero(bad)[0])}: pearson_r "
                                 f"'{frame['pearson_r'][bad].iloc[0]}' is not a number")
        frame["pearson_r"] = pd.to_numeric(frame["pearson_r"], errors="coerce")
    return EvaluationResult(summary, tracks, sequences)


def _read_csv(path: Path, columns: tuple[str, ...], dtype: dict) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except FileNotFoundError:
        raise SenformerError(f"{path}: missing (not an `evaluate --out` folder?)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SenformerError(f"{path}: not a CSV file ({error})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SenformerError(f"{path}: no column '{missing[0]}' (expected {', '.join(columns)})")
    return frame


# ---------------------------------------------------------------- compare
def compare_results(a: EvaluationResult, b: EvaluationResult, *, name_a: str | None = None,
                    name_b: str | None = None) -> ComparisonResult:
    """Pair two evaluations of the same split per sequence and track type.

    Per track type (and "all"): the mean r of A and B (evaluate's per-track metric) and B − A;
    over the sequences where both per-sequence values are defined: their means, the Pearson r
    between A's and B's values, the % of sequences where B ≥ A and the paired Wilcoxon
    signed-rank p (two-sided; 1.0 when every difference is zero).
    Raises SenformerError when the two do not score the same tracks, bins or sequences.
    """
    from scipy import stats

    from senformer_cli.data.targets import TRACK_TYPE_LABELS, TRACK_TYPES

    name_a = name_a or str(a.summary.get("model", "A"))
    name_b = name_b or str(b.summary.get("model", "B"))
    _check_comparable(a, b, name_a, name_b)
    merged = a.sequences.merge(b.sequences, on=["sequence", "track_type"], suffixes=("_a", "_b"))
    merged = merged.rename(columns={"pearson_r_a": "r_a", "pearson_r_b": "r_b"})
    merged = merged[merged["r_a"].notna() & merged["r_b"].notna()].reset_index(drop=True)
    rows = []
    for kind in (*TRACK_TYPES, ALL):
        info_a, info_b = a.summary.get(kind) or {}, b.summary.get(kind) or {}
        if not info_a.get("tracks"):
            continue
        pair = merged[merged["track_type"] == kind]
        x, y = pair["r_a"].to_numpy(np.float64), pair["r_b"].to_numpy(np.float64)
        mean_a, mean_b = info_a.get("mean_r"), info_b.get("mean_r")
        rows.append({
            "track_type": kind,
            "sequences": int(len(x)),
            "mean_r_a": mean_a,
            "mean_r_b": mean_b,
            "difference": (mean_b - mean_a) if mean_a is not None and mean_b is not None else None,
            "sequence_mean_r_a": _number(x.mean()) if len(x) else None,
            "sequence_mean_r_b": _number(y.mean()) if len(y) else None,
            "r_between": _pearson(x, y, stats),
            "percent_b_ge_a": _number(100.0 * np.mean(y >= x)) if len(x) else None,
            "wilcoxon_p": _wilcoxon(x, y, stats),
        })
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    summary = {
        "a": name_a,
        "b": name_b,
        "a_description": a.summary.get("model_description", name_a),
        "b_description": b.summary.get("model_description", name_b),
        "data": a.summary.get("data"),
        "head": a.summary.get("head"),
        "split": a.summary.get("split"),
        "num_sequences": a.summary.get("num_sequences"),
        "sequence_length_a": a.summary.get("sequence_length"),
        "sequence_length_b": b.summary.get("sequence_length"),
        "metric": "per-sequence Pearson r (per track over one sequence's bins, mean over the "
                  "tracks of a type); mean r columns: evaluate's per-track metric",
        "track_types": {row["track_type"]: {k: v for k, v in row.items() if k != "track_type"}
                        for row in rows},
        "labels": {**TRACK_TYPE_LABELS, ALL: "all tracks"},
    }
    return ComparisonResult(summary, table, merged.loc[:, ["sequence", "track_type", "r_a", "r_b"]])


def _check_comparable(a: EvaluationResult, b: EvaluationResult, name_a: str, name_b: str) -> None:
    sa, sb = a.summary, b.summary
    if sa.get("split") != sb.get("split"):
        raise SenformerError(f"A ({name_a}) was evaluated on the '{sa.get('split')}' split, "
                             f"B ({name_b}) on '{sb.get('split')}'")
    if sa.get("target_length") != sb.get("target_length"):
        raise SenformerError(f"A ({name_a}) predicts {sa.get('target_length')} bins, "
                             f"B ({name_b}) {sb.get('target_length')}: they cannot be compared")
    tracks_a = list(zip(a.tracks["index"], a.tracks["identifier"]))
    tracks_b = list(zip(b.tracks["index"], b.tracks["identifier"]))
    if tracks_a != tracks_b:
        if len(tracks_a) != len(tracks_b):
            raise SenformerError(f"A ({name_a}) scores {len(tracks_a)} tracks, "
                                 f"B ({name_b}) {len(tracks_b)}: they cannot be compared")
        first = next(i for i, (x, y) in enumerate(zip(tracks_a, tracks_b)) if x != y)
        raise SenformerError(f"A ({name_a}) and B ({name_b}) score different tracks: row {first} "
                             f"is {tracks_a[first][1]} in A, {tracks_b[first][1]} in B")
    seqs_a, seqs_b = set(a.sequences["sequence"]), set(b.sequences["sequence"])
    if seqs_a != seqs_b:
        raise SenformerError(f"A ({name_a}) covers {len(seqs_a)} sequences, B ({name_b}) "
                             f"{len(seqs_b)}, not the same ones: evaluate both with the same "
                             "--split and --max-sequences")


def _pearson(x: np.ndarray, y: np.ndarray, stats) -> float | None:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return _number(stats.pearsonr(x, y).statistic)


def _wilcoxon(x: np.ndarray, y: np.ndarray, stats) -> float | None:
    """Two-sided paired Wilcoxon signed-rank p of y − x; 1.0 when every difference is 0."""
    if not len(x):
        return None
    if np.all(y - x == 0):
        return 1.0
    return _number(stats.wilcoxon(y, x).pvalue)


def compare(a: str | None, b: str | None, data_dir: Path | str | None = None, *, results: bool = False,
            overrides: dict | None = None, weights: Path | None = None,
            out: Path | None = None, overwrite: bool = False,
            progress: Progress | None = None, **options: Any) -> ComparisonResult:
    """`senformer compare`: two model specs evaluated on `data_dir` (each at its own input
    length), or with `results=True` two `evaluate --out` folders; writes `out` when given."""
    if a is None or b is None:
        raise SenformerError("compare needs two models, `senformer compare A B --data DIR`, or two "
                             "evaluate --out folders, `senformer compare --results A_DIR B_DIR`")
    if out is not None:
        check_out_dir(out, overwrite)
    if results:
        result_a, result_b = read_evaluation(a), read_evaluation(b)
        name_a, name_b = _model_label(result_a.summary), _model_label(result_b.summary)
        if name_a == name_b:  # e.g. two runs of one spec: the folders tell them apart
            name_a, name_b = _result_name(a), _result_name(b)
        result = compare_results(result_a, result_b, name_a=name_a, name_b=name_b)
    else:
        if data_dir is None:
            raise SenformerError(MISSING_DATA)
        _check_options(**options)
        result = _compare_models(a, b, data_dir, overrides, weights, progress, options)
    if out is not None:
        write_comparison(result, out, overwrite=overwrite)
    return result


def _result_name(folder: Path | str) -> str:
    return Path(folder).name or str(folder)


def _model_label(summary: dict[str, Any]) -> str:
    """The spec with its --set overrides, e.g. `tiny --set attention=full`."""
    overrides = summary.get("overrides") or {}
    return " ".join([str(summary.get("model", "?")),
                     *(f"--set {key}={json.dumps(value) if not isinstance(value, str) else value}"
                       for key, value in overrides.items())])


def _compare_models(spec_a: str, spec_b: str, data_dir: Path | str, overrides: dict | None,
                    weights: Path | None, progress: Progress | None, options: dict
                    ) -> ComparisonResult:
    import gc

    # Both are resolved first, so a mismatch is found before hours of evaluation.
    loaded = {"a": _load(spec_a, overrides, weights), "b": _load(spec_b, overrides, weights)}
    config_a, config_b = loaded["a"].config, loaded["b"].config
    if config_a.target_length != config_b.target_length:
        raise SenformerError(f"A ({spec_a}) predicts {config_a.target_length} bins, B ({spec_b}) "
                             f"{config_b.target_length}: they cannot be compared")
    if config_a.heads != config_b.heads:
        raise SenformerError(f"A ({spec_a}) has heads {_heads(config_a)}, B ({spec_b}) "
                             f"{_heads(config_b)}: they do not predict the same tracks")
    evaluations: dict[str, EvaluationResult] = {}
    for index, (key, spec) in enumerate((("a", spec_a), ("b", spec_b))):
        def step(done: int, count: int, index: int = index) -> None:
            if progress:
                progress(index * count + done, 2 * count)

        model = loaded[key]
        result = evaluate_model(model.model, model.config, data_dir, model_name=spec,
                                progress=step, **options)
        _describe_loaded(result, model, overrides)
        evaluations[key] = result
        loaded[key] = None  # free A's weights before B runs
        del model
        gc.collect()
    comparison = compare_results(evaluations["a"], evaluations["b"], name_a=spec_a, name_b=spec_b)
    comparison.evaluations = evaluations
    return comparison


def _heads(config) -> str:
    return ", ".join(f"{head} {tracks}" for head, tracks in config.heads.items())


def write_comparison(result: ComparisonResult, out: Path | str, *, overwrite: bool = False) -> Path:
    """Write compare.csv, compare.json and compare.png (and, when the models were run here, each
    one's evaluate folder as a/ and b/) into `out`, atomically."""
    from senformer_cli.fileio import atomic_path
    from senformer_cli.plots import compare_scatter

    out = Path(out)
    check_out_dir(out, overwrite)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        result.table.to_csv(tmp / "compare.csv", index=False)
        (tmp / "compare.json").write_text(json.dumps(_jsonable(result.summary), indent=2) + "\n")
        compare_scatter(result.pairs, result.summary, tmp / "compare.png")
        for key, evaluation in result.evaluations.items():
            _write_evaluation_files(evaluation, tmp / key)
    return out


def _jsonable(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
