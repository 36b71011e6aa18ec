"""This project's Enformer against DeepMind's published code, side by side: step time and peak memory.

    python benchmarks/published.py --published /work/published                  # forward, 196,608 bp
    python benchmarks/published.py --published /work/published --mode train --set recompute=true

`--published DIR` is a local copy of deepmind-research's `enformer/enformer.py` and
`attention_module.py` (not part of this project; do not commit it). Both models run at the same
width (`--set channels=384 ...`; default the published 1,536 channels, 11 layers) in fresh
processes through `senformer_cli.profiling` (`run_child`), so the step, the timing (median after
warm-up steps) and the memory (peak resident memory during the timed steps above the resident
memory after importing TensorFlow) are defined exactly as in `senformer profile`. The published
code's `is_training` routing, broken on current Sonnet, is patched in its process only.

Issue 9's goal P1: this project's forward pass at 196,608 bp takes <= 0.8x the published time at
<= 1.0x its memory (`--mode predict`, the default).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from senformer_cli import profiling  # noqa: E402
from senformer_cli.config import ModelConfig, parse_overrides  # noqa: E402


def compare(published: Path, lengths: list[int], mode: str, overrides: dict[str, Any],
            steps: int, warmup: int, limit: int | None, timeout: float | None) -> list[dict[str, Any]]:
    rows = []
    for length in lengths:
        config = profiling.config_for(ModelConfig.from_preset("enformer", **overrides), "full", length)
        spec = {"config": config.to_dict(), "mode": mode, "batch_size": 1, "steps": steps,
                "warmup": warmup, "precision": "fp32", "component": "model"}
        # The published model has no recompute or tiling: it runs the plain configuration.
        plain = config.replace(recompute=False, tile_length=0)
        row: dict[str, Any] = {"sequence_length_bp": length, "mode": mode,
                               "config": {k: v for k, v in overrides.items()}}
        row["ours"] = profiling.run_child(spec, limit_bytes=limit, timeout_seconds=timeout)
        row["published"] = profiling.run_child(
            {**spec, "config": plain.to_dict(), "published_dir": str(published)},
            limit_bytes=limit, timeout_seconds=timeout)
        ours, theirs = row["ours"], row["published"]
        if ours.get("status") == theirs.get("status") == "ok":
            row["time_ratio"] = ours["seconds_per_step"] / theirs["seconds_per_step"]
            row["memory_ratio"] = ours["peak_memory_bytes"] / theirs["peak_memory_bytes"]
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(result: dict[str, Any]) -> tuple[str, str]:
        if result.get("status") != "ok":
            return result.get("reason") or result.get("status", "?"), "-"
        return f"{result['seconds_per_step']:.2f}", f"{result['peak_memory_bytes'] / 1e9:.2f}"

    table = Table(title="this project's Enformer vs the published code (fresh process each; peak "
                        "resident memory above the baseline after importing TensorFlow)",
                  title_justify="left")
    for column in ("length (bp)", "mode", "ours s/step", "ours peak GB", "published s/step",
                   "published peak GB", "time ours/published", "memory ours/published"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['sequence_length_bp']:,}", row["mode"], *cell(row["ours"]),
                      *cell(row["published"]),
                      f"{row['time_ratio']:.2f}" if "time_ratio" in row else "-",
                      f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "-")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--published", type=Path, required=True,
                        help="folder with the published enformer.py and attention_module.py")
    parser.add_argument("--lengths", default="196608", help="input lengths in bp, comma-separated")
    parser.add_argument("--mode", choices=profiling.MODES, default="predict")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config field of both models (channels, num_transformer_layers, "
                        "num_heads, pooling; recompute / tile_length for this project's only)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-memory", default=None, help="stop a run above this, e.g. 20GB")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per run (0: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    if not (args.published / "enformer.py").is_file():
        parser.error(f"--published {args.published}: no enformer.py there")
    limit = profiling.parse_memory(args.max_memory) if args.max_memory else None
    rows = compare(args.published, profiling.parse_int_list(args.lengths, "--lengths"), args.mode,
                   parse_overrides(args.overrides), args.steps, args.warmup, limit,
                   args.timeout or None)
    if args.json:
        print(json.dumps({"machine": profiling.machine_description(), "rows": rows}, indent=2))
    else:
        render(rows)


if __name__ == "__main__":
    main()
