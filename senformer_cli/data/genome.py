"""DNA as numbers: base codes, one-hot encoding, genome FASTA access.

Base codes are uint8: A=0, C=1, G=2, T=3, N=4 (lower case is the same base). One-hot is
`[L, 4]` with A, C, G, T unit vectors and N = all zeros, so `tf.one_hot(codes, 4)` encodes a
code array directly. Reverse complement of a one-hot array is a reversal of both axes
(A,C,G,T -> T,G,C,A is the channel order reversed).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from senformer_cli.errors import SenformerError

BASES = "ACGT"
N_CODE = 4
INVALID_CODE = 255
_CODES = np.full(256, INVALID_CODE, dtype=np.uint8)
for _i, _base in enumerate(BASES + "N"):
    _CODES[ord(_base)] = _CODES[ord(_base.lower())] = _i


def encode(sequence: str | bytes, source: str = "sequence", offset: int = 0) -> np.ndarray:
    """Base codes uint8 [L] (A,C,G,T,N = 0..4) of a DNA string.

    Raises SenformerError naming `source` and the first position (+ `offset`) of a character
    outside ACGTN.
    """
    raw = np.frombuffer(sequence.encode("ascii", "replace") if isinstance(sequence, str)
                        else sequence, dtype=np.uint8)
    codes = _CODES[raw]
    bad = np.flatnonzero(codes == INVALID_CODE)
    if bad.size:
        char = chr(raw[bad[0]]) if raw[bad[0]] < 128 else "?"
        raise SenformerError(f"{source}: character {char!r} at position {offset + bad[0]} is not A, C, G, "
                             "T or N")
    return codes


def one_hot(codes: np.ndarray) -> np.ndarray:
    """bool [L, 4] one-hot of base codes [L]; N (code 4) is all zeros."""
    return np.eye(5, 4, dtype=bool)[codes]


# The code of a row from its 4 bits (A = 1, C = 2, G = 4, T = 8): the first base set, N for none.
_FIRST_BASE = np.array([N_CODE if bits == 0 else (bits & -bits).bit_length() - 1
                        for bits in range(16)], np.uint8)


def one_hot_codes(sequence: np.ndarray) -> np.ndarray:
    """Base codes uint8 [L] of a one-hot array [L, 4] (bool or 0/1): the first base set in a row,
    N (4) for an all-zero row. A table lookup of each row's 4 bits: 4x faster than argmax."""
    bits = (np.asarray(sequence) != 0).view(np.uint8) @ np.array([1, 2, 4, 8], np.uint8)
    return _FIRST_BASE[bits]


def decode_one_hot(sequence: np.ndarray) -> str:
    """The DNA string of a one-hot array [L, 4] (all-zero rows are N)."""
    return np.frombuffer(b"ACGTN", dtype=np.uint8)[one_hot_codes(sequence)].tobytes().decode()


class Genome:
    """Read-only access to a genome FASTA (pyfaidx; the .fai index is built when missing).

    Safe to share between the threads of a tf.data pipeline (reads are serialised).
    """

    def __init__(self, path: Path | str) -> None:
        import pyfaidx

        self.path = Path(path)
        if not self.path.is_file():
            raise SenformerError(f"{self.path}: no such genome FASTA")
        try:
            self._fasta = pyfaidx.Fasta(str(self.path), sequence_always_upper=False,
                                        rebuild=False, build_index=True, as_raw=True)
        except (pyfaidx.FastaIndexingError, pyfaidx.FastaNotFoundError, ValueError) as error:
            raise SenformerError(f"{self.path}: not a readable FASTA ({error})") from None
        self._lock = threading.Lock()

    def chromosome_length(self, chrom: str) -> int:
        if chrom not in self._fasta:
            raise SenformerError(f"{self.path}: no chromosome '{chrom}'")
        return len(self._fasta[chrom])

    def codes(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Base codes uint8 [end - start] of chrom[start:end] (0-based, half-open); N past the ends."""
        length = self.chromosome_length(chrom)
        lo, hi = max(start, 0), min(end, length)
        out = np.full(end - start, N_CODE, dtype=np.uint8)
        if hi > lo:
            with self._lock:
                text = self._fasta[chrom][lo:hi]
            out[lo - start:hi - start] = encode(text, f"{self.path}: {chrom}", offset=lo)
        return out

    def close(self) -> None:
        self._fasta.close()
