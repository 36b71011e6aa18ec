"""A synthetic genome with planted motifs and tracks of all four types, in the real data format.

`write_synthetic(out, preset, seed)` writes (atomically, as one directory)::

    OUT/human.fa, OUT/human.fa.fai     the genome the human records were cut from
    OUT/mouse.fa, OUT/mouse.fa.fai
    OUT/human/  OUT/mouse/             Basenji data directories (statistics.json, tfrecords/,
                                       sequences.bed, targets.txt)
    OUT/ground_truth.json              motifs, rules and every promoter with its enhancers

Each organism has three chromosomes, chr1 (train), chr2 (valid) and chr3 (test), tiled by records
from position 0 (so the first record's left flank and the last record's right flank run past the
chromosome ends into N). About 10% of the FASTA is soft-masked (lower case).

Planted rules (rates in counts per 128-bp bin, then Poisson noise):
- DNase/ATAC: sharp peaks at every motif site (promoter, enhancer, insulator, TF).
- ChIP histone: broad domains, `H3K27ac` around enhancers and promoters, `H3K4me3` around promoters.
- ChIP TF: sharp peaks, `CTCF` at insulator motifs, `FOSL2` at TF motifs.
- CAGE: sharp peak at each promoter, basal rate plus a large boost when the promoter is *driven*:
  some enhancer lies within `max_distance_bp` with no insulator motif between them. Enhancers are
  placed at least `min_distance_bp` from every promoter (further than the convolutional tower sees),
  so whether a promoter is driven can only be learnt by attending across the sequence.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from senformer_cli.data.basenji import (Statistics, serialize_example, statistics_json,
                                        write_records)
from senformer_cli.data.genome import one_hot
from senformer_cli.data.targets import TRACK_TYPES, write_targets
from senformer_cli.errors import SenformerError
from senformer_cli.fileio import atomic_path

MOTIFS: dict[str, str] = {
    "promoter": "GCTATAAAAGGC",
    "enhancer": "CACGTGTCAGCA",
    "insulator": "CCACTAGGGGGCGC",  # CTCF consensus
    "tf": "ATGACTCATCGA",  # AP-1 site
}
# Track kinds: which profile a track follows, its targets-sheet description and track type.
KINDS: dict[str, tuple[str, str]] = {
    "dnase": ("DNASE", "dnase_atac"),
    "atac": ("ATAC", "dnase_atac"),
    "h3k27ac": ("CHIP:H3K27ac", "chip_histone"),
    "h3k4me3": ("CHIP:H3K4me3", "chip_histone"),
    "ctcf": ("CHIP:CTCF", "chip_tf"),
    "fosl2": ("CHIP:FOSL2", "chip_tf"),
    "cage": ("CAGE", "cage"),
}
PROFILES = ("accessibility", "h3k27ac", "h3k4me3", "ctcf", "fosl2", "cage")
_PROFILE_OF_KIND = {"dnase": 0, "atac": 0, "h3k27ac": 1, "h3k4me3": 2, "ctcf": 3, "fosl2": 4,
                    "cage": 5}
_KINDS_OF_TYPE = {"dnase_atac": ("dnase", "atac"), "chip_histone": ("h3k27ac", "h3k4me3"),
                  "chip_tf": ("ctcf", "fosl2"), "cage": ("cage",)}
BACKGROUND_RATE = 0.2
CAGE_BASAL, CAGE_DRIVEN = 1.0, 12.0
SPLIT_CHROMOSOMES = {"train": "chr1", "valid": "chr2", "test": "chr3"}


@dataclass(frozen=True)
class SynthPreset:
    """Shapes and rule distances of one synthetic data set."""

    record_length: int  # bp per record (statistics seq_length)
    target_length: int  # bins of 128 bp
    crop_bp: int
    heads: dict[str, dict[str, int]]  # organism -> tracks per track type
    splits: dict[str, int]  # default records per split
    records_per_file: int
    promoter_spacing_bp: tuple[int, int]
    min_distance_bp: int  # every enhancer is at least this far from every promoter
    max_distance_bp: int  # an enhancer drives promoters up to this far away

    @property
    def pool_width(self) -> int:
        return (self.record_length - 2 * self.crop_bp) // self.target_length


_REAL_SHAPES = dict(
    record_length=131_072, target_length=896, crop_bp=8192,
    heads={"human": {"dnase_atac": 684, "chip_histone": 1860, "chip_tf": 2131, "cage": 638},
           "mouse": {"dnase_atac": 228, "chip_histone": 750, "chip_tf": 308, "cage": 357}},
    splits={"train": 16, "valid": 4, "test": 4}, records_per_file=8,
    promoter_spacing_bp=(25_000, 60_000), min_distance_bp=20_000, max_distance_bp=50_000)
SYNTH_PRESETS: dict[str, SynthPreset] = {
    # Matches the `tiny` model: 24,576-bp records extended by 4,096 bp per side to 32,768 bp.
    "tiny": SynthPreset(
        record_length=24_576, target_length=128, crop_bp=4096,
        heads={"human": {t: 4 for t in TRACK_TYPES}, "mouse": {t: 2 for t in TRACK_TYPES}},
        splits={"train": 320, "valid": 32, "test": 32}, records_per_file=64,
        promoter_spacing_bp=(6_000, 14_000), min_distance_bp=3_000, max_distance_bp=12_000),
    # The real shapes (131,072-bp records, 896 bins, 5,313 / 1,643 tracks in the paper's
    # proportions). `small` feeds the small model (131,072 bp: no extension), `full` the
    # published one (196,608 bp: FASTA flanks); the data are the same.
    "small": SynthPreset(**_REAL_SHAPES),
    "full": SynthPreset(**_REAL_SHAPES),
}
MIN_ELEMENT_GAP_BP = 300


def write_synthetic(out: Path | str, preset: str = "tiny", seed: int = 0,
                    splits: dict[str, int | None] | None = None,
                    records_per_file: int | None = None) -> dict[str, Any]:
    """Write the synthetic data set to `out` (replaced only once complete); return a summary.

    `splits` and `records_per_file` override the preset's. Deterministic for the arguments.
    """
    if preset not in SYNTH_PRESETS:
        raise SenformerError(f"unknown synthetic preset '{preset}'; choose one of "
                             f"{', '.join(SYNTH_PRESETS)}")
    spec = SYNTH_PRESETS[preset]
    if records_per_file is not None:
        if records_per_file < 1:
            raise SenformerError("records_per_file must be positive")
        spec = replace(spec, records_per_file=records_per_file)
    counts = dict(spec.splits)
    counts.update({k: v for k, v in (splits or {}).items() if v is not None})
    if any(n < 0 for n in counts.values()) or counts["train"] < 1:
        raise SenformerError("--train must be positive and --valid/--test non-negative")
    out = Path(out)
    truth: dict[str, Any] = {
        "preset": preset, "seed": seed, "motifs": MOTIFS,
        "positions": "0-based start of the motif on the forward strand",
        "rule": {"driven": "an enhancer within max_distance_bp of the promoter with no insulator "
                           "motif between them",
                 "min_distance_bp": spec.min_distance_bp, "max_distance_bp": spec.max_distance_bp,
                 "cage_rate_basal": CAGE_BASAL, "cage_rate_driven": CAGE_BASAL + CAGE_DRIVEN},
        "organisms": {},
    }
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for number, organism in enumerate(spec.heads):
            rng = np.random.default_rng([seed, number])
            truth["organisms"][organism] = _write_organism(tmp, organism, spec, counts, rng)
        (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return {"out": str(out), "preset": preset, "seed": seed, "splits": counts,
            "organisms": {o: {"data_dir": o, "genome": f"{o}.fa",
                              "num_targets": sum(spec.heads[o].values()),
                              "promoters": len(truth["organisms"][o]["promoters"]),
                              "driven": sum(p["driven"] for p in truth["organisms"][o]["promoters"])}
                          for o in spec.heads},
            "ground_truth": str(out / "ground_truth.json")}


def _statistics(spec: SynthPreset, num_targets: int, counts: dict[str, int]) -> Statistics:
    return Statistics(num_targets=num_targets, seq_length=spec.record_length,
                      pool_width=spec.pool_width, crop_bp=spec.crop_bp,
                      target_length=spec.target_length, train_seqs=counts["train"],
                      valid_seqs=counts["valid"], test_seqs=counts["test"])


def _targets_sheet(organism: str, per_type: dict[str, int], rng: np.random.Generator
                   ) -> tuple[pd.DataFrame, list[str]]:
    """The targets sheet and each track's kind (kinds alternate within a type)."""
    kinds = [_KINDS_OF_TYPE[t][i % len(_KINDS_OF_TYPE[t])]
             for t in TRACK_TYPES for i in range(per_type[t])]
    rows = []
    for index, kind in enumerate(kinds):
        prefix = KINDS[kind][0]
        rows.append({"index": index, "genome": 0 if organism == "human" else 1,
                     "identifier": f"SYN{index:05d}",
                     "file": f"synthetic/{organism}/{kind}/{index}.w5", "clip": 32, "scale": 2,
                     "sum_stat": "mean" if kind != "cage" else "sum",
                     "description": f"{prefix}:synthetic {organism} sample {index}"})
    return pd.DataFrame(rows), kinds


