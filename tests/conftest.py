"""Shared fixtures. TensorFlow's C++ logging is silenced before anything imports it."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The repository sits beside `shared/` (…/main and …/shared); CI's clean clone has the same layout.
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The published Enformer's reference outputs (`../shared/reference/`); skip where absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE_DIR} (expected beside the repository "
                    "as ../shared/reference/)")
    return REFERENCE_DIR
