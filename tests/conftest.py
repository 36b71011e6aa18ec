"""Shared fixtures. TensorFlow's C++ logging is silenced before anything imports it.

Reference tests (those that take the `reference_dir` fixture) skip where `../shared/reference/` is
absent, e.g. on a laptop. Where it must be present, in CI (`CI` set, as CI services do, or
`SENFORMER_REQUIRE_REFERENCE=1`, which `.ci/run` sets), a skipped reference test is a failure: a
missing reference would otherwise turn the suite's strongest checks off without anyone noticing.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
