"""The Basenji/Enformer data directory: statistics.json, ZLIB TFRecords, sequences.bed.

Layout of a data directory `DIR` (one organism):

    DIR/statistics.json          num_targets, {train,valid,test}_seqs, seq_length, pool_width,
                                 crop_bp, target_length
    DIR/tfrecords/<split>-<k>.tfr  ZLIB tf.train.Examples, files ordered by the integer k:
                                 `sequence` = bytes of bool (seq_length, 4) one-hot (A,C,G,T; N = 0)
                                 `target`   = bytes of float16 (target_length, num_targets)
    DIR/sequences.bed            chrom, start, end, split; the records of a split in file order
    DIR/targets.txt              targets sheet (also accepted: targets_<organism>.txt)

Reading errors inside a tf.data pipeline surface as TensorFlow errors far from their cause;
`scan_records` re-reads a split in plain Python to name the file and record index.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from senformer_cli.errors import SenformerError

SPLITS: tuple[str, ...] = ("train", "valid", "test")
ZLIB = "ZLIB"
# Marks a user-error message inside a TensorFlow error, so the iterator can recover it.
ERROR_MARK = "SENFORMER_ERROR:"


@dataclass(frozen=True)
class Statistics:
    """Contents of statistics.json."""

    num_targets: int
    seq_length: int
    pool_width: int
    crop_bp: int
    target_length: int
    train_seqs: int
    valid_seqs: int
    test_seqs: int

    def num_records(self, split: str) -> int:
        return getattr(self, f"{split}_seqs")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def read_statistics(data_dir: Path | str) -> Statistics:
    """Read and validate `DIR/statistics.json` (extra keys are ignored)."""
    path = Path(data_dir) / "statistics.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SenformerError(f"{path}: missing (not a Basenji data directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SenformerError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SenformerError(f"{path}: expected a JSON object")
    values = {}
    for name in Statistics.__dataclass_fields__:
        value = data.get(name, 0 if name.endswith("_seqs") else None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SenformerError(f"{path}: '{name}' = {value!r}, expected a non-negative integer")
        values[name] = value
    stats = Statistics(**values)
    if stats.seq_length < 1 or stats.num_targets < 1 or stats.target_length < 1:
        raise SenformerError(f"{path}: seq_length, num_targets and target_length must be positive")
    if stats.seq_length != stats.target_length * stats.pool_width + 2 * stats.crop_bp:
        raise SenformerError(f"{path}: seq_length {stats.seq_length} != target_length x pool_width "
                             f"+ 2 x crop_bp = {stats.target_length} x {stats.pool_width} + 2 x "
                             f"{stats.crop_bp}")
    return stats


def statistics_json(stats: Statistics) -> str:
    return json.dumps(stats.to_dict(), indent=2) + "\n"


def split_files(data_dir: Path | str, split: str) -> list[Path]:
    """`DIR/tfrecords/<split>-<k>.tfr`, sorted by k. Raises SenformerError when there are none."""
    if split not in SPLITS:
        raise SenformerError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    folder = Path(data_dir) / "tfrecords"
    pattern = re.compile(rf"^{split}-(\d+)\.tfr$")
    found = [(int(m.group(1)), p) for p in folder.glob(f"{split}-*.tfr")
             if (m := pattern.match(p.name))]
    if not found:
        raise SenformerError(f"{folder}: no '{split}' records ({split}-<k>.tfr)")
    return [p for _, p in sorted(found)]


def read_bed(data_dir: Path | str) -> pd.DataFrame:
    """`DIR/sequences.bed` as a DataFrame (chrom, start, end, split)."""
    path = Path(data_dir) / "sequences.bed"
    try:
        bed = pd.read_csv(path, sep="\t", header=None, dtype={0: str, 3: str})
    except FileNotFoundError:
        raise SenformerError(f"{path}: missing (needed to take flanks from a genome FASTA)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise SenformerError(f"{path}: not a BED file ({error})") from None
    if bed.shape[1] < 4 or not all(np.issubdtype(bed[c].dtype, np.integer) for c in (1, 2)):
        raise SenformerError(f"{path}: expected columns chrom, start, end, split")
    bed = bed.iloc[:, :4]
    bed.columns = ["chrom", "start", "end", "split"]
    return bed


# ---------------------------------------------------------------- writing
def serialize_example(sequence: np.ndarray, target: np.ndarray) -> bytes:
    """One record: `sequence` bool [L, 4], `target` float16 [T, C] -> serialized tf.train.Example."""
    feature = {
        "sequence": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.ascontiguousarray(sequence, dtype=bool).tobytes()])),
        "target": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.ascontiguousarray(target, dtype=np.float16).tobytes()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_records(path: Path | str, records: list[bytes]) -> None:
    """Write serialized examples to one ZLIB TFRecord file."""
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type=ZLIB)) as writer:
        for record in records:
            writer.write(record)


# ---------------------------------------------------------------- reading
def record_sizes(stats: Statistics) -> dict[str, tuple[int, str]]:
    """Bytes of each feature of a record, and the dtype and shape they hold."""
    return {"sequence": (stats.seq_length * 4, f"bool {stats.seq_length} x 4"),
            "target": (stats.target_length * stats.num_targets * 2,
                       f"float16 {stats.target_length} x {stats.num_targets}")}


def parse_record(serialized: tf.Tensor, where: tf.Tensor, stats: Statistics
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode one record; `where` is a string naming its file and index for error messages.

    Returns `sequence` bool [seq_length, 4] and `target` float32 [target_length, num_targets]
    (the records' float16 values, exactly). The bytes are shaped as 16-bit integers and only then
    read as float16: with oneDNN on (every x86 CPU, `senformer_cli/__init__.py`), a graph that
    reshapes a float16 tensor makes TensorFlow log an error-level line on CPUs without AVX-512
    ("oneDNN supports DT_HALF only on platforms with AVX-512"), and TensorFlow's graph optimizer
    moves a reshape after a cast back before it.
    """
    features = tf.io.parse_single_example(serialized, {
        "sequence": tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.string),
    })
    checks = [
        tf.debugging.Assert(tf.strings.length(features[name]) == size, [
            tf.strings.join([ERROR_MARK, where, f": '{name}' has ",
                             tf.strings.as_string(tf.strings.length(features[name])),
                             f" bytes, expected {size} ({shape})"])])
        for name, (size, shape) in record_sizes(stats).items()
    ]
    with tf.control_dependencies(checks):
        sequence = tf.reshape(tf.io.decode_raw(features["sequence"], tf.bool), [stats.seq_length, 4])
        bits = tf.reshape(tf.io.decode_raw(features["target"], tf.uint16),
                          [stats.target_length, stats.num_targets])
        target = tf.cast(tf.bitcast(bits, tf.float16), tf.float32)
    return sequence, target


