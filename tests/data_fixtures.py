"""Shared set-up for the data tests: one small synthetic data set per session, copied on demand."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def reverse_complement(text: str) -> str:
    """Independent string reverse complement."""
    return text.translate(COMPLEMENT)[::-1]


def session_synthetic(tmp_path_factory: pytest.TempPathFactory, name: str, *, seed: int,
                      splits: dict[str, int], records_per_file: int) -> Path:
    """A tiny synthetic data set in the session's temporary folder, written on first use."""
    root = tmp_path_factory.getbasetemp() / name
    if not root.exists():
        from senformer_cli.data.synthetic import write_synthetic

        write_synthetic(root, "tiny", seed=seed, splits=splits, records_per_file=records_per_file)
    return root


def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic data, 6 / 2 / 2 records in files of 2, written once per session."""
    return session_synthetic(tmp_path_factory, "synth-tiny", seed=7,
                             splits={"train": 6, "valid": 2, "test": 2}, records_per_file=2)


def copy_of(source: Path, tmp_path: Path) -> Path:
    """A private copy of a synthetic data set that a test may break."""
    target = tmp_path / "synth"
    shutil.copytree(source, target)
    return target


def reference_sheet(reference_dir: Path, organism: str) -> Path:
    """A published targets sheet from the `reference_dir` fixture's folder (a test that calls this
    takes that fixture, so CI fails instead of skipping when it is absent)."""
    path = reference_dir / f"targets_{organism}.txt"
    if not path.is_file():
        pytest.skip(f"published targets sheet {path} is absent")
    return path


def raw_targets(root: Path, organism: str, split: str) -> np.ndarray:
    """float16 targets parsed from the record files in file order, independently of the loader."""
    files = sorted((root / organism / "tfrecords").glob(f"{split}-*.tfr"),
                   key=lambda p: int(p.stem.split("-")[1]))
    import tensorflow as tf

    out = []
    for serialized in tf.data.TFRecordDataset([str(f) for f in files], compression_type="ZLIB"):
        example = tf.train.Example.FromString(serialized.numpy())
        out.append(np.frombuffer(example.features.feature["target"].bytes_list.value[0], np.float16))
    return np.stack(out).reshape(len(out), 128, -1)
