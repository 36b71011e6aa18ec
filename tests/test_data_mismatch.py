"""The loader's check of records against the genome FASTA: N on either side never counts, up to 0.1%
differing bases per record are read and reported once, more is an error naming file and record."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from data_fixtures import copy_of, synthetic

from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
from senformer_cli.data.basenji import serialize_example, write_records
from senformer_cli.errors import SenformerError

CONFIG = ModelConfig.from_preset("tiny")  # 32,768-bp input: 4,096 bp of FASTA flank per side
RECORD = 24_576  # bp per synthetic record; 0.1% of it is 24.6 bases
FLANK = (CONFIG.sequence_length - RECORD) // 2
BASES = "ACGT"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory)  # human train: chr1, records of 24,576 bp end to end


# ----------------------------------------------------------------------------- helpers
def read_fasta(path: Path) -> dict[str, bytearray]:
    chroms: dict[str, bytearray] = {}
    for block in path.read_text().split(">")[1:]:
        name, _, body = block.partition("\n")
        chroms[name.split()[0]] = bytearray(body.replace("\n", "").encode())
    return chroms


def write_fasta(path: Path, chroms: dict[str, bytearray]) -> None:
    lines = []
    for name, sequence in chroms.items():
        lines.append(f">{name}")
        lines += [sequence[i:i + 60].decode() for i in range(0, len(sequence), 60)]
    path.write_text("\n".join(lines) + "\n")
    Path(f"{path}.fai").unlink(missing_ok=True)


def change_fasta(root: Path, positions: np.ndarray, to_n: bool = False) -> None:
    """Set chr1 of human.fa at `positions` to N, or to another base than it has."""
    chroms = read_fasta(root / "human.fa")
    for position in positions:
        old = chr(chroms["chr1"][position]).upper()
        chroms["chr1"][position] = ord("N" if to_n else BASES[(BASES.index(old) + 1) % 4])
    write_fasta(root / "human.fa", chroms)


def read_records(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sequence bool [L, 4], target float16 [T, C]) of each record of a ZLIB TFRecord file."""
    records = []
    for serialized in tf.data.TFRecordDataset(str(path), compression_type="ZLIB"):
        features = tf.io.parse_single_example(serialized, {
            "sequence": tf.io.FixedLenFeature([], tf.string),
            "target": tf.io.FixedLenFeature([], tf.string)})
        sequence = np.frombuffer(features["sequence"].numpy(), bool).reshape(RECORD, 4)
        target = np.frombuffer(features["target"].numpy(), np.float16).reshape(128, 16)
        records.append((sequence.copy(), target))
    return records


def codes_of(text: bytes | bytearray) -> np.ndarray:
    """Independent encoding: A, C, G, T -> 0..3, anything else (N) -> 4."""
    table = np.full(256, 4, np.uint8)
    for code, base in enumerate("ACGT"):
        table[ord(base)] = table[ord(base.lower())] = code
    return table[np.frombuffer(bytes(text), np.uint8)]


def codes_of_one_hot(sequence: np.ndarray) -> np.ndarray:
    return np.where(sequence.any(axis=-1), sequence.argmax(axis=-1), 4).astype(np.uint8)


def load_train(root: Path) -> list[np.ndarray]:
    """Base codes of the model inputs of the human train split, in file order."""
    data = load_dataset(root / "human", "train", CONFIG, shuffle=False,
                        genomes={"human": root / "human.fa"}, parallel_files=1)
    return [codes_of_one_hot(sequence.numpy()[0]) for sequence, _ in data["human"]]


def spread(start: int, count: int) -> np.ndarray:
    """`count` chr1 positions spread over the record that starts at `start`."""
    return start + np.linspace(500, RECORD - 500, count).astype(int)


