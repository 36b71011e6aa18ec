"""load_dataset on a small synthetic data set, checked against the FASTA and the raw records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyfaidx
import pytest
import tensorflow as tf
from data_fixtures import copy_of, reverse_complement, synthetic

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


def raw_targets(root: Path, organism: str, split: str) -> np.ndarray:
    """float16 targets parsed from the record files in file order, independently of the loader."""
    files = sorted((root / organism / "tfrecords").glob(f"{split}-*.tfr"),
                   key=lambda p: int(p.stem.split("-")[1]))
    out = []
    for serialized in tf.data.TFRecordDataset([str(f) for f in files], compression_type="ZLIB"):
        example = tf.train.Example.FromString(serialized.numpy())
        out.append(np.frombuffer(example.features.feature["target"].bytes_list.value[0], np.float16))
    return np.stack(out).reshape(len(out), 128, -1)


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
    np.testing.assert_array_equal(sequences, again)
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


def test_shuffling_is_seeded(data: Path) -> None:
    def order(seed: int) -> list[float]:
        loaded = load_dataset(data / "human", "train", CONFIG, batch_size=1, seed=seed)
        return [float(t.numpy().sum()) for _, t in loaded["human"]]

    plain = [float(t.sum()) for t in raw_targets(data, "human", "train")]
    first = order(1)
    assert first == order(1)
    assert sorted(first) == sorted(plain)
    assert first != plain or order(2) != plain


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


def test_dataset_works_inside_tf_function(data: Path) -> None:
    loaded = load_dataset(data / "human", "train", CONFIG, batch_size=2, drop_remainder=True,
                          genomes=genomes(data))
    dataset = loaded["human"].dataset
    assert dataset.element_spec[0].shape == (2, 32_768, 4)
    assert dataset.element_spec[1].shape == (2, 128, 16)

    @tf.function
    def total(ds: tf.data.Dataset) -> tf.Tensor:
        acc = tf.constant(0.0)
        for sequence, target in ds:
            acc += tf.reduce_sum(sequence) + tf.reduce_sum(target)
        return acc

    with loaded.user_errors():
        value = float(total(dataset))
    sequences, targets = all_batches(loaded, "human")
    assert value == pytest.approx(sequences.sum() + targets.sum(), rel=1e-5)


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
