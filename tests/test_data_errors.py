"""Bad input: each a one-line SenformerError naming the file (and record), exit code 2 from the CLI."""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from cli_checks import user_error
from data_fixtures import copy_of, synthetic
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
from senformer_cli.data.basenji import serialize_example, write_records
from senformer_cli.errors import SenformerError

CONFIG = ModelConfig.from_preset("tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory)


def remove_statistics(root: Path) -> str:
    (root / "human" / "statistics.json").unlink()
    return r"human/statistics.json: missing"


def malformed_statistics(root: Path) -> str:
    (root / "human" / "statistics.json").write_text('{"num_targets": 16,')
    return r"human/statistics.json: not valid JSON"


def statistics_missing_key(root: Path) -> str:
    path = root / "human" / "statistics.json"
    stats = json.loads(path.read_text())
    del stats["seq_length"]
    path.write_text(json.dumps(stats))
    return r"human/statistics.json: 'seq_length' = None"


def missing_split(root: Path) -> str:
    for path in (root / "human" / "tfrecords").glob("train-*.tfr"):
        path.unlink()
    return r"human/tfrecords: no 'train' records"


def truncated_file(root: Path) -> str:
    path = root / "human" / "tfrecords" / "train-1.tfr"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return r"train-1.tfr: record 1: truncated or corrupt"


def corrupt_file(root: Path) -> str:
    path = root / "human" / "tfrecords" / "train-2.tfr"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    return r"train-2.tfr: record \d: truncated or corrupt"


def wrong_dtype(root: Path) -> str:
    # record 1 of train-1.tfr stores float32 targets: twice the bytes
    good = np.zeros((24_576, 4), dtype=bool)
    write_records(root / "human" / "tfrecords" / "train-1.tfr", [
        serialize_example(good, np.zeros((128, 16), np.float16)),
        _float32_example(good)])
    return r"train-1.tfr: record 1: 'target' has 8192 bytes, expected 4096 \(float16 128 x 16\)"


def _float32_example(sequence: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = {"sequence": tf.train.Feature(bytes_list=tf.train.BytesList(value=[sequence.tobytes()])),
               "target": tf.train.Feature(bytes_list=tf.train.BytesList(
                   value=[np.zeros((128, 16), np.float32).tobytes()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def wrong_sequence_length(root: Path) -> str:
    write_records(root / "human" / "tfrecords" / "train-0.tfr", [
        serialize_example(np.zeros((1000, 4), bool), np.zeros((128, 16), np.float16))])
    return r"train-0.tfr: record 0: 'sequence' has 4000 bytes, expected 98304 \(bool 24576 x 4\)"


def sheet_row_count(root: Path) -> str:
    path = root / "human" / "targets.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    return r"human/targets.txt: 15 tracks but statistics.json says num_targets = 16"


CASES: dict[str, Callable[[Path], str]] = {f.__name__: f for f in (
    remove_statistics, malformed_statistics, statistics_missing_key, missing_split, truncated_file,
    corrupt_file, wrong_dtype, wrong_sequence_length, sheet_row_count)}


def assert_one_line(message: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message


@pytest.mark.parametrize("case", CASES)
def test_loader_names_the_file_and_record(data: Path, tmp_path: Path, case: str) -> None:
    root = copy_of(data, tmp_path)
    pattern = CASES[case](root)
    with pytest.raises(SenformerError, match=pattern) as error:
        list(load_dataset(root / "human", "train", CONFIG, batch_size=2, shuffle=False))
    assert_one_line(str(error.value))


def assert_cli_error(result, pattern: str) -> None:
    """Exit code 2, exactly one line on stderr (`error: ...`) matching `pattern`, nothing on
    stdout."""
    line = user_error(result)
    assert re.search(pattern, line), line


@pytest.mark.parametrize("case", CASES)
def test_cli_inspect_exits_2_with_one_line(data: Path, tmp_path: Path, case: str) -> None:
    root = copy_of(data, tmp_path)
    pattern = CASES[case](root)
    assert_cli_error(CliRunner().invoke(app, ["data", "inspect", str(root / "human")]), pattern)


@pytest.mark.parametrize("train_seqs", [7, 5])
def test_cli_inspect_exits_1_when_the_files_disagree(data: Path, tmp_path: Path,
                                                     train_seqs: int) -> None:
    """Readable files whose record count differs from statistics.json: a report, exit code 1."""
    root = copy_of(data, tmp_path)
    path = root / "human" / "statistics.json"
    stats = json.loads(path.read_text())
    stats["train_seqs"] = train_seqs
    path.write_text(json.dumps(stats))
    problem = f"'train': 6 records, statistics.json train_seqs = {train_seqs}"
    result = CliRunner().invoke(app, ["data", "inspect", str(root / "human")])
    assert result.exit_code == 1, result.output
    assert f"disagrees: {problem}" in " ".join(result.stdout.split())
    assert result.stderr == ""
    result = CliRunner().invoke(app, ["data", "inspect", str(root / "human"), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["agrees"] is False and summary["problems"] == [problem]
    assert [(s["split"], s["records"], s["expected"], s["agrees"]) for s in summary["splits"]] == [
        ("train", 6, train_seqs, False), ("valid", 2, 2, True), ("test", 2, 2, True)]


def fasta_with(root: Path, position: int, char: str) -> None:
    """Replace one base of chr1 in human.fa (60 bases per line) and drop the stale index."""
    path = root / "human.fa"
    text = bytearray(path.read_bytes())
    offset = len(b">chr1\n") + position + position // 60
    text[offset] = ord(char)
    path.write_bytes(bytes(text))


def test_fasta_not_matching_the_records(data: Path, tmp_path: Path) -> None:
    root = copy_of(data, tmp_path)
    position = 3 * 24_576 + 100  # inside record 1 of train-1.tfr (files of 2 records)
    for changed in range(position, position + 30):  # 30 bases: above the 0.1% that is tolerated
        original = (root / "human.fa").read_bytes()[len(b">chr1\n") + changed + changed // 60]
        fasta_with(root, changed, "A" if original not in b"Aa" else "C")
    with pytest.raises(SenformerError, match=rf"train-1.tfr: record 1: does not match .*human.fa "
                                             rf"at chr1:{position}") as error:
        list(load_dataset(root / "human", "train", CONFIG, shuffle=False,
                          genomes={"human": root / "human.fa"}))
    assert_one_line(str(error.value))


def test_fasta_with_a_character_other_than_acgtn(data: Path, tmp_path: Path) -> None:
    root = copy_of(data, tmp_path)
    position = 2 * 24_576 - 50  # in the right flank of record 1 of train-0.tfr
    fasta_with(root, position, "R")
    with pytest.raises(SenformerError, match=rf"human.fa: chr1: character 'R' at position "
                                             rf"{position}"):
        list(load_dataset(root / "human", "train", CONFIG, shuffle=False,
                          genomes={"human": root / "human.fa"}))


def test_lower_case_fasta_is_fine(data: Path, tmp_path: Path) -> None:
    """A soft-masked (all lower case) FASTA gives the same bases: checked against the upper-cased
    text of the FASTA read with pyfaidx, N past chr3's start."""
    import pyfaidx

    from senformer_cli.data.genome import decode_one_hot

    root = copy_of(data, tmp_path)
    path = root / "human.fa"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line if line.startswith(">") else line.lower() for line in lines))
    Path(str(path) + ".fai").unlink()
    batches = list(load_dataset(root / "human", "test", CONFIG, genomes={"human": path})["human"])
    sequences = np.concatenate([s.numpy() for s, _ in batches])
    assert sequences.shape == (2, 32_768, 4)
    chr3 = str(pyfaidx.Fasta(str(path))["chr3"])
    assert chr3.islower()
    flank = (32_768 - 24_576) // 2
    for i, sequence in enumerate(sequences):  # records tile chr3 from position 0
        start = i * 24_576 - flank
        expected = "N" * max(-start, 0) + chr3[max(start, 0):start + 32_768].upper()
        assert decode_one_hot(sequence) == expected


@pytest.mark.parametrize("args, message", [
    (["--train", "0"], "--train must be positive"),
    (["--valid", "-1"], "--valid/--test non-negative"),
    (["--preset", "huge"], "unknown synthetic preset 'huge'"),
])
def test_synth_errors_are_one_line_and_write_nothing(tmp_path: Path, args: list, message: str
                                                     ) -> None:
    out = tmp_path / "out"
    assert_cli_error(CliRunner().invoke(app, ["data", "synth", str(out), *args]),
                     re.escape(message))
    assert list(tmp_path.iterdir()) == []


def test_zlib_is_the_compression(data: Path) -> None:
    # independent check of the container format: TFRecord framing of a zlib stream
    raw = zlib.decompress((data / "human" / "tfrecords" / "test-0.tfr").read_bytes())
    length = int.from_bytes(raw[:8], "little")
    assert length > 24_576 * 4 and raw[12 + length + 4:12 + length + 12]  # a second record follows
