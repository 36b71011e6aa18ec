"""THE data loader: Basenji/Enformer TFRecords -> batches at the model's input length.

Usage (training alternates organisms, as in the Enformer recipe)::

    from senformer_cli.config import ModelConfig
    from senformer_cli.data import load_dataset

    config = ModelConfig.from_preset("tiny")
    data = load_dataset(["synth/human", "synth/mouse"], "train", config, batch_size=4, seed=0,
                        repeat=True, reverse_complement=True, max_shift=3,
                        genomes={"human": "synth/human.fa", "mouse": "synth/mouse.fa"})
    for step, batch in zip(range(100), data):     # human, mouse, human, mouse, ...
        batch.head        # "human" | "mouse": the model head to train
        batch.sequence    # float32 [B, config.sequence_length, 4] one-hot (A,C,G,T; N = 0)
        batch.target      # float32 [B, config.target_length, config.heads[head]]

Evaluation reads one organism in file order: `for sequence, target in data["human"]: ...`
(shuffling is on for the train split only unless `shuffle=` says otherwise; `deterministic=True`
keeps the order fixed for a seed, also for resumable training).

Inside `tf.function` steps use `data[head].dataset`, a `tf.data.Dataset` of `(sequence, target)`
with static shapes except the batch dimension (static too with `drop_remainder=True`); wrap the
loop in `with data.user_errors():` so a bad record becomes a SenformerError naming its file.

Head of a directory: its directory name when that is a head of the config (`data/human`);
pass a mapping `{"human": "path/to/dir"}` to name it explicitly.

Lengths: records of `seq_length` bp (statistics.json) become `config.sequence_length` bp by taking
the flanks from the organism's genome FASTA at the `sequences.bed` coordinates (N past the
chromosome ends), or by N padding when no FASTA is given. The record's own bases must equal the
FASTA's, with N on either side matching anything; up to 0.1% differing bases per record are
accepted and logged once (the first such record), more is a SenformerError naming the file and
record. A longer record is centre-cropped.
The ±`max_shift` augmentation moves the window along the genome (FASTA) or into N padding.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from senformer_cli.config import ModelConfig
from senformer_cli.data.basenji import (ERROR_MARK, ZLIB, Statistics, parse_record,
                                        read_bed, read_statistics, read_targets_for, scan_records,
                                        split_files, tf_reason)
from senformer_cli.data.genome import Genome, decode_one_hot, encode, one_hot, one_hot_codes
from senformer_cli.errors import SenformerError

LOGGER = logging.getLogger(__name__)
# Records may differ from the FASTA in this fraction of their bases (a patched or differently
# masked assembly) and still be read; a wrong genome or record order differs in about 75%.
MAX_MISMATCH_FRACTION = 0.001

__all__ = ["Batch", "LoadedData", "OrganismData", "load_dataset", "decode_one_hot", "encode",
           "one_hot"]


@dataclass(frozen=True)
class Batch:
    """One batch of one organism."""

    head: str
    sequence: tf.Tensor  # float32 [B, L, 4]
    target: tf.Tensor  # float32 [B, T, num_targets]


@dataclass
class OrganismData:
    """One organism's split: its metadata and a tf.data pipeline of `(sequence, target)` batches."""

    head: str
    data_dir: Path
    split: str
    statistics: Statistics
    targets: pd.DataFrame  # the targets sheet with a `track_type` column
    files: list[Path]
    dataset: tf.data.Dataset  # (float32 [B, L, 4], float32 [B, T, num_targets])
    repeat: bool = False

    @property
    def num_records(self) -> int:
        """Records in this split according to statistics.json."""
        return self.statistics.num_records(self.split)

    def explain(self, error: tf.errors.OpError) -> str:
        """A one-line user message for a TensorFlow error raised while reading this split."""
        message = error.message
        if ERROR_MARK in message:
            text = message.split(ERROR_MARK, 1)[1].splitlines()[0]
            # tf.debugging.Assert prints its data as "[...]" with quotes escaped
            return text.rstrip("]").rstrip().replace("\\'", "'")
        found = scan_records(self.files, self.statistics)[1]
        if found:
            return found
        return f"{self.data_dir}: reading the '{self.split}' records failed ({tf_reason(error)})"

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        """Batches in pipeline order; a one-pass read also checks the count in statistics.json."""
        seen = 0
        try:
            for sequence, target in self.dataset:
                seen += int(sequence.shape[0])
                yield sequence, target
        except tf.errors.OpError as error:
            raise SenformerError(self.explain(error)) from None
        # drop_remainder may legitimately drop up to one batch of records.
        batch = self.dataset.element_spec[0].shape[0]
        if not self.repeat and not (0 <= self.num_records - seen < (batch or 1)):
            raise SenformerError(
                f"{self.data_dir}: {seen} '{self.split}' records in tfrecords/{self.split}-*.tfr "
                f"but statistics.json says {self.split}_seqs = {self.num_records}")


