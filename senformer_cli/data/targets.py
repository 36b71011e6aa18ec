"""Basenji targets sheets and the four track types of the Enformer paper.

A targets sheet is tab-separated with the columns `index, genome, identifier, file, clip, scale,
sum_stat, description` (extra columns are kept). Row `i` describes column `i` of every record's
`target` array. The track type of a row comes from its description:

- `DNASE:` or `ATAC:`                      -> `dnase_atac`   ("DNase/ATAC")
- `CHIP:<target>:` with a histone target   -> `chip_histone` ("ChIP histone")
- `CHIP:<target>:` otherwise               -> `chip_tf`      ("ChIP TF")
- `CAGE:`                                  -> `cage`         ("CAGE")

A ChIP target counts as histone when it names a histone H3 mark or H3 variant (`H3K27ac`,
`H3K4me3`, `H3K9me3`, `H3K36me3`, `H3ac`, `H3T11ph`, `H3F3A`, ...): the paper's split. Marks of the
other core histones (`H2AFZ`, `H2AK5ac`, `H2BK5ac`, `H4K20me1`, ...) are in the paper's ChIP TF
group, as is every non-histone target. Only the target field counts: `CHIP:.:H3K9ac at ZT10` is a TF
track. On the published sheets this gives the paper's counts exactly (human 684 / 1,860 / 2,131 /
638, mouse 228 / 750 / 308 / 357). An optional `group` column (machine names or labels above)
overrides the rule row by row.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from senformer_cli.errors import SenformerError

TRACK_TYPES: tuple[str, ...] = ("dnase_atac", "chip_histone", "chip_tf", "cage")
TRACK_TYPE_LABELS: dict[str, str] = {
    "dnase_atac": "DNase/ATAC",
    "chip_histone": "ChIP histone",
    "chip_tf": "ChIP TF",
    "cage": "CAGE",
}
REQUIRED_COLUMNS: tuple[str, ...] = ("index", "genome", "identifier", "file", "clip", "scale",
                                     "sum_stat", "description")
# The paper's counts (DNase/ATAC, ChIP histone, ChIP TF, CAGE).
PAPER_COUNTS: dict[str, dict[str, int]] = {
    "human": {"dnase_atac": 684, "chip_histone": 1860, "chip_tf": 2131, "cage": 638},
    "mouse": {"dnase_atac": 228, "chip_histone": 750, "chip_tf": 308, "cage": 357},
}

# Histone H3 followed by a modified residue (K27ac, T11ph, ...), an acetylation of the whole tail
# (H3ac), a variant gene name or isoform (H3F3A, H3.3), or nothing (pan-H3). H2A/H2B/H4 marks are
# not matched: the paper counts them as ChIP TF (DESIGN.md §5).
_HISTONE = re.compile(r"^H3([KRST]\d+|ac\b|F3[AB]?\b|\.[0-9X]\b|$)", re.IGNORECASE)
_GROUP_ALIASES = {name: name for name in TRACK_TYPES} | {
    label.lower(): name for name, label in TRACK_TYPE_LABELS.items()}


def is_histone_target(target: str) -> bool:
    """Whether a ChIP target is in the paper's ChIP histone group: a histone H3 mark or variant."""
    return bool(_HISTONE.match(target.strip()))


def track_type(description: str) -> str | None:
    """The track type of a targets-sheet description, or None when the prefix is unknown."""
    prefix, _, rest = description.partition(":")
    prefix = prefix.strip().upper()
    if prefix in ("DNASE", "ATAC"):
        return "dnase_atac"
    if prefix == "CAGE":
        return "cage"
    if prefix == "CHIP":
        target = rest.partition(":")[0]
        return "chip_histone" if is_histone_target(target) else "chip_tf"
    return None


def read_targets(path: Path | str) -> pd.DataFrame:
    """Read a targets sheet; add a `track_type` column (machine names of TRACK_TYPES).

    Returns a DataFrame with one row per track in sheet order (all original columns kept).
    Raises SenformerError naming the file and row for a missing column, a non-integer index, an
    unknown description prefix or an unknown `group` value.
    """
    path = Path(path)
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SenformerError(f"{path}: no such targets sheet") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise SenformerError(f"{path}: not a tab-separated targets sheet ({error})") from None
    sheet.columns = [str(c).strip() for c in sheet.columns]
    if sheet.columns[0] == "" or sheet.columns[0].startswith("Unnamed"):
        sheet = sheet.rename(columns={sheet.columns[0]: "index"})
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise SenformerError(f"{path}: targets sheet lacks column '{missing[0]}' "
                             f"(expected {', '.join(REQUIRED_COLUMNS)})")
    types = []
    has_group = "group" in sheet.columns
    for row, (index, description) in enumerate(zip(sheet["index"], sheet["description"])):
        if not index.strip().lstrip("-").isdigit():
            raise SenformerError(f"{path}: row {row}: index '{index}' is not an integer")
        if has_group and sheet["group"].iat[row].strip():
            group = sheet["group"].iat[row].strip()
            kind = _GROUP_ALIASES.get(group.lower())
            if kind is None:
                raise SenformerError(f"{path}: row {row}: unknown group '{group}' "
                                     f"(use one of {', '.join(TRACK_TYPES)})")
        else:
            kind = track_type(description)
            if kind is None:
                raise SenformerError(f"{path}: row {row}: description '{description}' does not "
                                     "start with DNASE:, ATAC:, CHIP: or CAGE:")
        types.append(kind)
    sheet["index"] = sheet["index"].astype(int)
    sheet["track_type"] = types
    return sheet


def track_type_counts(sheet: pd.DataFrame) -> dict[str, int]:
    """Number of tracks per type, in TRACK_TYPES order (zeros included)."""
    counts = sheet["track_type"].value_counts()
    return {kind: int(counts.get(kind, 0)) for kind in TRACK_TYPES}


def track_type_indices(sheet: pd.DataFrame) -> dict[str, list[int]]:
    """Target columns of each track type, in TRACK_TYPES order (types without tracks omitted)."""
    return {kind: [int(i) for i in sheet.index[sheet["track_type"] == kind]]
            for kind in TRACK_TYPES if (sheet["track_type"] == kind).any()}


def write_targets(path: Path | str, sheet: pd.DataFrame) -> None:
    """Write a targets sheet in the Basenji layout (the `track_type` column is not written)."""
    sheet.drop(columns=["track_type"], errors="ignore").to_csv(path, sep="\t", index=False)