def _place_elements(length: int, spec: SynthPreset, rng: np.random.Generator
                    ) -> dict[str, list[int]]:
    """Motif start positions on one chromosome, respecting the distance rules."""
    width = max(len(m) for m in MOTIFS.values())
    taken: list[int] = []

    def free(position: int) -> bool:
        if not 0 <= position <= length - width:
            return False
        i = bisect.bisect_left(taken, position)
        return all(abs(position - taken[j]) >= MIN_ELEMENT_GAP_BP
                   for j in (i - 1, i) if 0 <= j < len(taken))

    def take(kind: str, position: int) -> None:
        bisect.insort(taken, position)
        sites[kind].append(position)

    sites: dict[str, list[int]] = {kind: [] for kind in MOTIFS}
    position = int(rng.integers(1000, spec.promoter_spacing_bp[0]))
    while position < length - 1000:
        take("promoter", position)
        position += int(rng.integers(*spec.promoter_spacing_bp))
    promoters = np.array(sites["promoter"])
    for promoter in sites["promoter"]:
        if rng.random() >= 0.6:
            continue
        for _ in range(20):
            distance = int(rng.integers(spec.min_distance_bp, spec.max_distance_bp))
            enhancer = promoter + distance * int(rng.choice([-1, 1]))
            if free(enhancer) and np.abs(promoters - enhancer).min() >= spec.min_distance_bp:
                take("enhancer", enhancer)
                if rng.random() < 0.4:  # block this pair with an insulator in between
                    lo, hi = sorted((promoter, enhancer))
                    for _ in range(20):
                        insulator = int(rng.integers(lo + MIN_ELEMENT_GAP_BP, hi - MIN_ELEMENT_GAP_BP))
                        if free(insulator):
                            take("insulator", insulator)
                            break
                break
    for kind, every_bp in (("tf", 4000), ("insulator", 40_000)):
        for _ in range(length // every_bp):
            candidate = int(rng.integers(0, length - width))
            if free(candidate):
                take(kind, candidate)
    return {kind: sorted(v) for kind, v in sites.items()}


def _chromosome(length: int, sites: dict[str, list[int]], rng: np.random.Generator) -> np.ndarray:
    """Base codes [length] with the motifs written at `sites` and no motif anywhere else."""
    codes = rng.choice(4, size=length, p=[0.3, 0.2, 0.2, 0.3]).astype(np.uint8)
    planted = set()
    for kind, positions in sites.items():
        motif = np.frombuffer(MOTIFS[kind].encode(), np.uint8)
        motif_codes = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), motif).astype(np.uint8)
        for p in positions:
            codes[p:p + len(motif)] = motif_codes
            planted.add((kind, p))
    text = bytearray(np.frombuffer(b"ACGT", np.uint8)[codes].tobytes())
    changed = True
    while changed:  # break chance occurrences (a handful per megabase pair at most)
        changed = False
        for kind, motif in MOTIFS.items():
            start = text.find(motif.encode())
            while start != -1:
                if (kind, start) not in planted:
                    middle = start + len(motif) // 2
                    codes[middle] = (codes[middle] + 1) % 4
                    text[middle] = b"ACGT"[codes[middle]]
                    changed = True
                start = text.find(motif.encode(), start + 1)
    return codes