@dataclass
class LoadedData:
    """The organisms of one split; iterating alternates their batches (round robin)."""

    organisms: dict[str, OrganismData] = field(default_factory=dict)

    @property
    def heads(self) -> list[str]:
        return list(self.organisms)

    def __getitem__(self, head: str) -> OrganismData:
        return self.organisms[head]

    def __iter__(self) -> Iterator[Batch]:
        iterators = {head: iter(data) for head, data in self.organisms.items()}
        while iterators:
            for head in list(iterators):
                try:
                    sequence, target = next(iterators[head])
                except StopIteration:
                    del iterators[head]
                    continue
                yield Batch(head, sequence, target)

    @contextlib.contextmanager
    def user_errors(self) -> Iterator[None]:
        """Turn a TensorFlow reading error inside the block into a SenformerError."""
        try:
            yield
        except tf.errors.OpError as error:
            for data in self.organisms.values():
                if ERROR_MARK in error.message or scan_records(data.files, data.statistics)[1]:
                    raise SenformerError(data.explain(error)) from None
            raise


def load_dataset(
    data_dirs: Path | str | Sequence[Path | str] | Mapping[str, Path | str],
    split: str,
    config: ModelConfig,
    *,
    batch_size: int = 1,
    seed: int = 0,
    shuffle: bool | None = None,
    deterministic: bool = True,
    repeat: bool = False,
    reverse_complement: bool = False,
    max_shift: int = 0,
    genomes: Mapping[str, Path | str] | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 64,
    parallel_files: int = 4,
) -> LoadedData:
    """Read one split of one or several organisms' data directories for a model config.

    data_dirs: a directory, a list of directories (head = directory name) or {head: directory}.
    shuffle: shuffle files and records (seeded); default on for the train split only.
    deterministic: fixed element order for a seed (off lets tf.data reorder for speed).
    repeat: cycle forever (training); else one pass whose record count is checked.
    reverse_complement: with probability 1/2 per record, reverse-complement the sequence and
        reverse the targets along bins (seeded by `seed` and the record's position in the stream).
    max_shift: shift the input window by a uniform integer in [-max_shift, max_shift] bp.
    genomes: {head: FASTA} to take the flanks from; heads without one get N padding (entries
        for heads not loaded here are ignored, so one mapping serves every split).
    Returns LoadedData; see the module docstring for shapes.
    """
    if isinstance(data_dirs, (str, Path)):
        data_dirs = [data_dirs]
    if not isinstance(data_dirs, Mapping):
        data_dirs = {_head_of(Path(d), config): d for d in data_dirs}
    if batch_size < 1 or max_shift < 0:
        raise SenformerError("batch_size must be positive and max_shift non-negative")
    genomes = dict(genomes or {})
    shuffle = split == "train" if shuffle is None else shuffle
    loaded = LoadedData()
    for head, data_dir in data_dirs.items():
        data_dir = Path(data_dir)
        stats, targets, files = _check_directory(data_dir, split, head, config)
        genome_path = genomes.get(head)
        window = _Window(stats, config, max_shift, data_dir, split, files,
                         Genome(genome_path) if genome_path else None)
        dataset = _pipeline(files, stats, window, batch_size=batch_size, seed=seed, shuffle=shuffle,
                            deterministic=deterministic, repeat=repeat,
                            reverse_complement=reverse_complement, drop_remainder=drop_remainder,
                            shuffle_buffer=shuffle_buffer, parallel_files=parallel_files)
        loaded.organisms[head] = OrganismData(head, data_dir, split, stats, targets, files, dataset,
                                              repeat)
    return loaded


