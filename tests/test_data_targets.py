"""Targets sheets and the track-type rule, on the published Enformer sheets."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from data_fixtures import reference_sheet

from senformer_cli.data.targets import (PAPER_COUNTS, TRACK_TYPES, is_histone_target, read_targets,
                                        track_type, track_type_counts)
from senformer_cli.errors import SenformerError

# The Enformer paper's track counts (DNase/ATAC, ChIP histone, ChIP TF, CAGE), written out here
# rather than imported, so the test does not lean on the module's own table.
PAPER = {
    "human": {"dnase_atac": 684, "chip_histone": 1860, "chip_tf": 2131, "cage": 638},
    "mouse": {"dnase_atac": 228, "chip_histone": 750, "chip_tf": 308, "cage": 357},
}
HEADER = "index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription"


@pytest.mark.parametrize("target", ["H3K27ac", "H3K4me3", "H3K27Ac", "H3K9me3", "H3K36me3", "H3ac",
                                    "H3T11ph", "H3K79me2", "H3F3A", "H3.3", "H3", " H3K4me1 "])
def test_histone_h3_marks_and_variants_are_histone(target: str) -> None:
    assert is_histone_target(target)


@pytest.mark.parametrize("target", [
    # Other core histones: the paper puts these in ChIP TF (DESIGN.md §5).
    "H4K20me1", "H2BK5ac", "H2AK9ac", "H2AFZ", "H2AK5ac", "H4K8ac", "H2BK120ac", "H4K91ac",
    # Transcription factors and other chromatin proteins, some starting with H.
    "CTCF", "POLR2A", "HNF4A", "HDAC2", "HSF1", "EP300", "H2", "HES1", "hHIF1A", "eGFP-ZNF24",
    ".", ""])
def test_other_targets_are_not_histone(target: str) -> None:
    assert not is_histone_target(target)


@pytest.mark.parametrize("description,kind", [
    ("DNASE:cerebellum", "dnase_atac"), ("ATAC:GM12878", "dnase_atac"),
    ("CHIP:H3K27ac:liver", "chip_histone"), ("CHIP:CTCF:K562", "chip_tf"),
    ("CHIP:H2AFZ:K562", "chip_tf"), ("CHIP:H4K20me1:GM12878", "chip_tf"),
    ("CHIP:.:H3K9ac at ZT10 / Liver / .", "chip_tf"), ("CAGE:brain", "cage"),
    ("RNA:liver", None)])
def test_track_type_from_description(description: str, kind: str | None) -> None:
    assert track_type(description) == kind


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_rule_gives_the_papers_counts_on_published_sheets(reference_dir: Path,
                                                         organism: str) -> None:
    sheet = read_targets(reference_sheet(reference_dir, organism))
    assert len(sheet) == sum(PAPER[organism].values())
    assert track_type_counts(sheet) == PAPER[organism]
    assert PAPER_COUNTS == PAPER
    # Row by row against a plain pandas reading of the target field: every CHIP track on H3 is
    # histone, every other CHIP track (H2A/H2B/H4 marks included: 138 of them in human) is TF.
    raw = pd.read_csv(reference_sheet(reference_dir, organism), sep="\t", dtype=str,
                      keep_default_na=False)
    fields = raw["description"].str.split(":")
    chip = fields.str[0] == "CHIP"
    on_h3 = chip & fields.str[1].str.strip().str.upper().str.startswith("H3")
    assert (sheet.loc[on_h3, "track_type"] == "chip_histone").all()
    assert (sheet.loc[chip & ~on_h3, "track_type"] == "chip_tf").all()
    other_histones = chip & fields.str[1].str.match(r"(?i)^(H2A|H2B|H4)")
    assert other_histones.sum() == {"human": 138, "mouse": 0}[organism]


def write_sheet(path: Path, descriptions: list[str], groups: list[str]) -> Path:
    rows = [f"{i}\t0\tT{i}\tf{i}\t32\t2\tmean\t{d}\t{g}"
            for i, (d, g) in enumerate(zip(descriptions, groups))]
    path.write_text(HEADER + "\tgroup\n" + "\n".join(rows) + "\n")
    return path


def test_group_column_overrides_the_rule_row_by_row(tmp_path: Path) -> None:
    """Every override differs from what the rule would say; blank groups keep the rule."""
    rows = [  # description, group, expected
        ("CHIP:H3K27ac:liver", "ChIP TF", "chip_tf"),
        ("CHIP:CTCF:K562", "chip_histone", "chip_histone"),
        ("CHIP:H4K20me1:K562", "ChIP histone", "chip_histone"),
        ("DNASE:lung", "CAGE", "cage"),
        ("CAGE:brain", "dnase_atac", "dnase_atac"),
        ("ATAC:GM12878", "chip_tf", "chip_tf"),
        ("CHIP:H3K4me3:liver", "", "chip_histone"),
        ("CHIP:H2AFZ:liver", "  ", "chip_tf"),
        ("CAGE:liver", "", "cage"),
    ]
    path = write_sheet(tmp_path / "targets.txt", [r[0] for r in rows], [r[1] for r in rows])
    sheet = read_targets(path)
    assert sheet["track_type"].tolist() == [r[2] for r in rows]
    # Each of the first six rows really overrides: the rule alone gives another type, row by row.
    assert all(track_type(description) != kind for description, _, kind in rows[:6])
    assert all(track_type(description) == kind for description, _, kind in rows[6:])


@pytest.mark.parametrize("organism", ["human", "mouse"])
def test_group_column_on_a_published_sheet(reference_dir: Path, organism: str,
                                           tmp_path: Path) -> None:
    """Swap the types of 40 ChIP histone and 40 ChIP TF rows and relabel 7 CAGE rows as DNase by
    the group column; the counts move by exactly that and every other row keeps its rule type."""
    raw = pd.read_csv(reference_sheet(reference_dir, organism), sep="\t", dtype=str,
                      keep_default_na=False)
    rule = read_targets(reference_sheet(reference_dir, organism))["track_type"]
    histone = rule.index[rule == "chip_histone"][::17][:40]
    tf = rule.index[rule == "chip_tf"][::5][:40]
    cage = rule.index[rule == "cage"][:7]
    raw["group"] = ""
    raw.loc[histone, "group"] = "ChIP TF"  # labels are accepted...
    raw.loc[tf, "group"] = "chip_histone"  # ...and machine names
    raw.loc[cage, "group"] = "DNase/ATAC"
    path = tmp_path / "targets.txt"
    raw.to_csv(path, sep="\t", index=False)
    types = read_targets(path)["track_type"]
    assert (types[histone] == "chip_tf").all() and (types[tf] == "chip_histone").all()
    assert (types[cage] == "dnase_atac").all()
    untouched = rule.index.difference(histone.union(tf).union(cage))
    assert (types[untouched] == rule[untouched]).all()
    expected = dict(PAPER[organism])
    expected["dnase_atac"] += 7
    expected["cage"] -= 7
    assert track_type_counts(read_targets(path)) == expected


def test_extra_columns_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text("index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\tnote\n"
                    "0\t0\tA\tf\t32\t2\tmean\tCAGE:x\thello\n")
    sheet = read_targets(path)
    assert sheet["note"].tolist() == ["hello"] and sheet["track_type"].tolist() == ["cage"]


@pytest.mark.parametrize("body,message", [
    ("index\tgenome\tidentifier\tfile\tclip\tscale\tdescription\n", "lacks column 'sum_stat'"),
    ("index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
     "0\t0\tA\tf\t32\t2\tmean\tCAGE:x\n1\t0\tB\tf\t32\t2\tmean\tRNA:y\n", "row 1"),
    ("index\tgenome\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\tgroup\n"
     "0\t0\tA\tf\t32\t2\tmean\tCAGE:x\tmystery\n", "unknown group 'mystery'"),
])
def test_bad_sheets_name_the_file_and_row(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(body)
    with pytest.raises(SenformerError, match=message) as error:
        read_targets(path)
    assert str(path) in str(error.value)


def test_track_types_are_the_four_of_the_paper() -> None:
    assert TRACK_TYPES == ("dnase_atac", "chip_histone", "chip_tf", "cage")