# ----------------------------------------------------------------------------- N on either side
def test_n_on_either_side_is_not_a_mismatch(data: Path, tmp_path: Path, caplog):
    root = copy_of(data, tmp_path)
    # FASTA side: 500 bases (2%) of record 0 masked. Record side: 500 bases of record 1 are N.
    masked_fasta = spread(0, 500)
    change_fasta(root, masked_fasta, to_n=True)
    path = root / "human" / "tfrecords" / "train-0.tfr"
    records = read_records(path)
    masked_record = spread(RECORD, 500) - RECORD
    records[1][0][masked_record] = False
    write_records(path, [serialize_example(sequence, target) for sequence, target in records])

    with caplog.at_level(logging.WARNING, logger="senformer_cli.data"):
        inputs = load_train(root)
    assert not caplog.records
    genome = codes_of(read_fasta(root / "human.fa")["chr1"])
    # Record 0: the record's own bases (not the FASTA's N) in the centre, FASTA N to the left.
    assert np.array_equal(inputs[0][FLANK:FLANK + RECORD], codes_of_one_hot(records[0][0]))
    assert np.all(inputs[0][:FLANK] == 4)
    assert np.all(genome[masked_fasta] == 4)
    # Record 1: N where the record has N, FASTA flanks on both sides.
    centre = inputs[1][FLANK:FLANK + RECORD]
    assert np.all(centre[masked_record] == 4)
    assert np.array_equal(np.delete(centre, masked_record),
                          np.delete(genome[RECORD:2 * RECORD], masked_record))
    assert np.array_equal(inputs[1][:FLANK], genome[RECORD - FLANK:RECORD])
    assert np.array_equal(inputs[1][FLANK + RECORD:], genome[2 * RECORD:2 * RECORD + FLANK])


# ----------------------------------------------------------------------------- a few differences
def test_up_to_a_tenth_of_a_percent_is_read_and_reported_once(data: Path, tmp_path: Path, caplog):
    root = copy_of(data, tmp_path)
    original = read_records(root / "human" / "tfrecords" / "train-1.tfr")
    # 24 of 24,576 bases (0.098%) in record 3 (train-1.tfr record 1), 3 in record 4.
    third, fourth = spread(3 * RECORD, 24), spread(4 * RECORD, 3)
    change_fasta(root, np.concatenate([third, fourth]))

    with caplog.at_level(logging.WARNING, logger="senformer_cli.data"):
        inputs = load_train(root)
    assert len(inputs) == 6
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "\n" not in warnings[0]
    # Records are checked in parallel, so either may be the one reported (once).
    expected = [f"train-1.tfr: record 1: differs from {root / 'human.fa'} at chr1:{third[0]} "
                f"(24 of 24576 bases differ",
                f"train-2.tfr: record 0: differs from {root / 'human.fa'} at chr1:{fourth[0]} "
                f"(3 of 24576 bases differ"]
    assert any(line in warnings[0] for line in expected), warnings[0]
    # The model sees the record's bases, not the FASTA's.
    assert np.array_equal(inputs[3][FLANK:FLANK + RECORD], codes_of_one_hot(original[1][0]))


def test_above_a_tenth_of_a_percent_is_an_error(data: Path, tmp_path: Path, caplog):
    root = copy_of(data, tmp_path)
    positions = spread(3 * RECORD, 25)  # 25 of 24,576 = 0.102%
    change_fasta(root, positions)
    with pytest.raises(SenformerError) as error:
        load_train(root)
    message = str(error.value)
    assert "\n" not in message
    assert f"train-1.tfr: record 1: does not match {root / 'human.fa'} at chr1:{positions[0]} " \
           "(25 of 24576 bases differ" in message


def test_another_genome_is_an_error(data: Path, tmp_path: Path):
    root = copy_of(data, tmp_path)
    (root / "human.fa").write_bytes((root / "mouse.fa").read_bytes())
    Path(f"{root / 'human.fa'}.fai").unlink(missing_ok=True)
    with pytest.raises(SenformerError, match=r"train-0.tfr: record 0: does not match .*human.fa at "
                                             r"chr1:\d+ \((\d+) of 24576 bases differ") as error:
        load_train(root)
    differing = int(str(error.value).split("(")[1].split(" of ")[0])
    assert 0.6 * RECORD < differing < 0.9 * RECORD  # unrelated sequence: about 75%


REPORT_SCRIPT = """
import sys
from pathlib import Path
from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
root = Path(sys.argv[1])
data = load_dataset(root / "human", "train", ModelConfig.from_preset("tiny"), shuffle=False,
                    genomes={"human": root / "human.fa"})
print(sum(1 for _ in data["human"]))
"""


def test_the_report_is_one_line_on_stderr(data: Path, tmp_path: Path):
    root = copy_of(data, tmp_path)
    change_fasta(root, np.concatenate([spread(r * RECORD, 5) for r in range(6)]))  # every record
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", REPORT_SCRIPT, str(root)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "6"
    reports = [line for line in result.stderr.splitlines() if "differs from" in line]
    assert len(reports) == 1, result.stderr
    assert reports[0].startswith("warning: ") and "5 of 24576 bases differ" in reports[0]