def tf_reason(error: tf.errors.OpError) -> str:
    """The first line of a TensorFlow error without its op and function-node decorations."""
    reason = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message.splitlines()[0])
    return reason.split(" [Op:")[0].strip()


def scan_records(files: list[Path], stats: Statistics) -> tuple[int, str | None]:
    """Read every record of `files` in plain Python, checking each one's features and sizes.

    Returns the number of good records before the first problem and that problem as
    'FILE: record i: why' (None when all are good). Used to count records and, after a tf.data
    pipeline failed, to say which file and record broke it.
    """
    good = 0
    for path in files:
        index = 0
        try:
            for serialized in tf.data.TFRecordDataset(str(path), compression_type=ZLIB):
                feature = tf.train.Example.FromString(serialized.numpy()).features.feature
                for name, (expected, shape) in record_sizes(stats).items():
                    if name not in feature or not feature[name].bytes_list.value:
                        return good, f"{path}: record {index}: no bytes feature '{name}'"
                    size = len(feature[name].bytes_list.value[0])
                    if size != expected:
                        return good, (f"{path}: record {index}: '{name}' has {size} bytes, "
                                      f"expected {expected} ({shape})")
                index += 1
                good += 1
        except tf.errors.OpError as error:
            return good, f"{path}: record {index}: truncated or corrupt ({tf_reason(error)})"
        except Exception as error:  # protobuf DecodeError
            return good, f"{path}: record {index}: not a tf.train.Example ({error})"
    return good, None


