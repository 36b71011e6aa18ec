"""load_dataset on a small synthetic data set, checked against the FASTA and the raw records."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyfaidx
import pytest
import tensorflow as tf
from data_fixtures import copy_of, raw_targets, reverse_complement, synthetic

from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
from senformer_cli.data.genome import decode_one_hot
from senformer_cli.errors import SenformerError

CONFIG = ModelConfig.from_preset("tiny")  # 32,768 bp input, 128 bins; records are 24,576 bp
FLANK = (32_768 - 24_576) // 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory)


def genomes(root: Path) -> dict[str, Path]:
    return {"human": root / "human.fa", "mouse": root / "mouse.fa"}


def bed_rows(root: Path, organism: str, split: str) -> list[tuple[str, int, int]]:
    rows = [line.split("\t") for line in (root / organism / "sequences.bed").read_text().splitlines()]
    return [(c, int(s), int(e)) for c, s, e, sp in rows if sp == split]


def fasta_window(root: Path, organism: str, chrom: str, start: int, end: int) -> str:
    """The genome between start and end, N outside the chromosome (plain pyfaidx + padding)."""
    fasta = pyfaidx.Fasta(str(root / f"{organism}.fa"))
    length = len(fasta[chrom])
    inside = str(fasta[chrom][max(start, 0):min(end, length)]).upper()
    return "N" * max(0, -start) + inside + "N" * max(0, end - length)


def all_batches(loaded, head: str) -> tuple[np.ndarray, np.ndarray]:
    sequences, targets = zip(*[(s.numpy(), t.numpy()) for s, t in loaded[head]])
    return np.concatenate(sequences), np.concatenate(targets)


def test_sequences_are_extended_from_the_fasta(data: Path) -> None:
    loaded = load_dataset(data / "human", "train", CONFIG, batch_size=4, genomes=genomes(data),
                          shuffle=False)
    sequences, targets = all_batches(loaded, "human")
    assert sequences.shape == (6, 32_768, 4) and sequences.dtype == np.float32
    for sequence, (chrom, start, end) in zip(sequences, bed_rows(data, "human", "train")):
        expected = fasta_window(data, "human", chrom, start - FLANK, end + FLANK)
        assert decode_one_hot(sequence) == expected
    # the first record starts at position 0: its left flank is past the chromosome start
    assert decode_one_hot(sequences[0][:FLANK]) == "N" * FLANK
    np.testing.assert_array_equal(targets, raw_targets(data, "human", "train").astype(np.float32))


def test_without_a_genome_flanks_are_n(data: Path) -> None:
    loaded = load_dataset(data / "mouse", "valid", CONFIG, batch_size=2)
    sequences, _ = all_batches(loaded, "mouse")
    for sequence, (chrom, start, end) in zip(sequences, bed_rows(data, "mouse", "valid")):
        text = decode_one_hot(sequence)
        assert text == "N" * FLANK + fasta_window(data, "mouse", chrom, start, end) + "N" * FLANK
        assert not sequence[:FLANK].any() and not sequence[-FLANK:].any()


def test_model_as_long_as_the_records_needs_no_extension(data: Path) -> None:
    config = CONFIG.replace(sequence_length=24_576, attention="full")
    sequences, _ = all_batches(load_dataset(data / "human", "test", config), "human")
    chrom, start, end = bed_rows(data, "human", "test")[1]
    assert decode_one_hot(sequences[1]) == fasta_window(data, "human", chrom, start, end)


def test_reverse_complement_and_shift_are_seeded_and_correct(data: Path) -> None:
    kwargs = dict(batch_size=3, genomes=genomes(data), shuffle=False, reverse_complement=True,
                  max_shift=3, seed=11)
    sequences, targets = all_batches(load_dataset(data / "human", "train", CONFIG, **kwargs), "human")
    again, _ = all_batches(load_dataset(data / "human", "train", CONFIG, **kwargs), "human")
    np.testing.assert_array_equal(sequences, again)  # the same seed, the same draws...
    other, _ = all_batches(load_dataset(data / "human", "train", CONFIG, **{**kwargs, "seed": 12}),
                           "human")
    assert not np.array_equal(sequences, other)  # ...another seed, other draws (unshuffled order)
    plain = raw_targets(data, "human", "train").astype(np.float32)
    flips, shifts = [], []
    for sequence, target, plain_target, (chrom, start, end) in zip(
            sequences, targets, plain, bed_rows(data, "human", "train")):
        text = decode_one_hot(sequence)
        found = []
        for shift in range(-3, 4):
            window = fasta_window(data, "human", chrom, start - FLANK + shift, end + FLANK + shift)
            found += [(shift, False)] if text == window else []
            found += [(shift, True)] if text == reverse_complement(window) else []
        assert len(found) == 1, "each input is one shifted window, maybe reverse-complemented"
        shift, flipped = found[0]
        np.testing.assert_array_equal(target, plain_target[::-1] if flipped else plain_target)
        flips.append(flipped)
        shifts.append(shift)
    assert len(set(flips)) == 2 and len(set(shifts)) > 1


def record_order(loaded, head: str, plain: np.ndarray) -> list[int]:
    """Which raw record (file order) each loaded one is, matched by its whole target array."""
    order = []
    for _, targets in loaded[head]:
        for target in targets.numpy():
            matches = [i for i, raw in enumerate(plain) if np.array_equal(raw, target)]
            assert len(matches) == 1
            order.append(matches[0])
    return order


def one_file_per_split(source: Path, tmp_path: Path) -> Path:
    """A copy whose train records are all in one file (file order can then not shuffle them)."""
    root = copy_of(source, tmp_path)
    folder = root / "human" / "tfrecords"
    files = sorted(folder.glob("train-*.tfr"), key=lambda p: int(p.stem.split("-")[1]))
    records = [r.numpy() for r in tf.data.TFRecordDataset([str(f) for f in files],
                                                          compression_type="ZLIB")]
    for path in files:
        path.unlink()
    with tf.io.TFRecordWriter(str(folder / "train-0.tfr"), "ZLIB") as writer:
        for record in records:
            writer.write(record)
    return root


@pytest.mark.parametrize("layout", ["files-of-2", "one-file", "file-order-only"])
def test_shuffling_is_seeded(data: Path, tmp_path: Path, layout: str) -> None:
    """Both shuffles take the seed: the record shuffle alone (one file), the file shuffle alone (a
    shuffle buffer of 1 keeps each file's records in order), and both together."""
    root = one_file_per_split(data, tmp_path) if layout == "one-file" else data
    buffer = 1 if layout == "file-order-only" else 64
    plain = raw_targets(root, "human", "train").astype(np.float32)

    def order(seed: int) -> list[int]:
        return record_order(load_dataset(root / "human", "train", CONFIG, batch_size=1, seed=seed,
                                         shuffle_buffer=buffer), "human", plain)

    # Three files give only 6 file orders (and 3 interleaved streams of them), so several seeds.
    seeds = (1, 2, 3) if buffer > 1 else (1, 2, 3, 4, 5, 6)
    orders = {seed: order(seed) for seed in seeds}
    assert all(sorted(o) == list(range(6)) for o in orders.values())  # a permutation
    assert order(1) == orders[1] and order(3) == orders[3]  # the same seed, the same order
    if buffer > 1:
        assert len({tuple(o) for o in orders.values()}) == 3, orders  # another seed, another order
    else:
        assert len({tuple(o) for o in orders.values()}) >= 3, orders
        for o in orders.values():  # records 2k, 2k + 1 of file k stay in file order
            assert all(o.index(2 * k) < o.index(2 * k + 1) for k in range(3)), o


def test_organisms_alternate_and_are_labelled(data: Path) -> None:
    loaded = load_dataset([data / "human", data / "mouse"], "train", CONFIG, batch_size=2,
                          repeat=True, genomes=genomes(data))
    heads = []
    for _, batch in zip(range(6), loaded):
        heads.append(batch.head)
        assert batch.sequence.shape == (2, 32_768, 4)
        assert batch.target.shape == (2, 128, CONFIG.heads[batch.head])
    assert heads == ["human", "mouse"] * 3


def test_head_names_can_be_given_explicitly(data: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "hg38_data"
    renamed.symlink_to(data / "human")
    with pytest.raises(SenformerError, match="not a head of the model"):
        load_dataset(renamed, "test", CONFIG)
    loaded = load_dataset({"human": renamed}, "test", CONFIG)
    assert loaded.heads == ["human"]


def test_dataset_inside_tf_function_equals_the_fasta_and_the_records(data: Path) -> None:
    loaded = load_dataset(data / "human", "train", CONFIG, batch_size=2, drop_remainder=True,
                          genomes=genomes(data), shuffle=False)
    dataset = loaded["human"].dataset
    assert dataset.element_spec[0].shape == (2, 32_768, 4)
    assert dataset.element_spec[1].shape == (2, 128, 16)

    @tf.function
    def collect(ds: tf.data.Dataset) -> tuple[tf.Tensor, tf.Tensor]:
        sequences = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        targets = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for sequence, target in ds:
            sequences = sequences.write(sequences.size(), sequence)
            targets = targets.write(targets.size(), target)
        return sequences.concat(), targets.concat()

    with loaded.user_errors():
        sequences, targets = (t.numpy() for t in collect(dataset))
    assert sequences.shape == (6, 32_768, 4)
    for sequence, (chrom, start, end) in zip(sequences, bed_rows(data, "human", "train")):
        assert decode_one_hot(sequence) == fasta_window(data, "human", chrom, start - FLANK,
                                                        end + FLANK)
    np.testing.assert_array_equal(targets, raw_targets(data, "human", "train").astype(np.float32))


def test_record_count_is_checked_against_statistics(data: Path, tmp_path: Path) -> None:
    root = copy_of(data, tmp_path)
    stats_path = root / "human" / "statistics.json"
    stats = json.loads(stats_path.read_text())
    stats["train_seqs"] = 7
    stats_path.write_text(json.dumps(stats))
    with pytest.raises(SenformerError, match="6 'train' records .* train_seqs = 7"):
        list(load_dataset(root / "human", "train", CONFIG)["human"])


@pytest.mark.parametrize("change,message", [
    ({"heads": {"human": 5, "mouse": 8}}, "num_targets = 16 but the model's 'human' head has 5"),
    ({"target_length": 64, "sequence_length": 16_384}, "128 bins of 128 bp but the model predicts 64"),
])
def test_config_must_fit_the_data(data: Path, change: dict, message: str) -> None:
    with pytest.raises(SenformerError, match=message):
        load_dataset(data / "human", "test", CONFIG.replace(**change))


# ----------------------------------------------------------------------------- shift augmentation
def expected_window(root: Path, organism: str, chrom: str, start: int, end: int, flank: int,
                    shift: int, fasta: bool) -> str:
    """The genome window [start - flank + shift, end + flank + shift); without a FASTA everything
    outside the record [start, end) is N."""
    lo, hi = start - flank + shift, end + flank + shift
    text = fasta_window(root, organism, chrom, lo, hi)
    if fasta:
        return text
    first, last = max(start - lo, 0), min(end - lo, len(text))
    return "N" * first + text[first:last] + "N" * (len(text) - last)


def found_shifts(sequences: np.ndarray, rows: list, root: Path, flank: int, fasta: bool,
                 max_shift: int = 3) -> list[int]:
    """The one shift in [-max_shift, max_shift] that explains each input, checked to be unique."""
    shifts = []
    for sequence, (chrom, start, end) in zip(sequences, rows):
        text = decode_one_hot(sequence)
        found = [shift for shift in range(-max_shift, max_shift + 1)
                 if text == expected_window(root, "human", chrom, start, end, flank, shift, fasta)]
        assert len(found) == 1, f"{chrom}:{start}: explained by shifts {found}"
        shifts.append(found[0])
    return shifts


def test_shift_without_a_fasta_moves_the_window_into_n_padding(data: Path) -> None:
    loaded = load_dataset(data / "human", "train", CONFIG, batch_size=3, shuffle=False,
                          max_shift=3, seed=5)
    sequences, targets = all_batches(loaded, "human")
    shifts = found_shifts(sequences, bed_rows(data, "human", "train"), data, FLANK, fasta=False)
    assert len(set(shifts)) > 1 and any(shifts)
    # The targets do not move with the input window (the shift is at most 3 bp of a 128-bp bin).
    np.testing.assert_array_equal(targets, raw_targets(data, "human", "train").astype(np.float32))


@pytest.mark.parametrize("with_fasta", [True, False], ids=["fasta", "n-padding"])
def test_shift_with_model_length_equal_to_record_length(data: Path, with_fasta: bool) -> None:
    """No extension: the shifted window takes up to 3 bp beyond the record from the FASTA, or N."""
    config = CONFIG.replace(sequence_length=24_576, attention="full")
    loaded = load_dataset(data / "human", "train", config, batch_size=2, shuffle=False, max_shift=3,
                          seed=2, genomes=genomes(data) if with_fasta else None)
    sequences, _ = all_batches(loaded, "human")
    assert sequences.shape == (6, 24_576, 4)
    shifts = found_shifts(sequences, bed_rows(data, "human", "train"), data, 0, fasta=with_fasta)
    assert len(set(shifts)) > 1 and any(shifts)


def test_shift_is_redrawn_every_epoch_under_repeat(data: Path) -> None:
    kwargs = dict(batch_size=1, shuffle=False, repeat=True, max_shift=3, seed=9,
                  genomes=genomes(data))

    def two_epochs() -> list[int]:
        loaded = load_dataset(data / "human", "train", CONFIG, **kwargs)
        sequences = np.concatenate([batch.sequence.numpy() for _, batch in zip(range(12), loaded)])
        return found_shifts(sequences, bed_rows(data, "human", "train") * 2, data, FLANK,
                            fasta=True)

    shifts = two_epochs()
    assert shifts[:6] != shifts[6:]  # the same records get new shifts in the second epoch...
    assert two_epochs() == shifts  # ...and the stream is fixed by the seed


# ----------------------------------------------------------------------------- FASTA extension
def rewrite_fasta(path: Path, edit) -> None:
    """Rewrite a FASTA with `edit(chrom, sequence) -> sequence` applied, 60 bases a line; the stale
    index is removed."""
    fasta = pyfaidx.Fasta(str(path), sequence_always_upper=False)
    chromosomes = {name: str(fasta[name]) for name in fasta.keys()}
    fasta.close()
    with open(path, "w") as handle:
        for name, sequence in chromosomes.items():
            sequence = edit(name, sequence)
            handle.write(f">{name}\n")
            handle.writelines(sequence[i:i + 60] + "\n" for i in range(0, len(sequence), 60))
    Path(str(path) + ".fai").unlink()


def test_flank_past_the_right_chromosome_end_is_n(data: Path, tmp_path: Path) -> None:
    root = copy_of(data, tmp_path)
    chrom, start, end = bed_rows(root, "human", "test")[-1]
    kept = 1000  # chr3 now ends 1,000 bp after the last test record
    rewrite_fasta(root / "human.fa", lambda name, seq: seq[:end + kept] if name == chrom else seq)
    loaded = load_dataset(root / "human", "test", CONFIG, genomes=genomes(root))
    sequences, _ = all_batches(loaded, "human")
    for sequence, (chrom_, start_, end_) in zip(sequences, bed_rows(root, "human", "test")):
        assert decode_one_hot(sequence) == fasta_window(root, "human", chrom_, start_ - FLANK,
                                                        end_ + FLANK)
    right = decode_one_hot(sequences[-1][-FLANK:])
    assert right[kept:] == "N" * (FLANK - kept) and "N" not in right[:kept]


def test_records_that_contain_n(data: Path, tmp_path: Path) -> None:
    """N inside a record (all-zero rows) where the FASTA has N too: kept as N, with or without
    FASTA flanks."""
    import tensorflow as tf

    from senformer_cli.data.basenji import serialize_example, write_records

    root = copy_of(data, tmp_path)
    chrom, start, end = bed_rows(root, "human", "train")[3]  # record 1 of train-1.tfr
    gaps = [(1000, 1100), (20_000, 20_050)]  # offsets inside the record

    def with_gaps(name: str, sequence: str) -> str:
        if name != chrom:
            return sequence
        for lo, hi in gaps:
            sequence = sequence[:start + lo] + "N" * (hi - lo) + sequence[start + hi:]
        return sequence

    rewrite_fasta(root / "human.fa", with_gaps)
    path = root / "human" / "tfrecords" / "train-1.tfr"
    records = []
    for index, serialized in enumerate(tf.data.TFRecordDataset(str(path), compression_type="ZLIB")):
        feature = tf.train.Example.FromString(serialized.numpy()).features.feature
        sequence = np.frombuffer(feature["sequence"].bytes_list.value[0], bool)
        sequence = sequence.reshape(-1, 4).copy()
        target = np.frombuffer(feature["target"].bytes_list.value[0], np.float16).reshape(128, -1)
        if index == 1:
            for lo, hi in gaps:
                sequence[lo:hi] = False
        records.append(serialize_example(sequence, target))
    write_records(path, records)

    for fasta in (True, False):
        loaded = load_dataset(root / "human", "train", CONFIG, shuffle=False,
                              genomes=genomes(root) if fasta else None)
        text = decode_one_hot(all_batches(loaded, "human")[0][3])
        assert text == expected_window(root, "human", chrom, start, end, FLANK, 0, fasta)
        record = text[FLANK:FLANK + 24_576]
        assert record.count("N") == 150 and record[1000:1100] == "N" * 100


@pytest.mark.parametrize("with_fasta", [True, False], ids=["fasta", "n-padding"])
def test_record_longer_than_the_model_input_is_centre_cropped(data: Path, with_fasta: bool) -> None:
    config = CONFIG.replace(sequence_length=16_384, target_length=128, attention="full")
    loaded = load_dataset(data / "human", "test", config,
                          genomes=genomes(data) if with_fasta else None)
    sequences, targets = all_batches(loaded, "human")
    assert sequences.shape == (2, 16_384, 4)
    cut = (24_576 - 16_384) // 2
    for sequence, (chrom, start, end) in zip(sequences, bed_rows(data, "human", "test")):
        expected = fasta_window(data, "human", chrom, start + cut, end - cut)
        assert decode_one_hot(sequence) == expected
    np.testing.assert_array_equal(targets, raw_targets(data, "human", "test").astype(np.float32))


# ----------------------------------------------------------------------------- directory checks
def set_statistics(root: Path, **values) -> None:
    path = root / "human" / "statistics.json"
    stats = json.loads(path.read_text())
    stats.update(values)
    path.write_text(json.dumps(stats))


def drop_last_bed_row(root: Path, split: str) -> None:
    path = root / "human" / "sequences.bed"
    lines = path.read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if line.rstrip("\n").endswith("\t" + split))
    path.write_text("".join(lines[:last] + lines[last + 1:]))


@pytest.mark.parametrize("breaks, head, use_fasta, message", [
    (lambda root: set_statistics(root, pool_width=64, crop_bp=8192), "human", False,
     "128 bins of 64 bp but the model predicts 128 bins of 128 bp"),
    (lambda root: drop_last_bed_row(root, "train"), "human", True,
     r"train-2.tfr: record 1: .*sequences.bed has only 5 rows for this split"),
    (lambda root: (root / "human" / "statistics.json").write_text("[16, 24576]"), "human", False,
     r"statistics.json: expected a JSON object"),
    (lambda root: None, "dog", False, r"head 'dog' is not in the model config \(human, mouse\)"),
], ids=["pool-width", "bed-rows", "statistics-not-an-object", "unknown-head"])
def test_directory_checks_name_the_file(data: Path, tmp_path: Path, breaks, head: str,
                                        use_fasta: bool, message: str) -> None:
    root = copy_of(data, tmp_path)
    breaks(root)
    with pytest.raises(SenformerError, match=message):
        loaded = load_dataset({head: root / "human"}, "train", CONFIG, shuffle=False,
                              genomes=genomes(root) if use_fasta else None)
        list(loaded[head])


def test_odd_length_difference_is_rejected(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A defensive check: statistics.json cannot give an odd seq_length with 128-bp bins (it must
    equal target_length x pool_width + 2 crop_bp), so the statistics are faked here."""
    import senformer_cli.data as loader
    from senformer_cli.data.basenji import Statistics

    odd = Statistics(num_targets=16, seq_length=24_575, pool_width=128, crop_bp=4096,
                     target_length=128, train_seqs=6, valid_seqs=2, test_seqs=2)
    monkeypatch.setattr(loader, "read_statistics", lambda data_dir: odd)
    with pytest.raises(SenformerError, match="seq_length 24575 and the model's input 32768 bp "
                                             "differ by an odd number"):
        load_dataset(data / "human", "test", CONFIG)


_ONE_BATCH = """
import sys
import senformer_cli
from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
next(iter(load_dataset(sys.argv[1], "train", ModelConfig.from_preset("tiny"), batch_size=2)["human"]))
"""


def test_loading_logs_no_onednn_half_precision_line(data: Path) -> None:
    """With oneDNN on (every x86 CPU), a graph that reshapes a float16 tensor logs an error-level
    line on CPUs without AVX-512: "oneDNN supports DT_HALF only on platforms with AVX-512". The
    loader shapes the records' float16 targets as 16-bit integers before reading them as float16
    (a reshape after the float32 conversion is moved back before it by TensorFlow's graph
    optimizer, which failed this test), so a fresh process that loads a batch logs no such line
    (it did at every start on a 2-core AVX2 AMD EPYC; on AVX-512 CPUs the line never appears).
    The values are checked against the raw records in
    `test_sequences_are_extended_from_the_fasta`."""
    done = subprocess.run([sys.executable, "-c", _ONE_BATCH, str(data / "human")],
                          capture_output=True, text=True, check=True)
    assert "DT_HALF" not in done.stderr, done.stderr
