"""One-hot encoding and FASTA access against plain-Python references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from senformer_cli.data.genome import Genome, decode_one_hot, encode, one_hot, one_hot_codes
from senformer_cli.errors import SenformerError


def reference_one_hot(text: str) -> np.ndarray:
    """A, C, G, T unit vectors, N (any case) zeros: written out longhand."""
    table = {"A": [1, 0, 0, 0], "C": [0, 1, 0, 0], "G": [0, 0, 1, 0], "T": [0, 0, 0, 1],
             "N": [0, 0, 0, 0]}
    return np.array([table[c.upper()] for c in text], dtype=bool).reshape(-1, 4)


@pytest.mark.parametrize("text", ["ACGTN", "acgtn", "NNNN", "GATTACAgattacaNN", ""])
def test_one_hot_matches_reference(text: str) -> None:
    np.testing.assert_array_equal(one_hot(encode(text)), reference_one_hot(text))


def test_decode_inverts_encode_on_random_dna() -> None:
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("ACGTNacgtn"), size=1000))
    assert decode_one_hot(one_hot(encode(text))) == text.upper()


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32])
def test_one_hot_codes_equal_argmax_with_n_for_empty_rows(dtype) -> None:
    """Every one of the 16 possible rows (multi-hot ones included: the first base set wins, as
    argmax picks it), in bool, uint8 and float 0/1."""
    rows = np.array([[(bits >> i) & 1 for i in range(4)] for bits in range(16)], dtype)
    rng = np.random.default_rng(1)
    sequence = rows[rng.integers(0, 16, size=5000)]
    expected = np.where(sequence.any(axis=-1), sequence.argmax(axis=-1), 4)
    np.testing.assert_array_equal(one_hot_codes(sequence), expected)
    assert one_hot_codes(sequence).dtype == np.uint8


@pytest.mark.parametrize("text,char,position", [("ACGRT", "R", 3), ("AC-GT", "-", 2),
                                                ("ACG T", " ", 3)])
def test_characters_other_than_acgtn_are_errors(text: str, char: str, position: int) -> None:
    with pytest.raises(SenformerError, match=f"^source.fa: character '{char}' at position {position} "):
        encode(text, "source.fa")


@pytest.fixture()
def fasta(tmp_path: Path) -> Path:
    path = tmp_path / "g.fa"
    path.write_text(">chrA\nACGTACGTAC\nGTacgtNNAC\nGG\n>chrB\nTTTT\n")
    return path


@pytest.mark.parametrize("chrom,start,end,expected", [
    ("chrA", 0, 22, "ACGTACGTACGTACGTNNACGG"),
    ("chrA", -3, 2, "NNNAC"),  # before the chromosome start
    ("chrA", 20, 25, "GGNNN"),  # past its end
    ("chrB", -2, 6, "NNTTTTNN"),
    ("chrB", 10, 12, "NN"),
])
def test_genome_codes_pad_with_n_past_chromosome_ends(fasta: Path, chrom: str, start: int,
                                                      end: int, expected: str) -> None:
    genome = Genome(fasta)
    assert decode_one_hot(one_hot(genome.codes(chrom, start, end))) == expected


def test_genome_names_file_and_position_of_a_bad_character(tmp_path: Path) -> None:
    path = tmp_path / "bad.fa"
    path.write_text(">chr1\nACGTXACGT\n")
    with pytest.raises(SenformerError, match=r"bad.fa: chr1.*'X' at position 4"):
        Genome(path).codes("chr1", 0, 9)


def test_genome_unknown_chromosome(fasta: Path) -> None:
    with pytest.raises(SenformerError, match="no chromosome 'chrZ'"):
        Genome(fasta).codes("chrZ", 0, 5)