def _head_of(data_dir: Path, config: ModelConfig) -> str:
    if data_dir.name in config.heads:
        return data_dir.name
    raise SenformerError(f"{data_dir}: directory name is not a head of the model "
                         f"({', '.join(config.heads)}); pass {{head: directory}} to name it")


def _check_directory(data_dir: Path, split: str, head: str, config: ModelConfig
                     ) -> tuple[Statistics, pd.DataFrame, list[Path]]:
    """statistics.json, targets sheet and record files agree with each other and the model."""
    stats = read_statistics(data_dir)
    where = data_dir / "statistics.json"
    if head not in config.heads:
        raise SenformerError(f"{data_dir}: head '{head}' is not in the model config "
                             f"({', '.join(config.heads)})")
    if stats.num_targets != config.heads[head]:
        raise SenformerError(f"{where}: num_targets = {stats.num_targets} but the model's "
                             f"'{head}' head has {config.heads[head]} tracks")
    if stats.target_length != config.target_length or stats.pool_width != config.bin_size:
        raise SenformerError(f"{where}: {stats.target_length} bins of {stats.pool_width} bp but the "
                             f"model predicts {config.target_length} bins of {config.bin_size} bp")
    if (config.sequence_length - stats.seq_length) % 2:
        raise SenformerError(f"{where}: seq_length {stats.seq_length} and the model's input "
                             f"{config.sequence_length} bp differ by an odd number")
    return stats, read_targets_for(data_dir, stats), split_files(data_dir, split)


class _Window:
    """Cuts the model's input window from a record: FASTA flanks or N padding, and the shift.

    The record is first extended by `pad` bp per side to `[L_rec + 2 pad, 4]`; the window of
    `L` bp then starts at `pad - flank + shift`, where `flank = (L - L_rec) / 2`.
    """

    def __init__(self, stats: Statistics, config: ModelConfig, max_shift: int, data_dir: Path,
                 split: str, files: list[Path], genome: Genome | None) -> None:
        self.record_length = stats.seq_length
        self.length = config.sequence_length
        self.flank = (config.sequence_length - stats.seq_length) // 2
        self.max_shift = max_shift
        self.pad = max(self.flank + max_shift, 0)
        self.genome = genome
        self.files = files
        self._lock = threading.Lock()
        self._reported = False
        if genome is not None and self.pad:
            bed = read_bed(data_dir)
            rows = bed[bed["split"] == split]
            self.chroms = rows["chrom"].to_numpy()
            self.starts = rows["start"].to_numpy(np.int64)
            self.ends = rows["end"].to_numpy(np.int64)
            self.bed_path = data_dir / "sequences.bed"
            # Basenji writes a fixed number of records per file (the last file may hold fewer).
            self.records_per_file = scan_records(files[:1], stats)[0]

    def _report_mismatch(self, message: str) -> None:
        """Log the first record that differs a little from the FASTA; stay quiet after that."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
        LOGGER.warning(f"warning: {message}; up to {MAX_MISMATCH_FRACTION:.1%} differing bases per "
                       "record are accepted (patched or masked positions), further records that "
                       "differ this little are not reported")

    def _flanks(self, file_index: np.ndarray, record_index: np.ndarray, sequence: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """numpy: base codes uint8 [pad] left and right of a record; checks the record's bases."""
        try:
            k, j = int(file_index), int(record_index)
            row = k * self.records_per_file + j
            where = f"{self.files[k]}: record {j}"
            if row >= len(self.starts):
                raise SenformerError(f"{where}: {self.bed_path} has only {len(self.starts)} rows "
                                     "for this split")
            chrom, start, end = str(self.chroms[row]), int(self.starts[row]), int(self.ends[row])
            if end - start != self.record_length:
                raise SenformerError(f"{where}: {self.bed_path} row {chrom}:{start}-{end} is not "
                                     f"{self.record_length} bp")
            codes = self.genome.codes(chrom, start - self.pad, end + self.pad)
            own = codes[self.pad:self.pad + self.record_length]
            record = one_hot_codes(sequence)
            # N on either side is no evidence either way (masked in one assembly, not the other).
            wrong = np.flatnonzero((own != record) & (own != 4) & (record != 4))
            if wrong.size:
                detail = (f"{wrong.size} of {self.record_length} bases differ; record "
                          f"{'ACGTN'[record[wrong[0]]]}, FASTA {'ACGTN'[own[wrong[0]]]}")
                if wrong.size > MAX_MISMATCH_FRACTION * self.record_length:
                    raise SenformerError(
                        f"{where}: does not match {self.genome.path} at {chrom}:{start + wrong[0]} "
                        f"({detail}): is it the genome the records were cut from?")
                self._report_mismatch(f"{where}: differs from {self.genome.path} at "
                                      f"{chrom}:{start + wrong[0]} ({detail})")
        except SenformerError as error:
            raise ValueError(ERROR_MARK + str(error)) from None
        return codes[:self.pad], codes[self.pad + self.record_length:]

    def __call__(self, file_index: tf.Tensor, record_index: tf.Tensor, sequence: tf.Tensor,
                 shift: tf.Tensor) -> tf.Tensor:
        """bool [L_rec, 4] record -> bool [L, 4] model input shifted by `shift` bp."""
        if self.pad and self.genome is not None:
            left, right = tf.numpy_function(self._flanks, [file_index, record_index, sequence],
                                            [tf.uint8, tf.uint8], stateful=False)
            left = tf.cast(tf.one_hot(tf.reshape(left, [self.pad]), 4), tf.bool)
            right = tf.cast(tf.one_hot(tf.reshape(right, [self.pad]), 4), tf.bool)
            sequence = tf.concat([left, sequence, right], axis=0)
        elif self.pad:
            sequence = tf.pad(sequence, [[self.pad, self.pad], [0, 0]])
        start = self.pad - self.flank + shift
        return tf.ensure_shape(sequence[start:start + self.length], [self.length, 4])


