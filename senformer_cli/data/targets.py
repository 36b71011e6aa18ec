"""Basenji targets sheets and the four track types of the Enformer paper.

A targets sheet is tab-separated with the columns `index, genome, identifier, file, clip, scale,
sum_stat, description` (extra columns are kept). Row `i` describes column `i` of every record's
`target` array. The track type of a row comes from its description:

- `DNASE:` or `ATAC:`                      -> `dnase_atac`   ("DNase/ATAC")
- `CHIP:<target>:` with a histone target   -> `chip_histone` ("ChIP histone")
- `CHIP:<target>:` otherwise               -> `chip_tf`      ("ChIP TF")
- `CAGE:`                                  -> `cage`         ("CAGE")

A histone target is a histone mark or variant (`H3K27ac`, `H3K4me3`, `H4K20me1`, `H2BK5ac`,
`H2AFZ`, `H3F3A`, `H3ac`, ...). Only the target field counts: `CHIP:.:H3K9ac at ZT10` is a TF
track, as in the paper (this reproduces the paper's mouse counts exactly). An optional `group` column (machine names or labels above) overrides
the rule row by row, which is how the paper's exact grouping is supplied.
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

# Histone H2A/H2B/H3/H4 followed by a modified residue (K27ac, S10ph, ...), an acetylation of the
# whole tail (H3ac), or a variant gene name (H2AFZ, H3F3A, H2AZ, H3.3).
_HISTONE = re.compile(r"^(H2A|H2B|H3|H4)([KRST]\d+|ac\b|F|\.?[Z3X]|$)", re.IGNORECASE)
_GROUP_ALIASES = {name: name for name in TRACK_TYPES} | {
    label.lower(): name for name, label in TRACK_TYPE_LABELS.items()}


def is_histone_target(target: str) -> bool:
    """Whether a ChIP target names a histone mark or histone variant."""
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
    Raises SenformerError naming the file and row for a missing column, a non-integer index, an unknown description prefix or an unknown `group` value.
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
