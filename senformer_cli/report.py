"""Rendering: rich tables on stdout, JSON documents, one-line errors on stderr."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def error(message: str) -> None:
    """One red line on stderr (the CLI then exits with code 2)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def print_json(data: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def model_summary(summary: dict[str, Any]) -> None:
    """Tables for `senformer model summary`."""
    config = summary["config"]
    title = (f"{summary['preset_description']}: {config['channels']} channels, "
             f"{config['num_transformer_layers']} layers, {config['num_heads']} heads, "
             f"{config['attention']} attention, {config['sequence_length']:,} bp -> "
             f"{config['target_length']} bins")
    table = Table(title=title, title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("variables", justify="right")
    for part in summary["parts"]:
        style = "bold" if part["part"] == "total" else None
        table.add_row(part["part"], _fmt_int(part["parameters"]), _fmt_int(part["variables"]),
                      style=style)
    console.print(table)
    pattern = summary.get("attention_pattern")
    if pattern:
        ptable = Table(title="sparse attention pattern (per head, per layer)", title_justify="left")
        ptable.add_column("quantity")
        ptable.add_column("value", justify="right")
        rows = [
            ("tokens", _fmt_int(pattern["num_tokens"])),
            ("blocks x block size", f"{pattern['num_blocks']} x {pattern['block_size']}"),
            ("window / random / global blocks",
             f"{pattern['window_blocks']} / {pattern['num_random_blocks']} / "
             f"{pattern['num_global_blocks']} at each end"),
            ("keys per middle query", _fmt_int(pattern["keys_per_middle_query"])),
            ("keys per query (mean)", f"{pattern['mean_keys_per_query']:,.1f}"),
            ("attended fraction of the full T x T matrix", f"{pattern['fraction_of_full']:.4f}"),
        ]
        for row in rows:
            ptable.add_row(*row)
        console.print(ptable)