def _pipeline(files: list[Path], stats: Statistics, window: _Window, *, batch_size: int, seed: int,
              shuffle: bool, deterministic: bool, repeat: bool, reverse_complement: bool,
              drop_remainder: bool, shuffle_buffer: int, parallel_files: int) -> tf.data.Dataset:
    """files -> (float32 [B, L, 4], float32 [B, T, C]) batches."""
    paths = tf.constant([str(p) for p in files])

    def read_file(k: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(paths[k], compression_type=ZLIB)
        return records.enumerate().map(lambda j, serialized: (k, j, serialized))

    def example(position: tf.Tensor, item: tuple[tf.Tensor, tf.Tensor, tf.Tensor]
                ) -> tuple[tf.Tensor, tf.Tensor]:
        k, j, serialized = item
        where = tf.strings.join([paths[k], ": record ", tf.strings.as_string(j)])
        sequence, target = parse_record(serialized, where, stats)
        rc_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), position]), 2))
        shift = tf.constant(0, tf.int64)
        if window.max_shift:
            shift = tf.random.stateless_uniform([], shift_seed, -window.max_shift,
                                                window.max_shift + 1, dtype=tf.int64)
        sequence = window(k, j, sequence, shift)
        sequence = tf.cast(sequence, tf.float32)
        if reverse_complement:
            flip = tf.random.stateless_uniform([], rc_seed) < 0.5
            sequence = tf.cond(flip, lambda: tf.reverse(sequence, [0, 1]), lambda: sequence)
            target = tf.cond(flip, lambda: tf.reverse(target, [0]), lambda: target)
        return sequence, target

    file_order = tf.data.Dataset.range(len(files))
    if shuffle:
        file_order = file_order.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        file_order = file_order.repeat()
    # Without shuffling, files are read one after another so records come in sequences.bed order.
    cycle = min(parallel_files, len(files)) if shuffle else 1
    records = file_order.interleave(read_file, cycle_length=cycle,
                                    num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=deterministic)
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    examples = records.enumerate().map(example, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=deterministic)
    return examples.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
