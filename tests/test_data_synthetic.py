"""The synthetic data set: deterministic, the real format, and the planted rules visible in it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyfaidx
import pytest
import tensorflow as tf
from data_fixtures import synthetic
from typer.testing import CliRunner

from senformer_cli.cli import app
from senformer_cli.config import ModelConfig
from senformer_cli.data import load_dataset
from senformer_cli.data.synthetic import MOTIFS, write_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_genome(tmp_path: Path) -> None:
    small = {"train": 2, "valid": 1, "test": 1}
    write_synthetic(tmp_path / "a", "tiny", seed=3, splits=small)
    write_synthetic(tmp_path / "b", "tiny", seed=3, splits=small)
    write_synthetic(tmp_path / "c", "tiny", seed=4, splits=small)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["human.fa"] != digest(tmp_path / "c")["human.fa"]


def test_track_counts_match_the_model_heads(data: Path) -> None:
    heads = ModelConfig.from_preset("tiny").heads
    for organism, tracks in heads.items():
        sheet = pd.read_csv(data / organism / "targets.txt", sep="\t")
        assert len(sheet) == tracks
        prefixes = sheet["description"].str.extract(r"^(DNASE|ATAC|CHIP:H3K\w+|CHIP:\w+|CAGE):")[0]
        groups = prefixes.replace({"ATAC": "DNASE"}).str.replace(r"CHIP:H3K\w+", "HISTONE",
                                                                  regex=True)
        assert groups.value_counts().to_dict() == {
            "DNASE": tracks // 4, "HISTONE": tracks // 4, "CHIP:CTCF": tracks // 8,
            "CHIP:FOSL2": tracks // 8, "CAGE": tracks // 4}
        stats = json.loads((data / organism / "statistics.json").read_text())
        assert stats["num_targets"] == tracks


def scanned_sites(fasta: pyfaidx.Fasta, chrom: str) -> dict[str, list[int]]:
    """Motif positions found by plain string search of the genome (forward strand)."""
    text = str(fasta[chrom]).upper()
    sites = {}
    for kind, motif in MOTIFS.items():
        found, start = [], text.find(motif)
        while start != -1:
            found.append(start)
            start = text.find(motif, start + 1)
        sites[kind] = found
    return sites


def test_ground_truth_follows_from_the_genome_alone(data: Path) -> None:
    truth = json.loads((data / "ground_truth.json").read_text())
    rule = truth["rule"]
    for organism, info in truth["organisms"].items():
        fasta = pyfaidx.Fasta(str(data / info["genome"]))
        for chrom in ("chr1", "chr2", "chr3"):
            sites = scanned_sites(fasta, chrom)
            promoters = [p for p in info["promoters"] if p["chrom"] == chrom]
            assert [p["position"] for p in promoters] == sites["promoter"]
            for promoter in promoters:
                p = promoter["position"]
                distances = [abs(e - p) for e in sites["enhancer"]]
                assert all(d >= rule["min_distance_bp"] for d in distances)
                driven = any(abs(e - p) <= rule["max_distance_bp"]
                             and not any(min(e, p) < i < max(e, p) for i in sites["insulator"])
                             for e in sites["enhancer"])
                assert promoter["driven"] == driven


def read_split(data: Path, organism: str, split: str) -> np.ndarray:
    files = sorted((data / organism / "tfrecords").glob(f"{split}-*.tfr"),
                   key=lambda p: int(p.stem.split("-")[1]))
    targets = []
    for serialized in tf.data.TFRecordDataset([str(f) for f in files], compression_type="ZLIB"):
        feature = tf.train.Example.FromString(serialized.numpy()).features.feature
        targets.append(np.frombuffer(feature["target"].bytes_list.value[0], np.float16))
    return np.stack(targets).astype(np.float32)


def test_cage_is_high_only_at_driven_promoters(data: Path) -> None:
    truth = json.loads((data / "ground_truth.json").read_text())
    levels = {True: [], False: []}
    for organism in ("human", "mouse"):
        stats = json.loads((data / organism / "statistics.json").read_text())
        sheet = pd.read_csv(data / organism / "targets.txt", sep="\t")
        cage = sheet.index[sheet["description"].str.startswith("CAGE:")].to_numpy()
        bed = pd.read_csv(data / organism / "sequences.bed", sep="\t", header=None,
                          names=["chrom", "start", "end", "split"])
        width = stats["pool_width"]
        for split in ("train", "valid", "test"):
            rows = bed[bed["split"] == split].reset_index(drop=True)
            targets = read_split(data, organism, split).reshape(len(rows), stats["target_length"], -1)
            for promoter in truth["organisms"][organism]["promoters"]:
                if promoter["split"] != split:
                    continue
                centre = promoter["position"] + len(MOTIFS["promoter"]) // 2
                for i, row in rows.iterrows():
                    offset = centre - row["start"] - stats["crop_bp"]
                    if 0 <= offset < stats["target_length"] * width:
                        levels[promoter["driven"]].append(targets[i, offset // width, cage].mean())
    assert len(levels[True]) >= 3 and len(levels[False]) >= 3
    # rates 13 vs 1 per bin (peak centre), Poisson noise: a clear gap
    assert np.mean(levels[True]) > 4 * np.mean(levels[False])
    assert np.mean(levels[False]) > 0.3  # the basal CAGE peak is there too


# ----------------------------------------------------------------------------- the other planted rules
@pytest.fixture(scope="module")
def bins(data: Path) -> dict:
    """Every target bin of both organisms: the mean signal per track kind (from the targets sheet's
    description) and the distance from the bin centre to the nearest site of each motif type.
    Promoters and enhancers come from ground_truth.json, insulator (CTCF) and TF (AP-1) sites from a
    plain string search of the genome for the motifs listed there."""
    truth = json.loads((data / "ground_truth.json").read_text())
    motifs = truth["motifs"]
    signal: dict[str, list] = {}
    distance: dict[str, list] = {site: [] for site in motifs}
    for organism in ("human", "mouse"):
        stats = json.loads((data / organism / "statistics.json").read_text())
        sheet = pd.read_csv(data / organism / "targets.txt", sep="\t")
        fields = sheet["description"].str.split(":")
        kinds = np.where(fields.str[0] == "CHIP", fields.str[1], fields.str[0])
        bed = pd.read_csv(data / organism / "sequences.bed", sep="\t", header=None,
                          names=["chrom", "start", "end", "split"])
        fasta = pyfaidx.Fasta(str(data / truth["organisms"][organism]["genome"]))
        width, length = stats["pool_width"], stats["target_length"]
        for split in ("train", "valid", "test"):
            rows = bed[bed["split"] == split].reset_index(drop=True)
            targets = read_split(data, organism, split).reshape(len(rows) * length, -1)
            chrom = rows["chrom"].iloc[0]
            promoters = [p for p in truth["organisms"][organism]["promoters"]
                         if p["chrom"] == chrom]
            found = scanned_sites(fasta, chrom)
            starts = {"promoter": [p["position"] for p in promoters],
                      "enhancer": sorted({e["position"] for p in promoters for e in p["enhancers"]}),
                      "insulator": found["insulator"], "tf": found["tf"]}
            centres = (rows["start"].to_numpy()[:, None] + stats["crop_bp"]
                       + width * np.arange(length)[None] + width / 2).ravel()
            for site, positions in starts.items():
                middles = np.asarray(positions, dtype=float) + len(motifs[site]) / 2
                distance[site].append(np.abs(centres[:, None] - middles[None]).min(axis=1)
                                      if len(middles) else np.full(len(centres), np.inf))
            for kind in ("DNASE", "ATAC", "H3K27ac", "H3K4me3", "CTCF", "FOSL2"):
                signal.setdefault(kind, []).append(targets[:, kinds == kind].mean(axis=1))
    table = {kind: np.concatenate(parts) for kind, parts in signal.items()}
    table["accessibility"] = (table.pop("DNASE") + table.pop("ATAC")) / 2
    return {"signal": table, "distance": {k: np.concatenate(v) for k, v in distance.items()}}


def mean_where(bins: dict, kind: str, where: np.ndarray) -> float:
    assert where.sum() >= 5, f"too few bins ({where.sum()}) to judge {kind}"
    return float(bins["signal"][kind][where].mean())


def at(bins: dict, site: str, **farther_than: float) -> np.ndarray:
    """Bins holding a site of this type (centre within 64 bp), optionally farther than the given
    distances from other site types."""
    where = bins["distance"][site] < 64
    for other, bp in farther_than.items():
        where &= bins["distance"][other] > bp
    return where


def nearly_all_above_background(bins: dict, kind: str, where: np.ndarray) -> float:
    """The fraction of the bins `where` whose mean `kind` signal is above the 99th percentile of
    the bins more than 2 kb from every site (a peak at nearly every site, not only on average)."""
    nearest = np.min(np.stack(list(bins["distance"].values())), axis=0)
    threshold = np.quantile(bins["signal"][kind][nearest > 2000], 0.99)
    return float((bins["signal"][kind][where] > threshold).mean())


def test_dnase_and_atac_peak_at_every_motif(bins: dict) -> None:
    nearest = np.min(np.stack(list(bins["distance"].values())), axis=0)
    background = mean_where(bins, "accessibility", nearest > 2000)
    assert background < 0.5  # the background rate (0.2 per bin) with Poisson noise
    for site in ("promoter", "enhancer", "insulator", "tf"):
        assert mean_where(bins, "accessibility", at(bins, site)) > 2.5, site
        assert nearly_all_above_background(bins, "accessibility", at(bins, site)) >= 0.9, site
    # A sharp peak: nothing left 600-1,200 bp from an enhancer.
    distance = bins["distance"]
    ring = (distance["enhancer"] > 600) & (distance["enhancer"] < 1200)
    for other in ("promoter", "insulator", "tf"):
        ring &= distance[other] > 1500
    assert mean_where(bins, "accessibility", ring) < 0.5


def test_h3k27ac_domains_around_enhancers_and_promoters(bins: dict) -> None:
    distance = bins["distance"]
    assert mean_where(bins, "H3K27ac", at(bins, "enhancer")) > 2.0
    assert mean_where(bins, "H3K27ac", at(bins, "promoter")) > 2.0
    # Broad: still high 600-1,200 bp from an enhancer, where the accessibility peak is gone.
    ring = (distance["enhancer"] > 600) & (distance["enhancer"] < 1200)
    for other in ("promoter", "insulator", "tf"):
        ring &= distance[other] > 1500
    assert mean_where(bins, "H3K27ac", ring) > 2.0
    # Absent far from enhancers and promoters, whatever else is there (TF and CTCF sites).
    far = (distance["enhancer"] > 4000) & (distance["promoter"] > 4000)
    assert mean_where(bins, "H3K27ac", far) < 0.5


def test_h3k4me3_domains_around_promoters_only(bins: dict) -> None:
    distance = bins["distance"]
    assert mean_where(bins, "H3K4me3", at(bins, "promoter")) > 2.5
    ring = (distance["promoter"] > 300) & (distance["promoter"] < 600)
    for other in ("enhancer", "insulator", "tf"):
        ring &= distance[other] > 1000
    assert mean_where(bins, "H3K4me3", ring) > 2.0  # broader than the accessibility peak
    assert mean_where(bins, "accessibility", ring) < 0.5
    # Enhancers (at least min_distance_bp from every promoter) carry H3K27ac, not H3K4me3.
    assert mean_where(bins, "H3K4me3", at(bins, "enhancer")) < 0.5


def test_ctcf_peaks_at_insulators_and_fosl2_at_tf_motifs(bins: dict) -> None:
    assert mean_where(bins, "CTCF", at(bins, "insulator")) > 4.0
    assert mean_where(bins, "FOSL2", at(bins, "tf")) > 4.0
    assert nearly_all_above_background(bins, "CTCF", at(bins, "insulator")) >= 0.75
    assert nearly_all_above_background(bins, "FOSL2", at(bins, "tf")) >= 0.75
    # Each factor only at its own motif.
    assert mean_where(bins, "CTCF", at(bins, "tf", insulator=1000)) < 0.5
    assert mean_where(bins, "FOSL2", at(bins, "insulator", tf=1000)) < 0.6
    for factor in ("CTCF", "FOSL2"):
        assert mean_where(bins, factor, at(bins, "promoter", insulator=1000, tf=1000)) < 0.5
        assert mean_where(bins, factor, at(bins, "enhancer", insulator=1000, tf=1000)) < 0.5


def test_cli_synth_writes_the_real_layout(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--train", "2", "--valid", "1",
                                      "--test", "1", "--seed", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["organisms"]["mouse"]["num_targets"] == 8
    for organism in ("human", "mouse"):
        assert (out / f"{organism}.fa.fai").is_file()
        assert sorted(p.name for p in (out / organism / "tfrecords").iterdir()) == [
            "test-0.tfr", "train-0.tfr", "valid-0.tfr"]
    result = CliRunner().invoke(app, ["data", "inspect", str(out / "human")])
    assert result.exit_code == 0, result.output
    assert "files agree with statistics.json" in result.output
    inspected = json.loads(CliRunner().invoke(app, ["data", "inspect", str(out / "mouse"),
                                                    "--json"]).output)
    assert [s["records"] for s in inspected["splits"]] == [2, 1, 1]
    assert inspected["tracks_per_type"] == {"dnase_atac": 2, "chip_histone": 2, "chip_tf": 2,
                                            "cage": 2}


@pytest.mark.slow
def test_full_shapes_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "full"
    write_synthetic(out, "full", seed=0, splits={"train": 2, "valid": 1, "test": 1})
    config = ModelConfig.from_preset("enformer")
    loaded = load_dataset([out / "human", out / "mouse"], "valid", config,
                          genomes={"human": out / "human.fa", "mouse": out / "mouse.fa"})
    shapes = {b.head: (tuple(b.sequence.shape), tuple(b.target.shape)) for b in loaded}
    assert shapes == {"human": ((1, 196_608, 4), (1, 896, 5313)),
                      "mouse": ((1, 196_608, 4), (1, 896, 1643))}
    small = load_dataset(out / "human", "train", ModelConfig.from_preset("small"), batch_size=2)
    sequence, target = next(iter(small["human"]))
    assert sequence.shape == (2, 131_072, 4) and target.shape == (2, 896, 5313)
    result = CliRunner().invoke(app, ["data", "inspect", str(out / "human"), "--json"])
    assert json.loads(result.output)["tracks_per_type"] == {
        "dnase_atac": 684, "chip_histone": 1860, "chip_tf": 2131, "cage": 638}
