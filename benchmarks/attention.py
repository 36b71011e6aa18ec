"""One attention layer at the published width, full vs BigBird sparse: time per step and peak memory.

    python benchmarks/attention.py                      # T = 1,536, 3,072, 6,144, 12,288 tokens
    python benchmarks/attention.py --tokens 1536 --json

A thin caller of `senformer profile --component attention` (senformer_cli/profiling.py), which
does the measuring: the `s-enformer` preset's layer (1,536 channels, 8 heads, key size 64, value
size 192, 192 relative-position features; sparse: blocks of 64, 3 random blocks, a window of 3
blocks, 1 global block at each end) against the same layer with full attention. One step =
forward + backward (gradients with respect to the input and every variable), batch 1,
`tf.function`, `is_training=False` so dropout adds no randomness.

Each (attention, tokens) runs in a fresh process: time per step is the median over N steps after
two warm-up steps (N adaptive, so each run takes about `--seconds`); peak memory is the peak
resident memory during the timed steps minus the process's resident memory after importing
TensorFlow, before the layer is built. A configuration whose estimated peak exceeds 90% of the
memory available is reported as skipped without being run, and one that runs out as "out of
memory".

The FLOP ceiling is the whole layer's floating-point operations (projections q, k, v, r_k and
output, plus the attention matmuls including the relative-position term) full / sparse: the
speed-up an implementation could reach if time followed FLOPs. The same measurement:

    senformer profile --preset s-enformer --component attention --lengths 196608,393216,786432,1572864
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from senformer_cli import profiling  # noqa: E402
from senformer_cli.config import ModelConfig  # noqa: E402
from senformer_cli.errors import SenformerError  # noqa: E402

DEFAULT_TOKENS = (1536, 3072, 6144, 12288)


def benchmark(tokens: list[int], max_steps: int, seconds: float, timeout: float) -> dict[str, Any]:
    """profiling.profile() of one attention layer, full and sparse, at `tokens` tokens."""
    base = ModelConfig.from_preset("s-enformer")
    request = profiling.ProfileRequest(
        base=base, base_name="s-enformer", attention=["full", "sparse"],
        lengths=[t * base.bin_size for t in tokens], mode="train", steps=max_steps, warmup=2,
        component="attention", max_memory_bytes=int(0.9 * profiling.available_memory_bytes()),
        timeout_seconds=timeout or None, seconds=seconds)
    profiling.check_lengths(base, request.attention, request.lengths)
    return profiling.profile(request)


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per token count: full and sparse side by side, speed-up, FLOP ceiling, memory ratio."""
    by_length: dict[int, dict[str, Any]] = {}
    for row in result["rows"]:
        entry = by_length.setdefault(row["sequence_length_bp"], {"tokens": row["num_tokens"]})
        entry[row["attention"]] = row
    rows = []
    for entry in by_length.values():
        full, sparse = entry["full"], entry["sparse"]
        entry["flop_ceiling"] = full["flops"] / sparse["flops"]
        if full.get("status") == sparse.get("status") == "ok":
            entry["speedup"] = full["seconds_per_step"] / sparse["seconds_per_step"]
            entry["memory_ratio"] = full["peak_memory_bytes"] / sparse["peak_memory_bytes"]
        rows.append(entry)
    return rows


def render(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def seconds(row: dict[str, Any]) -> str:
        return f"{row['seconds_per_step']:.3f}" if row.get("status") == "ok" else row["status"]

    def gigabytes(row: dict[str, Any]) -> str:
        return f"{row['peak_memory_bytes'] / 1e9:.2f}" if row.get("status") == "ok" else "-"

    def ratio(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}x" if key in row else "-"

    table = Table(title="one attention layer, 1,536 channels, 8 heads, batch 1, forward + backward "
                        "(is_training=False); peak memory above the process baseline",
                  title_justify="left")
    for column in ("tokens", "full s/step", "full peak GB", "sparse s/step", "sparse peak GB",
                   "speed-up", "FLOP ceiling", "memory ratio"):
        table.add_column(column, justify="right")
    for row in table_rows(result):
        table.add_row(f"{row['tokens']:,}", seconds(row["full"]), gigabytes(row["full"]),
                      seconds(row["sparse"]), gigabytes(row["sparse"]), ratio(row, "speedup"),
                      f"{row['flop_ceiling']:.2f}x", ratio(row, "memory_ratio"))
    console = Console()
    console.print(table)
    for row in result["rows"]:
        if row.get("status") not in (None, "ok"):
            console.print(f"{row['model']} at {row['num_tokens']:,} tokens: {row['reason']}")
    console.print(f"{os.cpu_count()} CPU cores, {profiling.available_memory_bytes() / 2**30:.1f} GiB "
                  "available; median of N steps after 2 warm-up steps, each configuration in a "
                  "fresh process.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS),
                        help="sequence lengths in tokens (multiples of 64, at least 192)")
    parser.add_argument("--steps", type=int, default=20, help="at most this many timed steps")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="aim for about this many seconds of timed steps per configuration")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    try:
        result = benchmark(args.tokens, args.steps, args.seconds, args.timeout)
    except SenformerError as error:
        parser.error(str(error).replace("--lengths", "--tokens x 128 ="))
    if args.json:
        print(json.dumps({"machine": result["machine"], "rows": table_rows(result)}, indent=2))
    else:
        render(result)


if __name__ == "__main__":
    main()