def find_targets_sheet(data_dir: Path | str) -> Path:
    """`DIR/targets.txt`, or the one `DIR/targets_<organism>.txt`."""
    data_dir = Path(data_dir)
    if (data_dir / "targets.txt").is_file():
        return data_dir / "targets.txt"
    candidates = sorted(data_dir.glob("targets_*.txt"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise SenformerError(f"{data_dir}: no targets sheet (targets.txt or targets_<organism>.txt)")
    raise SenformerError(f"{data_dir}: several targets sheets ({', '.join(p.name for p in candidates)})")


def read_targets_for(data_dir: Path | str, stats: Statistics) -> pd.DataFrame:
    """The directory's targets sheet (with `track_type`), checked to have num_targets rows."""
    from senformer_cli.data.targets import read_targets

    sheet_path = find_targets_sheet(data_dir)
    sheet = read_targets(sheet_path)
    if len(sheet) != stats.num_targets:
        raise SenformerError(f"{sheet_path}: {len(sheet)} tracks but statistics.json says "
                             f"num_targets = {stats.num_targets}")
    return sheet


def inspect_data(data_dir: Path | str, max_records: int = 32) -> dict:
    """Summary of a data directory for `senformer data inspect`.

    Reads and checks every record of every split and compares the counts with statistics.json and
    the targets sheet; decodes the first `max_records` records of each split for shapes and
    target value ranges per track type. Raises SenformerError for unreadable files or records.
    """
    from senformer_cli.data.targets import TRACK_TYPE_LABELS, track_type_counts, track_type_indices

    data_dir = Path(data_dir)
    stats = read_statistics(data_dir)
    sheet = read_targets_for(data_dir, stats)
    problems = []
    splits, targets, n_bases = [], [], 0
    n_sequences, n_positions = 0, 0
    for split in SPLITS:
        expected = stats.num_records(split)
        try:
            files = split_files(data_dir, split)
        except SenformerError:
            if expected:
                raise
            files = []
        records, problem = scan_records(files, stats)
        if problem:
            raise SenformerError(problem)
        splits.append({"split": split, "files": len(files), "records": records,
                       "expected": expected, "agrees": records == expected})
        if records != expected:
            problems.append(f"'{split}': {records} records, statistics.json {split}_seqs = "
                            f"{expected}")
        for serialized in tf.data.TFRecordDataset([str(f) for f in files],
                                                  compression_type=ZLIB).take(max_records):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            sequence = np.frombuffer(feature["sequence"].bytes_list.value[0], dtype=bool)
            target = np.frombuffer(feature["target"].bytes_list.value[0], dtype=np.float16)
            n_sequences += 1
            n_positions += sequence.size // 4
            n_bases += int(sequence.sum())
            targets.append(target.reshape(stats.target_length, stats.num_targets))
    ranges = []
    if targets:
        values = np.stack(targets).astype(np.float32)  # [N, T, C]
        for kind, columns in track_type_indices(sheet).items():
            block = values[:, :, columns]
            ranges.append({"track_type": kind, "label": TRACK_TYPE_LABELS[kind],
                           "tracks": len(columns), "min": float(block.min()),
                           "mean": float(block.mean()), "max": float(block.max()),
                           "finite": bool(np.isfinite(block).all())})
    return {
        "data_dir": str(data_dir), "statistics": stats.to_dict(), "targets_sheet": str(find_targets_sheet(data_dir)),
        "tracks_per_type": track_type_counts(sheet), "splits": splits,
        "shapes": {"sequence": [stats.seq_length, 4], "sequence_dtype": "bool",
                   "target": [stats.target_length, stats.num_targets], "target_dtype": "float16"},
        "sampled_records": n_sequences,
        "n_fraction": (1.0 - n_bases / n_positions) if n_positions else None,
        "value_ranges": ranges, "problems": problems, "agrees": not problems,
    }
