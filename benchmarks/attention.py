"""One attention layer at the published width, full vs BigBird sparse: time per step and peak memory.

    python benchmarks/attention.py                      # T = 1,536, 3,072, 6,144, 12,288 tokens
    python benchmarks/attention.py --tokens 1536 --json
    python benchmarks/attention.py --tokens 1536 6144 --published /path/to/deepmind-research/enformer

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

With `--published DIR` (a local copy of deepmind-research's `enformer/attention_module.py`; not
part of this project, never committed) DeepMind's published `MultiheadAttention` with the settings
the published Enformer gives it runs too, in the same run, right before this project's layers at
each token count, under the same child; the table then gives both layers' speed-up over it. That is
the baseline a speed-up counts against (issue 9: sparse >= 1.3x the published layer at 1,536
tokens, >= 3.0x at 6,144).

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


def benchmark(tokens: list[int], max_steps: int, seconds: float, timeout: float,
              published: Path | None = None) -> dict[str, Any]:
    """profiling.profile() of one attention layer, full and sparse, at each of `tokens` tokens;
    with `published`, the published layer's row (kind "published") first at each count."""
    base = ModelConfig.from_preset("s-enformer")
    limit = int(0.9 * profiling.available_memory_bytes())
    lengths = [t * base.bin_size for t in tokens]
    profiling.check_lengths(base, ["full", "sparse"], lengths)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for length in lengths:
        request = profiling.ProfileRequest(
            base=base, base_name="s-enformer", attention=["full", "sparse"], lengths=[length],
            mode="train", steps=max_steps, warmup=2, component="attention",
            max_memory_bytes=limit, timeout_seconds=timeout or None, seconds=seconds)
        if published is not None:
            config = profiling.config_for(base, "full", length)
            rows.append({"model": "published", "attention": "published",
                         "sequence_length_bp": length, "num_tokens": config.num_tokens,
                         "flops": profiling.attention_flops(config, config.num_tokens, "full"),
                         **profiling.measure_in_child(request, config,
                                                      published_dir=str(published))})
        result = profiling.profile(request)
        rows += result["rows"]
    return {**result, "rows": rows}


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per token count: each layer side by side, speed-ups, FLOP ceiling, memory ratio."""
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
        baseline = entry.get("published", {})
        if baseline.get("status") == "ok":
            for kind in ("full", "sparse"):
                if entry[kind].get("status") == "ok":
                    entry[f"{kind}_vs_published"] = (baseline["seconds_per_step"]
                                                     / entry[kind]["seconds_per_step"])
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

    rows = table_rows(result)
    with_published = any("published" in row for row in rows)
    table = Table(title="one attention layer, 1,536 channels, 8 heads, batch 1, forward + backward "
                        "(is_training=False); peak memory above the process baseline",
                  title_justify="left")
    columns = ["tokens"]
    if with_published:
        columns += ["published s/step", "published peak GB"]
    columns += ["full s/step", "full peak GB", "sparse s/step", "sparse peak GB", "speed-up",
                "FLOP ceiling", "memory ratio"]
    if with_published:
        columns += ["full vs published", "sparse vs published"]
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        cells = [f"{row['tokens']:,}"]
        if with_published:
            cells += [seconds(row["published"]), gigabytes(row["published"])] \
                if "published" in row else ["-", "-"]
        cells += [seconds(row["full"]), gigabytes(row["full"]), seconds(row["sparse"]),
                  gigabytes(row["sparse"]), ratio(row, "speedup"), f"{row['flop_ceiling']:.2f}x",
                  ratio(row, "memory_ratio")]
        if with_published:
            cells += [ratio(row, "full_vs_published"), ratio(row, "sparse_vs_published")]
        table.add_row(*cells)
    console = Console(width=max(Console().width, 160))
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
    parser.add_argument("--published", type=Path, default=None, metavar="DIR",
                        help="a local copy of deepmind-research's enformer/ (attention_module.py): "
                        "its MultiheadAttention runs as the baseline in the same run")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    if args.published is not None and not (args.published / "attention_module.py").is_file():
        parser.error(f"--published {args.published}: no attention_module.py there")
    try:
        result = benchmark(args.tokens, args.steps, args.seconds, args.timeout, args.published)
    except SenformerError as error:
        parser.error(str(error).replace("--lengths", "--tokens x 128 ="))
    if args.json:
        print(json.dumps({"machine": result["machine"], "rows": table_rows(result)}, indent=2))
    else:
        render(result)


if __name__ == "__main__":
    main()
