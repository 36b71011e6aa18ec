"""Shared fixtures. The package's environment defaults (TensorFlow's C++ logging silenced, oneDNN's
kernels on) are set before anything imports TensorFlow, as in the tool.

Reference tests (those that take the `reference_dir` fixture) skip where `../shared/reference/` is
absent, e.g. on a laptop. Where it must be present, in CI (`CI` set, as CI services do, or
`SENFORMER_REQUIRE_REFERENCE=1`, which `.ci/run` sets), a skipped reference test is a failure: a
missing reference would otherwise turn the suite's strongest checks off without anyone noticing.
"""
from __future__ import annotations

import os

import senformer_cli  # noqa: E402,F401  (first: its environment defaults)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The repository sits beside `shared/` (…/main and …/shared); CI's clean clone has the same
# layout.
# SENFORMER_REFERENCE_DIR points elsewhere (tests of this mechanism use it).
REFERENCE_DIR = Path(os.environ.get("SENFORMER_REFERENCE_DIR")
                     or Path(__file__).resolve().parents[2] / "shared" / "reference")


def reference_required() -> bool:
    """True in CI: reference tests must run, not skip."""
    def flag(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")

    return flag("CI") or flag("SENFORMER_REQUIRE_REFERENCE")


# The test files that take longest, longest first (measured with `--durations`). `make test` runs
# whole files on two workers (`--dist loadfile --no-loadscope-reorder`), handing out files in
# collection order: with these first, the long files start at once and the short ones fill in at
# the end, instead of a long file starting last while the other worker idles.
LONGEST_FIRST = ("test_demo.py", "test_training_learning.py", "test_training.py",
                 "test_receptive_field.py", "test_profiling.py", "test_training_finetune.py",
                 "test_recompute.py", "test_block_schedule.py", "test_model_load.py",
                 "test_sparse_attention.py", "test_model_enformer.py", "test_tiling.py",
                 "test_cli_evaluate.py", "test_evaluation.py", "test_export.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of LONGEST_FIRST first, in that order; the rest after them as collected (a stable
    sort: the tests of a file keep their order)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The published Enformer's reference outputs (`../shared/reference/`); skip where absent
    (fail in CI)."""
    if not REFERENCE_DIR.is_dir():
        message = (f"reference data not found at {REFERENCE_DIR} (expected beside the repository "
                   "as ../shared/reference/)")
        if reference_required():
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message)
    return REFERENCE_DIR


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, any skip of a test that takes `reference_dir` (also one skipped inside the test, e.g.
    for one missing reference file) is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and reference_required()
            and "reference_dir" in getattr(item, "fixturenames", ())):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = ("reference test skipped where CI / SENFORMER_REQUIRE_REFERENCE requires "
                           f"it: {reason}")