def _truth(chrom: str, split: str, sites: dict[str, list[int]], spec: SynthPreset
           ) -> list[dict[str, Any]]:
    """Every promoter with the enhancers within max_distance_bp and whether it is driven."""
    insulators = np.array(sites["insulator"], dtype=np.int64)
    promoters = []
    for promoter in sites["promoter"]:
        enhancers = []
        for enhancer in sites["enhancer"]:
            if abs(enhancer - promoter) > spec.max_distance_bp:
                continue
            lo, hi = sorted((promoter, enhancer))
            blocking = insulators[(insulators > lo) & (insulators < hi)].tolist()
            enhancers.append({"position": enhancer, "distance_bp": enhancer - promoter,
                              "blocked_by": blocking})
        promoters.append({"chrom": chrom, "split": split, "position": promoter,
                          "driven": any(not e["blocked_by"] for e in enhancers),
                          "enhancers": enhancers})
    return promoters


def _profiles(bin_starts: np.ndarray, sites: dict[str, list[int]], driven: dict[int, bool],
              pool_width: int) -> np.ndarray:
    """Noise-free rates [T, len(PROFILES)] at bins starting at `bin_starts`."""
    centres = bin_starts + pool_width / 2

    def bumps(positions: list[int], sigma: float, heights: np.ndarray | float = 1.0,
              kind: str = "promoter") -> np.ndarray:
        if not positions:
            return np.zeros(len(centres))
        middle = np.asarray(positions, dtype=np.float64) + len(MOTIFS[kind]) / 2
        near = np.abs(middle - (centres[0] + centres[-1]) / 2) < (centres[-1] - centres[0]) / 2 + 6 * sigma
        weights = np.broadcast_to(np.asarray(heights, dtype=np.float64), middle.shape)[near]
        d = centres[:, None] - middle[None, near]
        return (np.exp(-0.5 * (d / sigma) ** 2) * weights).sum(axis=1)

    cage_heights = np.array([CAGE_BASAL + CAGE_DRIVEN * driven[p] for p in sites["promoter"]])
    return np.stack([
        6 * bumps(sites["promoter"], 90) + 8 * bumps(sites["enhancer"], 90, kind="enhancer")
        + 5 * bumps(sites["insulator"], 90, kind="insulator") + 4 * bumps(sites["tf"], 90, kind="tf"),
        3 * bumps(sites["enhancer"], 1500, kind="enhancer") + 3 * bumps(sites["promoter"], 1500),
        4 * bumps(sites["promoter"], 700),
        10 * bumps(sites["insulator"], 80, kind="insulator"),
        8 * bumps(sites["tf"], 80, kind="tf"),
        bumps(sites["promoter"], 60, cage_heights),
    ], axis=1)


