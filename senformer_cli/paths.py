"""Where the tool keeps what it makes on first use (synthetic data, published weights)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$SENFORMER_CACHE`, else `~/.cache/senformer` (tests point the variable at a temporary folder)."""
    return Path(os.environ.get("SENFORMER_CACHE") or Path.home() / ".cache" / "senformer")