def _write_organism(out: Path, organism: str, spec: SynthPreset, counts: dict[str, int],
                    rng: np.random.Generator) -> dict[str, Any]:
    """Genome FASTA + data directory of one organism; returns its ground truth."""
    data_dir = out / organism
    (data_dir / "tfrecords").mkdir(parents=True)
    sheet, kinds = _targets_sheet(organism, spec.heads[organism], rng)
    write_targets(data_dir / "targets.txt", sheet)
    num_targets = len(kinds)
    mixing = np.zeros((len(PROFILES), num_targets))
    mixing[[_PROFILE_OF_KIND[k] for k in kinds], np.arange(num_targets)] = rng.lognormal(
        0.0, 0.25, num_targets)
    (data_dir / "statistics.json").write_text(statistics_json(_statistics(spec, num_targets, counts)))
    fasta_lines, bed_rows, promoters = [], [], []
    for split, chrom in SPLIT_CHROMOSOMES.items():
        n = counts[split]
        length = n * spec.record_length + spec.record_length // 2
        sites = _place_elements(length, spec, rng)
        codes = _chromosome(length, sites, rng)
        chrom_truth = _truth(chrom, split, sites, spec)
        promoters += chrom_truth
        driven = {p["position"]: p["driven"] for p in chrom_truth}
        fasta_lines.append(f">{chrom}\n")
        fasta_lines.append(_fasta_text(codes, rng))
        records = []
        for i in range(n):
            start = i * spec.record_length
            bed_rows.append(f"{chrom}\t{start}\t{start + spec.record_length}\t{split}\n")
            bin_starts = start + spec.crop_bp + spec.pool_width * np.arange(spec.target_length)
            rates = BACKGROUND_RATE + _profiles(bin_starts, sites, driven, spec.pool_width) @ mixing
            target = rng.poisson(rates).astype(np.float16)
            records.append(serialize_example(one_hot(codes[start:start + spec.record_length]),
                                             target))
        for k in range(0, n, spec.records_per_file):
            write_records(data_dir / "tfrecords" / f"{split}-{k // spec.records_per_file}.tfr",
                          records[k:k + spec.records_per_file])
    (data_dir / "sequences.bed").write_text("".join(bed_rows))
    fasta = out / f"{organism}.fa"
    fasta.write_text("".join(fasta_lines))
    import pyfaidx

    pyfaidx.Faidx(str(fasta)).close()  # writes the .fai index
    return {"genome": fasta.name, "data_dir": organism, "promoters": promoters}


def _fasta_text(codes: np.ndarray, rng: np.random.Generator, width: int = 60) -> str:
    """FASTA lines of a chromosome, with about 10% soft-masked (lower case) in 1-5 kb runs."""
    text = np.frombuffer(b"ACGT", np.uint8)[codes].copy()
    masked = np.zeros(len(text), dtype=bool)
    for start in rng.integers(0, len(text), size=max(1, len(text) // 30_000)):
        masked[start:start + int(rng.integers(1000, 5000))] = True
    text[masked] += 32  # to lower case
    raw = text.tobytes().decode()
    return "".join(raw[i:i + width] + "\n" for i in range(0, len(raw), width))


def ensure_synthetic(seed: int = 0) -> Path:
    """The built-in `tiny` synthetic data set, written on first use: `cache_dir()/synthetic-tiny-seed<seed>`.

    Holds `human/`, `mouse/`, `human.fa`, `mouse.fa` and `ground_truth.json`. The directory appears
    only once complete (written under a temporary name, then renamed), and a lock file keeps two
    processes from writing it at the same time.
    """
    import fcntl

    from senformer_cli.paths import cache_dir

    out = cache_dir() / f"synthetic-tiny-seed{seed}"
    complete = out / "ground_truth.json"
    if complete.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not complete.is_file():  # another process may have written it while we waited
            write_synthetic(out, "tiny", seed)
    return out
